"""Operators taking nodes out of service: cordon, uncordon and drain (`corral node ...`).

A cordon is kept by the node's name, so a cordoned machine that restarts or reconnects comes back
cordoned. A drain cordons the node, then retires its containers: a retiring container keeps serving
while the autoscaler, which no longer counts it, starts its replacement on another node; it is
stopped gracefully (it finishes its running inputs and runs its exit hooks) once its replacement is
ready, or at once when none is on its way (no capacity elsewhere, or its service needs no container
now). Containers that never served stop at once. At the drain's timeout whatever still runs there
is killed. The node is CORDONED once its last container exited; `uncordon` ends a drain early.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral_protocol import DEFAULT_DRAIN_TIMEOUT_S
from corral_scheduler.effects import ArmTimer, CancelTimer
from corral_scheduler.errors import InvalidArgument
from corral_scheduler.events import DrainTimedOut, NodeCordonRequested, NodeDrainRequested
from corral_scheduler.lifecycle import ContainerState, NodeState
from corral_scheduler.model import Container, Node

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")

MAX_DRAIN_TIMEOUT_S = 7 * 24 * 3600.0
CS = ContainerState
# Containers already on their way out: a drain leaves them be.
_STOPPING = frozenset({CS.DRAINING, CS.KILLED, CS.START_TIMED_OUT, CS.FAILED, CS.LOST})


def _drain_key(node_id: str) -> str:
    return f"drain:{node_id}"


class Drains:
    """The cordoned node names and the drains in progress."""

    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self.cordoned: set[str] = set()  # node names
        self.deadlines: dict[str, float] = {}  # draining node id -> when its containers are killed (monotonic)

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {NodeCordonRequested: self._cordon_requested, NodeDrainRequested: self._drain_requested, DrainTimedOut: self._timed_out}

    def is_cordoned(self, name: str) -> bool:
        return name in self.cordoned

    # Cordon -----------------------------------------------------------------------------------

    def _cordon_requested(self, event: NodeCordonRequested) -> None:
        node = self.core.nodes.find(event.node)
        if event.cordon:
            self._cordon(node)
        else:
            self._uncordon(node)

    def _cordon(self, node: Node) -> None:
        """A lost or joining node's name is cordoned for when its session opens."""
        self.cordoned.add(node.name)
        if node.state is NodeState.READY:
            self.core.move_node(node, NodeState.CORDONED, "cordoned by an operator")
            self.core.nodes.hold(node)
            log.info("node %s cordoned: no new containers go there", node.name)

    def _uncordon(self, node: Node) -> None:
        self.cordoned.discard(node.name)
        if node.state is NodeState.DRAINING:
            self.forget(node)
            for container in self._on(node):
                container.retiring = False
        if node.state in (NodeState.CORDONED, NodeState.DRAINING):
            self.core.move_node(node, NodeState.READY, "uncordoned by an operator")
            self.core.nodes.release_hold(node)
            log.info("node %s uncordoned: it takes new containers again", node.name)

    # Drain ------------------------------------------------------------------------------------

    def _drain_requested(self, event: NodeDrainRequested) -> None:
        node = self.core.nodes.find(event.node)
        timeout = event.timeout_s if event.timeout_s else DEFAULT_DRAIN_TIMEOUT_S  # 0: not given
        if not (math.isfinite(timeout) and 0 < timeout <= MAX_DRAIN_TIMEOUT_S):
            raise InvalidArgument(f"the drain timeout must be between 0 and {MAX_DRAIN_TIMEOUT_S:g} seconds, got {event.timeout_s!r}")
        if node.state is NodeState.LOST:
            raise InvalidArgument(
                f"node {node.name} is lost ({node.state_reason}): nothing of it is left to drain; "
                "`corral node cordon` keeps it out of service when it comes back"
            )
        if not node.connected:  # joining: nothing runs there yet
            self._cordon(node)
            return
        self.cordoned.add(node.name)
        if node.state is not NodeState.DRAINING:
            self.core.move_node(node, NodeState.DRAINING, f"drained by an operator (timeout {timeout:g} s)")
            self.core.nodes.hold(node)
        self.deadlines[node.node_id] = self.core.now + timeout
        self.core.emit(ArmTimer(_drain_key(node.node_id), timeout, DrainTimedOut(node.node_id)))
        log.info("draining node %s: %d container(s), timeout %g s", node.name, len(node.containers), timeout)
        for container in self._on(node):
            container.retiring = True
        self._step(node)

    def tick(self) -> None:
        for node_id in list(self.deadlines):
            node = self.core.nodes.nodes.get(node_id)
            if node is not None:
                self._step(node)

    def _step(self, node: Node) -> None:
        """Stop the retiring containers whose replacements are ready, or that have none on the way;
        the node is drained once none is left."""
        on_node = self._on(node)
        if not on_node:
            self.forget(node)
            self.core.move_node(node, NodeState.CORDONED, "drained: its last container exited")
            log.info("node %s drained", node.name)
            return
        grace = max(0.0, self.deadlines[node.node_id] - self.core.now)
        cause = f"its node {node.name} is draining"
        serving: dict[str, list[Container]] = {}
        for container in on_node:
            if container.state in _STOPPING:
                continue
            serving.setdefault(container.service_id, [])
            if container.state is CS.READY:
                serving[container.service_id].append(container)
            else:  # it never served: its replacement starts elsewhere
                self.core.containers.stop(container, cause, grace_s=grace)
        for service_id, retiring in serving.items():
            service = self.core.registry.services[service_id]
            self.core.dispatch.scale(service)  # replacements, on other nodes
            others = [c for c in service.containers.values() if not c.retiring]
            ready = sum(c.state is CS.READY for c in others)
            coming = sum(c.state.is_starting for c in others)
            keep = min(max(0, self.core.dispatch.desired(service) - ready), coming)
            for container in sorted(retiring, key=lambda c: c.load)[:max(0, len(retiring) - keep)]:
                self.core.containers.stop(container, cause, grace_s=grace)

    def _timed_out(self, event: DrainTimedOut) -> None:
        node = self.core.nodes.nodes.get(event.node_id)
        if node is None or node.state is not NodeState.DRAINING:
            return
        log.warning("the drain of node %s ran out of time: killing its %d container(s)", node.name, len(node.containers))
        for container in self._on(node):
            # Those stopping gracefully already have their own deadline (the drain's, at most STOP_GRACE_S).
            if container.state not in (CS.DRAINING, CS.KILLED, CS.START_TIMED_OUT):
                self.core.containers.kill(container, f"its node {node.name}'s drain ran out of time")

    def forget(self, node: Node) -> None:
        """The node's drain ends (drained, uncordoned, or the node was lost)."""
        if self.deadlines.pop(node.node_id, None) is not None:
            self.core.emit(CancelTimer(_drain_key(node.node_id)))

    def _on(self, node: Node) -> list[Container]:
        containers = self.core.containers.containers
        return [containers[cid] for cid in sorted(node.containers) if cid in containers]
