"""The control plane's live objects: apps, services, containers, inputs, nodes.

Plain data: no asyncio objects, no clock reads. Times are given by `PlaneCore` (its `now`, a
monotonic clock, and `wall`, seconds since the epoch), states change only through
`PlaneCore.move_container` / `move_input`, which check the lifecycle tables and record the story.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from corral_protocol.options import batched_method
from corral_protocol.v1 import common_pb2, control_pb2, worker_pb2
from corral_scheduler.autoscaler import AutoscalerConfig
from corral_scheduler.lifecycle import ContainerState, History, InputState, NodeState
from corral_scheduler.placement import NodeCapacity
from corral_scheduler.snapshot_keys import StartMode


def failure(status: common_pb2.ResultStatus.ValueType, message: str, traceback: str = "") -> common_pb2.Result:
    """A failed call's result."""
    return common_pb2.Result(status=status, message=message, traceback=traceback)


@dataclass(frozen=True)
class StoredCall:
    """A durable call as the store keeps it: enough to bind its service again and run it."""

    call_id: str
    app_id: str
    class_name: str
    parameters: tuple[common_pb2.NamedParameter, ...]
    override: common_pb2.ServiceOptions
    method: str
    args: common_pb2.Payload
    created_at: float  # wall clock
    attempts: int = 0
    result: common_pb2.Result | None = None
    finished_at: float = 0.0  # wall clock; set with the result


@dataclass
class AppRecord:
    app_id: str
    name: str
    kind: int
    version: int
    bundle_hash: str
    class_defs: dict[str, common_pb2.ClassDef]
    created_at: float = 0.0  # wall clock
    last_heartbeat: float = 0.0  # monotonic
    stopped: bool = False


@dataclass(eq=False)
class Input:
    """One call. It may run several times (retries); it is answered once."""

    call_id: str
    service_id: str
    method: str
    args: common_pb2.Payload
    state: InputState = InputState.QUEUED
    history: History = field(default_factory=History, repr=False)
    attempts: int = 0
    container_id: str | None = None
    result: common_pb2.Result | None = None
    done_at: float | None = None
    # An HTTP request from the web gateway: the worker streams the response back as
    # HttpResponseStart and HttpBodyChunk messages, which the driver relays to the gateway.
    http_request: worker_pb2.HttpRequest | None = None
    # Spawned calls survive a restart of the control plane: the driver writes them to the store.
    durable: bool = False
    queued_at: float = 0.0  # monotonic; when it last joined its service's queue (the autoscaler reads it)

    @property
    def done(self) -> bool:
        return self.state == InputState.DONE


