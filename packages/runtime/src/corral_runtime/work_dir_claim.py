"""One node at a time on a work directory, its reaper included.

A node's reaper (`corral_runtime.reaper`) outlives the node: when the node dies it removes every
container in the node's runc state directory and the node's cgroups. A node started again on the
same work directory while that reaper still works would see its new containers removed (killed by
signal 9 before they are ready). So a node holds an exclusive `flock` on `<work_dir>/node.lock` for
its life and hands the same open file to its reaper, which keeps it until its sweep is done; the
next node on that directory waits for the lock before it sweeps and starts anything. A second node
started on a directory in use waits too, then fails with `WorkDirInUseError`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "node.lock"
# An earlier run's reaper deletes each leftover container with `runc delete --force` (bounded at
# RUNC_TIMEOUT_S each): a few seconds in practice.
CLAIM_TIMEOUT_S = 120.0
POLL_S = 0.05


class WorkDirInUseError(Exception):
    """Another node, or an earlier node's reaper, held the work directory past the timeout."""


def claim(work_dir: Path, timeout_s: float = CLAIM_TIMEOUT_S) -> int:
    """Take `work_dir`'s lock, waiting up to `timeout_s` for its holder to let go; returns the
    lock's file descriptor (close-on-exec: only a process it is passed to explicitly shares it)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WorkDirInUseError(
                    f"the work directory {work_dir} is in use: another node runs on it, or an earlier node's reaper was "
                    f"still removing its containers after {timeout_s:g} s (give each node a --work-dir of its own)"
                ) from None
            if not said:
                log.warning("waiting for %s: another node, or an earlier run's reaper removing its containers, holds it", work_dir)
                said = True
            time.sleep(POLL_S)


def release(fd: int) -> None:
    """Close this process's copy of the lock (a reaper given it keeps the lock until it exits)."""
    try:
        os.close(fd)
    except OSError:
        pass
