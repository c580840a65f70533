"""Frames of the direct call path: a 4-byte little-endian length, then one protobuf message.

Used by blocking sockets on both sides (the SDK's sync callers and the container's connection
threads); the SDK's asyncio callers parse the same frames with `FrameBuffer` (pooled calls) or
`read_frame_aio` (a generator's stream of frames).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import struct
from collections.abc import Mapping

from corral_protocol import env, payloads

HEADER = struct.Struct("<I")

# Bounds of the direct port, shared by the container (which enforces them) and the SDK.
HELLO_TIMEOUT_S = 2.0
"""A new connection's hello must have arrived whole within this long, or it is closed."""
MAX_HELLO_BYTES = 4096
"""The largest frame read before a connection is authenticated (a hello is ~100 bytes)."""
IDLE_TIMEOUT_S = 60.0
"""An authenticated connection with no input for this long is closed by the container (default of
`CORRAL_DIRECT_IDLE_TIMEOUT_S`, see `idle_timeout_s`)."""
MIN_IDLE_TIMEOUT_S = 5.0
CLIENT_REUSE_S = 30.0
"""Clients reuse a pooled connection only if it was idle for less than this (half the idle timeout),
so the container never closes a connection that a client is about to send an input on."""


DEAD_PEER_S = 25
"""About how long a direct connection whose peer went silent (its node cut off, its machine gone)
takes to fail instead of waiting forever: TCP keepalive probes after 10 s of silence, every 5 s, 3
times, and unacknowledged data gives up after as long (`tune_socket`)."""


def tune_socket(sock: socket.socket) -> None:
    """Options of every direct-path socket: no Nagle delay, and a bounded wait on a silent peer
    (keepalive, and TCP_USER_TIMEOUT for data never acknowledged), so a caller whose container's node
    was cut off gets an error (and asks why) instead of hanging."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", DEAD_PEER_S * 1000)):
        if hasattr(socket, option):  # Linux names; elsewhere the system's keepalive defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def idle_timeout_s(environ: Mapping[str, str] = os.environ) -> float:
    """The direct port's idle timeout: CORRAL_DIRECT_IDLE_TIMEOUT_S, checked, else `IDLE_TIMEOUT_S`.
    Clients never reuse a connection idle for half of the default (`CLIENT_REUSE_S`); below that, a
    connection the container closed is detected by the client and the input sent on a fresh one."""
    value = environ.get(env.CORRAL_DIRECT_IDLE_TIMEOUT_S)
    if value is None:
        return IDLE_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= MIN_IDLE_TIMEOUT_S):
        raise ValueError(f"{env.CORRAL_DIRECT_IDLE_TIMEOUT_S} must be a number of seconds of at least {MIN_IDLE_TIMEOUT_S:g}, got {value!r}")
    return seconds


class FrameError(ConnectionError):
    """The peer closed the connection mid-frame or sent a frame that is too large."""


def encode(message_bytes: bytes) -> bytes:
    return HEADER.pack(len(message_bytes)) + message_bytes


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = sock.recv(n, socket.MSG_WAITALL)
    if len(data) == n:
        return data
    chunks = [data]
    got = len(data)
    while got < n:
        if not data:
            raise FrameError("the connection closed mid-frame" if got else "the connection closed")
        data = sock.recv(n - got)
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def read_frame(sock: socket.socket, max_bytes: int | None = None) -> bytes | None:
    """The next frame's message bytes, or None when the peer closed the connection between frames.

    A frame declaring more than `max_bytes` (default: `payloads.message_limit()`) raises FrameError
    before anything of it is read or allocated."""
    header = sock.recv(HEADER.size, socket.MSG_WAITALL)
    if not header:
        return None
    if len(header) < HEADER.size:
        header += _read_exact(sock, HEADER.size - len(header))
    (length,) = HEADER.unpack(header)
    limit = payloads.message_limit() if max_bytes is None else max_bytes
    if length > limit:
        raise FrameError(f"frame of {length} bytes is over the {limit}-byte limit")
    return _read_exact(sock, length) if length else b""


async def read_frame_aio(reader: asyncio.StreamReader, max_bytes: int | None = None) -> bytes | None:
    """As `read_frame`, from an asyncio stream: None when the peer closed between frames."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as err:
        if not err.partial:
            return None
        raise FrameError("the connection closed mid-frame") from None
    (length,) = HEADER.unpack(header)
    limit = payloads.message_limit() if max_bytes is None else max_bytes
    if length > limit:
        raise FrameError(f"frame of {length} bytes is over the {limit}-byte limit")
    try:
        return await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise FrameError("the connection closed mid-frame") from None


class FrameBuffer:
    """Accumulates received bytes and yields whole frames (for asyncio protocols)."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._buffer = bytearray()
        self._max_bytes = payloads.message_limit() if max_bytes is None else max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_bytes:
                raise FrameError(f"frame of {length} bytes is over the {self._max_bytes}-byte limit")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[HEADER.size:end]))
            del self._buffer[:end]
        return frames
