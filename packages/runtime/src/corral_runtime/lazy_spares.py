"""Spare `criu lazy-pages` daemons: one started ahead per snapshot image, so that a lazy restore
does not wait for its daemon to start (a new CRIU process that probes the kernel: 0.04-0.1 s here).

A daemon serves one restore: it listens on `lazy-pages.socket` in its work directory, and the
restore (`runc restore --lazy-pages` or `criu restore --lazy-pages`) connects to the socket of that
name in *its* work directory. A spare daemon is started in a directory of its own; taking it moves
its socket into the restoring container's directory (a bound Unix socket is reached through
whatever name its file has) and links its log there, so the restore finds it as if it had been
started for it. A new spare for the image is started in the background after each take (a second later, off the
restored worker's critical path).

    spares = LazyPagesSpares(work_dir / "lazy-spares", start_daemon)
    daemon = spares.take(image, workdir)      # None: start one the usual way
    spares.refill(image, spawn_task)          # a spare for the next restore
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from corral_runtime.snapshots import LAZY_PAGES_LOG, LAZY_PAGES_SOCKET, Image

log = logging.getLogger("corral.runtime")

# Images with a spare at most (one idle daemon each); more are served the usual way.
MAX_SPARES = 8
# A spare starts this long after the restore (or dump) that asked for it: its CRIU process probes the
# kernel for 0.05-0.1 s of CPU, which would otherwise compete with the restored worker reconnecting.
START_DELAY_S = 1.0
PR_SET_PDEATHSIG = 1

StartDaemon = Callable[[Image, Path], Awaitable[asyncio.subprocess.Process]]


class LazyPagesSpares:
    """At most one listening spare daemon per image (by its directory), up to `MAX_SPARES`."""

    def __init__(self, root: Path, start_daemon: StartDaemon, *, start_delay_s: float = START_DELAY_S) -> None:
        self.root = root
        self.start_daemon = start_daemon
        self.start_delay_s = start_delay_s
        # Image directory -> (the image's creation time, its spare daemon, the spare's directory):
        # an image dumped again under the same key is a new image, and its old spare is ended.
        self.spares: dict[Path, tuple[object, asyncio.subprocess.Process, Path]] = {}
        self._starting: set[Path] = set()
        self._cleanups: set[asyncio.Future[None]] = set()
        self._closed = False

    def take(self, image: Image, workdir: Path) -> asyncio.subprocess.Process | None:
        """The image's spare daemon, now listening in `workdir` for this restore, or None."""
        self.end_deleted()
        spare = self.spares.pop(image.path, None)
        if spare is None:
            return None
        created, daemon, directory = spare
        if daemon.returncode is not None or created != image.meta.get("created_at"):
            _kill(daemon)
            return None
        try:
            os.replace(directory / LAZY_PAGES_SOCKET, workdir / LAZY_PAGES_SOCKET)
        except OSError as err:
            log.warning("lazy-pages spare for %s unusable (%s); starting a daemon instead", image.path.name, err)
            _kill(daemon)
            shutil.rmtree(directory, ignore_errors=True)
            return None
        with contextlib.suppress(OSError):  # its log, where errors of this restore are looked for
            os.link(directory / LAZY_PAGES_LOG, workdir / LAZY_PAGES_LOG)
        return daemon

    def refill(self, image: Image, spawn_task: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        """Start a spare for `image` in the background, unless it has one (or one is starting)."""
        if image.path in self.spares or image.path in self._starting or len(self.spares) + len(self._starting) >= MAX_SPARES:
            return
        self._starting.add(image.path)
        spawn_task(self._start(image))

    async def _start(self, image: Image) -> None:
        directory = self.root / secrets.token_hex(6)
        try:
            await asyncio.sleep(self.start_delay_s)
            if self._closed or not image.path.exists():  # the node stopped, or the image went meanwhile
                return
            directory.mkdir(parents=True, mode=0o700)
            daemon = await self.start_daemon(image, directory)
        except Exception as err:  # a failed spare only means the next restore starts its own daemon
            log.debug("lazy-pages spare for %s not started: %s", image.path.name, err)
            shutil.rmtree(directory, ignore_errors=True)
            return
        finally:
            self._starting.discard(image.path)
        # The image may have been deleted while the daemon started (`end_deleted` ran before it was
        # a spare): a spare of no image would outlive it.
        if not self._closed and image.path.exists():
            self.spares[image.path] = (image.meta.get("created_at"), daemon, directory)
        else:
            _kill(daemon)
        cleanup = asyncio.ensure_future(_remove_when_done(daemon, directory))
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    def end_deleted(self) -> None:
        """End the spares of images that were deleted (invalidated or collected)."""
        for path in [p for p in self.spares if not p.exists()]:
            _created, daemon, _directory = self.spares.pop(path)
            _kill(daemon)

    def close(self) -> None:
        """End every spare (the node stops); none starts after this."""
        self._closed = True
        for _created, daemon, _directory in self.spares.values():
            _kill(daemon)
        self.spares.clear()


def die_with_parent() -> None:
    """In a daemon's child process before exec: the kernel sends it SIGKILL when the node's thread
    that started it exits (a spare may wait long; it must not outlive a node that was killed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill(daemon: asyncio.subprocess.Process) -> None:
    if daemon.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, signal.SIGKILL)


async def _remove_when_done(daemon: asyncio.subprocess.Process, directory: Path) -> None:
    """A spare's directory goes once its daemon is done (served its restore, or was ended)."""
    with contextlib.suppress(Exception):
        await daemon.wait()
    shutil.rmtree(directory, ignore_errors=True)
