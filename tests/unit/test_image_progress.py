"""The build progress display: plain lines in a log, rich's live panel on a terminal."""

from __future__ import annotations

import io

from corral._image_build import _Display
from corral_protocol.v1 import common_pb2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


REPORTS = [
    common_pb2.ImageBuildProgress(image_hash="ab" * 32, step=1, total=3, title="debian_slim", cached=True),
    common_pb2.ImageBuildProgress(image_hash="ab" * 32, step=3, total=3, title="pip install six", elapsed_s=0.5),
    common_pb2.ImageBuildProgress(image_hash="ab" * 32, step=3, total=3, title="pip install six", log_line=" + six==1.17.0"),
    common_pb2.ImageBuildProgress(image_hash="ab" * 32, node_name="n1", done=True, elapsed_s=1.0),
]


def test_plain_lines_name_each_step_and_its_log() -> None:
    out = io.StringIO()
    with _Display(out) as display:
        for report in REPORTS:
            display.update(report)
    text = out.getvalue()
    assert "step 1/3 cached: debian_slim" in text and "step 3/3 building: pip install six" in text
    assert "  |  + six==1.17.0" in text and "on n1: ready (1.0 s)" in text


def test_terminal_display_keeps_step_headers() -> None:
    out = _Terminal()
    with _Display(out) as display:
        for report in REPORTS:
            display.update(report)
    assert "step 3/3 building: pip install six" in out.getvalue() and "ready" in out.getvalue()


def test_a_repeated_header_is_printed_once() -> None:
    """A node repeats a silent step's header to show it is alive (`image_build._keepalive`)."""
    out = io.StringIO()
    header = common_pb2.ImageBuildProgress(image_hash="ab" * 32, step=3, total=3, title="run make", elapsed_s=30.0)
    with _Display(out) as display:
        for _ in range(3):
            display.update(header)
    assert out.getvalue().count("step 3/3 building: run make") == 1
