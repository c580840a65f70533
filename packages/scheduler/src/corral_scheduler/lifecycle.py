"""The named lifecycles of containers, inputs and nodes: their states, the transitions allowed
between them, and the short history (story) each object keeps of its transitions.

A transition not in its table is a bug in the control plane, never in a client: `PlaneCore` raises
`InvalidTransition` when it runs strict (tests) and logs it with the object's story otherwise.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from corral_protocol.v1 import control_pb2

HISTORY_LENGTH = 20


class ContainerState(enum.Enum):
    PLACED = "placed"  # the node was asked to start it; its worker has not connected yet
    RESTORING = "restoring"  # the node restores it from a snapshot image; not connected yet
    TAKING = "taking"  # connected; runs its snap=True hooks before the node dumps it
    AT_SNAPSHOT_POINT = "at-snapshot-point"  # disconnected on purpose while the node dumps it
    STARTING = "starting"  # connected; imports and runs its (snap=False) @enter hooks
    READY = "ready"  # serving inputs
    LOST = "lost"  # its connection broke, or its node was lost; declared gone (at once, with its node)
    DRAINING = "draining"  # told to stop: finishes its inputs, runs @exit hooks; killed after a grace
    KILLED = "killed"  # the node was told to kill it; waiting for the node to report its exit
    START_TIMED_OUT = "start-timed-out"  # killed because it did not finish starting in time
    FAILED = "failed"  # an @enter hook raised; the worker exits
    EXITED = "exited"  # the process is gone; the container is forgotten

    @property
    def is_live(self) -> bool:
        """Counts toward the service's containers for the autoscaler."""
        return self in _LIVE

    @property
    def is_starting(self) -> bool:
        """Placed but not ready, and not given up on."""
        return self in _STARTING

    @property
    def is_connected(self) -> bool:
        """The worker holds an open session that the control plane may write to."""
        return self in _CONNECTED

    @property
    def wire(self) -> control_pb2.ContainerState.ValueType:
        """The coarser state of the wire protocol (`corral container list`)."""
        return _WIRE[self]


_STARTING = frozenset({
    ContainerState.PLACED, ContainerState.RESTORING, ContainerState.TAKING, ContainerState.AT_SNAPSHOT_POINT,
    ContainerState.STARTING,
})
_LIVE = _STARTING | {ContainerState.READY}
_CONNECTED = frozenset({ContainerState.TAKING, ContainerState.STARTING, ContainerState.READY})
_WIRE = {
    ContainerState.PLACED: control_pb2.CONTAINER_STATE_PENDING,
    ContainerState.RESTORING: control_pb2.CONTAINER_STATE_PENDING,
    ContainerState.TAKING: control_pb2.CONTAINER_STATE_STARTING,
    ContainerState.AT_SNAPSHOT_POINT: control_pb2.CONTAINER_STATE_STARTING,
    ContainerState.STARTING: control_pb2.CONTAINER_STATE_STARTING,
    ContainerState.READY: control_pb2.CONTAINER_STATE_READY,
    ContainerState.LOST: control_pb2.CONTAINER_STATE_STOPPING,
    ContainerState.DRAINING: control_pb2.CONTAINER_STATE_STOPPING,
    ContainerState.KILLED: control_pb2.CONTAINER_STATE_STOPPING,
    ContainerState.START_TIMED_OUT: control_pb2.CONTAINER_STATE_STOPPING,
    ContainerState.FAILED: control_pb2.CONTAINER_STATE_FAILED,
    ContainerState.EXITED: control_pb2.CONTAINER_STATE_STOPPED,
}

_C = ContainerState
# (start, finish) -> what moves a container along it.
CONTAINER_TRANSITIONS: dict[tuple[ContainerState, ContainerState], str] = {
    (_C.PLACED, _C.STARTING): "its worker connected (cold start)",
    (_C.PLACED, _C.TAKING): "its worker connected and will be dumped at its snapshot point",
    (_C.RESTORING, _C.STARTING): "its restored worker connected",
    (_C.RESTORING, _C.PLACED): "the node could not restore the image and started it cold",
    (_C.TAKING, _C.AT_SNAPSHOT_POINT): "the snap hooks ran; the node dumps it",
    (_C.AT_SNAPSHOT_POINT, _C.STARTING): "it reconnected after its dump",
    (_C.TAKING, _C.FAILED): "a snap=True @enter hook raised",
    (_C.STARTING, _C.FAILED): "an @enter hook raised",
    (_C.STARTING, _C.READY): "its @enter hooks ran",
    **{(s, _C.START_TIMED_OUT): "it did not finish starting within its start-up timeout" for s in _STARTING},
    **{(s, _C.DRAINING): "a graceful stop (scale-down, retirement, shutdown)" for s in _CONNECTED},
    **{(s, _C.LOST): "its connection broke" for s in _CONNECTED},
    # With its node: whatever ran there is gone for the plane (it moves on to EXITED at once).
    **{(s, _C.LOST): "its node was lost" for s in _C if s not in (_C.LOST, _C.EXITED)},
    **{(s, _C.KILLED): "killed (a stop before it connected, a timeout, or the grace ran out)"
       for s in (_STARTING | {_C.READY, _C.LOST, _C.DRAINING, _C.FAILED})},
    **{(s, _C.EXITED): "the node reported its exit, or its node or connection was lost" for s in _C if s is not _C.EXITED},
}


