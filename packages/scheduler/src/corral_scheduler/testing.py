"""Test doubles for the control plane's core: a fake clock, fake nodes and fake workers, driven
through the same events the real driver hands the core.

`Harness` performs the core's effects into inspectable inboxes instead of streams, and fires timers
only when a test moves its clock, so a test of a backoff, a timeout or a scale-down window runs in
microseconds and never sleeps:

    h = Harness()
    node = h.add_node()
    app = h.deploy(class_def("Model", retries=1))
    service = h.bind(app, "Model")
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.advance(300)  # the input's timeout passes
    assert h.result(call) is None  # it waits for its retry
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from corral_protocol import gpus
from corral_protocol.v1 import common_pb2, control_pb2, node_pb2, worker_pb2
from corral_scheduler import effects as fx
from corral_scheduler import events as ev
from corral_scheduler.core import PlaneCore
from corral_scheduler.durable import apply_call_changes, recovery_events
from corral_scheduler.lifecycle import ContainerState, InputState
from corral_scheduler.model import Container, Input, Service, StoredCall
from corral_scheduler.nodes import NODE_TIMEOUT_S

S = common_pb2


class FakeClock:
    """A monotonic clock and a wall clock that move only when told to."""

    def __init__(self, start: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.now = start
        self._wall_offset = wall - start

    @property
    def wall(self) -> float:
        return self.now + self._wall_offset


def class_def(
    name: str = "Model",
    methods: Iterable[str] = ("run",),
    *,
    min_containers: int | None = None,
    max_containers: int | None = None,
    buffer_containers: int | None = None,
    scaledown_window_s: float | None = None,
    max_inputs: int = 0,
    target_inputs: int = 0,
    retries: int = 0,
    retry_delay_s: float = 1.0,
    timeout_s: float | None = None,
    cpu: float = 1.0,
    memory_mib: int = 512,
    gpu: tuple[str, int] | str | list[str] | None = None,
    snapshot: bool = False,
    secrets: Iterable[str] = (),
    parameters: Iterable[common_pb2.ParameterSpec] = (),
) -> common_pb2.ClassDef:
    """A class definition as the SDK would send it, with the options a test cares about."""
    options = common_pb2.ServiceOptions(
        resources=common_pb2.Resources(cpu=cpu, memory_mib=memory_mib),
        concurrency=common_pb2.ConcurrencyConfig(max_inputs=max_inputs, target_inputs=target_inputs),
        retries=common_pb2.RetryPolicy(max_retries=retries, initial_delay_s=retry_delay_s, backoff_coefficient=1.0),
        enable_memory_snapshot=snapshot,
        secrets=[common_pb2.SecretRef(name=s) for s in secrets],
    )
    if isinstance(gpu, tuple):  # the first protocol version's form: models and one count
        options.resources.gpu.models.append(gpu[0])
        options.resources.gpu.count = gpu[1]
    elif gpu is not None:
        options.resources.gpu.CopyFrom(gpus.parse_request(gpu))
    if timeout_s is not None:
        options.timeout_s = timeout_s
    autoscaler = options.autoscaler
    for field_name, value in (("min_containers", min_containers), ("max_containers", max_containers),
                              ("buffer_containers", buffer_containers), ("scaledown_window_s", scaledown_window_s)):
        if value is not None:
            setattr(autoscaler, field_name, value)
    return common_pb2.ClassDef(
        name=name, module="tests.fake", methods=[common_pb2.MethodDef(name=m) for m in methods],
        parameters=list(parameters), options=options,
    )


@dataclass
class FakeNode:
    """What a node was told: containers to start and stop, snapshots to delete."""

    node_id: str
    started: list[node_pb2.StartContainer] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    deleted: list[node_pb2.DeleteSnapshots] = field(default_factory=list)
    session_closed: bool = False  # the plane ended its session (it was declared lost)


@dataclass
class FakeWorker:
    """What a container's worker was sent over its session."""

    container_id: str
    init: worker_pb2.ContainerInit | None = None
    inputs: list[worker_pb2.Input] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    shutdown: bool = False
    session_closed: bool = False


