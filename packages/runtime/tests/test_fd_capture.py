"""The fd-level capture on real pipes (fds standing in for 1 and 2): every byte forwarded to the
node's pipe, whole lines to the sink, attributed to the one running input, a line without end
cut, and the node's pipes back in place at a snapshot point."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from corral_runtime import fd_capture
from corral_runtime.fd_capture import FdCapture, RunningInputs


@dataclass
class Rig:
    capture: FdCapture
    running: RunningInputs
    out: int  # stands in for fd 1
    err: int  # stands in for fd 2
    node_out: int  # the node's end of the stdout pipe (what the node reads)
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> list[tuple[str, str, str]]:
        self.capture.drain()
        with self.lock:
            return list(self.lines)

    def node_read(self, n: int) -> bytes:
        data = b""
        deadline = time.monotonic() + 10  # bounds a hang only
        while len(data) < n and time.monotonic() < deadline:
            data += os.read(self.node_out, n - len(data))
        return data


@pytest.fixture
def rig() -> Iterator[Rig]:
    node_out_r, node_out_w = os.pipe()
    node_err_r, node_err_w = os.pipe()
    running = RunningInputs()
    holder: list[Rig] = []

    def sink(stream: str, text: str, input_id: str, timestamp: float) -> None:
        with holder[0].lock:
            holder[0].lines.append((stream, text, input_id))

    capture = FdCapture(running, sink)
    made = Rig(capture, running, node_out_w, node_err_w, node_out_r)
    holder.append(made)
    capture.install((node_out_w, node_err_w))  # the "fds 1 and 2" now write into the capture
    yield made
    for fd in (node_out_r, node_out_w, node_err_r, node_err_w):
        os.close(fd)


def test_bytes_are_forwarded_and_whole_lines_recorded(rig: Rig) -> None:
    os.write(rig.out, b"one\ntw")
    assert rig.node_read(6) == b"one\ntw"
    os.write(rig.out, b"o\n")
    os.write(rig.err, b"oops\n")
    assert rig.node_read(2) == b"o\n"
    assert sorted(rig.seen()) == [("stderr", "oops", ""), ("stdout", "one", ""), ("stdout", "two", "")]


def test_a_line_belongs_to_the_one_running_input_only(rig: Rig) -> None:
    with rig.running.scope("fc-1"):
        os.write(rig.out, b"mine\n")
    assert rig.seen() == [("stdout", "mine", "fc-1")]  # the scope's end drained it: no race with the reader
    with rig.running.scope("fc-1"), rig.running.scope("fc-2"):
        os.write(rig.out, b"ours\n")
        assert rig.seen()[-1] == ("stdout", "ours", "")  # two inputs run: the container's line
    with rig.running.scope("fc-3"), rig.running.scope("fc-3"):  # nested scopes of one input
        os.write(rig.out, b"nested\n")
    assert rig.seen()[-1] == ("stdout", "nested", "fc-3")


def test_a_line_without_end_is_cut_and_kept(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fd_capture, "MAX_LINE_BYTES", 8)
    os.write(rig.out, b"x" * 20)
    rig.node_read(20)
    assert rig.seen() == [("stdout", "x" * 8, "")]
    os.write(rig.out, b"\xff\xfe bad utf-8\n")
    assert rig.seen()[-1][1] == "\ufffd\ufffd bad u"  # undecodable bytes replaced, the line cut


def test_released_fds_write_to_the_node_directly_until_reclaimed(rig: Rig) -> None:
    rig.capture.release()
    os.write(rig.out, b"at the snapshot point\n")
    assert rig.node_read(22) == b"at the snapshot point\n"
    assert rig.seen() == []
    rig.capture.reclaim()
    os.write(rig.out, b"captured again\n")
    assert rig.node_read(15) == b"captured again\n"
    assert rig.seen() == [("stdout", "captured again", "")]
