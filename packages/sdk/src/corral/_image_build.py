"""Building an app's images before deploy and `app.run()` return (and a `with_options(image=...)`
handle's when it first binds), with a live progress display.

The control plane asks its nodes to build (missing layers only) and streams their reports back:
step n of m, cached or building, elapsed time, and the current step's last log lines. On a
terminal the display is `rich`'s live panel; otherwise one plain line per step (CI logs).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

import grpc

from corral.exception import ImageBuildError
from corral.image import image_hash, in_container, local_files
from corral_protocol.v1 import common_pb2, control_pb2

if TYPE_CHECKING:
    from corral._client import Client

_UPLOAD_CHUNK = 1024 * 1024
LIVE_LOG_LINES = 8


def build_images(client: Client, images: Iterable[common_pb2.ImageSpec], out: TextIO | None = None) -> list[common_pb2.ImageBuildProgress]:
    """Upload the images' local files, build them on the cluster's nodes and show progress on `out`
    (stderr by default); returns every report. Raises `ImageBuildError` naming the failed step."""
    unique: dict[str, common_pb2.ImageSpec] = {}
    for image in images:
        unique.setdefault(image_hash(image), image)
    if not unique:
        return []
    for image in unique.values():
        for step in image.steps:
            if step.kind == "files":
                _upload(client, step.bundle_hash)
    stream = client.stub.BuildImages(control_pb2.BuildImagesRequest(images=list(unique.values())), metadata=client.metadata)
    display = _Display(out or sys.stderr)
    reports: list[common_pb2.ImageBuildProgress] = []
    try:
        with display:
            for response in stream:
                report = response.progress
                reports.append(report)
                display.update(report)
                if report.done and report.error:
                    raise ImageBuildError(f"image build failed on node {report.node_name or '?'}: {report.error}")
    except grpc.RpcError as err:
        from corral._client import translate_rpc_error

        raise translate_rpc_error(err, client.url) from None
    return reports


class HandleImage:
    """The image a `with_options(image=...)` handle gives its services: built (with progress, as
    at deploy) when an instance of the handle first binds, before the service exists, so a build
    failure is an `ImageBuildError` there and no container start builds. Once per handle, however
    many instances bind it; concurrent first binds wait for the one build. Code inside a container
    builds nothing here (its token may not start builds): the node builds at the container start."""

    def __init__(self) -> None:
        self._built: set[str] = set()
        self._lock = threading.Lock()

    def ensure_built(self, client: Client, image: common_pb2.ImageSpec) -> None:
        if in_container():
            return
        key = image_hash(image)
        with self._lock:
            if key not in self._built:
                build_images(client, [image])
                self._built.add(key)


def _upload(client: Client, bundle_hash: str) -> None:
    data = local_files(bundle_hash)
    if client.call(client.stub.HasBundle, control_pb2.HasBundleRequest(hash=bundle_hash)).present:
        return
    if data is None:
        raise ImageBuildError(f"the local files {bundle_hash[:12]} of an image step are not in this process to upload")

    def chunks() -> Iterator[control_pb2.UploadBundleRequest]:
        for offset in range(0, max(len(data), 1), _UPLOAD_CHUNK):
            yield control_pb2.UploadBundleRequest(hash=bundle_hash if offset == 0 else "", data=data[offset:offset + _UPLOAD_CHUNK])

    client.call(client.stub.UploadBundle, chunks())


class _Display:
    """rich's live panel on a terminal (each step's header, then its last log lines in a panel
    with the elapsed time); plain lines elsewhere (every header and log line)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.lines: deque[str] = deque(maxlen=LIVE_LOG_LINES)
        self.header = ""
        self._last_step: tuple[str, int] = ("", -1)
        self._live = None
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=out), refresh_per_second=8, transient=True)

    def __enter__(self) -> _Display:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, report: common_pb2.ImageBuildProgress) -> None:
        image = report.image_hash[:12]
        if report.done and not report.image_hash and not report.error:
            return
        if report.done:
            verdict = f"failed: {report.error.splitlines()[0]}" if report.error else "ready"
            self._print(f"image {image} on {report.node_name}: {verdict} ({report.elapsed_s:.1f} s)")
            return
        if not report.total and report.title:  # a node's notice, not a step
            self._print(report.title)
            return
        if report.log_line:
            self.lines.append(report.log_line)
            if self._live is None:  # a log file or CI: every line, under its step
                self._print(f"  | {report.log_line}")
        elif (image, report.step) != self._last_step:
            self._last_step = (image, report.step)
            self.lines.clear()
            self.header = f"image {image} step {report.step}/{report.total} {'cached' if report.cached else 'building'}: {report.title}"
            self._print(self.header)
        if self._live is not None:
            from rich.console import Group
            from rich.panel import Panel
            from rich.text import Text

            body = Group(*(Text(line, overflow="ellipsis", no_wrap=True) for line in self.lines))
            self._live.update(Panel(body, title=f"{self.header} ({report.elapsed_s:.1f} s)", title_align="left"))

    def _print(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            self.out.write(text + "\n")
            self.out.flush()
