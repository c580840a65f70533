"""The control plane's node and worker sessions: each stream's outbox, and its messages as events."""

from __future__ import annotations

import asyncio

from corral_protocol.v1 import node_pb2, worker_pb2
from corral_scheduler import events as ev
from corral_scheduler import ids
from corral_scheduler.core import PlaneCore
from corral_scheduler.errors import ApiError, PermissionDenied
from corral_scheduler.logs import LogStore
from corral_scheduler.wire_events import node_events, worker_events


class Sessions:
    """Opening, feeding and closing the streams of nodes and workers (part of `ControlPlane`)."""

    core: PlaneCore
    _node_outboxes: dict[str, asyncio.Queue[node_pb2.NodeSessionResponse | None]]
    _worker_outboxes: dict[str, asyncio.Queue[worker_pb2.WorkerSessionResponse | None]]
    logs: LogStore

    def handle(self, event: ev.Event) -> None:
        raise NotImplementedError

    # Node sessions ----------------------------------------------------------------------------

    def register_node(self, request: node_pb2.RegisterNodeRequest) -> str:
        """A node joins; returns its id."""
        node_id = ids.new_id("nd")
        self.handle(ev.NodeJoined(node_id, request.name or node_id, request.inventory))
        return node_id

    def open_node_session(self, node_id: str) -> asyncio.Queue[node_pb2.NodeSessionResponse | None]:
        """The node's session began: commands for it go to the queue returned (None ends it)."""
        outbox: asyncio.Queue[node_pb2.NodeSessionResponse | None] = asyncio.Queue()
        previous = self._node_outboxes.get(node_id)
        self._node_outboxes[node_id] = outbox
        try:
            self.handle(ev.NodeConnected(node_id))
        except ApiError:
            if previous is None:
                self._node_outboxes.pop(node_id, None)
            else:
                self._node_outboxes[node_id] = previous
            raise
        return outbox

    def node_event(self, node_id: str, message: node_pb2.NodeSessionRequest) -> None:
        for event in node_events(node_id, message):
            self.handle(event)

    def close_node_session(self, node_id: str, outbox: asyncio.Queue[node_pb2.NodeSessionResponse | None]) -> None:
        """The node's stream ended; unless the plane ended it on purpose, the node is lost."""
        if self._node_outboxes.get(node_id) is outbox:
            del self._node_outboxes[node_id]
            self.handle(ev.NodeLost(node_id))

    def end_node_session(self, node_id: str) -> None:
        """End the stream of a node the plane declared lost; nothing more is sent there."""
        outbox = self._node_outboxes.pop(node_id, None)
        if outbox is not None:
            outbox.put_nowait(None)

    # Worker sessions ----------------------------------------------------------------------------

    def open_worker_session(self, container_id: str, token: str) -> asyncio.Queue[worker_pb2.WorkerSessionResponse | None]:
        """A worker connected with its token: its messages go to the queue returned, `ContainerInit` first."""
        if self.core.containers.owner_of(token) != container_id or container_id not in self.core.containers.containers:
            raise PermissionDenied(f"this token does not belong to container {container_id!r}")
        if container_id in self._worker_outboxes:
            raise PermissionDenied(f"container {container_id!r} is already connected")
        outbox: asyncio.Queue[worker_pb2.WorkerSessionResponse | None] = asyncio.Queue()
        self._worker_outboxes[container_id] = outbox
        self.handle(ev.WorkerConnected(container_id))
        return outbox

    def worker_message(self, container_id: str, message: worker_pb2.WorkerSessionRequest) -> None:
        if message.WhichOneof("message") == "logs":  # output for the log store; no state changes
            container = self.core.containers.containers.get(container_id)
            if container is not None:
                self.logs.ingest(self.core.registry.services[container.service_id].app_id, container_id, message.logs)
            return
        for event in worker_events(container_id, message):
            self.handle(event)

    def close_worker_session(self, container_id: str, outbox: asyncio.Queue[worker_pb2.WorkerSessionResponse | None]) -> None:
        """The worker's stream ended; unless the plane ended it on purpose, the worker is lost. Nothing
        more is sent there: the outbox is emptied and closed at once, and the inputs still in it, which
        never reached the worker, are queued again."""
        if self._worker_outboxes.get(container_id) is not outbox:
            return
        del self._worker_outboxes[container_id]
        undelivered = []
        while not outbox.empty():
            message = outbox.get_nowait()
            if message is not None and message.HasField("input"):
                undelivered.append(message.input.input_id)
        outbox.put_nowait(None)
        self.handle(ev.WorkerDisconnected(container_id, tuple(undelivered)))
