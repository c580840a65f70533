"""The effects (instructions) the control plane's core returns: typed, frozen, performed by the driver.

The core decides; the driver (`ControlPlane`, or `corral_scheduler.testing.Harness` in tests)
sends messages on streams, resolves callers' futures, arms timers and writes the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral_protocol.v1 import common_pb2, node_pb2, worker_pb2
from corral_scheduler.events import TimerFired
from corral_scheduler.model import StoredCall


@dataclass(frozen=True)
class Effect:
    """Base of every effect."""


# To nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartContainer(Effect):
    """Ask a node to start a container. The driver adds the values of `secrets` to its environment
    (the app's own `CORRAL_APP_*` variables win), or answers `StartRefused` when one is gone."""

    node_id: str
    start: node_pb2.StartContainer
    secrets: tuple[common_pb2.SecretRef, ...] = ()


@dataclass(frozen=True)
class StopContainer(Effect):
    """Kill a container now (grace 0); the node reports its exit."""

    node_id: str
    container_id: str


@dataclass(frozen=True)
class CloseNodeSession(Effect):
    """End the node's session stream: the plane declared it lost. The node stops what it still runs
    and registers again as a new node; no `NodeLost` follows."""

    node_id: str


@dataclass(frozen=True)
class DeleteSnapshots(Effect):
    node_id: str
    delete: node_pb2.DeleteSnapshots


# To workers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitWorker(Effect):
    """The first message of a worker's session."""

    container_id: str
    init: worker_pb2.ContainerInit


@dataclass(frozen=True)
class PushInput(Effect):
    container_id: str
    input: worker_pb2.Input


@dataclass(frozen=True)
class CancelInput(Effect):
    container_id: str
    call_id: str


@dataclass(frozen=True)
class ShutdownWorker(Effect):
    """Graceful stop: the worker drains, runs its exit hooks and exits."""

    container_id: str


@dataclass(frozen=True)
class CloseWorkerSession(Effect):
    """End the worker's session on purpose (its snapshot point); no `WorkerDisconnected` follows."""

    container_id: str


# To callers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolveCall(Effect):
    call_id: str
    result: common_pb2.Result


@dataclass(frozen=True)
class RelayItem(Effect):
    """An item of a generator input, for the caller's stream (dropped when nobody streams it)."""

    call_id: str
    value: common_pb2.Payload


@dataclass(frozen=True)
class RelayHttp(Effect):
    """Part of an HTTP input's response, for the web gateway."""

    call_id: str
    message: worker_pb2.HttpResponseStart | worker_pb2.HttpBodyChunk


@dataclass(frozen=True)
class DropCall(Effect):
    """The input is forgotten (its result was read, or expired): `GetResult` no longer finds it."""

    call_id: str


# Timers and the store ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmTimer(Effect):
    """Deliver `event` after `delay_s`. Arming a key again replaces its timer."""

    key: str
    delay_s: float
    event: TimerFired


@dataclass(frozen=True)
class CancelTimer(Effect):
    key: str


@dataclass(frozen=True)
class MarkAppStopped(Effect):
    """A deployed app was stopped: the store forgets it across restarts."""

    app_id: str


# Durable calls: the driver writes each handled event's batch of these in one transaction --------


@dataclass(frozen=True)
class PersistInput(Effect):
    """A spawned call was accepted: the store keeps it until its result is read or expires."""

    call: StoredCall


@dataclass(frozen=True)
class PersistAttempt(Effect):
    """A durable call was pushed to a container: its attempt count, for its retry policy after a restart."""

    call_id: str
    attempts: int


@dataclass(frozen=True)
class PersistResult(Effect):
    """A durable call is done: its result waits in the store for the caller."""

    call_id: str
    result: common_pb2.Result
    finished_at: float  # wall clock


@dataclass(frozen=True)
class ForgetInput(Effect):
    """A durable call's result was read or expired: the store drops it."""

    call_id: str


CallChange = PersistInput | PersistAttempt | PersistResult | ForgetInput
DURABLE_EFFECTS = (PersistInput, PersistAttempt, PersistResult, ForgetInput)
