"""The control plane's apps and services (part of `ControlPlane`): creating, stopping and looking up
apps and classes, binding services, their autoscaler settings, direct routes and container exits."""

from __future__ import annotations

import time
import types
from collections.abc import Iterable, Mapping

from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler import events as ev
from corral_scheduler import ids, views
from corral_scheduler.container_exits import wait_for_exit
from corral_scheduler.core import PlaneCore
from corral_scheduler.errors import InvalidArgument, NotFound
from corral_scheduler.model import AppRecord
from corral_scheduler.registry import validate_app
from corral_scheduler.schedules import validate_schedules
from corral_scheduler.secret_env import Secrets
from corral_scheduler.store import Store
from corral_scheduler.web_routes import web_urls


class Apps:
    """Apps and services through the core; deployed apps also in the store (part of `ControlPlane`)."""

    core: PlaneCore
    store: Store
    secrets: Secrets
    http_url: str

    def handle(self, event: ev.Event) -> None:
        raise NotImplementedError

    def create_app(self, request: control_pb2.CreateAppRequest) -> control_pb2.CreateAppResponse:
        validate_app(request)
        if not self.store.has_bundle(request.bundle_hash):
            raise InvalidArgument(f"code bundle {request.bundle_hash!r} was not uploaded")
        for class_def in request.classes:
            self.secrets.check(class_def.options.secrets, hint=True)
        problem = validate_schedules(request) if request.kind == control_pb2.APP_KIND_DEPLOYED else None
        if problem:
            raise InvalidArgument(problem)
        if request.kind == control_pb2.APP_KIND_DEPLOYED:
            app_id, version = self.store.deploy(ids.new_id("ap"), request)
        else:
            app_id, version = ids.new_id("ap"), 1
        self.handle(ev.AppInstalled(app_id, version, request, time.time()))
        record = self.core.registry.apps[app_id]
        return control_pb2.CreateAppResponse(app_id=app_id, version=version, web_urls=web_urls(record, self.http_url))

    def app_records(self) -> Mapping[str, AppRecord]:
        """Every app by id (live, read-only), for the web gateway's routes."""
        return types.MappingProxyType(self.core.registry.apps)

    def stop_app(self, ref: str) -> str:
        record = self.core.registry.find_app(ref)
        self.handle(ev.AppStopRequested(record.app_id, f"app {record.name!r} was stopped"))
        return record.app_id

    def app_heartbeat(self, app_id: str) -> None:
        self.handle(ev.AppHeartbeat(app_id))

    def lookup_class(self, app_name: str, class_name: str, app_id: str = "") -> tuple[str, common_pb2.ClassDef]:
        return self.core.registry.lookup_class(app_name, class_name, app_id)

    def bind_service(
        self, app_id: str, class_name: str, parameters: Iterable[common_pb2.NamedParameter], override: common_pb2.ServiceOptions,
    ) -> str:
        binding = self.core.registry.binding(app_id, class_name, parameters, override)
        if not binding.exists:
            self.secrets.check(override.secrets)
            self.handle(binding.event)
        return binding.service_id

    def update_autoscaler(self, service_id: str, settings: common_pb2.AutoscalerSettings) -> None:
        self.handle(ev.AutoscalerUpdated(service_id, settings))

    def get_routes(self, service_id: str) -> control_pb2.GetRoutesResponse:
        return views.routes(self.core.registry.live_service(service_id))

    async def container_exit(self, request: control_pb2.GetContainerExitRequest, asker: str | None) -> control_pb2.GetContainerExitResponse:
        """Why a container of a service ended (waiting, bounded, while it is still alive). `asker`:
        the container whose token asks (None: the admin); it sees the stderr tail only of its own app's containers."""
        def alive_in(container_id: str) -> str | None:
            container = self.core.containers.containers.get(container_id)
            return container.service_id if container is not None else None
        reader_app_id = None if asker is None else self._app_of_container(asker)
        return await wait_for_exit(request, self.core.containers.recent_exits, alive_in, reader_app_id)

    def _app_of_container(self, container_id: str) -> str:
        """The app of a live container ("" for one the plane does not know)."""
        container = self.core.containers.containers.get(container_id)
        service = self.core.registry.services.get(container.service_id) if container is not None else None
        return service.app_id if service is not None else ""

    def log_app_id(self, ref: str) -> str:
        """The app whose logs `ref` names: an id, a deployed app's name, or the newest app of that name."""
        apps = self.core.registry.apps
        if ref in apps:
            return ref
        deployed = self.core.registry.deployed.get(ref)
        if deployed:
            return deployed
        named = [record for record in apps.values() if record.name == ref]
        if not named:
            raise NotFound(f"app {ref!r} not found")
        return max(named, key=lambda record: record.created_at).app_id
