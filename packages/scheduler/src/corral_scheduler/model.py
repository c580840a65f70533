"""The control plane's live objects: apps, services, containers, inputs, nodes."""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from dataclasses import dataclass, field

from corral_protocol.v1 import common_pb2, control_pb2, node_pb2, worker_pb2
from corral_scheduler.autoscaler import AutoscalerConfig
from corral_scheduler.placement import NodeCapacity


class ContainerState(enum.IntEnum):
    PENDING = control_pb2.CONTAINER_STATE_PENDING  # placed; the node is starting the process
    STARTING = control_pb2.CONTAINER_STATE_STARTING  # the worker connected and runs its enter hooks
    READY = control_pb2.CONTAINER_STATE_READY  # serving inputs
    STOPPING = control_pb2.CONTAINER_STATE_STOPPING  # draining, then exit hooks
    STOPPED = control_pb2.CONTAINER_STATE_STOPPED
    FAILED = control_pb2.CONTAINER_STATE_FAILED

    @property
    def is_live(self) -> bool:
        return self in (ContainerState.PENDING, ContainerState.STARTING, ContainerState.READY)


@dataclass
class AppRecord:
    app_id: str
    name: str
    kind: int
    version: int
    bundle_hash: str
    class_defs: dict[str, common_pb2.ClassDef]
    created_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.monotonic)
    stopped: bool = False


@dataclass
class Input:
    """One call. It may run several times (retries); its future resolves once."""

    call_id: str
    service_id: str
    method: str
    args: common_pb2.Payload
    future: asyncio.Future[common_pb2.Result]
    attempts: int = 0
    container_id: str | None = None
    timer: asyncio.TimerHandle | None = None
    done_at: float | None = None
    # An HTTP request from the web gateway: the worker streams the response back as
    # HttpResponseStart and HttpBodyChunk messages, which go to `http_events`.
    http_request: worker_pb2.HttpRequest | None = None
    http_events: asyncio.Queue[worker_pb2.HttpResponseStart | worker_pb2.HttpBodyChunk] | None = None

    @property
    def done(self) -> bool:
        return self.future.done()


@dataclass
class Container:
    container_id: str
    token: str
    service_id: str
    node_id: str
    resources: common_pb2.Resources
    gpu_indices: tuple[int, ...] = ()
    state: ContainerState = ContainerState.PENDING
    slots: int = 1
    running: dict[str, Input] = field(default_factory=dict)
    outbox: asyncio.Queue[worker_pb2.WorkerSessionResponse | None] | None = None
    started_at: float = field(default_factory=time.time)
    idle_since: float = field(default_factory=time.monotonic)
    inputs_served: int = 0
    pid: int = 0
    exit_reason: str = ""
    kill_timer: asyncio.TimerHandle | None = None
    # The direct call path: the worker's address, the secret clients present, and the inputs it
    # runs for direct callers (reported by the worker, at most LOAD_REPORT_S old).
    direct_token: str = ""
    direct_address: str = ""
    direct_running: int = 0
    direct_served: int = 0
    # Memory snapshots: the key, how the container started ("take", "restore" or cold ""), the
    # token it uses before its dump, and whether it is at its snapshot point (disconnected on purpose).
    snapshot_key: str = ""
    snapshot_mode: str = ""
    pre_snapshot_token: str = ""
    at_snapshot_point: bool = False
    restored: bool = False

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

    def send(self, message: worker_pb2.WorkerSessionResponse) -> None:
        if self.outbox is not None:
            self.outbox.put_nowait(message)


@dataclass
class Service:
    """One class bound to one parameter set and one set of options."""

    service_id: str
    app_id: str
    class_def: common_pb2.ClassDef
    parameters: list[common_pb2.NamedParameter]
    options: common_pb2.ServiceOptions
    queue: deque[Input] = field(default_factory=deque)
    containers: dict[str, Container] = field(default_factory=dict)
    init_failures: int = 0
    next_start_at: float = 0.0
    last_init_error: common_pb2.Result | None = None
    autoscaler_override: common_pb2.AutoscalerSettings = field(default_factory=common_pb2.AutoscalerSettings)
    retired: bool = False

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
        if self.options.batching.max_batch_size:
            return self.options.batching
        for method in self.class_def.methods:
            if method.batching.max_batch_size:
                return method.batching
        return None

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
        return [c for c in self.containers.values() if c.state.is_live]

    @property
    def running_count(self) -> int:
        return sum(c.load for c in self.containers.values())


@dataclass
class Node:
    node_id: str
    name: str
    inventory: common_pb2.NodeInventory
    capacity: NodeCapacity
    outbox: asyncio.Queue[node_pb2.NodeSessionResponse | None] = field(default_factory=asyncio.Queue)
    containers: set[str] = field(default_factory=set)
    last_heartbeat: float = field(default_factory=time.time)
    connected: bool = False
    # Each container's resource use from the node's latest heartbeat, by container id.
    usage: dict[str, common_pb2.ContainerUsage] = field(default_factory=dict)

    def send(self, message: node_pb2.NodeSessionResponse) -> None:
        self.outbox.put_nowait(message)

    def info(self) -> control_pb2.NodeInfo:
        return control_pb2.NodeInfo(
            node_id=self.node_id, name=self.name, inventory=self.inventory,
            cpu_reserved=self.capacity.cpu_reserved, memory_reserved_mib=self.capacity.memory_reserved_mib,
            containers=len(self.containers), last_heartbeat=self.last_heartbeat,
        )