class InputState(enum.Enum):
    QUEUED = "queued"  # waiting in its service's queue
    RUNNING = "running"  # pushed to a container
    RETRY_WAIT = "retry-wait"  # failed; waits for its retry delay, then queues again
    DONE = "done"  # its caller has the result


_I = InputState
INPUT_TRANSITIONS: dict[tuple[InputState, InputState], str] = {
    (_I.QUEUED, _I.RUNNING): "a container had a free slot",
    (_I.QUEUED, _I.DONE): "cancelled, or failed before it ran (init failure, no node can run it, app stopped)",
    (_I.RUNNING, _I.DONE): "the container answered, or the call was cancelled, or it failed for good",
    (_I.RUNNING, _I.RETRY_WAIT): "it failed and its retry policy allows another attempt",
    (_I.RUNNING, _I.QUEUED): "its container's stream ended before the input left the control plane",
    (_I.RETRY_WAIT, _I.QUEUED): "its retry delay passed",
    (_I.RETRY_WAIT, _I.DONE): "cancelled while waiting, or its app stopped",
}


class NodeState(enum.Enum):
    JOINING = "joining"  # registered; its session has not opened yet
    READY = "ready"  # new containers may be placed there
    CORDONED = "cordoned"  # no new containers; those it runs keep serving
    DRAINING = "draining"  # cordoned, and its containers stop gracefully (replacements elsewhere first)
    LOST = "lost"  # its stream closed, its heartbeats stopped, or it registered again: its containers are gone

    @property
    def is_connected(self) -> bool:
        """Its session is open: the plane may send it commands, and it runs containers."""
        return self in (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING)

    @property
    def wire(self) -> control_pb2.NodeState.ValueType:
        return _NODE_WIRE[self]


_N = NodeState
_NODE_WIRE = {
    _N.JOINING: control_pb2.NODE_STATE_JOINING, _N.READY: control_pb2.NODE_STATE_READY,
    _N.CORDONED: control_pb2.NODE_STATE_CORDONED, _N.DRAINING: control_pb2.NODE_STATE_DRAINING,
    _N.LOST: control_pb2.NODE_STATE_LOST,
}
# (start, finish) -> what moves a node along it. A lost node never comes back as itself: the
# machine registers again under its name as a new node (a fresh session), and the lost one is forgotten.
NODE_TRANSITIONS: dict[tuple[NodeState, NodeState], str] = {
    (_N.JOINING, _N.READY): "its session opened",
    (_N.JOINING, _N.CORDONED): "its session opened; its name is cordoned",
    (_N.READY, _N.CORDONED): "cordoned by an operator",
    (_N.CORDONED, _N.READY): "uncordoned by an operator",
    (_N.READY, _N.DRAINING): "an operator drains it",
    (_N.CORDONED, _N.DRAINING): "an operator drains it",
    (_N.DRAINING, _N.CORDONED): "drained: its last container exited",
    (_N.DRAINING, _N.READY): "uncordoned by an operator during its drain",
    **{(s, _N.LOST): "its stream closed, its heartbeats stopped, or it registered again" for s in _N if s is not _N.LOST},
}


@dataclass(frozen=True)
class Step:
    """One transition in an object's story."""

    at: float  # the control plane's monotonic clock
    start: str
    finish: str
    cause: str

    def __str__(self) -> str:
        return f"{self.at:.3f} {self.start} -> {self.finish} ({self.cause})"


class History:
    """The last few transitions of one object, oldest first."""

    def __init__(self) -> None:
        self._steps: deque[Step] = deque(maxlen=HISTORY_LENGTH)

    def record(self, at: float, start: enum.Enum | None, finish: enum.Enum, cause: str) -> None:
        self._steps.append(Step(at, start.value if start is not None else "new", finish.value, cause))

    @property
    def steps(self) -> list[Step]:
        return list(self._steps)

    def __str__(self) -> str:
        return "\n".join(f"  {step}" for step in self._steps) or "  (no transitions)"


class InvalidTransition(Exception):
    """A transition its table does not allow: the event arrived in a state that cannot take it."""

    def __init__(self, kind: str, object_id: str, start: enum.Enum, finish: enum.Enum, cause: str, history: History) -> None:
        super().__init__(
            f"{kind} {object_id}: {start.value} -> {finish.value} is not a transition of its lifecycle "
            f"(cause: {cause}); its recent history:\n{history}"
        )
        self.kind = kind
        self.object_id = object_id
        self.start = start
        self.finish = finish
        self.history = history
