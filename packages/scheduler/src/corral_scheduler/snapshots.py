"""Memory snapshots in the control plane: which start (take, restore or cold) a new container gets,
the snapshot point of a taking container, the nodes' reports of images, and deleting images.

The keys and the book of images are in `snapshot_keys`; this module moves containers through the
snapshot phases of their lifecycle (taking -> at the snapshot point -> starting; restoring).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from corral_protocol.v1 import common_pb2, control_pb2, node_pb2
from corral_scheduler.effects import CloseWorkerSession, DeleteSnapshots
from corral_scheduler.errors import NotFound
from corral_scheduler.events import SnapshotReady, SnapshotsDeleted, SnapshotTaken
from corral_scheduler.lifecycle import ContainerState
from corral_scheduler.model import Container, Node, Service
from corral_scheduler.snapshot_keys import SnapshotBook, StartMode, snapshot_key

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")


class Snapshots:
    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self.book = SnapshotBook()
        self._keys: dict[str, str] = {}  # by service id

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {SnapshotReady: self._ready, SnapshotTaken: self._taken, SnapshotsDeleted: self._deleted}

    def key_for(self, service: Service) -> str:
        """The service's snapshot key; empty when it does not use snapshots."""
        if not service.options.enable_memory_snapshot:
            return ""
        key = self._keys.get(service.service_id)
        if key is None:
            app = self.core.registry.apps[service.app_id]
            key = snapshot_key(service.app_id, app.bundle_hash, service.class_def, service.parameters, service.options)
            self._keys[service.service_id] = key
        return key

    def plan(self, service: Service, node: Node, container: Container, start: node_pb2.StartContainer, key: str) -> None:
        """Take, restore or start cold: one container per (node, key) dumps at a time; a broken key
        or a node without CRIU starts cold (with one warning)."""
        if not key:
            return
        if not node.inventory.snapshots.available:
            self.book.warn_unsupported(node.name, service.class_def.name, node.inventory.snapshots.reason)
            return
        mode = self.book.mode_for(node.node_id, key)
        container.snapshot_key = key
        container.start_mode = mode
        if mode == StartMode.COLD:
            return
        start.snapshot_key = key
        if mode == StartMode.TAKE:
            start.take_snapshot = True
            container.pre_snapshot_token = self.core.new_token()
            start.pre_snapshot_token = container.pre_snapshot_token
            self.core.containers.tokens[container.pre_snapshot_token] = container.container_id
            self.book.taking[(node.node_id, key)] = container.container_id

    def _ready(self, event: SnapshotReady) -> None:
        """The snap hooks ran; the worker closes its connection and the node dumps it. Its
        pre-snapshot token dies here: the image must hold no live credential."""
        container = self.core.containers.containers.get(event.container_id)
        if container is None:
            return
        self.core.containers.tokens.pop(container.pre_snapshot_token, None)
        # While it drains (a stop crossed the message) it stays draining: the worker goes quiet for
        # its dump either way, and on reconnecting it is told to shut down.
        if container.state != ContainerState.DRAINING:
            self.core.move_container(container, ContainerState.AT_SNAPSHOT_POINT, "its snap=True hooks ran")
        self.core.emit(CloseWorkerSession(container.container_id))

    def _taken(self, event: SnapshotTaken) -> None:
        self.core.nodes.seen(event.node_id)
        node = self.core.nodes.nodes.get(event.node_id)
        result = event.result
        self.book.taking.pop((event.node_id, result.snapshot_key), None)
        if not result.ok:
            self.book.failed(result.snapshot_key, result.error)
        elif node is not None:
            self.book.image_taken(node.node_id, result.image)
            node.capacity.snapshot_keys = self.book.held_keys(node.node_id)
            log.info("node %s took snapshot %s", node.name, result.snapshot_key[:12])

    def restore_failed(self, container: Container, error: str) -> None:
        """The node fell back to a cold start: its image of the key is gone."""
        node = self.core.nodes.nodes[container.node_id]
        container.start_mode = StartMode.COLD
        self.book.failed(container.snapshot_key, f"restore on node {node.name}: {error}")
        self.book.forget_image(node.node_id, container.snapshot_key)
        node.capacity.snapshot_keys = self.book.held_keys(node.node_id)

    def node_images(self, node: Node, images: Iterable[common_pb2.SnapshotImage]) -> None:
        self.book.node_images(node.node_id, images)
        node.capacity.snapshot_keys = self.book.held_keys(node.node_id)

    def forget_node(self, node_id: str) -> None:
        self.book.forget_node(node_id)

    def container_gone(self, container: Container) -> None:
        if self.book.taking.get((container.node_id, container.snapshot_key)) == container.container_id:
            del self.book.taking[(container.node_id, container.snapshot_key)]

    def select(self, request: control_pb2.DeleteSnapshotsRequest) -> list[str]:
        """The keys a delete request names: by key (or unique key prefix), by app, or all."""
        held = {(image.snapshot_key, image.app_id) for images in self.book.images.values() for image in images}
        chosen: set[str] = set()
        if request.all:
            chosen = {key for key, _ in held}
        if request.app:
            registry = self.core.registry
            known = registry.deployed_id(request.app) is not None or request.app in registry.apps
            app_id = registry.find_app(request.app).app_id if known else request.app
            chosen |= {key for key, owner in held if owner == app_id}
        for prefix in request.snapshot_keys:
            matches = {key for key, _ in held if key.startswith(prefix)}
            if len(matches) != 1:
                raise NotFound(f"no snapshot key starts with {prefix!r}" if not matches else f"{prefix!r} matches several snapshots; give more of the key")
            chosen |= matches
        return sorted(chosen)

    def _deleted(self, event: SnapshotsDeleted) -> None:
        if not event.keys:
            return
        self.delete_on_nodes(node_pb2.DeleteSnapshots(snapshot_keys=list(event.keys)))
        self.book.forget(event.keys)
        for node in self.core.nodes.nodes.values():
            node.capacity.snapshot_keys = self.book.held_keys(node.node_id)

    def delete_on_nodes(self, delete: node_pb2.DeleteSnapshots) -> None:
        for node in self.core.nodes.connected_nodes():
            self.core.emit(DeleteSnapshots(node.node_id, delete))