class Harness:
    """A `PlaneCore` with a fake clock, nodes and workers. `strict` (the default): an invalid
    transition raises `InvalidTransition` instead of being logged. `secrets`: the named secrets that
    exist, by name."""

    def __init__(self, max_queue_per_service: int | None = None, secrets: dict[str, dict[str, str]] | None = None,
                 strict: bool = True, node_timeout_s: float = NODE_TIMEOUT_S) -> None:
        counter = itertools.count(1)
        self.core = PlaneCore(max_queue_per_service, strict=strict, new_id=lambda prefix: f"{prefix}-{next(counter)}",
                              new_token=lambda: f"tok-{next(counter)}", node_timeout_s=node_timeout_s)
        self.clock = FakeClock()
        self.secrets = dict(secrets or {})
        self.nodes: dict[str, FakeNode] = {}
        self.workers: dict[str, FakeWorker] = defaultdict(lambda: FakeWorker(""))
        self.results: dict[str, common_pb2.Result] = {}
        self.http: dict[str, list[worker_pb2.HttpResponseStart | worker_pb2.HttpBodyChunk]] = defaultdict(list)
        self.items: dict[str, list[common_pb2.Payload]] = defaultdict(list)
        self.stopped_apps: list[str] = []
        self.effects: list[fx.Effect] = []  # every effect, in order
        self.stored_calls: dict[str, StoredCall] = {}  # the store's durable calls, by call id
        self._timers: list[tuple[float, int, str]] = []
        self._armed: dict[str, tuple[int, ev.TimerFired]] = {}
        self._seq = itertools.count()
        self._ids = itertools.count(1)

    # Driving ----------------------------------------------------------------------------------

    def handle(self, event: ev.Event) -> list[fx.Effect]:
        """Hand the core one event now; perform and return its effects."""
        effects = self.core.handle(event, self.clock.now, self.clock.wall)
        for effect in effects:
            self._perform(effect)
        return effects

    def advance(self, seconds: float) -> None:
        """Move the clock, firing each timer that comes due at its own time, in order."""
        until = self.clock.now + seconds
        while self._timers and self._timers[0][0] <= until:
            due, seq, key = heapq.heappop(self._timers)
            armed = self._armed.get(key)
            if armed is None or armed[0] != seq:
                continue  # cancelled or re-armed
            del self._armed[key]
            self.clock.now = max(self.clock.now, due)
            self.handle(armed[1])
        self.clock.now = until

    def tick(self, seconds: float = 0.0) -> None:
        """Move the clock (firing timers) and run the periodic work."""
        self.advance(seconds)
        self.handle(ev.Tick())

    def run_for(self, seconds: float, step: float = 0.2) -> None:
        """Let time pass as the driver does: a tick every `step` seconds (what judges node heartbeats)."""
        until = self.clock.now + seconds
        while self.clock.now + step <= until + 1e-9:
            self.tick(step)
        if self.clock.now < until:
            self.tick(until - self.clock.now)

    def heartbeat(self, node_id: str, running: Iterable[str] | None = None) -> None:
        """The node's periodic heartbeat, with the containers it runs when given."""
        self.handle(ev.NodeHeartbeat(node_id, (), tuple(running) if running is not None else None))

    def backlog(self) -> None:
        """Let the queued inputs wait long enough for the autoscaler to add containers (a tick)."""
        self.tick(self.core.SCALE_UP_WAIT_S)

    def timer_armed(self, key: str) -> bool:
        return key in self._armed

    def _perform(self, effect: fx.Effect) -> None:
        self.effects.append(effect)
        if isinstance(effect, fx.ArmTimer):
            seq = next(self._seq)
            self._armed[effect.key] = (seq, effect.event)
            heapq.heappush(self._timers, (self.clock.now + effect.delay_s, seq, effect.key))
        elif isinstance(effect, fx.CancelTimer):
            self._armed.pop(effect.key, None)
        elif isinstance(effect, fx.StartContainer):
            missing = [r.name for r in effect.secrets if r.WhichOneof("source") == "name" and r.name not in self.secrets]
            if missing:
                self.handle(ev.StartRefused(effect.start.container_id, f"secret {missing[0]!r} not found"))
            else:
                self.nodes[effect.node_id].started.append(effect.start)
        elif isinstance(effect, fx.StopContainer):
            self.nodes[effect.node_id].stopped.append(effect.container_id)
        elif isinstance(effect, fx.DeleteSnapshots):
            self.nodes[effect.node_id].deleted.append(effect.delete)
        elif isinstance(effect, fx.CloseNodeSession):
            self.nodes[effect.node_id].session_closed = True
        elif isinstance(effect, fx.InitWorker):
            self.worker(effect.container_id).init = effect.init
        elif isinstance(effect, fx.PushInput):
            self.worker(effect.container_id).inputs.append(effect.input)
        elif isinstance(effect, fx.CancelInput):
            self.worker(effect.container_id).cancelled.append(effect.call_id)
        elif isinstance(effect, fx.ShutdownWorker):
            self.worker(effect.container_id).shutdown = True
        elif isinstance(effect, fx.CloseWorkerSession):
            self.worker(effect.container_id).session_closed = True
        elif isinstance(effect, fx.ResolveCall):
            assert effect.call_id not in self.results, f"{effect.call_id} was answered twice"
            self.results[effect.call_id] = effect.result
        elif isinstance(effect, fx.RelayHttp):
            self.http[effect.call_id].append(effect.message)
        elif isinstance(effect, fx.RelayItem):
            self.items[effect.call_id].append(effect.value)
        elif isinstance(effect, fx.MarkAppStopped):
            self.stopped_apps.append(effect.app_id)
        elif isinstance(effect, fx.DURABLE_EFFECTS):
            apply_call_changes(self.stored_calls, [effect])

    # Building a cluster -----------------------------------------------------------------------

    def add_node(self, name: str = "", cpu: float = 8.0, memory_mib: int = 16384, gpus: Iterable[str] = (),
                 snapshots: bool = False) -> str:
        """A node that joins and connects (a node that registers again: the same `name`)."""
        node_id = f"nd-{next(self._ids)}"
        inventory = common_pb2.NodeInventory(
            cpu=cpu, memory_mib=memory_mib, snapshots=common_pb2.SnapshotSupport(available=snapshots),
            gpus=[common_pb2.GpuDevice(index=i, uuid=f"GPU-{i}", model=model) for i, model in enumerate(gpus)],
        )
        self.nodes[node_id] = FakeNode(node_id)
        self.handle(ev.NodeJoined(node_id, name or node_id, inventory))
        self.handle(ev.NodeConnected(node_id))
        return node_id

    def deploy(self, *classes: common_pb2.ClassDef, name: str = "app", ephemeral: bool = False, app_id: str = "",
               version: int = 1, bundle_hash: str = "bundle-1") -> str:
        app_id = app_id or f"ap-{next(self._ids)}"
        kind = control_pb2.APP_KIND_EPHEMERAL if ephemeral else control_pb2.APP_KIND_DEPLOYED
        request = control_pb2.CreateAppRequest(name=name, kind=kind, bundle_hash=bundle_hash, classes=list(classes))
        self.handle(ev.AppInstalled(app_id, version, request, self.clock.wall))
        return app_id

    def bind(self, app_id: str, class_name: str = "Model", parameters: Iterable[common_pb2.NamedParameter] = (),
             override: common_pb2.ServiceOptions | None = None) -> str:
        binding = self.core.registry.binding(app_id, class_name, parameters, override or common_pb2.ServiceOptions())
        if not binding.exists:
            self.handle(binding.event)
        return binding.service_id

    def invoke(self, service_id: str, method: str = "run", http: bool = False, durable: bool = False) -> str:
        """`durable`: a spawned call, which the store keeps."""
        call_id = f"fc-{next(self._ids)}"
        request = worker_pb2.HttpRequest(method="GET", path="/") if http else None
        self.handle(ev.InvokeRequested(call_id, service_id, method, common_pb2.Payload(data=b"x"), request, durable))
        return call_id

    def recover(self, stored: dict[str, StoredCall]) -> None:
        """What the driver does at start: the store's durable calls come back, oldest first."""
        self.stored_calls = dict(stored)
        for call in sorted(stored.values(), key=lambda c: c.created_at):
            for event in recovery_events(self.core, call):
                self.handle(event)

    # Fake workers -------------------------------------------------------------------------------

    def worker(self, container_id: str) -> FakeWorker:
        worker = self.workers[container_id]
        worker.container_id = container_id
        return worker

    def connect(self, container_id: str) -> worker_pb2.ContainerInit:
        """The container's process started and its worker connected."""
        container = self.container(container_id)
        self.handle(ev.ContainerStarted(container.node_id, container_id, pid=100))
        self.handle(ev.WorkerConnected(container_id))
        init = self.worker(container_id).init
        assert init is not None
        return init

    def ready(self, container_id: str, slots: int = 1) -> None:
        self.handle(ev.WorkerReady(container_id, slots, direct_address=f"127.0.0.1:{9000 + len(self.workers)}"))

    def bring_up(self, container_id: str, slots: int = 1) -> None:
        self.connect(container_id)
        self.ready(container_id, slots)

    def output(self, container_id: str, call_id: str, status: common_pb2.ResultStatus.ValueType = S.RESULT_STATUS_SUCCESS,
               message: str = "") -> None:
        self.handle(ev.WorkerOutput(container_id, call_id, common_pb2.Result(status=status, message=message)))

    def exit(self, container_id: str, exit_code: int | None = 0, reason: str = "exited", stderr_tail: str = "") -> None:
        self.handle(ev.ContainerExited(container_id, exit_code, reason, stderr_tail))

    def pushed(self, container_id: str) -> list[str]:
        return [i.input_id for i in self.worker(container_id).inputs]

    # Looking ------------------------------------------------------------------------------------

    def container(self, container_id: str) -> Container:
        return self.core.containers.containers[container_id]

    def service(self, service_id: str) -> Service:
        return self.core.registry.services[service_id]

    def input(self, call_id: str) -> Input:
        return self.core.inputs.inputs[call_id]

    def input_state(self, call_id: str) -> InputState:
        return self.input(call_id).state

    def result(self, call_id: str) -> common_pb2.Result | None:
        return self.results.get(call_id)

    def containers(self, service_id: str, *states: ContainerState) -> list[str]:
        """The service's containers, oldest first (only those in `states` when given)."""
        return [c.container_id for c in self.service(service_id).containers.values() if not states or c.state in states]

    def live_containers(self, service_id: str) -> list[str]:
        return [c.container_id for c in self.service(service_id).live_containers]

    def started_on(self, node_id: str) -> list[str]:
        return [s.container_id for s in self.nodes[node_id].started]
