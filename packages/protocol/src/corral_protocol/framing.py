"""Frames of the direct call path: a 4-byte little-endian length, then one protobuf message.

Used by blocking sockets on both sides (the SDK's sync callers and the container's connection
threads); the SDK's asyncio callers parse the same frames with `FrameBuffer`.
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct("<I")
MAX_FRAME_BYTES = 256 * 1024 * 1024


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


def read_frame(sock: socket.socket) -> bytes | None:
    """The next frame's message bytes, or None when the peer closed the connection between frames."""
    header = sock.recv(HEADER.size, socket.MSG_WAITALL)
    if not header:
        return None
    if len(header) < HEADER.size:
        header += _read_exact(sock, HEADER.size - len(header))
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    return _read_exact(sock, length) if length else b""


class FrameBuffer:
    """Accumulates received bytes and yields whole frames (for asyncio protocols)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {length} bytes is over the {MAX_FRAME_BYTES}-byte limit")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[HEADER.size:end]))
            del self._buffer[:end]
        return frames
