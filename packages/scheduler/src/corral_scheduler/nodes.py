"""Nodes: joining (registration), connecting, heartbeats and loss, and the capacity each one has
reserved for its containers (what placement reads)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral_protocol.v1 import common_pb2
from corral_scheduler.effects import StopContainer
from corral_scheduler.errors import NotFound
from corral_scheduler.events import NodeConnected, NodeHeartbeat, NodeJoined, NodeLost
from corral_scheduler.model import Container, Node
from corral_scheduler.placement import Cluster, NodeCapacity, Placement

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")

# How long queued calls wait for a node to (re)join before "no runtime node" fails them: a node
# daemon reconnects within 5 s of a restart of the plane (its backoff), an embedded one at once.
NODE_REJOIN_GRACE_S = 60.0


class Nodes:
    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self.nodes: dict[str, Node] = {}
        # Until then, queued calls wait for a node instead of failing for want of one: after a
        # restart (recovered calls), or after the loss of a node.
        self.rejoin_until = 0.0
        self.cluster = Cluster()  # the connected nodes, indexed for placement

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {NodeJoined: self._joined, NodeConnected: self._connected, NodeLost: self._lost, NodeHeartbeat: self._heartbeat}

    def connected_capacities(self) -> list[NodeCapacity]:
        return self.cluster.capacities()

    def place(self, resources: common_pb2.Resources, snapshot_key: str) -> Placement | None:
        """A connected node (and GPUs) for a new container; None to wait; raises `Unplaceable`."""
        return self.cluster.place(resources, snapshot_key)

    def connected_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.connected]

    def seen(self, node_id: str) -> None:
        """Any message from a node is a sign of life."""
        node = self.nodes.get(node_id)
        if node is not None:
            node.last_heartbeat = self.core.wall

    def _joined(self, event: NodeJoined) -> None:
        """A node registers; one that registers again under its name replaces its old self."""
        for node in list(self.nodes.values()):
            if node.name == event.name:
                self._lost(NodeLost(node.node_id))
                del self.nodes[node.node_id]
        inventory = event.inventory
        capacity = NodeCapacity(event.node_id, inventory.cpu, inventory.memory_mib, list(inventory.gpus), name=event.name,
                                simulated=inventory.simulated_gpus)
        node = Node(node_id=event.node_id, name=event.name, inventory=inventory, capacity=capacity, last_heartbeat=self.core.wall)
        self.nodes[event.node_id] = node
        log.info("node %s registered: %g cpu, %d MiB, %d gpu(s)%s", node.name, inventory.cpu, inventory.memory_mib,
                 len(inventory.gpus), " (simulated)" if inventory.simulated_gpus else "")

    def _connected(self, event: NodeConnected) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            raise NotFound(f"node {event.node_id!r} is not registered")
        node.connected = True
        node.last_heartbeat = self.core.wall
        self.cluster.add(node.capacity)
        for service in list(self.core.registry.services.values()):
            self.core.dispatch.dispatch(service)

    def _lost(self, event: NodeLost) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            return
        node.connected = False
        # Its queued work waits a while for a node to come back rather than failing at once.
        self.rejoin_until = max(self.rejoin_until, self.core.now + NODE_REJOIN_GRACE_S)
        self.cluster.remove(node.node_id)
        self.core.snapshots.forget_node(node.node_id)
        for container_id in list(node.containers):
            self.core.containers.gone(container_id, None, f"its node {node.name} disconnected", "")

    def _heartbeat(self, event: NodeHeartbeat) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            return
        node.last_heartbeat = self.core.wall
        if event.snapshots is not None:
            self.core.snapshots.node_images(node, event.snapshots)
        for container_id in event.running or ():
            if container_id not in node.containers and not self.core.durable.awaits_container(container_id):
                # It belongs to no live assignment: a restarted plane never placed it, or forgot it.
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
