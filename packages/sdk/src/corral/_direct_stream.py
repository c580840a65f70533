"""Generator calls on the direct path (sync callers): items arrive on the container connection.

A generator call takes a fresh connection of its own (never a pooled one), so closing it is how
the caller says it stopped consuming: the container's next send fails and it closes the
generator. When the direct path cannot take the call (no route, busy, draining), `open_stream`
answers None and the caller uses the control plane's `InvokeStream`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

from corral import _direct
from corral.exception import ContainerExitedError, InvalidError
from corral_protocol.framing import FrameError, read_frame
from corral_protocol.v1 import common_pb2, worker_pb2

W = worker_pb2


class DirectStream:
    """An open generator call: `items()` yields payloads, then `result` holds how it ended."""

    def __init__(self, sock: socket.socket, first: worker_pb2.DirectResponse, container_id: str) -> None:
        self._sock = sock
        self._pending: worker_pb2.DirectResponse | None = first
        self._container_id = container_id
        self.result: common_pb2.Result | None = None

    def items(self) -> Iterator[common_pb2.Payload]:
        try:
            while True:
                response = self._pending if self._pending is not None else self._read()
                self._pending = None
                kind = response.WhichOneof("message")
                if kind == "generator_item":
                    yield response.generator_item.value
                elif kind == "output":
                    self.result = response.output.result
                    return
        finally:
            self._sock.close()  # early: tells the container to stop the generator

    def _read(self) -> worker_pb2.DirectResponse:
        try:
            frame = read_frame(self._sock)
        except (OSError, FrameError) as err:
            raise ContainerExitedError(f"the container streaming the generator ({self._container_id}) went away: {err}") from None
        if frame is None:
            raise ContainerExitedError(f"the container streaming the generator ({self._container_id}) closed the connection")
        return W.DirectResponse.FromString(frame)


def open_stream(path: _direct.DirectPath, service_id: str, method: str, args: common_pb2.Payload) -> DirectStream | None:
    """Send a generator input straight to a container; None when the direct path did not take it."""
    table = path._table(service_id)
    if table.stale(time.monotonic()):
        path._refresh(service_id, table)
    if not table.enabled or not table.routes:
        return None
    route = path._pick(table)
    if route is None:
        return None
    try:
        sock = socket.create_connection((route.host, route.port), timeout=_direct.CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not path._handshake(sock, route):
            sock.close()
            path._done(table, route, None)
            return None  # an older runtime answers no want_accepted: the queue streams it
        sock.settimeout(None)
        sock.sendall(path._request(method, args))
    except (_direct._NotSent, OSError):
        path._done(table, route, None)
        return None  # the input was never sent: the queue takes it
    with path._lock:
        route.inflight -= 1  # the connection is the generator's own; the count is for pooled calls
    stream = DirectStream(sock, W.DirectResponse(), route.container_id)
    try:
        first = stream._read()
    except ContainerExitedError:
        sock.close()
        path._forget(table, route)
        raise
    if first.WhichOneof("message") == "rejected":
        sock.close()
        if first.rejected.reason == W.DIRECT_REJECT_REASON_TOO_LARGE:
            raise InvalidError(first.rejected.message)
        return None
    stream._pending = first
    return stream
