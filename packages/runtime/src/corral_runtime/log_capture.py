"""What the container's code prints, captured in the worker itself for the control plane's log
store (`corral app logs`), each line with its time, stream and input.

`sys.stdout` and `sys.stderr` become tees: every write still reaches the real stream (the node's
pipe: the node reads stdout for the snapshot point, and keeps its own stderr tail), and complete
lines are kept with `corral.current_input_id()`. What is written to file descriptors 1 and 2
directly (C code, subprocesses, `os.write`) is captured by `corral_runtime.fd_capture`. The worker
sends the lines in batches; secret values are redacted when a batch is made, with the worker's
current `Redactor` (secrets may arrive after a snapshot).
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from corral import container_api as sdk
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.fd_capture import RUNNING, FdCapture
from corral_runtime.redaction import Redactor

MAX_BUFFERED_LINES = 10_000
MAX_LINE_CHARS = 16_384


class _Tee:
    def __init__(self, stream: TextIO, name: str, capture: LogCapture) -> None:
        self._stream = stream
        self._name = name
        self._capture = capture

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._capture.record(self._name, text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...
        return getattr(self._stream, name)


class LogCapture:
    """Lines printed in this process, until `batch()` takes them."""

    def __init__(self) -> None:
        self.redactor = Redactor({})
        self._lines: deque[common_pb2.LogLine] = deque()
        self._partial: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self._dropped = 0
        self._local = threading.local()
        self.fds = FdCapture(RUNNING, self.add)

    def install(self) -> None:
        """Tee Python's streams and capture fds 1 and 2; the tees write to the node's pipes themselves.

        A crash's last words written to fd 2 by C code that holds the GIL (an `assert` before
        `abort()`) can die in the capture's pipe before its reader runs, so faulthandler's
        tracebacks go to the node's stderr directly: a crash still explains itself there."""
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            node_out, node_err = self.fds.install()
        except OSError as err:  # no fd 1 or 2, or out of fds: Python's own output is still captured
            print(f"corral worker: output written below Python is not captured: {err}", file=sys.stderr)
            sys.stdout = _Tee(sys.stdout, "stdout", self)
            sys.stderr = _Tee(sys.stderr, "stderr", self)
            return
        sys.stdout = _Tee(_writer(node_out, sys.stdout), "stdout", self)
        sys.stderr = _Tee(_writer(node_err, sys.stderr), "stderr", self)
        faulthandler.enable(file=node_err, all_threads=False)  # the crashing thread: it fits the stderr tail

    def record(self, stream: str, text: str) -> None:
        if getattr(self._local, "busy", False):
            return  # a write made while recording (never expected): no recursion
        self._local.busy = True
        try:
            key = (stream, threading.get_ident())  # threads print their own lines
            with self._lock:
                pending = self._partial.pop(key, "") + text
                *complete, rest = pending.split("\n")
                if rest:
                    self._partial[key] = rest[-MAX_LINE_CHARS:]
                now = time.time()
                input_id = sdk.current_input_id() or ""
                for line in complete:
                    self._keep(stream, line, input_id, now)
        finally:
            self._local.busy = False

    def add(self, stream: str, text: str, input_id: str, timestamp: float) -> None:
        """Keep one complete line (from the fd-level capture)."""
        with self._lock:
            self._keep(stream, text, input_id, timestamp)

    def _keep(self, stream: str, text: str, input_id: str, timestamp: float) -> None:
        if len(self._lines) >= MAX_BUFFERED_LINES:
            self._lines.popleft()
            self._dropped += 1
        self._lines.append(common_pb2.LogLine(timestamp=timestamp, stream=stream, input_id=input_id, text=text[:MAX_LINE_CHARS]))

    def batch(self) -> worker_pb2.LogBatch | None:
        """The lines since the last batch, redacted; None when there are none."""
        self.fds.drain()
        with self._lock:
            if not self._lines and not self._dropped:
                return None
            lines, self._lines = list(self._lines), deque()
            dropped, self._dropped = self._dropped, 0
        for line in lines:
            line.text = self.redactor.text(line.text)
        return worker_pb2.LogBatch(lines=lines, dropped=dropped)


def _writer(fd: int, like: TextIO) -> TextIO:
    """A text stream on `fd` that encodes and buffers as `like` does (unbuffered under
    PYTHONUNBUFFERED, as the node starts workers)."""
    raw = io.FileIO(fd, "w", closefd=False)
    buffer: Any = io.BufferedWriter(raw) if isinstance(getattr(like, "buffer", None), io.BufferedWriter) else raw
    return io.TextIOWrapper(
        buffer, encoding=like.encoding, errors=like.errors,
        line_buffering=getattr(like, "line_buffering", True), write_through=getattr(like, "write_through", False),
    )


SHIP_INTERVAL_S = 0.2


async def ship(capture: LogCapture, send: Callable[[worker_pb2.WorkerSessionRequest], Awaitable[None]]) -> None:
    """Send the captured lines every SHIP_INTERVAL_S, until cancelled (then `flush` once more)."""
    while True:
        await asyncio.sleep(SHIP_INTERVAL_S)
        await flush(capture, send)


async def flush(capture: LogCapture, send: Callable[[worker_pb2.WorkerSessionRequest], Awaitable[None]]) -> None:
    batch = capture.batch()
    if batch is not None:
        await send(worker_pb2.WorkerSessionRequest(logs=batch))


CAPTURE = LogCapture()
"""The process's capture (one worker per process)."""
