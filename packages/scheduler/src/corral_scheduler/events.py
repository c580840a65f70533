"""The events (stimuli) the control plane's core takes: typed, frozen, and all it ever learns.

The driver (`ControlPlane`) turns RPCs, stream messages and fired timers into these and hands them
to `PlaneCore.handle`, which answers with effects (`corral_scheduler.effects`). Events that the
core schedules for itself through `ArmTimer` are `TimerFired` subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral_protocol.v1 import common_pb2, control_pb2, node_pb2, worker_pb2
from corral_scheduler.model import StoredCall


@dataclass(frozen=True)
class Event:
    """Base of every event."""


# Apps and services (requests, already validated against the store by the driver) --------------


@dataclass(frozen=True)
class AppInstalled(Event):
    """A new app, a redeploy of a deployed one, or a deployed app brought back after a restart."""

    app_id: str
    version: int
    request: control_pb2.CreateAppRequest
    created_at: float


@dataclass(frozen=True)
class AppForgotten(Event):
    """A stopped deployed app remembered by the store, listed by `corral app list --all`."""

    app_id: str
    name: str
    version: int
    created_at: float


@dataclass(frozen=True)
class AppStopRequested(Event):
    app_id: str
    reason: str


@dataclass(frozen=True)
class AppHeartbeat(Event):
    app_id: str


@dataclass(frozen=True)
class ServiceBound(Event):
    """A class bound to a parameter set and options for the first time (see `Registry.binding`)."""

    service_id: str
    app_id: str
    class_name: str
    parameters: tuple[common_pb2.NamedParameter, ...]
    override: common_pb2.ServiceOptions


@dataclass(frozen=True)
class AutoscalerUpdated(Event):
    service_id: str
    settings: common_pb2.AutoscalerSettings


# Calls ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvokeRequested(Event):
    call_id: str
    service_id: str
    method: str
    args: common_pb2.Payload
    http_request: worker_pb2.HttpRequest | None = None
    durable: bool = False  # a spawned call: kept in the store until its result is read or expires


@dataclass(frozen=True)
class CallRecovered(Event):
    """A durable call read back from the store after a restart. `service_id` is its service, bound
    again; empty when it could not be (`reason` says why: its app is gone, for instance)."""

    call: StoredCall
    service_id: str
    reason: str = ""


@dataclass(frozen=True)
class CancelRequested(Event):
    call_id: str
    reason: str = "the call was cancelled"


@dataclass(frozen=True)
class CallForgotten(Event):
    """The caller has its result; the input can go."""

    call_id: str


# Workers (messages on a container's session) -----------------------------------------------------


@dataclass(frozen=True)
class WorkerConnected(Event):
    container_id: str


@dataclass(frozen=True)
class WorkerReady(Event):
    container_id: str
    slots: int
    direct_address: str = ""


@dataclass(frozen=True)
class InitFailed(Event):
    container_id: str
    exception_type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class SnapshotReady(Event):
    container_id: str


@dataclass(frozen=True)
class WorkerOutput(Event):
    container_id: str
    input_id: str
    result: common_pb2.Result


@dataclass(frozen=True)
class WorkerHttp(Event):
    """Part of an HTTP input's streamed response; its last body chunk completes the input."""

    container_id: str
    message: worker_pb2.HttpResponseStart | worker_pb2.HttpBodyChunk


@dataclass(frozen=True)
class WorkerItem(Event):
    """An item a generator input yielded; the input's Output follows its last item."""

    container_id: str
    item: worker_pb2.GeneratorItem


@dataclass(frozen=True)
class WorkerLoad(Event):
    container_id: str
    direct_running: int
    direct_served: int


@dataclass(frozen=True)
class WorkerDraining(Event):
    """The worker gives up (a direct input ran past its timeout)."""

    container_id: str
    reason: str


@dataclass(frozen=True)
class WorkerDisconnected(Event):
    """The worker's stream ended. `undelivered`: inputs pushed to it that never left the plane's
    outbox, so they never started; they go back to the front of the queue."""

    container_id: str
    undelivered: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartRefused(Event):
    """The driver could not start a container the core asked for (a secret vanished)."""

    container_id: str
    message: str


# Nodes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeJoined(Event):
    node_id: str
    name: str
    inventory: common_pb2.NodeInventory


@dataclass(frozen=True)
class NodeConnected(Event):
    node_id: str


@dataclass(frozen=True)
class NodeLost(Event):
    """The node's session stream ended (the driver saw it close). `reason` says how, for callers."""

    node_id: str
    reason: str = ""


@dataclass(frozen=True)
class NodeCordonRequested(Event):
    """`corral node cordon` (`cordon`) or `uncordon` (not `cordon`); `node` is a name or an id."""

    node: str
    cordon: bool = True


@dataclass(frozen=True)
class NodeDrainRequested(Event):
    node: str
    timeout_s: float


@dataclass(frozen=True)
class NodeHeartbeat(Event):
    node_id: str
    snapshots: tuple[common_pb2.SnapshotImage, ...] | None = ()  # None: a message without a heartbeat
    running: tuple[str, ...] | None = None  # the containers the node runs (None: not reported)
    inventory: common_pb2.NodeInventory | None = None  # the node's current inventory, when it sent one
    usage: tuple[common_pb2.ContainerUsage, ...] | None = None  # its containers' use against their limits


@dataclass(frozen=True)
class ContainerStarted(Event):
    node_id: str
    container_id: str
    pid: int
    snapshot_error: str = ""


@dataclass(frozen=True)
class SnapshotTaken(Event):
    node_id: str
    result: node_pb2.SnapshotResult


@dataclass(frozen=True)
class ContainerExited(Event):
    container_id: str
    exit_code: int | None
    reason: str
    stderr_tail: str = ""
    node_id: str = ""


@dataclass(frozen=True)
class SnapshotsDeleted(Event):
    """`corral snapshot rm`: these keys' images go, and their failures are forgotten."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class ShutdownRequested(Event):
    """The control plane stops: every container stops gracefully and no new one starts."""


@dataclass(frozen=True)
class Tick(Event):
    """Periodic work: scale-down, ephemeral apps without heartbeats, expired results."""


# Timers the core arms for itself ----------------------------------------------------------------


@dataclass(frozen=True)
class TimerFired(Event):
    """Base of the events delivered by `ArmTimer`."""


@dataclass(frozen=True)
class InputTimedOut(TimerFired):
    call_id: str
    container_id: str
    attempt: int


@dataclass(frozen=True)
class RetryDue(TimerFired):
    call_id: str


@dataclass(frozen=True)
class StopGraceExpired(TimerFired):
    container_id: str


@dataclass(frozen=True)
class StartupTimedOut(TimerFired):
    container_id: str
    timeout_s: float


@dataclass(frozen=True)
class LostWorkerGraceExpired(TimerFired):
    container_id: str


@dataclass(frozen=True)
class DrainTimedOut(TimerFired):
    """A drain's timeout ran out: whatever still runs on the node is killed."""

    node_id: str
