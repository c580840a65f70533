"""One direct input over one container connection, for `DirectPath`: pooled blocking sockets for
sync callers and per-event-loop asyncio connections for `.aio` callers, the hello and its
`DirectAccepted` (see ACCEPT_WAIT_S), and telling an input that never left this process (`NotSent`:
the control plane may take it) from one the container may have read."""

from __future__ import annotations

import asyncio
import select
import socket
import time

from corral._direct_routes import ACCEPTED, AioConnection, Route
from corral_protocol.framing import CLIENT_REUSE_S, MAX_HELLO_BYTES, FrameError, read_frame, tune_socket
from corral_protocol.v1 import worker_pb2

W = worker_pb2
MAX_IDLE_PER_ROUTE = 256
CONNECT_TIMEOUT_S = 5.0
# How long a new connection waits for DirectAccepted. A container that sends none within it is taken
# for a runtime older than DirectAccepted (it waits for the input instead): the input follows on the
# same connection, and later connections to it send hello and input together, as before.
ACCEPT_WAIT_S = 1.0


class NotSent(Exception):
    """The input never left this process; the control plane may take it. `forget`: the container
    itself looks gone, so drop its route too. `refused`: its port refused the connection (its
    process is gone, though the control plane may not know yet)."""

    def __init__(self, message: str, forget: bool = True, refused: bool = False) -> None:
        super().__init__(message)
        self.forget = forget
        self.refused = refused


class Unread(Exception):
    """The container reset the connection before it answered a byte: it never read the input (a
    process that reads a whole frame and then dies closes with a FIN, not a reset), so the input
    may go elsewhere. Typically a pooled connection of a container that is gone."""


# Sync callers ----------------------------------------------------------------------------------


def exchange(route: Route, request: bytes) -> worker_pb2.DirectResponse:
    sock = _checkout(route)
    if sock is not None:
        try:
            return _exchange_on(route, sock, request)
        except Unread:
            pass  # a stale pooled connection: once more on a fresh one (refused if the container is gone)
    try:
        sock = socket.create_connection((route.host, route.port), timeout=CONNECT_TIMEOUT_S)
        tune_socket(sock)
    except OSError as err:
        raise NotSent(str(err), refused=isinstance(err, ConnectionRefusedError)) from None
    if route.accepts:
        route.accepts = handshake(sock, route)
    else:
        sock.settimeout(None)
        request = route.hello + request
    try:
        return _exchange_on(route, sock, request)
    except Unread as err:
        raise NotSent(str(err)) from None


def _exchange_on(route: Route, sock: socket.socket, request: bytes) -> worker_pb2.DirectResponse:
    try:
        sock.sendall(request)
    except OSError as err:  # not all of the input left: the container cannot have read it
        sock.close()
        raise Unread(str(err)) from None
    try:
        try:
            sock.recv(1, socket.MSG_PEEK)  # waits for the first byte of the answer
        except (ConnectionResetError, BrokenPipeError) as err:
            raise Unread(str(err)) from None
        while True:
            frame = read_frame(sock)
            if frame is None:
                raise FrameError("the container closed the connection")
            if frame != ACCEPTED:  # a late acceptance (see ACCEPT_WAIT_S) carries nothing
                break
    except BaseException:
        sock.close()
        raise
    response = W.DirectResponse.FromString(frame)
    if response.WhichOneof("message") == "output" or response.rejected.reason == W.DIRECT_REJECT_REASON_BUSY:
        _checkin(route, sock)
    else:
        sock.close()
    return response


