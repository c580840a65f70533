"""A container as its node sees it: the process, how to signal it, and what it owes or was told."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from corral_protocol.v1 import node_pb2, worker_pb2
from corral_runtime import namespaces

STDERR_TAIL_LINES = 30


@dataclass
class ContainerProcess:
    """One running container: a cold-started worker, a taking worker in its own pid namespace, a
    `criu restore` standing in for a restored worker, or (isolated) `runc run` / `runc restore`
    standing in for the worker in its container."""

    container_id: str
    process: asyncio.subprocess.Process
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    kill_reason: str = ""
    # Snapshot-enabled containers: the worker runs under `unshare` or `criu restore` (process), in
    # its own pid namespace; worker_pid is its host pid, the one to signal.
    in_namespace: bool = False
    worker_pid: int = 0
    # Set while the node owes the worker its identity at the snapshot point (after the dump).
    start: node_pb2.StartContainer | None = None
    identity: worker_pb2.SnapshotIdentity | None = None
    stdin_fd: int = -1
    # A lazy restore's `criu lazy-pages` daemon, until it has served every page (then it exits by
    # itself) or the container is gone (then the node ends it).
    lazy_pages: asyncio.subprocess.Process | None = None
    # Containers run by runc: the file runc writes the worker's host pid to.
    pid_file: Path | None = None
    # A warm-pool container: the runtime's name for it (its runc id and cgroup) and its directory,
    # both chosen before it had a container id. Empty/None: the container id and the node's default.
    runtime_id: str = ""
    workdir: Path | None = None
    # The previous CPU time reading (seconds of CPU, monotonic time), for the CPU rate in heartbeats.
    cpu_sample: tuple[float, float] | None = None

    def signal_pid(self) -> int | None:
        """The worker's host pid when it runs in its own pid namespace, else None."""
        if not self.in_namespace:
            return None
        if not self.worker_pid and self.pid_file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.worker_pid = int(self.pid_file.read_text().strip() or 0)
        elif not self.worker_pid:
            self.worker_pid = namespaces.child_pid(self.process.pid) or 0
        return self.worker_pid or None

    def send_signal(self, sig: int) -> None:
        """Signal the worker; SIGKILL also ends the process group (and with it a pid namespace)."""
        worker_pid = self.signal_pid()
        if worker_pid is not None:  # pid 1 of its namespace: SIGKILL ends the whole namespace
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(worker_pid, sig)
            # runc stays the container's parent and exits once its pid 1 is gone: leave it be.
            if sig != signal.SIGKILL or self.pid_file is not None:
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