@dataclass(eq=False)
class Container:
    container_id: str
    token: str
    service_id: str
    node_id: str
    resources: common_pb2.Resources
    gpu_indices: tuple[int, ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    state: ContainerState = ContainerState.PLACED
    history: History = field(default_factory=History, repr=False)
    slots: int = 1
    running: dict[str, Input] = field(default_factory=dict)
    started_at: float = 0.0  # wall clock
    idle_since: float = 0.0  # monotonic
    ready_at: float | None = None  # monotonic; None until it was ever ready
    inputs_served: int = 0
    pid: int = 0
    exit_reason: str = ""
    # The direct call path: the worker's address, the secret clients present, and the inputs it
    # runs for direct callers (reported by the worker, at most LOAD_REPORT_S old).
    direct_token: str = ""
    direct_address: str = ""
    direct_running: int = 0
    direct_served: int = 0
    # Memory snapshots: the key, how the node starts it (cold, take or restore; a failed restore
    # turns it into a cold start), and the token it uses before its dump.
    snapshot_key: str = ""
    start_mode: StartMode | None = None  # None: the class does not use snapshots
    pre_snapshot_token: str = ""
    # Its node is draining: it serves until a replacement elsewhere is ready, and the autoscaler
    # no longer counts it (so that the replacement starts).
    retiring: bool = False

    @property
    def restored(self) -> bool:
        """Started from a snapshot image (once its restored worker connected)."""
        return self.start_mode == StartMode.RESTORE and self.state != ContainerState.RESTORING

    @property
    def load(self) -> int:
        """Inputs running now: pushed by the control plane plus those of direct callers."""
        return len(self.running) + self.direct_running

    @property
    def free_slots(self) -> int:
        """Slots the control plane may push into. Direct inputs are not subtracted: a pushed input
        that finds the container busy waits there in order, and while it waits the container turns
        direct callers away (they queue here), so a backlog drains first come, first served."""
        return self.slots - len(self.running) if self.state == ContainerState.READY else 0


@dataclass
class Service:
    """One class bound to one parameter set and one set of options."""

    service_id: str
    app_id: str
    class_def: common_pb2.ClassDef
    parameters: list[common_pb2.NamedParameter]
    options: common_pb2.ServiceOptions
    # The options the binding overrode: with app, class and parameters, what rebinds it after a restart.
    override: common_pb2.ServiceOptions = field(default_factory=common_pb2.ServiceOptions)
    queue: deque[Input] = field(default_factory=deque)
    containers: dict[str, Container] = field(default_factory=dict)
    init_failures: int = 0
    next_start_at: float = 0.0
    last_init_error: common_pb2.Result | None = None
    autoscaler_override: common_pb2.AutoscalerSettings = field(default_factory=common_pb2.AutoscalerSettings)
    retired: bool = False
    # Since when a READY container has held more inputs than its slots (pushed ones waiting behind
    # direct ones): a backlog the queue does not show. None when none does.
    overloaded_since: float | None = None

    _autoscaler: AutoscalerConfig | None = field(default=None, init=False, repr=False, compare=False)

    def set_autoscaler_override(self, override: common_pb2.AutoscalerSettings) -> None:
        self.autoscaler_override = override
        self._autoscaler = None

    @property
    def autoscaler(self) -> AutoscalerConfig:
        """The effective autoscaler settings, computed once per change (it is read on every dispatch)."""
        if self._autoscaler is None:
            self._autoscaler = self._compute_autoscaler()
        return self._autoscaler

    def _compute_autoscaler(self) -> AutoscalerConfig:
        settings = common_pb2.AutoscalerSettings()
        settings.CopyFrom(self.options.autoscaler)
        settings.MergeFrom(self.autoscaler_override)
        return AutoscalerConfig(
            min_containers=settings.min_containers,
            max_containers=settings.max_containers if settings.HasField("max_containers") else None,
            buffer_containers=settings.buffer_containers,
            scaledown_window_s=settings.scaledown_window_s if settings.HasField("scaledown_window_s") else 60.0,
            target_inputs=self.target_inputs,
        )

    @property
    def batching(self) -> common_pb2.BatchingConfig | None:
        """`with_batching` on the service, else `@corral.batched` on its method."""
        batched = batched_method(self.class_def, self.options)
        return batched[1] if batched is not None else None

    @property
    def target_inputs(self) -> int:
        """Inputs per container the autoscaler aims at; a batched container aims at full batches."""
        target = self.options.concurrency.target_inputs or 1
        batching = self.batching
        return max(target, batching.max_batch_size) if batching is not None else target

    @property
    def direct_enabled(self) -> bool:
        """Whether clients may send inputs straight to containers. Retries need the control plane,
        which owns an input across attempts and containers."""
        return self.options.retries.max_retries == 0

    @property
    def live_containers(self) -> list[Container]:
        """The containers the autoscaler counts: starting or ready, and not retiring with a draining node."""
        return [c for c in self.containers.values() if c.state.is_live and not c.retiring]

    @property
    def running_count(self) -> int:
        return sum(c.load for c in self.containers.values())


@dataclass
class Node:
    node_id: str
    name: str
    inventory: common_pb2.NodeInventory
    capacity: NodeCapacity
    containers: set[str] = field(default_factory=set)
    last_heartbeat: float = 0.0  # wall clock, for people
    last_seen: float = 0.0  # monotonic: its last message of any kind (what the heartbeat timeout reads)
    state: NodeState = NodeState.JOINING
    history: History = field(default_factory=History, repr=False)
    state_reason: str = ""  # why it was lost
    lost_at: float = 0.0  # monotonic
    # Each container's resource use from the node's latest heartbeat, by container id.
    usage: dict[str, common_pb2.ContainerUsage] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.state.is_connected

    def info(self) -> control_pb2.NodeInfo:
        return control_pb2.NodeInfo(
            node_id=self.node_id, name=self.name, inventory=self.inventory,
            cpu_reserved=self.capacity.cpu_reserved, memory_reserved_mib=self.capacity.memory_reserved_mib,
            containers=len(self.containers), last_heartbeat=self.last_heartbeat,
            gpus_in_use=sorted(self.capacity.gpus_in_use), state=self.state.wire, state_reason=self.state_reason,
        )


