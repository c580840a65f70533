"""A node's warm pool: generic runc containers started ahead, each waiting for its one assignment.

A cold start otherwise pays for `runc run` (namespaces, mounts, cgroups, seccomp) and for the
interpreter importing the runtime (grpc, protobuf, the SDK) before the worker can connect. A pooled
container has done both: its worker (`python -m corral_runtime.worker --warm`) prints
`WARM_READY_LINE` and blocks on its stdin. Assigning it to a container of a class:

1. the class's code bundle is linked into the container's own, so far empty, bundle directory (a
   host directory bound read-only at `/corral/bundle` when the container was created: files added
   on the host appear inside, and no other container binds it);
2. the class's `cpu=` and `memory=` limits are written to the container's cgroup (the node's level,
   above runc's, as for any container);
3. the worker's identity, environment and secrets go to its stdin (`hand_identity`, as after a
   restore), and it connects as a fresh worker.

A pooled container serves one container's life and is then removed like any other: it is never
given back to the pool. Classes with an image, a GPU or a snapshot to take or restore start cold.
Pool containers are not reserved in the node's capacity (see "Warm pool" in docs/architecture.md).

    pool = WarmPool(runtime, work_dir, size=2, control_url=...)
    pool.start()                       # fills in the background
    container = await pool.assign(start, container_env, bundle)   # None: start it cold
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from corral_protocol.v1 import node_pb2, worker_pb2
from corral_runtime import oci
from corral_runtime.container_process import ContainerProcess
from corral_runtime.runc import RuncRuntime
from corral_runtime.snapshot_point import WARM_ARGUMENT, WARM_READY_LINE
from corral_runtime.snapshotter import hand_identity

__all__ = ["WarmPool", "eligible"]

log = logging.getLogger("corral.runtime")

POOL_PREFIX = "warm-"  # runc names of pooled containers (the Corral container id comes later)
BUNDLE_SLOT = "bundle"  # in the pooled container's directory: what it sees at /corral/bundle
READY_TIMEOUT_S = 60.0
RETRY_DELAY_S = 5.0


def eligible(start: node_pb2.StartContainer, *, uses_image: bool) -> bool:
    """Whether a pooled container can serve this start: not for an image (its own root), GPUs
    (devices are fixed at creation) or a snapshot taken or restored."""
    return not (uses_image or start.take_snapshot or start.snapshot_key or start.gpu_indices or start.gpu_uuids)


@dataclass
class _Pooled:
    name: str  # runc's container id and cgroup name
    workdir: Path
    process: asyncio.subprocess.Process


class WarmPool:
    """Up to `size` started containers of one isolated node, refilled in the background."""

    def __init__(self, runtime: RuncRuntime, work_dir: Path, *, size: int, env: dict[str, str]) -> None:
        self.runtime = runtime
        self.work_dir = work_dir
        self.size = size
        self.env = dict(env)  # the generic environment: the node's allow-list and runtime settings
        self.ready: list[_Pooled] = []
        self._starting = 0
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Fill the pool in the background (and refill it after each assignment)."""
        if self.size > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._fill())
            self._wanted.set()

    async def assign(self, start: node_pb2.StartContainer, container_env: dict[str, str], bundle: Path) -> ContainerProcess | None:
        """A pooled container become the container `start` describes, or None when none is ready
        (or it could not be given the class's limits: it is removed, the caller starts cold)."""
        while self.ready:
            pooled = self.ready.pop(0)
            self._wanted.set()
            if pooled.process.returncode is not None:
                await self._remove(pooled)
                continue
            try:
                _link_tree(bundle, pooled.workdir / BUNDLE_SLOT)
                resources = start.resources
                self.runtime.set_limits(pooled.name, cpu=resources.cpu_limit, memory_mib=resources.memory_limit_mib)
                container = ContainerProcess(start.container_id, pooled.process, in_namespace=True,
                                             pid_file=self.runtime.pid_file(pooled.workdir),
                                             runtime_id=pooled.name, workdir=pooled.workdir)
                hand_identity(container, worker_pb2.SnapshotIdentity(env=container_env, workdir=oci.CONTAINER_CWD, restored=False),
                              pooled.workdir)
            except (OSError, RuntimeError) as err:
                log.warning("container %s: warm container %s could not be assigned, starting cold: %s", start.container_id, pooled.name, err)
                with contextlib.suppress(ProcessLookupError):
                    pooled.process.kill()
                await self._remove(pooled)
                return None
            log.info("container %s: assigned warm container %s", start.container_id, pooled.name)
            return container
        return None

    async def close(self) -> None:
        """Stop filling and remove every container still waiting in the pool."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting, self.ready = self.ready, []
        for pooled in waiting:
            with contextlib.suppress(ProcessLookupError):
                pooled.process.kill()
            await self._remove(pooled)

    async def _fill(self) -> None:
        while not self._closed:
            await self._wanted.wait()
            self._wanted.clear()
            while len(self.ready) + self._starting < self.size and not self._closed:
                self._starting += 1
                try:
                    pooled = await self._create()
                except Exception as err:  # runc or the host refused: try again later, never loop hot
                    log.warning("warm pool: could not start a container (%s); retrying in %g s", err, RETRY_DELAY_S)
                    await asyncio.sleep(RETRY_DELAY_S)
                    continue
                finally:
                    self._starting -= 1
                self.ready.append(pooled)
                log.info("warm pool: container %s ready (%d of %d)", pooled.name, len(self.ready), self.size)

    async def _create(self) -> _Pooled:
        name = f"{POOL_PREFIX}{secrets.token_hex(6)}"
        workdir = self.work_dir / "containers" / name
        slot = workdir / BUNDLE_SLOT
        try:
            slot.mkdir(parents=True, mode=0o755)
            self.runtime.prepare(name, workdir, args=[sys.executable, "-m", "corral_runtime.worker", WARM_ARGUMENT], env=self.env,
                                 code_bundle=slot, cpu=0, memory_mib=0, gpu_indices=[])
            process = await asyncio.create_subprocess_exec(
                *self.runtime.run_argv(name, workdir), cwd=workdir, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except BaseException:
            await self.runtime.remove(name, workdir)
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        pooled = _Pooled(name, workdir, process)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            line = b""
        except BaseException:  # the node stops (the fill is cancelled) while the container starts
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(self._remove(pooled))
            raise
        if line.decode(errors="replace").rstrip("\n") != WARM_READY_LINE:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            stderr = b""
            if process.stderr is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    stderr = await asyncio.wait_for(process.stderr.read(4096), timeout=5)
            await self._remove(pooled)
            raise RuntimeError(f"its worker did not get ready: {stderr.decode(errors='replace').strip()[-500:] or 'no output'}")
        return pooled

    async def _remove(self, pooled: _Pooled) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pooled.process.wait(), timeout=10)
        await self.runtime.remove(pooled.name, pooled.workdir)
        shutil.rmtree(pooled.workdir, ignore_errors=True)


def _link_tree(source: Path, target: Path) -> None:
    """Hard links of `source`'s files in `target` (copies where the two are on different
    filesystems): the bundle cache's files, seen read-only by the one container that binds `target`."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copy2(src, dst)
    shutil.copytree(source, target, symlinks=True, copy_function=link, dirs_exist_ok=True)
