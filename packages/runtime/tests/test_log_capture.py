"""The worker's log capture: whole lines per stream and thread, the input they belong to,
redaction when a batch is made, and a bounded buffer."""

from __future__ import annotations

import io

from corral import container_api as sdk
from corral_runtime import log_capture
from corral_runtime.log_capture import LogCapture, _Tee
from corral_runtime.redaction import Redactor


def test_lines_carry_their_stream_and_input_and_partial_writes_wait_for_the_newline() -> None:
    capture = LogCapture()
    out = io.StringIO()
    tee = _Tee(out, "stdout", capture)  # type: ignore[arg-type]
    tee.write("par")
    with sdk.input_scope("fc-1"):
        tee.write("tial\nnext line\n")
    tee.write("no newline yet")
    assert out.getvalue() == "partial\nnext line\nno newline yet"  # the real stream gets everything
    batch = capture.batch()
    assert batch is not None
    assert [(line.stream, line.input_id, line.text) for line in batch.lines] == [("stdout", "fc-1", "partial"), ("stdout", "fc-1", "next line")]
    assert capture.batch() is None


def test_secret_values_are_redacted_when_the_batch_is_made() -> None:
    capture = LogCapture()
    capture.record("stderr", "token=sk-live-123456\n")
    capture.redactor = Redactor({"API_KEY": "sk-live-123456"})
    batch = capture.batch()
    assert batch is not None and "sk-live-123456" not in batch.lines[0].text


def test_the_buffer_is_bounded_and_counts_what_it_dropped(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(log_capture, "MAX_BUFFERED_LINES", 3)
    capture = LogCapture()
    capture.record("stdout", "".join(f"{i}\n" for i in range(5)))
    batch = capture.batch()
    assert batch is not None and [line.text for line in batch.lines] == ["2", "3", "4"] and batch.dropped == 2
