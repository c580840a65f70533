"""What the direct path keeps per service and per container: the route table the control plane
hands out, each container's route with its pooled idle connections (blocking sockets, and asyncio
transports per event loop), and the asyncio connection itself (one input at a time)."""

from __future__ import annotations

import asyncio
import select
import socket
import time
import weakref
from dataclasses import dataclass, field

from corral_protocol import PROTOCOL_VERSION
from corral_protocol.framing import CLIENT_REUSE_S, FrameBuffer, FrameError, encode, tune_socket
from corral_protocol.v1 import control_pb2, worker_pb2

W = worker_pb2
REFRESH_S = 1.0  # how old a route table may get while it has routes
REFRESH_EMPTY_S = 0.25  # ... and while it has none (a scale-up from zero is under way)
REFRESH_DISABLED_S = 30.0
ACCEPTED = W.DirectResponse(accepted=W.DirectAccepted()).SerializeToString()


@dataclass(eq=False)
class Route:
    container_id: str
    host: str
    port: int
    hello: bytes
    slots: int
    inflight: int = 0
    dead: bool = False
    accepts: bool = True  # False: the container does not answer want_accepted (an older runtime)
    idle: list[tuple[socket.socket, float]] = field(default_factory=list)  # (connection, idle since)
    aio_idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[AioConnection]] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    @classmethod
    def from_proto(cls, route: control_pb2.ContainerRoute) -> Route:
        host, _, port = route.address.rpartition(":")
        hello = W.DirectRequest(hello=W.DirectHello(token=route.token, protocol_version=PROTOCOL_VERSION, want_accepted=True))
        return cls(route.container_id, host.strip("[]"), int(port), encode(hello.SerializeToString()), max(1, route.slots))

    def close(self) -> None:
        self.dead = True
        for sock, _ in self.idle:
            sock.close()
        self.idle.clear()
        for loop, conns in list(self.aio_idle.items()):
            idle, conns[:] = list(conns), []
            for conn in idle:
                # A transport belongs to its event loop's thread; this may run on another one.
                if loop.is_closed():
                    continue
                try:
                    running = asyncio.get_running_loop()
                except RuntimeError:
                    running = None
                if running is loop:
                    conn.close()
                else:
                    loop.call_soon_threadsafe(conn.close)


@dataclass(eq=False)
class RouteTable:
    enabled: bool = True
    routes: dict[str, Route] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    refreshing: bool = False
    turn: int = 0

    def stale(self, now: float) -> bool:
        if not self.enabled:
            return now - self.fetched_at > REFRESH_DISABLED_S
        return now - self.fetched_at > (REFRESH_S if self.routes else REFRESH_EMPTY_S)


class AioConnection(asyncio.Protocol):
    """One asyncio connection to a container, one input at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self.handshaking = False  # deliver DirectAccepted to the waiter; otherwise it is dropped
        self.received = 0  # bytes received for the current exchange
        self._frames = FrameBuffer()
        self._waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_socket(sock)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            frames = self._frames.feed(data)
        except FrameError as err:
            self._fail(err)
            return
        for frame in frames:
            if frame == ACCEPTED and not self.handshaking:
                continue  # a late acceptance (see ACCEPT_WAIT_S) carries nothing
            waiter, self._waiter = self._waiter, None
            if waiter is None or waiter.done():
                self._fail(FrameError("the container sent a frame nobody asked for"))
                return
            waiter.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or FrameError("the container closed the connection"))

    def _fail(self, err: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)
        self.close()

    async def exchange(self, request: bytes) -> bytes:
        if self.closed or self.transport is None:
            raise FrameError("the connection is closed")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.received = 0
        self.transport.write(request)
        return await waiter

    def reusable(self, now: float) -> bool:
        """An idle pooled connection that may take an input: open, not idle for too long, and with
        nothing to read. The event loop may not have seen yet that the container closed or reset it
        (the socket is readable then); a container never sends on an idle connection."""
        if self.closed or self.transport is None or now - self.idle_since >= CLIENT_REUSE_S:
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
