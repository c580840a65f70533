"""The control plane's state machine: apps, services, inputs, containers and nodes.

Everything here runs on one asyncio event loop; the gRPC servicers are thin adapters over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable

from corral_protocol.env import APP_KIND_DEPLOYED, APP_KIND_EPHEMERAL, CORRAL_APP_ID, CORRAL_APP_KIND, CORRAL_APP_NAME
from corral_protocol.names import NAME_RULE, is_valid_name
from corral_protocol.options import batching_violation, effective_max_inputs, effective_timeout_s, merge_options
from corral_protocol.parameters import matches as parameter_matches
from corral_protocol.v1 import common_pb2, control_pb2, node_pb2, worker_pb2
from corral_scheduler import ids
from corral_scheduler.autoscaler import desired_containers, init_backoff_s, retry_delay_s
from corral_scheduler.errors import InvalidArgument, NotFound, PermissionDenied, QueueFull, ServiceGone
from corral_scheduler.model import AppRecord, Container, ContainerState, Input, Node, Service
from corral_scheduler.placement import NodeCapacity, Unplaceable, choose_node
from corral_scheduler.snapshot_keys import SnapshotBook, StartMode, snapshot_key
from corral_scheduler.store import Store
from corral_scheduler.web_routes import check_labels, web_urls

log = logging.getLogger("corral.scheduler")

S = common_pb2
_RETRYABLE = (S.RESULT_STATUS_USER_ERROR, S.RESULT_STATUS_TIMEOUT, S.RESULT_STATUS_INTERNAL_ERROR)


def _failure(status: common_pb2.ResultStatus.ValueType, message: str, traceback: str = "") -> common_pb2.Result:
    return common_pb2.Result(status=status, message=message, traceback=traceback)


class ControlPlane:
    TICK_S = 0.2
    APP_HEARTBEAT_TIMEOUT_S = 60.0
    RESULT_TTL_S = 3600.0
    STOP_GRACE_S = 30.0
    LOST_WORKER_GRACE_S = 3.0
    MAX_QUEUE_PER_SERVICE = 100_000
    MIN_STARTUP_TIMEOUT_S = 5.0

    def __init__(self, store: Store, admin_token: str, max_queue_per_service: int | None = None) -> None:
        self.max_queue = max_queue_per_service or self.MAX_QUEUE_PER_SERVICE
        self.store = store
        self.admin_token = admin_token
        self.control_url = ""
        self.http_url = ""  # the web gateway's base URL, when it runs
        self.apps: dict[str, AppRecord] = {}
        self.deployed: dict[str, str] = {}
        self.services: dict[str, Service] = {}
        self.inputs: dict[str, Input] = {}
        self.containers: dict[str, Container] = {}
        self.container_tokens: dict[str, str] = {}
        self.nodes: dict[str, Node] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._last_sweep = time.monotonic()
        self._shutting_down = False
        self.snapshots = SnapshotBook()
        self._snapshot_keys: dict[str, str] = {}  # by service id

    # Life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        for deployed in self.store.deployed_apps():
            self._install_app(deployed.app_id, deployed.version, deployed.definition, deployed.created_at)
        for app_id, name, version, created_at in self.store.stopped_apps():  # history for `corral app list --all`
            self.apps.setdefault(app_id, AppRecord(
                app_id=app_id, name=name, kind=control_pb2.APP_KIND_DEPLOYED, version=version, bundle_hash="",
                class_defs={}, created_at=created_at, stopped=True,
            ))
        self._ticker = asyncio.create_task(self._tick_forever(), name="corral-control-plane-tick")

    async def stop_all_containers(self, timeout: float = 60.0) -> None:
        """Stop every container gracefully (exit hooks run) and wait for them to exit."""
        self._shutting_down = True
        for container in list(self.containers.values()):
            self._stop_container(container)
        deadline = time.monotonic() + timeout
        while self.containers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for node in self.nodes.values():
            node.outbox.put_nowait(None)
        for container in self.containers.values():
            if container.outbox is not None:
                container.outbox.put_nowait(None)

    def is_container_token(self, token: str) -> bool:
        return token in self.container_tokens

    # Apps -----------------------------------------------------------------------------------

    def create_app(self, request: control_pb2.CreateAppRequest) -> control_pb2.CreateAppResponse:
        if not request.classes:
            raise InvalidArgument("an app needs at least one class")
        names = [c.name for c in request.classes]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"class names in an app must be unique, got {names}")
        if not request.bundle_hash or not self.store.has_bundle(request.bundle_hash):
            raise InvalidArgument(f"code bundle {request.bundle_hash!r} was not uploaded")
        check_labels(request.classes)
        for class_def in request.classes:
            if not class_def.methods:
                raise InvalidArgument(f"class {class_def.name} has no methods")
            for ref in class_def.options.secrets:
                if ref.WhichOneof("source") == "name" and self.store.get_secret(ref.name) is None:
                    raise NotFound(f"secret {ref.name!r} not found; create it with `corral secret create {ref.name} KEY=VALUE`")
        if request.kind == control_pb2.APP_KIND_DEPLOYED:
            if not request.name:
                raise InvalidArgument("a deployed app needs a name")
            if not is_valid_name(request.name):
                raise InvalidArgument(f"app name {request.name!r} must be {NAME_RULE}")
            app_id, version = self.store.deploy(ids.new_id("ap"), request)
            previous = self.apps.get(app_id)
            if previous is not None:
                self._retire_services(app_id, "the app was redeployed")
                self._delete_snapshots(node_pb2.DeleteSnapshots(app_id=app_id, keep_bundle_hash=request.bundle_hash))
            created_at = previous.created_at if previous else time.time()
        elif request.kind == control_pb2.APP_KIND_EPHEMERAL:
            app_id, version, created_at = ids.new_id("ap"), 1, time.time()
        else:
            raise InvalidArgument("app kind must be EPHEMERAL or DEPLOYED")
        self._install_app(app_id, version, request, created_at)
        log.info("app %s (%s) version %d: %s", request.name, app_id, version, ", ".join(names))
        return control_pb2.CreateAppResponse(app_id=app_id, version=version, web_urls=web_urls(self.apps[app_id], self.http_url))

    def _install_app(self, app_id: str, version: int, request: control_pb2.CreateAppRequest, created_at: float) -> None:
        record = AppRecord(
            app_id=app_id, name=request.name, kind=request.kind, version=version,
            bundle_hash=request.bundle_hash, class_defs={c.name: c for c in request.classes}, created_at=created_at,
        )
        self.apps[app_id] = record
        if request.kind == control_pb2.APP_KIND_DEPLOYED:
            self.deployed[request.name] = app_id
        for class_def in request.classes:
            warm = class_def.options.autoscaler.min_containers > 0
            if warm and all(p.has_default for p in class_def.parameters):
                defaults = [common_pb2.NamedParameter(name=p.name, value=p.default) for p in class_def.parameters]
                self.bind_service(app_id, class_def.name, defaults, common_pb2.ServiceOptions())

    def find_app(self, ref: str) -> AppRecord:
        app_id = self.deployed.get(ref, ref)
        record = self.apps.get(app_id)
        if record is None or record.stopped:
            raise NotFound(f"app {ref!r} not found (no running or deployed app has that name or id)")
        return record

    def stop_app(self, ref: str) -> str:
        record = self.find_app(ref)
        record.stopped = True
        self._retire_services(record.app_id, f"app {record.name!r} was stopped")
        self._delete_snapshots(node_pb2.DeleteSnapshots(app_id=record.app_id))
        if record.kind == control_pb2.APP_KIND_DEPLOYED:
            self.store.mark_stopped(record.app_id)
            self.deployed.pop(record.name, None)
        log.info("app %s (%s) stopped", record.name, record.app_id)
        return record.app_id

    def app_heartbeat(self, app_id: str) -> None:
        record = self.apps.get(app_id)
        if record is None or record.stopped:
            raise NotFound(f"app {app_id!r} is not running")
        record.last_heartbeat = time.monotonic()

    def lookup_class(self, app_name: str, class_name: str) -> tuple[str, common_pb2.ClassDef]:
        app_id = self.deployed.get(app_name)
        if app_id is None:
            raise NotFound(f"app {app_name!r} not found; deploy it with `corral deploy`")
        record = self.apps[app_id]
        class_def = record.class_defs.get(class_name)
        if class_def is None:
            raise NotFound(f"class {class_name!r} not found in app {app_name!r} (classes: {', '.join(record.class_defs)})")
        return app_id, class_def

    # Services -------------------------------------------------------------------------------

    def bind_service(
        self,
        app_id: str,
        class_name: str,
        parameters: Iterable[common_pb2.NamedParameter],
        override: common_pb2.ServiceOptions,
    ) -> str:
        record = self.apps.get(app_id)
        if record is None or record.stopped:
            raise NotFound(f"app {app_id!r} is not running")
        class_def = record.class_defs.get(class_name)
        if class_def is None:
            raise NotFound(f"class {class_name!r} not found in app {record.name!r}")
        bound = self._check_parameters(class_def, list(parameters))
        violation = batching_violation(class_name, [m.name for m in class_def.methods], with_batching=bool(override.batching.max_batch_size))
        if violation:
            raise InvalidArgument(violation)
        service_id = ids.service_id(app_id, record.version, class_name, bound, override)
        if service_id not in self.services:
            for ref in override.secrets:
                if ref.WhichOneof("source") == "name" and self.store.get_secret(ref.name) is None:
                    raise NotFound(f"secret {ref.name!r} not found")
            self.services[service_id] = Service(
                service_id=service_id, app_id=app_id, class_def=class_def, parameters=bound,
                options=merge_options(class_def.options, override),
            )
            self._scale(self.services[service_id])
        return service_id

    @staticmethod
    def _check_parameters(class_def: common_pb2.ClassDef, given: list[common_pb2.NamedParameter]) -> list[common_pb2.NamedParameter]:
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
            if not parameter_matches(spec.type, value):
                raise InvalidArgument(f"parameter {name!r} of {class_def.name} has the wrong type")
            bound.append(common_pb2.NamedParameter(name=name, value=value))
        return sorted(bound, key=lambda p: p.name)

    def update_autoscaler(self, service_id: str, settings: common_pb2.AutoscalerSettings) -> None:
        service = self._live_service(service_id)
        merged = common_pb2.AutoscalerSettings()
        merged.CopyFrom(service.autoscaler_override)
        merged.MergeFrom(settings)
        service.set_autoscaler_override(merged)
        config = service.autoscaler
        if config.max_containers is not None and config.min_containers > config.max_containers:
            raise InvalidArgument(f"min_containers ({config.min_containers}) is above max_containers ({config.max_containers})")
        self._scale(service)

    def _live_service(self, service_id: str) -> Service:
        service = self.services.get(service_id)
        if service is None or service.retired:
            raise ServiceGone(f"service {service_id!r} is gone (its app was stopped or redeployed); bind the class again")
        return service

    def _retire_services(self, app_id: str, reason: str) -> None:
        for service in self.services.values():
            if service.app_id != app_id or service.retired:
                continue
            service.retired = True
            while service.queue:
                self._finish(service.queue.popleft(), _failure(S.RESULT_STATUS_CANCELLED, reason))
            for container in list(service.containers.values()):
                self._stop_container(container)

    # Calls ----------------------------------------------------------------------------------

    def invoke(
        self, service_id: str, method: str, args: common_pb2.Payload, http_request: worker_pb2.HttpRequest | None = None,
    ) -> Input:
        service = self._live_service(service_id)
        if not any(m.name == method for m in service.class_def.methods):
            names = ", ".join(m.name for m in service.class_def.methods)
            raise NotFound(f"class {service.class_def.name} has no method {method!r} (methods: {names})")
        if len(service.queue) >= self.max_queue:
            raise QueueFull(
                f"the queue of {service.class_def.name} is full ({self.max_queue} inputs waiting); "
                "retry later, or raise max_containers so that it drains faster"
            )
        inp = Input(
            call_id=ids.new_id("fc"), service_id=service_id, method=method, args=args,
            future=asyncio.get_running_loop().create_future(),
        )
        if http_request is not None:
            inp.http_request, inp.http_events = http_request, asyncio.Queue()
        self.inputs[inp.call_id] = inp
        service.queue.append(inp)
        self._dispatch(service)
        return inp

    def get_input(self, call_id: str) -> Input:
        inp = self.inputs.get(call_id)
        if inp is None:
            raise NotFound(f"call {call_id!r} not found (unknown, or its result expired)")
        return inp

    def forget(self, call_id: str) -> None:
        self.inputs.pop(call_id, None)

    def cancel(self, call_id: str, reason: str = "the call was cancelled") -> None:
        inp = self.inputs.get(call_id)
        if inp is None or inp.done:
            return
        service = self.services.get(inp.service_id)
        if inp.container_id is not None:
            container = self.containers.get(inp.container_id)
            if container is not None and container.running.pop(call_id, None) is not None:
                container.send(worker_pb2.WorkerSessionResponse(cancel=worker_pb2.CancelInput(input_id=call_id)))
                self._mark_idle(container)
        elif service is not None:
            with contextlib.suppress(ValueError):
                service.queue.remove(inp)
        self._finish(inp, _failure(S.RESULT_STATUS_CANCELLED, reason))
        if service is not None:
            self._dispatch(service)

    def _finish(self, inp: Input, result: common_pb2.Result) -> None:
        if inp.timer is not None:
            inp.timer.cancel()
            inp.timer = None
        inp.container_id = None
        if not inp.future.done():
            inp.future.set_result(result)
            inp.done_at = time.monotonic()

    def _fail_or_retry(self, inp: Input, result: common_pb2.Result, service: Service) -> None:
        policy = service.options.retries
        if result.status in _RETRYABLE and inp.attempts <= policy.max_retries and not service.retired and not inp.done:
            if inp.timer is not None:
                inp.timer.cancel()
                inp.timer = None
            inp.container_id = None
            delay = retry_delay_s(inp.attempts, policy.initial_delay_s, policy.backoff_coefficient or 1.0, policy.max_delay_s or 60.0)
            log.info("retrying %s (attempt %d of %d) in %.1f s: %s", inp.call_id, inp.attempts + 1, policy.max_retries + 1, delay, result.message)
            asyncio.get_running_loop().call_later(delay, self._requeue, inp)
            return
        self._finish(inp, result)

    def _requeue(self, inp: Input) -> None:
        service = self.services.get(inp.service_id)
        if inp.done or service is None:
            return
        if service.retired:
            self._finish(inp, _failure(S.RESULT_STATUS_CANCELLED, "the app was stopped before the retry ran"))
            return
        service.queue.appendleft(inp)
        self._dispatch(service)

    def _on_timeout(self, call_id: str, container_id: str, attempt: int) -> None:
        inp = self.inputs.get(call_id)
        container = self.containers.get(container_id)
        if inp is None or inp.done or inp.container_id != container_id or inp.attempts != attempt or container is None:
            return
        inp.timer = None
        container.running.pop(call_id, None)
        service = self.services[inp.service_id]
        timeout = service.options.timeout_s
        result = _failure(S.RESULT_STATUS_TIMEOUT, f"{service.class_def.name}.{inp.method} timed out after {timeout:g} s")
        self._kill_container(container, f"input {call_id} timed out")
        self._fail_or_retry(inp, result, service)

    # Dispatch and scaling ---------------------------------------------------------------------

    def _dispatch(self, service: Service) -> None:
        if service.queue:
            ready = [c for c in service.containers.values() if c.free_slots > 0]
            while service.queue and ready:
                container = min(ready, key=lambda c: c.load)
                inp = service.queue.popleft()
                if inp.done:
                    continue
                self._assign(inp, container, service)
                if container.free_slots <= 0:
                    ready.remove(container)
        self._scale(service)

    def _assign(self, inp: Input, container: Container, service: Service) -> None:
        inp.attempts += 1
        inp.container_id = container.container_id
        container.running[inp.call_id] = inp
        container.send(worker_pb2.WorkerSessionResponse(input=worker_pb2.Input(
            input_id=inp.call_id, method=inp.method, args=inp.args, http_request=inp.http_request,
        )))
        inp.timer = asyncio.get_running_loop().call_later(
            effective_timeout_s(service.options), self._on_timeout, inp.call_id, container.container_id, inp.attempts
        )

    def _scale(self, service: Service) -> None:
        if self._shutting_down:
            return
        missing = self._desired(service) - len(service.live_containers)
        if missing <= 0 or time.monotonic() < service.next_start_at:
            return
        for _ in range(missing):
            if not self._start_container(service):
                break

    def _fair_order(self) -> list[Service]:
        """Services ordered so that those holding the fewest containers get capacity first: a hot
        service cannot keep every free slot of the cluster while another waits with none."""
        return sorted(self.services.values(), key=lambda s: len(s.containers))

    def _scale_fairly(self) -> None:
        for service in self._fair_order():
            if service.queue or service.autoscaler.min_containers:
                self._scale(service)

    @staticmethod
    def _desired(service: Service) -> int:
        if service.retired:
            return 0
        return desired_containers(service.autoscaler, len(service.queue), service.running_count)

    def _start_container(self, service: Service) -> bool:
        capacities = [n.capacity for n in self.nodes.values() if n.connected]
        key = self._snapshot_key(service)
        try:
            placement = choose_node(capacities, service.options.resources, key)
        except Unplaceable as err:
            self._fail_queue(service, _failure(S.RESULT_STATUS_INTERNAL_ERROR, f"cannot start {service.class_def.name}: {err}"))
            return False
        if placement is None:
            return False
        try:
            env = self._secret_env(service)
        except NotFound as err:
            self._fail_queue(service, _failure(S.RESULT_STATUS_INIT_ERROR, err.message))
            return False
        node = self.nodes[placement.node_id]
        resources = service.options.resources
        container = Container(
            container_id=ids.new_id("ct"), token=secrets.token_urlsafe(24), service_id=service.service_id,
            node_id=node.node_id, resources=resources, gpu_indices=placement.gpu_indices,
            slots=effective_max_inputs(service.options),
            direct_token=secrets.token_urlsafe(24) if service.direct_enabled else "",
        )
        start = node_pb2.StartContainer(
            container_id=container.container_id, container_token=container.token, app_id=service.app_id,
            bundle_hash=self.apps[service.app_id].bundle_hash, env=env, resources=resources,
            gpu_indices=list(placement.gpu_indices), control_url=self.control_url, class_name=service.class_def.name,
        )
        self._plan_snapshot(service, node, container, start, key)
        node.capacity.cpu_reserved += resources.cpu
        node.capacity.memory_reserved_mib += resources.memory_mib
        node.capacity.gpus_in_use.update(placement.gpu_indices)
        node.containers.add(container.container_id)
        service.containers[container.container_id] = container
        self.containers[container.container_id] = container
        self.container_tokens[container.token] = container.container_id
        app = self.apps[service.app_id]
        kind = APP_KIND_DEPLOYED if app.kind == control_pb2.APP_KIND_DEPLOYED else APP_KIND_EPHEMERAL
        start.env.update({CORRAL_APP_ID: app.app_id, CORRAL_APP_NAME: app.name, CORRAL_APP_KIND: kind})
        node.send(node_pb2.NodeSessionResponse(start_container=start))
        log.info("starting container %s for %s on node %s", container.container_id, service.class_def.name, node.name)
        # A container's start (process, imports) is not shortened below a floor by a tiny input timeout.
        startup_timeout = max(self.MIN_STARTUP_TIMEOUT_S, effective_timeout_s(service.options))
        asyncio.get_running_loop().call_later(startup_timeout, self._check_started, container.container_id, startup_timeout)
        return True

    # Memory snapshots -------------------------------------------------------------------------

    def _snapshot_key(self, service: Service) -> str:
        if not service.options.enable_memory_snapshot:
            return ""
        key = self._snapshot_keys.get(service.service_id)
        if key is None:
            app = self.apps[service.app_id]
            key = snapshot_key(service.app_id, app.bundle_hash, service.class_def, service.parameters, service.options)
            self._snapshot_keys[service.service_id] = key
        return key

    def _plan_snapshot(self, service: Service, node: Node, container: Container, start: node_pb2.StartContainer, key: str) -> None:
        """Take, restore or start cold: one container per (node, key) dumps at a time; a broken key
        or a node without CRIU starts cold (with one warning)."""
        if not key:
            return
        if not node.inventory.snapshots.available:
            self.snapshots.warn_unsupported(node.name, service.class_def.name, node.inventory.snapshots.reason)
            return
        mode = self.snapshots.mode_for(node.node_id, key)
        container.snapshot_key = key
        container.snapshot_mode = mode.value
        if mode == StartMode.COLD:
            return
        start.snapshot_key = key
        if mode == StartMode.TAKE:
            start.take_snapshot = True
            container.pre_snapshot_token = secrets.token_urlsafe(24)
            start.pre_snapshot_token = container.pre_snapshot_token
            self.container_tokens[container.pre_snapshot_token] = container.container_id
            self.snapshots.taking[(node.node_id, key)] = container.container_id

    def _delete_snapshots(self, delete: node_pb2.DeleteSnapshots) -> None:
        for node in self.nodes.values():
            if node.connected:
                node.send(node_pb2.NodeSessionResponse(delete_snapshots=delete))

    def worker_snapshot_ready(self, container: Container) -> None:
        """The snap hooks ran; the worker closes its connection and the node dumps it. Its
        pre-snapshot token dies here: the image must hold no live credential."""
        self.container_tokens.pop(container.pre_snapshot_token, None)
        container.at_snapshot_point = True
        outbox, container.outbox = container.outbox, None
        if outbox is not None:
            outbox.put_nowait(None)

    def _snapshot_result(self, node: Node, result: node_pb2.SnapshotResult) -> None:
        self.snapshots.taking.pop((node.node_id, result.snapshot_key), None)
        if result.ok:
            self.snapshots.image_taken(node.node_id, result.image)
            node.capacity.snapshot_keys = self.snapshots.held_keys(node.node_id)
            log.info("node %s took snapshot %s", node.name, result.snapshot_key[:12])
        else:
            self.snapshots.failed(result.snapshot_key, result.error)

    def delete_snapshots(self, request: control_pb2.DeleteSnapshotsRequest) -> int:
        """Delete images by key (or unique key prefix), by app, or all; returns how many."""
        held = {(image.snapshot_key, image.app_id) for images in self.snapshots.images.values() for image in images}
        chosen: set[str] = set()
        if request.all:
            chosen = {key for key, _ in held}
        if request.app:
            app_id = self.find_app(request.app).app_id if request.app in self.deployed or request.app in self.apps else request.app
            chosen |= {key for key, owner in held if owner == app_id}
        for prefix in request.snapshot_keys:
            matches = {key for key, _ in held if key.startswith(prefix)}
            if len(matches) != 1:
                raise NotFound(f"no snapshot key starts with {prefix!r}" if not matches else f"{prefix!r} matches several snapshots; give more of the key")
            chosen |= matches
        if chosen:
            self._delete_snapshots(node_pb2.DeleteSnapshots(snapshot_keys=sorted(chosen)))
            self.snapshots.forget(chosen)
            for node in self.nodes.values():
                node.capacity.snapshot_keys = self.snapshots.held_keys(node.node_id)
        return len(chosen)

    def _check_started(self, container_id: str, startup_timeout: float) -> None:
        """A container whose start-up (import and @enter) outlasts the class's timeout is killed; it
        then counts as an init failure, so callers are not left waiting on a hung hook."""
        container = self.containers.get(container_id)
        if container is not None and container.state in (ContainerState.PENDING, ContainerState.STARTING):
            # Not _kill_container: the state must stay PENDING/STARTING so the exit counts as an init failure.
            container.exit_reason = f"it did not finish starting (import and @enter hooks) within {startup_timeout:g} s"
            self._send_kill(container)

    def _secret_env(self, service: Service) -> dict[str, str]:
        env: dict[str, str] = {}
        for ref in service.options.secrets:
            if ref.WhichOneof("source") == "name":
                values = self.store.get_secret(ref.name)
                if values is None:
                    raise NotFound(f"secret {ref.name!r} not found")
                env.update(values)
            else:
                env.update(ref.inline.values)
        return env

    def _fail_queue(self, service: Service, result: common_pb2.Result) -> None:
        while service.queue:
            self._finish(service.queue.popleft(), result)

    def _stop_container(self, container: Container) -> None:
        """Graceful stop: the worker drains, runs exit hooks and exits; killed after a grace period."""
        if container.state in (ContainerState.STOPPING, ContainerState.STOPPED, ContainerState.FAILED):
            return
        connected = container.outbox is not None
        container.state = ContainerState.STOPPING
        if connected:
            container.send(worker_pb2.WorkerSessionResponse(shutdown=worker_pb2.Shutdown()))
            container.kill_timer = asyncio.get_running_loop().call_later(
                self.STOP_GRACE_S, self._kill_container, container, "it did not stop within the grace period"
            )
        else:
            self._kill_container(container, "stopped before it started")

    def _kill_container(self, container: Container, reason: str) -> None:
        if container.state in (ContainerState.STOPPED,) or container.container_id not in self.containers:
            return
        container.state = ContainerState.STOPPING
        container.exit_reason = container.exit_reason or reason
        self._send_kill(container)

    def _send_kill(self, container: Container) -> None:
        node = self.nodes.get(container.node_id)
        if node is not None:
            node.send(node_pb2.NodeSessionResponse(stop_container=node_pb2.StopContainer(container_id=container.container_id, grace_s=0)))

    def _mark_idle(self, container: Container) -> None:
        if not container.load:
            container.idle_since = time.monotonic()

    # Worker events --------------------------------------------------------------------------

    def worker_connected(self, container_id: str, token: str) -> tuple[Container, worker_pb2.ContainerInit]:
        container = self.containers.get(container_id)
        if container is None or self.container_tokens.get(token) != container_id:
            raise PermissionDenied(f"this token does not belong to container {container_id!r}")
        if container.outbox is not None:
            raise PermissionDenied(f"container {container_id!r} is already connected")
        container.outbox = asyncio.Queue()
        if container.state == ContainerState.PENDING:
            container.state = ContainerState.STARTING
        elif container.state == ContainerState.STOPPING:
            container.send(worker_pb2.WorkerSessionResponse(shutdown=worker_pb2.Shutdown()))
        service = self.services[container.service_id]
        options = service.options
        take = container.snapshot_mode == StartMode.TAKE.value and not container.at_snapshot_point
        if container.at_snapshot_point:  # reconnected after its dump, with its real token
            container.at_snapshot_point = False
        elif container.snapshot_mode == StartMode.RESTORE.value:
            container.restored = True
        init = worker_pb2.ContainerInit(
            app_id=service.app_id, class_def=service.class_def, parameters=service.parameters,
            concurrency=options.concurrency, batching=options.batching, options=options,
            # Nothing a later caller could use enters an image: no direct token before the dump.
            direct_token="" if take else container.direct_token, take_snapshot=take,
        )
        return container, init

    def worker_ready(self, container: Container, ready: worker_pb2.WorkerReady) -> None:
        service = self.services[container.service_id]
        if container.state != ContainerState.STARTING:
            return
        container.state = ContainerState.READY
        container.slots = max(1, ready.slots)
        container.direct_address = ready.direct_address
        container.idle_since = time.monotonic()
        service.init_failures = 0
        log.info("container %s ready (%s)", container.container_id, service.class_def.name)
        self._dispatch(service)

    def worker_init_failed(self, container: Container, failed: worker_pb2.InitFailed) -> None:
        service = self.services[container.service_id]
        container.state = ContainerState.FAILED
        message = f"{service.class_def.name} failed to start: its @enter hook raised {failed.exception_type}: {failed.message}"
        self._init_failure(service, _failure(S.RESULT_STATUS_INIT_ERROR, message, failed.traceback))

    def _init_failure(self, service: Service, result: common_pb2.Result) -> None:
        service.init_failures += 1
        backoff = init_backoff_s(service.init_failures)
        service.next_start_at = time.monotonic() + backoff
        service.last_init_error = result
        log.warning("%s (next start in %.0f s)", result.message, backoff)
        self._fail_queue(service, result)

    def worker_output(self, container: Container, output: worker_pb2.Output) -> None:
        inp = container.running.pop(output.input_id, None)
        if inp is None:
            return
        container.inputs_served += 1
        self._mark_idle(container)
        service = self.services[container.service_id]
        if output.result.status == S.RESULT_STATUS_SUCCESS:
            self._finish(inp, output.result)
        else:
            self._fail_or_retry(inp, output.result, service)
        self._dispatch(service)

    def worker_http(self, container: Container, message: worker_pb2.HttpResponseStart | worker_pb2.HttpBodyChunk) -> None:
        """Part of an HTTP input's streamed response; its last body chunk completes the input."""
        inp = container.running.get(message.input_id)
        if inp is None or inp.http_events is None:
            return
        inp.http_events.put_nowait(message)
        if isinstance(message, worker_pb2.HttpBodyChunk) and not message.more_body:
            success = common_pb2.Result(status=S.RESULT_STATUS_SUCCESS)
            self.worker_output(container, worker_pb2.Output(input_id=message.input_id, result=success))

    def worker_load(self, container: Container, load: worker_pb2.WorkerLoad) -> None:
        """The worker's count of direct inputs changed: the autoscaler and dispatch see it."""
        previous = container.direct_running
        served = max(0, load.direct_served - container.direct_served)
        container.direct_running = load.direct_running
        container.direct_served = load.direct_served
        container.inputs_served += served
        if served or load.direct_running:
            container.idle_since = time.monotonic()  # direct activity since the last report
        if load.direct_running != previous:
            self._dispatch(self.services[container.service_id])

    def worker_draining(self, container: Container, reason: str) -> None:
        """The worker gives up (a direct input ran past its timeout): no more inputs; kill it now,
        as the control plane does when a pushed input times out."""
        self._kill_container(container, reason or "the container asked to be stopped")

    def get_routes(self, service_id: str) -> control_pb2.GetRoutesResponse:
        service = self._live_service(service_id)
        if not service.direct_enabled:
            return control_pb2.GetRoutesResponse(direct_enabled=False)
        routes = [
            control_pb2.ContainerRoute(container_id=c.container_id, address=c.direct_address, token=c.direct_token, slots=c.slots)
            for c in service.containers.values()
            if c.state == ContainerState.READY and c.direct_address
        ]
        return control_pb2.GetRoutesResponse(direct_enabled=True, routes=routes)

    def worker_disconnected(self, container: Container) -> None:
        container.outbox = None
        if container.container_id in self.containers:
            asyncio.get_running_loop().call_later(
                self.LOST_WORKER_GRACE_S, self._container_gone, container.container_id, None,
                "the control plane lost its connection to the container", "",
            )

    # Node events ----------------------------------------------------------------------------

    def register_node(self, request: node_pb2.RegisterNodeRequest) -> Node:
        for node in list(self.nodes.values()):
            if node.name == request.name:
                self.node_disconnected(node.node_id)
                del self.nodes[node.node_id]
        inventory = request.inventory
        node_id = ids.new_id("nd")
        capacity = NodeCapacity(node_id=node_id, cpu=inventory.cpu, memory_mib=inventory.memory_mib, gpus=list(inventory.gpus))
        node = Node(node_id=node_id, name=request.name or node_id, inventory=inventory, capacity=capacity)
        self.nodes[node_id] = node
        log.info("node %s registered: %g cpu, %d MiB, %d gpu(s)", node.name, inventory.cpu, inventory.memory_mib, len(inventory.gpus))
        return node

    def node_connected(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} is not registered")
        node.connected = True
        node.last_heartbeat = time.time()
        for service in self.services.values():
            self._dispatch(service)
        return node

    def node_event(self, node: Node, event: node_pb2.NodeSessionRequest) -> None:
        node.last_heartbeat = time.time()
        kind = event.WhichOneof("event")
        if kind == "container_started":
            container = self.containers.get(event.container_started.container_id)
            if container is not None:
                started = event.container_started
                container.pid = started.pid
                if started.snapshot_error and container.snapshot_mode == StartMode.RESTORE.value:
                    container.snapshot_mode = StartMode.COLD.value  # the node fell back to a cold start
                    self.snapshots.failed(container.snapshot_key, f"restore on node {node.name}: {started.snapshot_error}")
                    self.snapshots.forget_image(node.node_id, container.snapshot_key)
                    node.capacity.snapshot_keys = self.snapshots.held_keys(node.node_id)
        elif kind == "snapshot_result":
            self._snapshot_result(node, event.snapshot_result)
        elif kind == "heartbeat":
            self.snapshots.node_images(node.node_id, event.heartbeat.snapshots)
            node.capacity.snapshot_keys = self.snapshots.held_keys(node.node_id)
        elif kind == "container_exited":
            exited = event.container_exited
            self._container_gone(exited.container_id, exited.exit_code, exited.reason, exited.stderr_tail)

    def node_disconnected(self, node_id: str) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        node.connected = False
        self.snapshots.forget_node(node_id)
        for container_id in list(node.containers):
            self._container_gone(container_id, None, f"its node {node.name} disconnected", "")

    def _container_gone(self, container_id: str, exit_code: int | None, reason: str, stderr_tail: str) -> None:
        container = self.containers.pop(container_id, None)
        if container is None:
            return
        if container.kill_timer is not None:
            container.kill_timer.cancel()
        self.container_tokens.pop(container.token, None)
        self.container_tokens.pop(container.pre_snapshot_token, None)
        if self.snapshots.taking.get((container.node_id, container.snapshot_key)) == container_id:
            del self.snapshots.taking[(container.node_id, container.snapshot_key)]
        if container.outbox is not None:
            container.outbox.put_nowait(None)
        node = self.nodes.get(container.node_id)
        if node is not None:
            node.containers.discard(container_id)
            node.capacity.cpu_reserved = max(0.0, node.capacity.cpu_reserved - container.resources.cpu)
            node.capacity.memory_reserved_mib = max(0, node.capacity.memory_reserved_mib - container.resources.memory_mib)
            node.capacity.gpus_in_use.difference_update(container.gpu_indices)
        service = self.services[container.service_id]
        service.containers.pop(container_id, None)
        previous_state = container.state
        container.state = ContainerState.STOPPED
        code = f" (exit code {exit_code})" if exit_code is not None else ""
        why = container.exit_reason or reason
        detail = f"\n\nLast lines of the container's stderr:\n{stderr_tail}" if stderr_tail else ""
        starting = previous_state in (ContainerState.PENDING, ContainerState.STARTING) and not self._shutting_down and not service.retired
        if starting and container.snapshot_mode and not container.exit_reason:
            # A dump or restore gone wrong is never a failed call: count it, start another container.
            self.snapshots.failed(container.snapshot_key, f"{container.snapshot_mode} container exited before it was ready{code}: {reason}")
        elif starting:
            message = f"{service.class_def.name}'s container exited before it was ready{code}: {why}"
            self._init_failure(service, _failure(S.RESULT_STATUS_INIT_ERROR, message + detail, stderr_tail))
        for inp in list(container.running.values()):
            message = f"the container running {service.class_def.name}.{inp.method} exited unexpectedly{code}: {why}{detail}"
            self._fail_or_retry(inp, _failure(S.RESULT_STATUS_INTERNAL_ERROR, message), service)
        container.running.clear()
        if exit_code not in (None, 0) or previous_state != ContainerState.STOPPING:
            log.info("container %s exited%s: %s", container_id, code, why)
        self._dispatch(service)
        self._scale_fairly()  # the freed capacity goes to the services with the fewest containers first

    # Periodic work --------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.TICK_S)
            try:
                self._tick()
            except Exception:
                log.exception("control plane tick failed")

    def _tick(self) -> None:
        now = time.monotonic()
        for record in list(self.apps.values()):
            if (
                record.kind == control_pb2.APP_KIND_EPHEMERAL and not record.stopped
                and now - record.last_heartbeat > self.APP_HEARTBEAT_TIMEOUT_S
            ):
                log.warning("ephemeral app %s lost its client; stopping it", record.app_id)
                self.stop_app(record.app_id)
        for service in self._fair_order():
            if service.retired and not service.containers:
                del self.services[service.service_id]
                continue
            config = service.autoscaler
            live = service.live_containers
            excess = len(live) - self._desired(service)
            if excess > 0:
                idle = sorted(
                    (c for c in live if c.state == ContainerState.READY and not c.load and now - c.idle_since >= config.scaledown_window_s),
                    key=lambda c: c.idle_since,
                )
                for container in idle[:excess]:
                    log.info("scaling down idle container %s", container.container_id)
                    self._stop_container(container)
            self._dispatch(service)
        if now - self._last_sweep > 30:
            self._last_sweep = now
            expired = [k for k, i in self.inputs.items() if i.done_at is not None and now - i.done_at > self.RESULT_TTL_S]
            for key in expired:
                del self.inputs[key]
