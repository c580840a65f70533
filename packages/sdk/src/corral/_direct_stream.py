"""Generator calls on the direct path: items arrive on a container connection of the call's own.

A generator call takes a fresh connection (never a pooled one), so closing it is how the caller
says it stopped consuming: the container's next send fails and it closes the generator, then takes
its next input. Sync callers use a blocking socket (`open_stream`); asyncio callers an asyncio
stream (`open_stream_aio`), closed when the consumer leaves its `async for` or its task is
cancelled. When the direct path cannot take the call (no route, busy, draining, an older runtime)
both answer None and the caller uses the control plane's `InvokeStream`. A connection that breaks
mid-stream fails the call with why the container ended (`DirectPath.lost`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncGenerator, Iterator

from corral import _direct
from corral._direct_exchange import ACCEPT_WAIT_S, CONNECT_TIMEOUT_S, NotSent, handshake
from corral._direct_routes import ACCEPTED, Route, RouteTable
from corral.exception import ContainerExitedError, InvalidError
from corral_protocol.framing import MAX_HELLO_BYTES, FrameError, read_frame, read_frame_aio, tune_socket
from corral_protocol.v1 import common_pb2, worker_pb2

W = worker_pb2


class _Stream:
    """What both kinds of stream share: the call it belongs to, and how it ended."""

    def __init__(self, path: _direct.DirectPath, service_id: str, method: str, container_id: str) -> None:
        self._path = path
        self._service_id = service_id
        self._method = method
        self._container_id = container_id
        self._pending: worker_pb2.DirectResponse | None = None
        self.result: common_pb2.Result | None = None

    def _take(self, response: worker_pb2.DirectResponse) -> common_pb2.Payload | None:
        """The item a response carries; None at the end (`result` is then set)."""
        kind = response.WhichOneof("message")
        if kind == "generator_item":
            return response.generator_item.value
        if kind == "output":
            self.result = response.output.result
        else:
            self.result = common_pb2.Result(status=common_pb2.RESULT_STATUS_INTERNAL_ERROR, message=f"unexpected direct response {kind!r}")
        return None


class DirectStream(_Stream):
    """An open generator call (blocking): `items()` yields payloads, then `result` holds how it ended."""

    def __init__(self, sock: socket.socket, path: _direct.DirectPath, service_id: str, method: str, container_id: str) -> None:
        super().__init__(path, service_id, method, container_id)
        self._sock = sock

    def items(self) -> Iterator[common_pb2.Payload]:
        try:
            while True:
                response = self._pending if self._pending is not None else self._read()
                self._pending = None
                item = self._take(response)
                if item is None:
                    return
                yield item
        finally:
            self._sock.close()  # early: tells the container to stop the generator

    def _read(self) -> worker_pb2.DirectResponse:
        try:
            frame = read_frame(self._sock)
            if frame is None:
                raise FrameError("the container closed the connection")
        except (OSError, FrameError) as err:
            self._sock.close()
            raise self._path.lost(self._service_id, self._container_id, self._method, err) from None
        return W.DirectResponse.FromString(frame)


class AioDirectStream(_Stream):
    """An open generator call (asyncio): `items()` yields payloads, then `result` holds how it ended."""

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, path: _direct.DirectPath, service_id: str,
                 method: str, container_id: str) -> None:
        super().__init__(path, service_id, method, container_id)
        self._reader = reader
        self._writer = writer

    async def items(self) -> AsyncGenerator[common_pb2.Payload, None]:
        try:
            while True:
                response = self._pending if self._pending is not None else await self._read()
                self._pending = None
                item = self._take(response)
                if item is None:
                    return
                yield item
        finally:
            self.close()  # early (a break, a cancelled task): tells the container to stop the generator

    def close(self) -> None:
        self._writer.transport.abort()

    async def _read(self) -> worker_pb2.DirectResponse:
        try:
            frame = await read_frame_aio(self._reader)
            if frame is None:
                raise FrameError("the container closed the connection")
        except (OSError, FrameError) as err:
            self.close()
            raise await self._path.lost_aio(self._service_id, self._container_id, self._method, err) from None
        return W.DirectResponse.FromString(frame)


def _route(path: _direct.DirectPath, table: RouteTable) -> Route | None:
    if not table.enabled or not table.routes:
        return None
    return path._pick(table)


def _opened(path: _direct.DirectPath, table: RouteTable, route: Route, first: worker_pb2.DirectResponse) -> bool:
    """Whether the container took the call (its first answer is not a refusal)."""
    if first.WhichOneof("message") != "rejected":
        return True
    if first.rejected.reason == W.DIRECT_REJECT_REASON_TOO_LARGE:
        raise InvalidError(first.rejected.message)
    if first.rejected.reason == W.DIRECT_REJECT_REASON_DRAINING:
        path._forget(table, route)
    return False


def open_stream(path: _direct.DirectPath, service_id: str, method: str, args: common_pb2.Payload) -> DirectStream | None:
    """Send a generator input straight to a container; None when the direct path did not take it."""
    table = path._table(service_id)
    if table.stale(time.monotonic()):
        path._refresh(service_id, table)
    route = _route(path, table)
    if route is None:
        return None
    try:
        sock = socket.create_connection((route.host, route.port), timeout=CONNECT_TIMEOUT_S)
        tune_socket(sock)
        if not handshake(sock, route):
            sock.close()
            path._done(table, route, None)
            return None  # an older runtime answers no want_accepted: the queue streams it
        sock.settimeout(None)
        sock.sendall(path._request(method, args))
    except (NotSent, OSError):
        path._done(table, route, None)
        return None  # the input was never sent: the queue takes it
    with path._lock:
        route.inflight -= 1  # the connection is the generator's own; the count is for pooled calls
    stream = DirectStream(sock, path, service_id, method, route.container_id)
    try:
        first = stream._read()
    except ContainerExitedError:
        path._forget(table, route)
        raise
    if not _opened(path, table, route, first):
        sock.close()
        return None
    stream._pending = first
    return stream


async def _connect_aio(route: Route) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new connection to the container, its hello accepted. NotSent when the container cannot
    be reached, refuses it, or does not answer want_accepted (an older runtime: the queue streams it)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(route.host, route.port), CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as err:
        raise NotSent(str(err) or type(err).__name__) from None
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            tune_socket(sock)
        writer.write(route.hello)
        frame = await asyncio.wait_for(read_frame_aio(reader, MAX_HELLO_BYTES), ACCEPT_WAIT_S)
    except asyncio.TimeoutError:
        writer.transport.abort()
        raise NotSent("the container did not answer the hello (an older runtime)", forget=False) from None
    except (OSError, FrameError) as err:  # closed at the container's connection bound, or gone
        writer.transport.abort()
        raise NotSent(str(err) or type(err).__name__, forget=False) from None
    except BaseException:
        writer.transport.abort()
        raise
    if frame != ACCEPTED:
        writer.transport.abort()
        # A refused hello (token revoked, version) means the route is useless; an EOF is a full container.
        raise NotSent("the container did not accept the connection", forget=frame is not None)
    return reader, writer


async def open_stream_aio(path: _direct.DirectPath, service_id: str, method: str, args: common_pb2.Payload) -> AioDirectStream | None:
    """As `open_stream`, for asyncio callers."""
    table = path._table(service_id)
    if table.stale(time.monotonic()):
        await path._refresh_aio(service_id, table)
    route = _route(path, table)
    if route is None:
        return None
    try:
        reader, writer = await _connect_aio(route)
    except NotSent as err:
        path._done(table, route, None)
        if err.forget:
            path._forget(table, route)
        return None  # the input was never sent: the queue takes it
    except BaseException:
        path._done(table, route, None)
        raise
    with path._lock:
        route.inflight -= 1  # the connection is the generator's own; the count is for pooled calls
    stream = AioDirectStream(writer, reader, path, service_id, method, route.container_id)
    try:
        writer.write(path._request(method, args))
        first = await stream._read()
    except ContainerExitedError:
        path._forget(table, route)
        raise
    except BaseException:
        stream.close()
        raise
    if not _opened(path, table, route, first):
        stream.close()
        return None
    stream._pending = first
    return stream
