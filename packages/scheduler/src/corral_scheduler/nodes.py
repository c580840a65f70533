"""Nodes: joining (registration), connecting, heartbeats and loss, and the capacity each one has
reserved for its containers (what placement reads). Node states: `lifecycle.NodeState`.

A node is lost in one of three ways, with one outcome (`lose`): its session stream closes (the
driver sees it: a killed daemon, a closed connection), it sends nothing for `timeout_s` (checked on
each tick: a stopped daemon or a cut network, where the stream can stay open), or its machine
registers again under its name. Its containers are lost with it: inputs they ran retry elsewhere
where their policy allows, or fail naming the node; new containers go to the other nodes. The
plane ends the lost node's stream, so a node that was only cut off stops what it still runs and
registers again as a new node; anything it still reports running is stopped (`_heartbeat`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral_protocol.v1 import common_pb2
from corral_scheduler.effects import CloseNodeSession, StopContainer
from corral_scheduler.errors import NotFound
from corral_scheduler.events import NodeConnected, NodeHeartbeat, NodeJoined, NodeLost
from corral_scheduler.lifecycle import ContainerState, NodeState
from corral_scheduler.model import Container, Node
from corral_scheduler.placement import Cluster, NodeCapacity, Placement, Unplaceable, could_ever_run

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")

# How long queued calls wait for a node to (re)join before "no runtime node" fails them: a node
# daemon reconnects within 5 s of a restart of the plane (its backoff), an embedded one at once.
NODE_REJOIN_GRACE_S = 60.0
NODE_TIMEOUT_S = 10.0
"""A node silent this long is lost (`corral up --node-timeout`, CORRAL_NODE_TIMEOUT_S)."""
MAX_NODE_TIMEOUT_S = 3600.0
HEARTBEATS_PER_TIMEOUT = 4
"""Heartbeats a node sends within one timeout: one late or lost heartbeat never loses a node."""
MAX_HEARTBEAT_INTERVAL_S = 5.0
LOST_NODE_KEPT_S = 3600.0
"""How long `corral node list` still shows a lost node that did not come back."""


def heartbeat_interval_s(timeout_s: float) -> float:
    """The interval the plane gives registering nodes for their heartbeats."""
    return min(MAX_HEARTBEAT_INTERVAL_S, timeout_s / HEARTBEATS_PER_TIMEOUT)


class Nodes:
    def __init__(self, core: PlaneCore, timeout_s: float = NODE_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise ValueError(f"the node timeout must be a positive number of seconds, got {timeout_s!r}")
        self.core = core
        self.timeout_s = timeout_s
        self.nodes: dict[str, Node] = {}
        # Until then, queued calls wait for a node instead of failing for want of one: after a
        # restart (recovered calls), or after the loss of a node.
        self.rejoin_until = 0.0
        self.cluster = Cluster()  # the READY nodes, indexed for placement
        self._last_tick: float | None = None

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {NodeJoined: self._joined, NodeConnected: self._connected, NodeLost: self._lost, NodeHeartbeat: self._heartbeat}

    @property
    def heartbeat_interval_s(self) -> float:
        return heartbeat_interval_s(self.timeout_s)

    def connected_capacities(self) -> list[NodeCapacity]:
        return self.cluster.capacities()

    def place(self, resources: common_pb2.Resources, snapshot_key: str) -> Placement | None:
        """A READY node (and GPUs) for a new container; None to wait; raises `Unplaceable`.

        A request that only a cordoned or draining node could run waits for an operator to uncordon
        it; one that only a node lost in the last NODE_REJOIN_GRACE_S could run waits for it to come back."""
        try:
            return self.cluster.place(resources, snapshot_key)
        except Unplaceable:
            rejoining = self.core.now < self.rejoin_until
            awaited = [n for n in self.nodes.values()
                       if n.state in (NodeState.CORDONED, NodeState.DRAINING) or (rejoining and n.state is NodeState.LOST)]
            if any(could_ever_run(n.capacity, resources) for n in awaited):
                return None
            raise

    def connected_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.connected]

    def find(self, ref: str) -> Node:
        """A node by id or name (for operators' requests)."""
        node = self.nodes.get(ref) or next((n for n in self.nodes.values() if n.name == ref), None)
        if node is None:
            known = ", ".join(sorted(n.name for n in self.nodes.values())) or "none"
            raise NotFound(f"node {ref!r} not found (nodes: {known})")
        return node

    def seen(self, node_id: str) -> None:
        """Any message from a node is a sign of life."""
        node = self.nodes.get(node_id)
        if node is not None and node.state is not NodeState.LOST:
            node.last_heartbeat = self.core.wall
            node.last_seen = self.core.now

    # Joining and connecting -------------------------------------------------------------------

    def _joined(self, event: NodeJoined) -> None:
        """A node registers; one that registers again under its name replaces its old self."""
        for node in list(self.nodes.values()):
            if node.name == event.name:
                self.lose(node, f"node {node.name} registered again (it restarted or reconnected)")
                del self.nodes[node.node_id]
        inventory = event.inventory
        capacity = NodeCapacity(event.node_id, inventory.cpu, inventory.memory_mib, list(inventory.gpus), name=event.name,
                                simulated=inventory.simulated_gpus)
        node = Node(node_id=event.node_id, name=event.name, inventory=inventory, capacity=capacity,
                    last_heartbeat=self.core.wall, last_seen=self.core.now)
        node.history.record(self.core.now, None, node.state, "registered")
        self.nodes[event.node_id] = node
        log.info("node %s registered: %g cpu, %d MiB, %d gpu(s)%s", node.name, inventory.cpu, inventory.memory_mib,
                 len(inventory.gpus), " (simulated)" if inventory.simulated_gpus else "")

    def _connected(self, event: NodeConnected) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            raise NotFound(f"node {event.node_id!r} is not registered")
        if node.state is NodeState.LOST:
            # A stream that outlived its node's loss (or came back after it): the node registers again.
            raise NotFound(f"node {node.name} ({node.node_id}) was lost ({node.state_reason}); it must register again")
        self.seen(node.node_id)
        if node.state is not NodeState.JOINING:
            return  # a second stream of a connected node replaced its first (the driver swapped outboxes)
        if self.core.drains.is_cordoned(node.name):
            self.core.move_node(node, NodeState.CORDONED, "its session opened; its name is cordoned")
            return
        self.core.move_node(node, NodeState.READY, "its session opened")
        self.cluster.add(node.capacity)
        for service in list(self.core.registry.services.values()):
            self.core.dispatch.dispatch(service)

    # Placement membership (READY nodes only) ---------------------------------------------------

    def hold(self, node: Node) -> None:
        """No new container goes to the node (cordon, drain)."""
        self.cluster.remove(node.node_id)

    def release_hold(self, node: Node) -> None:
        """The node takes new containers again; waiting work goes there."""
        self.cluster.add(node.capacity)
        for service in list(self.core.registry.services.values()):
            self.core.dispatch.dispatch(service)

    # Loss -------------------------------------------------------------------------------------

    def _lost(self, event: NodeLost) -> None:
        node = self.nodes.get(event.node_id)
        if node is not None:
            self.lose(node, event.reason or f"node {node.name} disconnected (its session stream closed)")

    def lose(self, node: Node, reason: str) -> None:
        """The node is gone for the plane, and its containers with it (see the module's docstring)."""
        if node.state is NodeState.LOST:
            return
        self.core.move_node(node, NodeState.LOST, reason)
        node.state_reason = reason
        node.lost_at = self.core.now
        self.core.emit(CloseNodeSession(node.node_id))
        # Its queued work waits a while for a node to come back rather than failing at once.
        self.rejoin_until = max(self.rejoin_until, self.core.now + NODE_REJOIN_GRACE_S)
        self.cluster.remove(node.node_id)
        self.core.snapshots.forget_node(node.node_id)
        self.core.drains.forget(node)
        # A warning only when work is lost: not for a node with no container, nor while the plane
        # itself stops (an embedded node goes with it at every `corral run`).
        level = logging.WARNING if node.containers and not self.core.shutting_down else logging.INFO
        log.log(level, "%s: its %d container(s) are lost with it", reason, len(node.containers))
        for container_id in list(node.containers):
            container = self.core.containers.containers.get(container_id)
            if container is None:
                continue
            if container.state is not ContainerState.LOST:  # its worker's connection may have broken first
                self.core.move_container(container, ContainerState.LOST, reason)
            # Whatever of it still runs is stopped when the node registers again (`_heartbeat`).
            self.core.containers.gone(container_id, None, reason, "", node_lost=True)

    def tick(self) -> None:
        """Nodes silent past the timeout are lost; lost nodes that never came back are forgotten."""
        now = self.core.now
        previous, self._last_tick = self._last_tick, now
        if previous is None or now - previous > self.timeout_s / 2:
            # The first tick, or the plane itself did not run (a stalled event loop): the nodes'
            # messages of that time may not be read yet, so silence is judged from now rather
            # than losing every node.
            if previous is not None:
                log.warning("the control plane did not run for %.1f s; node heartbeats are judged from now", now - previous)
            for node in self.nodes.values():
                node.last_seen = max(node.last_seen, now)
            return
        for node in list(self.nodes.values()):
            if node.state is NodeState.LOST:
                if now - node.lost_at > LOST_NODE_KEPT_S:
                    del self.nodes[node.node_id]
                continue
            silent = now - node.last_seen
            if silent <= self.timeout_s:
                continue
            if node.state is NodeState.JOINING:
                self.lose(node, f"node {node.name} registered but did not open its session within {self.timeout_s:g} s")
            else:
                self.lose(node, f"node {node.name} stopped answering (no heartbeat for {silent:.1f} s)")

    # Heartbeats ---------------------------------------------------------------------------------

    def _heartbeat(self, event: NodeHeartbeat) -> None:
        node = self.nodes.get(event.node_id)
        if node is None or node.state is NodeState.LOST:
            return  # the last words of a stream the plane already ended
        self.seen(node.node_id)
        if event.snapshots is not None:
            self.core.snapshots.node_images(node, event.snapshots)
        for container_id in event.running or ():
            if container_id not in node.containers and not self.core.durable.awaits_container(container_id):
                # It belongs to no live assignment: a restarted plane never placed it, or it ran on
                # this machine before the node was lost and registered again. One rule for both.
                log.warning("node %s runs container %s that the control plane does not know; stopping it", node.name, container_id)
                self.core.emit(StopContainer(node.node_id, container_id))
        if event.running is not None:
            self.core.durable.node_reported(node.name, event.running)
        if event.inventory is not None:
            # GPU memory and utilisation as of now; a device that vanished is no longer placed.
            node.inventory = event.inventory
            self.cluster.update_gpus(node.capacity, list(event.inventory.gpus))
        if event.usage is not None:  # shown by `corral container list` (views.container_infos)
            node.usage = {usage.container_id: usage for usage in event.usage}

    # Capacity ---------------------------------------------------------------------------------

    def reserve(self, node: Node, container: Container) -> None:
        resources = container.resources
        self.cluster.reserve(node.capacity, resources.cpu, resources.memory_mib, container.gpu_uuids)
        node.containers.add(container.container_id)

    def release(self, container: Container) -> None:
        node = self.nodes.get(container.node_id)
        if node is None:
            return
        node.containers.discard(container.container_id)
        resources = container.resources
        self.cluster.release(node.capacity, resources.cpu, resources.memory_mib, container.gpu_uuids)
