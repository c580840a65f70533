"""The control plane's pure core: typed events in, typed effects out.

`PlaneCore` holds every live object (apps, services, inputs, containers, nodes, snapshot
images) and changes them only in `handle`. It performs no I/O, reads no clock (the driver passes
the time with each event) and holds no asyncio objects; the driver (`ControlPlane`) performs the
effects it returns. Its jobs live in their own modules and share this object:

    registry.Registry     apps, services, binding and validation
    inputs.Inputs         the input lifecycle: queue, retries, timeouts, results
    durable.DurableCalls  what of spawned calls the store keeps, and how they resume after a restart
    dispatch.Dispatch     pushing inputs into free slots; autoscaling and scale-down
    containers.Containers the container lifecycle and the worker's events
    nodes.Nodes           nodes joining, heartbeats and loss, capacity reservations
    drains.Drains         operators' cordons and drains of nodes
    snapshots.Snapshots   memory snapshot planning and the book of images
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable
from typing import Any

from corral_scheduler import ids
from corral_scheduler.containers import Containers
from corral_scheduler.dispatch import Dispatch
from corral_scheduler.drains import Drains
from corral_scheduler.durable import DurableCalls
from corral_scheduler.effects import Effect
from corral_scheduler.errors import ApiError
from corral_scheduler.events import Event, ShutdownRequested, Tick
from corral_scheduler.inputs import Inputs
from corral_scheduler.lifecycle import (
    CONTAINER_TRANSITIONS,
    INPUT_TRANSITIONS,
    NODE_TRANSITIONS,
    ContainerState,
    History,
    InputState,
    InvalidTransition,
    NodeState,
)
from corral_scheduler.model import Container, Input, Node
from corral_scheduler.nodes import NODE_TIMEOUT_S, Nodes
from corral_scheduler.registry import Registry
from corral_scheduler.snapshots import Snapshots

log = logging.getLogger("corral.scheduler")

MAX_QUEUE_PER_SERVICE = 100_000
APP_HEARTBEAT_TIMEOUT_S = 60.0
"""An ephemeral app whose client was silent this long is stopped (default of CORRAL_APP_HEARTBEAT_TIMEOUT_S)."""


class PlaneCore:
    """All live state of the control plane, and its transitions."""

    RESULT_TTL_S = 3600.0
    RESULT_SWEEP_S = 30.0
    STOP_GRACE_S = 30.0
    LOST_WORKER_GRACE_S = 3.0
    MIN_STARTUP_TIMEOUT_S = 5.0
    # The autoscaler adds containers past the first when the oldest queued input has waited this long.
    SCALE_UP_WAIT_S = 0.5
    # Cores of the cluster left to the control plane when bounding container starts per tick.
    PLANE_RESERVED_CORES = 1

    def __init__(
        self,
        max_queue_per_service: int | None = None,
        strict: bool = False,
        new_id: Callable[[str], str] = ids.new_id,
        new_token: Callable[[], str] = lambda: secrets.token_urlsafe(24),
        node_timeout_s: float = NODE_TIMEOUT_S,
        app_heartbeat_timeout_s: float = APP_HEARTBEAT_TIMEOUT_S,
    ) -> None:
        """`strict`: an event in a state that cannot take it raises `InvalidTransition` (tests);
        otherwise it is logged with the object's story and the plane carries on. `node_timeout_s`:
        a node silent this long is lost; `app_heartbeat_timeout_s`: an ephemeral app whose client is
        silent this long is stopped."""
        self.max_queue = max_queue_per_service or MAX_QUEUE_PER_SERVICE
        self.strict = strict
        self.app_heartbeat_timeout_s = app_heartbeat_timeout_s
        self.new_id = new_id
        self.new_token = new_token
        self.control_url = ""
        self.now = 0.0  # monotonic seconds, from the driver
        self.wall = 0.0  # seconds since the epoch, from the driver
        self.shutting_down = False
        self._effects: list[Effect] = []
        self.registry = Registry(self)
        self.inputs = Inputs(self)
        self.dispatch = Dispatch(self)
        self.containers = Containers(self)
        self.nodes = Nodes(self, node_timeout_s)
        self.drains = Drains(self)
        self.snapshots = Snapshots(self)
        self.durable = DurableCalls(self)
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            Tick: self._tick,
            ShutdownRequested: self._shutdown,
        }
        for job in (self.registry, self.inputs, self.containers, self.nodes, self.drains, self.snapshots, self.durable):
            self._handlers.update(job.handlers())

    def handle(self, event: Event, now: float, wall: float) -> list[Effect]:
        """Apply one event at time `now` (monotonic) / `wall` (epoch); return what the driver must do.

        A request the plane refuses raises its `ApiError` before anything changed. Any other
        failure raises when the core is strict, and is logged otherwise."""
        self.now, self.wall = now, wall
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"the control plane has no handler for {type(event).__name__}")
        try:
            handler(event)
        except ApiError:
            self._effects.clear()
            raise
        except InvalidTransition as err:
            if self.strict:
                self._effects.clear()
                raise
            log.error("ignored the rest of %s: %s", type(event).__name__, err)
        except Exception:
            # A bug in a handler: the effects of what already changed are still performed, so
            # the driver stays in step with the state, and the plane carries on.
            if self.strict:
                self._effects.clear()
                raise
            log.exception("the control plane failed to handle %r", event)
        effects, self._effects = self._effects, []
        return effects

    def emit(self, effect: Effect) -> None:
        self._effects.append(effect)

    # Transitions ------------------------------------------------------------------------------

    def move_container(self, container: Container, finish: ContainerState, cause: str) -> None:
        self._move("container", container.container_id, container.history, container.state, finish, cause, CONTAINER_TRANSITIONS)
        container.state = finish

    def move_input(self, inp: Input, finish: InputState, cause: str) -> None:
        self._move("input", inp.call_id, inp.history, inp.state, finish, cause, INPUT_TRANSITIONS)
        inp.state = finish

    def move_node(self, node: Node, finish: NodeState, cause: str) -> None:
        self._move("node", node.node_id, node.history, node.state, finish, cause, NODE_TRANSITIONS)
        node.state = finish

    def _move(self, kind: str, object_id: str, history: History, start: enum.Enum, finish: enum.Enum, cause: str,
              table: dict[Any, str]) -> None:
        if (start, finish) not in table:
            raise InvalidTransition(kind, object_id, start, finish, cause, history)
        history.record(self.now, start, finish, cause)

    # Periodic work ----------------------------------------------------------------------------

    def _tick(self, event: Tick) -> None:
        self.nodes.tick()
        self.registry.tick()
        self.dispatch.tick()
        self.inputs.tick()
        self.drains.tick()
        self.durable.tick()

    def _shutdown(self, event: ShutdownRequested) -> None:
        self.shutting_down = True
        for container in list(self.containers.containers.values()):
            self.containers.stop(container)
