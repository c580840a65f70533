"""The app registry: apps and their versions, services (a class bound to parameters and options),
and the validation of both. Checks that need the store (the bundle was uploaded, named secrets
exist) are the driver's; everything here is pure."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral_protocol import gpus
from corral_protocol.names import name_problem
from corral_protocol.options import batching_violation, merge_options
from corral_protocol.parameters import canonical as canonical_parameter
from corral_protocol.v1 import common_pb2, control_pb2, node_pb2
from corral_scheduler import ids
from corral_scheduler.effects import MarkAppStopped
from corral_scheduler.errors import InvalidArgument, NotFound, ServiceGone
from corral_scheduler.events import (
    AppForgotten,
    AppHeartbeat,
    AppInstalled,
    AppStopRequested,
    AutoscalerUpdated,
    ServiceBound,
)
from corral_scheduler.model import AppRecord, Service, failure
from corral_scheduler.web_routes import check_labels

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")

S = common_pb2


def validate_app(request: control_pb2.CreateAppRequest) -> None:
    """What can be checked of a new app without the store (the bundle and the secrets need it)."""
    if not request.classes:
        raise InvalidArgument("an app needs at least one class")
    names = [c.name for c in request.classes]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"class names in an app must be unique, got {names}")
    if not request.bundle_hash:
        raise InvalidArgument(f"code bundle {request.bundle_hash!r} was not uploaded")
    check_labels(request.classes)
    for class_def in request.classes:
        if not class_def.methods:
            raise InvalidArgument(f"class {class_def.name} has no methods")
        check_gpu(class_def.name, class_def.options)
    if request.kind == control_pb2.APP_KIND_DEPLOYED:
        if not request.name:
            raise InvalidArgument("a deployed app needs a name")
        problem = name_problem("app", request.name)
        if problem:
            raise InvalidArgument(problem)
    elif request.kind != control_pb2.APP_KIND_EPHEMERAL:
        raise InvalidArgument("app kind must be EPHEMERAL or DEPLOYED")


def check_gpu(class_name: str, options: common_pb2.ServiceOptions) -> None:
    """The SDK refuses unknown GPU names at definition time; other clients are checked here."""
    try:
        gpus.check_request(options.resources.gpu)
    except gpus.GpuSpecError as err:
        raise InvalidArgument(f"class {class_name}: {err}") from None


def check_parameters(class_def: common_pb2.ClassDef, given: list[common_pb2.NamedParameter]) -> list[common_pb2.NamedParameter]:
    """Validate a parameter set against the schema (for clients that did not) and fill defaults."""
    by_name = {p.name: p for p in given}
    if len(by_name) != len(given):
        raise InvalidArgument("a parameter was given twice")
    schema = {p.name: p for p in class_def.parameters}
    extra = sorted(set(by_name) - set(schema))
    if extra:
        raise InvalidArgument(f"{class_def.name} got unknown parameter(s) {', '.join(extra)}")
    bound = []
    for name, spec in schema.items():
        value = by_name[name].value if name in by_name else (spec.default if spec.has_default else None)
        if value is None:
            raise InvalidArgument(f"{class_def.name} is missing required parameter {name!r}")
        try:
            value = canonical_parameter(spec.type, value)
        except ValueError as err:
            raise InvalidArgument(f"parameter {name!r} of {class_def.name} has the wrong type or value: it {err}") from None
        bound.append(common_pb2.NamedParameter(name=name, value=value))
    return sorted(bound, key=lambda p: p.name)


@dataclass(frozen=True)
class Binding:
    """Where a bind request lands: `exists` when the service is already there."""

    service_id: str
    exists: bool
    event: ServiceBound


class Registry:
    """Apps by id, deployed apps by name, services by id."""

    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self.apps: dict[str, AppRecord] = {}
        self.deployed: dict[str, str] = {}
        self.services: dict[str, Service] = {}

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {
            AppInstalled: self._installed, AppForgotten: self._forgotten, AppStopRequested: self._stop,
            AppHeartbeat: self._heartbeat, ServiceBound: self._bound, AutoscalerUpdated: self._update_autoscaler,
        }

    # Queries ----------------------------------------------------------------------------------

    def find_app(self, ref: str) -> AppRecord:
        """A running or deployed app by name or id."""
        app_id = self.deployed.get(ref, ref)
        record = self.apps.get(app_id)
        if record is None or record.stopped:
            raise NotFound(f"app {ref!r} not found (no running or deployed app has that name or id)")
        return record

    def deployed_id(self, name: str) -> str | None:
        return self.deployed.get(name)

    def lookup_class(self, app_name: str, class_name: str, app_id: str = "") -> tuple[str, common_pb2.ClassDef]:
        """A class (or function) of a deployed app by name, or of any live app by id."""
        if app_id:
            found = self.apps.get(app_id)
            if found is None or found.stopped:
                raise NotFound(f"app {app_id!r} is not running")
            app_name = found.name
        else:
            app_id = self.deployed.get(app_name) or ""
            if not app_id:
                raise NotFound(f"app {app_name!r} not found; deploy it with `corral deploy`")
        record = self.apps[app_id]
        class_def = record.class_defs.get(class_name)
        if class_def is None:
            raise NotFound(f"class {class_name!r} not found in app {app_name!r} (classes: {', '.join(record.class_defs)})")
        return app_id, class_def

    def binding(
        self, app_id: str, class_name: str, parameters: Iterable[common_pb2.NamedParameter], override: common_pb2.ServiceOptions,
    ) -> Binding:
        """Validate a bind request and name its service; `ServiceBound` (the binding's event) creates it."""
        record = self.apps.get(app_id)
        if record is None or record.stopped:
            raise NotFound(f"app {app_id!r} is not running")
        class_def = record.class_defs.get(class_name)
        if class_def is None:
            raise NotFound(f"class {class_name!r} not found in app {record.name!r}")
        bound = check_parameters(class_def, list(parameters))
        violation = batching_violation(class_name, [m.name for m in class_def.methods], with_batching=bool(override.batching.max_batch_size))
        if violation:
            raise InvalidArgument(violation)
        check_gpu(class_name, override)
        service_id = ids.service_id(app_id, record.version, class_name, bound, override)
        event = ServiceBound(service_id, app_id, class_name, tuple(bound), override)
        return Binding(service_id, service_id in self.services, event)

    def live_service(self, service_id: str) -> Service:
        service = self.services.get(service_id)
        if service is None or service.retired:
            raise ServiceGone(f"service {service_id!r} is gone (its app was stopped or redeployed); bind the class again")
        return service

    # Handlers ---------------------------------------------------------------------------------

    def _installed(self, event: AppInstalled) -> None:
        request = event.request
        previous = self.apps.get(event.app_id)
        if previous is not None:
            self.retire_services(event.app_id, "the app was redeployed")
            self.core.snapshots.delete_on_nodes(node_pb2.DeleteSnapshots(app_id=event.app_id, keep_bundle_hash=request.bundle_hash))
        record = AppRecord(
            app_id=event.app_id, name=request.name, kind=request.kind, version=event.version,
            bundle_hash=request.bundle_hash, class_defs={c.name: c for c in request.classes},
            created_at=previous.created_at if previous is not None else event.created_at, last_heartbeat=self.core.now,
        )
        self.apps[event.app_id] = record
        if request.kind == control_pb2.APP_KIND_DEPLOYED:
            self.deployed[request.name] = event.app_id
        for class_def in request.classes:
            warm = class_def.options.autoscaler.min_containers > 0
            if warm and all(p.has_default for p in class_def.parameters):
                defaults = [common_pb2.NamedParameter(name=p.name, value=p.default) for p in class_def.parameters]
                binding = self.binding(event.app_id, class_def.name, defaults, common_pb2.ServiceOptions())
                if not binding.exists:
                    self._bound(binding.event)
        log.info("app %s (%s) version %d: %s", request.name, event.app_id, event.version, ", ".join(record.class_defs))

    def _forgotten(self, event: AppForgotten) -> None:
        self.apps.setdefault(event.app_id, AppRecord(
            app_id=event.app_id, name=event.name, kind=control_pb2.APP_KIND_DEPLOYED, version=event.version, bundle_hash="",
            class_defs={}, created_at=event.created_at, stopped=True,
        ))

    def _stop(self, event: AppStopRequested) -> None:
        record = self.find_app(event.app_id)
        record.stopped = True
        self.retire_services(record.app_id, event.reason)
        self.core.snapshots.delete_on_nodes(node_pb2.DeleteSnapshots(app_id=record.app_id))
        if record.kind == control_pb2.APP_KIND_DEPLOYED:
            self.core.emit(MarkAppStopped(record.app_id))
            self.deployed.pop(record.name, None)
        log.info("app %s (%s) stopped", record.name, record.app_id)

    def _heartbeat(self, event: AppHeartbeat) -> None:
        record = self.apps.get(event.app_id)
        if record is None or record.stopped:
            raise NotFound(f"app {event.app_id!r} is not running")
        record.last_heartbeat = self.core.now

    def _bound(self, event: ServiceBound) -> None:
        if event.service_id in self.services:
            return
        class_def = self.apps[event.app_id].class_defs[event.class_name]
        service = self.services[event.service_id] = Service(
            service_id=event.service_id, app_id=event.app_id, class_def=class_def, parameters=list(event.parameters),
            options=merge_options(class_def.options, event.override), override=event.override,
        )
        self.core.dispatch.scale(service)

    def _update_autoscaler(self, event: AutoscalerUpdated) -> None:
        service = self.live_service(event.service_id)
        merged = common_pb2.AutoscalerSettings()
        merged.CopyFrom(service.autoscaler_override)
        merged.MergeFrom(event.settings)
        previous = service.autoscaler_override
        service.set_autoscaler_override(merged)
        config = service.autoscaler
        if config.max_containers is not None and config.min_containers > config.max_containers:
            service.set_autoscaler_override(previous)
            raise InvalidArgument(f"min_containers ({config.min_containers}) is above max_containers ({config.max_containers})")
        self.core.dispatch.scale(service)

    # Transitions shared with other jobs ---------------------------------------------------------

    def retire_services(self, app_id: str, reason: str) -> None:
        """The app's services take no more inputs: queued ones are cancelled, containers drain."""
        for service in self.services.values():
            if service.app_id != app_id or service.retired:
                continue
            service.retired = True
            self.core.inputs.fail_queue(service, failure(S.RESULT_STATUS_CANCELLED, reason))
            for container in list(service.containers.values()):
                self.core.containers.stop(container)

    def tick(self) -> None:
        """Ephemeral apps whose client stopped heartbeating are stopped."""
        for record in list(self.apps.values()):
            if (
                record.kind == control_pb2.APP_KIND_EPHEMERAL and not record.stopped
                and self.core.now - record.last_heartbeat > self.core.app_heartbeat_timeout_s
            ):
                log.warning("ephemeral app %s lost its client; stopping it", record.app_id)
                self._stop(AppStopRequested(record.app_id, f"app {record.name!r} was stopped"))