def handshake(sock: socket.socket, route: Route) -> bool:
    """Send the hello and wait for DirectAccepted: True once accepted, False when no answer came
    within ACCEPT_WAIT_S (an older runtime). A close or refusal raises NotSent: the input was
    never sent."""
    try:
        sock.sendall(route.hello)
        readable, _, _ = select.select([sock], [], [], ACCEPT_WAIT_S)
        if not readable:
            sock.settimeout(None)
            return False
        frame = read_frame(sock, MAX_HELLO_BYTES)
    except (OSError, FrameError) as err:  # closed at the container's connection bound, or gone
        sock.close()
        raise NotSent(str(err) or type(err).__name__, forget=False) from None
    sock.settimeout(None)
    response = W.DirectResponse.FromString(frame) if frame is not None else None
    if response is None or response.WhichOneof("message") != "accepted":
        sock.close()
        # A refused hello (token revoked, version) means the route is useless; an EOF is a full container.
        raise NotSent("the container did not accept the connection", forget=response is not None)
    return True


def _checkout(route: Route) -> socket.socket | None:
    now = time.monotonic()
    while True:
        try:
            sock, since = route.idle.pop()
        except IndexError:
            return None
        if now - since >= CLIENT_REUSE_S:
            sock.close()  # the container may be closing it for idleness right now
            continue
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return sock  # nothing to read: the idle connection is still open
        except OSError:
            pass
        sock.close()  # closed by the container (it stopped), or out of step: never reuse


def _checkin(route: Route, sock: socket.socket) -> None:
    if route.dead or len(route.idle) >= MAX_IDLE_PER_ROUTE:
        sock.close()
    else:
        route.idle.append((sock, time.monotonic()))


# Asyncio callers -------------------------------------------------------------------------------


async def exchange_aio(route: Route, request: bytes) -> worker_pb2.DirectResponse:
    loop = asyncio.get_running_loop()
    pool = route.aio_idle.get(loop)
    if pool is None:
        pool = route.aio_idle.setdefault(loop, [])
    now = time.monotonic()
    while pool:
        candidate = pool.pop()
        if candidate.reusable(now):
            try:
                return await _exchange_on_aio(route, pool, candidate, request)
            except Unread:
                break  # a stale pooled connection: once more on a fresh one
        candidate.close()
    try:
        _, conn = await asyncio.wait_for(loop.create_connection(AioConnection, route.host, route.port), CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as err:
        raise NotSent(str(err) or type(err).__name__, refused=isinstance(err, ConnectionRefusedError)) from None
    if route.accepts:
        route.accepts = await handshake_aio(conn, route)
    else:
        request = route.hello + request
    try:
        return await _exchange_on_aio(route, pool, conn, request)
    except Unread as err:
        raise NotSent(str(err)) from None


async def _exchange_on_aio(route: Route, pool: list[AioConnection], conn: AioConnection,
                           request: bytes) -> worker_pb2.DirectResponse:
    try:
        frame = await conn.exchange(request)
    except (ConnectionResetError, BrokenPipeError) as err:
        conn.close()
        if conn.received:
            raise
        raise Unread(str(err)) from None  # see Unread
    except BaseException:
        conn.close()  # a reply may still be on its way: never reuse this connection
        raise
    response = W.DirectResponse.FromString(frame)
    if (response.WhichOneof("message") == "output" or response.rejected.reason == W.DIRECT_REJECT_REASON_BUSY) and not route.dead:
        if len(pool) < MAX_IDLE_PER_ROUTE:
            conn.idle_since = time.monotonic()
            pool.append(conn)
        else:
            conn.close()
    else:
        conn.close()
    return response


async def handshake_aio(conn: AioConnection, route: Route) -> bool:
    """As `handshake`, for an asyncio connection."""
    conn.handshaking = True
    try:
        frame = await asyncio.wait_for(conn.exchange(route.hello), ACCEPT_WAIT_S)
    except asyncio.TimeoutError:
        return False  # an older runtime: it waits for the input on this connection
    except (OSError, FrameError) as err:
        conn.close()
        raise NotSent(str(err) or type(err).__name__, forget=False) from None
    finally:
        conn.handshaking = False
    if frame != ACCEPTED:
        conn.close()
        raise NotSent("the container did not accept the connection")
    return True
