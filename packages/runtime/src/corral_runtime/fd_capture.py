"""Output written to file descriptors 1 and 2 directly (`os.write(1, ...)`, subprocesses, C code
calling `printf`), captured for the log store like what Python code prints.

The worker points fds 1 and 2 at pipes of its own. A reader thread forwards every byte to the
container's real stdout and stderr (the node's pipes, kept aside on other fds: the node still
forwards them to its log) and hands complete lines to the `LogCapture`. Python's `sys.stdout` and
`sys.stderr` write to the node's pipes directly, through the tees that know which input printed,
so no line is captured twice.

Which input a line belongs to: the input running user code when the line is read, when exactly one
does (`RunningInputs`); otherwise the line is the container's only. The end of each input's scope
drains the pipes first, so what a call wrote before it returned (a subprocess it waited for) is
its own. C code's `stdout` is block-buffered on a pipe: its lines arrive when it flushes.

At a snapshot point fds 1 and 2 are the node's pipes again (`release`), since CRIU hands a restored
process new stdio in place of the fds 0-2 it had at the dump; `reclaim` points them back after.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral import container_api as sdk

MAX_LINE_BYTES = 16_384
_READ_CHUNK = 65_536


class RunningInputs:
    """Which inputs are running user code now (nested scopes of one input count once)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.before_leave: Callable[[], None] = lambda: None

    def sole(self) -> str:
        """The one input running now; "" when none or several are."""
        with self._lock:
            if len(self._counts) != 1:
                return ""
            (input_id,) = self._counts
            return input_id

    def scope(self, input_id: str) -> _Scope:
        """Run user code for `input_id` within it: `corral.current_input_id()` answers it, and
        fd-level output written meanwhile may be attributed to it."""
        return _Scope(self, input_id)

    def _enter(self, input_id: str) -> None:
        with self._lock:
            self._counts[input_id] = self._counts.get(input_id, 0) + 1

    def _leave(self, input_id: str) -> None:
        self.before_leave()  # what it wrote is still its own
        with self._lock:
            left = self._counts.pop(input_id) - 1
            if left:
                self._counts[input_id] = left


class _Scope:
    """`RunningInputs.scope` (a class, not a generator: it runs around every input)."""

    __slots__ = ("_running", "_input_id", "_context")

    def __init__(self, running: RunningInputs, input_id: str) -> None:
        self._running = running
        self._input_id = input_id
        self._context: contextlib.AbstractContextManager[None] = sdk.input_scope(input_id)

    def __enter__(self) -> None:
        self._running._enter(self._input_id)
        self._context.__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            self._context.__exit__(*exc)  # type: ignore[arg-type]
        finally:
            self._running._leave(self._input_id)


@dataclass(eq=False)
class _Pipe:
    stream: str  # "stdout" or "stderr"
    target: int  # 1 or 2
    node_fd: int  # the node's pipe, kept aside
    read_fd: int
    write_fd: int  # the pipe's write end, kept to point `target` back at it (reclaim)
    partial: bytearray = field(default_factory=bytearray)


LineSink = Callable[[str, str, str, float], None]
"""(stream, text, input id or "", time) for each complete line."""


class FdCapture:
    def __init__(self, running: RunningInputs, sink: LineSink) -> None:
        self._running = running
        self._sink = sink
        self._pipes: list[_Pipe] = []
        self._lock = threading.Lock()  # one reader at a time: lines stay in order
        self._ready = select.poll()  # for `drain` only (one poll object per thread)

    @property
    def installed(self) -> bool:
        return bool(self._pipes)

    def install(self, targets: tuple[int, int] = (1, 2)) -> tuple[int, int]:
        """Point fds 1 and 2 (`targets`) at this capture's pipes and start forwarding. Returns the
        fds of the node's stdout and stderr, for Python's own streams."""
        pipes: list[_Pipe] = []
        try:  # every fd first, so that a failure (EBADF, EMFILE) changes nothing
            for target, stream in zip(targets, ("stdout", "stderr")):
                node_fd = os.dup(target)  # not inheritable: subprocesses get the captured fd instead
                pipes.append(_Pipe(stream, target, node_fd, *os.pipe()))
        except OSError:
            for pipe in pipes:
                for fd in (pipe.node_fd, pipe.read_fd, pipe.write_fd):
                    os.close(fd)
            raise
        for pipe in pipes:
            os.set_blocking(pipe.read_fd, False)
            os.dup2(pipe.write_fd, pipe.target)
            self._ready.register(pipe.read_fd, select.POLLIN)
        self._pipes = pipes
        self._running.before_leave = self.drain
        threading.Thread(target=self._forward_forever, name="corral-fd-capture", daemon=True).start()
        return self._pipes[0].node_fd, self._pipes[1].node_fd

    def release(self) -> None:
        """Fds 1 and 2 are the node's pipes again (at a snapshot point); what was written is forwarded."""
        self.drain()
        for pipe in self._pipes:
            os.dup2(pipe.node_fd, pipe.target)

    def reclaim(self) -> None:
        """Capture fds 1 and 2 again (after `release`)."""
        for pipe in self._pipes:
            os.dup2(pipe.write_fd, pipe.target)

    def drain(self) -> None:
        """Forward and record whatever the pipes hold now, without waiting."""
        if not self._pipes:
            return
        with self._lock:
            if self._ready.poll(0):
                for pipe in self._pipes:
                    self._read(pipe)

    def _forward_forever(self) -> None:
        waiting = select.poll()
        for pipe in self._pipes:
            waiting.register(pipe.read_fd, select.POLLIN)
        while True:
            try:
                waiting.poll()
            except InterruptedError:
                continue
            self.drain()

    def _read(self, pipe: _Pipe) -> None:
        while True:
            try:
                data = os.read(pipe.read_fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                return
            _write_all(pipe.node_fd, data)
            self._lines(pipe, data)

    def _lines(self, pipe: _Pipe, data: bytes) -> None:
        pipe.partial += data
        *complete, rest = pipe.partial.split(b"\n")
        if len(rest) > MAX_LINE_BYTES:  # a line without end: keep it as one, cut
            complete.append(rest)
            rest = bytearray()
        pipe.partial = bytearray(rest)
        if not complete:
            return
        now = time.time()
        input_id = self._running.sole()
        for line in complete:
            self._sink(pipe.stream, bytes(line[:MAX_LINE_BYTES]).decode(errors="replace"), input_id, now)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            return  # the node stopped reading (it is going away): the lines are still recorded


RUNNING = RunningInputs()
"""The inputs running user code in this process (one worker per process)."""
