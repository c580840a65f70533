"""Taking and restoring a node's memory snapshots: `criu dump` at a worker's snapshot point,
`criu restore` (eager, or lazy with a `criu lazy-pages` daemon), and handing the worker its
identity afterwards. The node daemon owns one `Snapshotter` and keeps the containers' lifecycle.

Images themselves (where they live, their keys, CRIU's argv) are `corral_runtime.snapshots`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from corral_protocol import env
from corral_protocol.v1 import node_pb2, worker_pb2
from corral_runtime import criu
from corral_runtime.container_process import ContainerProcess
from corral_runtime.lazy_spares import LazyPagesSpares, die_with_parent
from corral_runtime.runtimes import OciRuntime
from corral_runtime.snapshot_point import INLINE_PREFIX
from corral_runtime.snapshots import (
    LAZY_PAGES_LOG,
    LAZY_PAGES_SOCKET,
    PIDFILE,
    RESTORE_LOG,
    RESTORE_TIMEOUT_S,
    CriuError,
    Image,
    SnapshotStore,
    criu_log_errors,
    criu_log_seconds,
    write_identity,
)

log = logging.getLogger("corral.runtime")

RUNC_PIDFILE = "container.pid"
RUNC_RESTORE_LOG = "restore.log"  # runc's name for CRIU's restore log, in the work path
# How often the node looks for the restore's pid file. The restored worker waits for its identity
# meanwhile, so this is on every restore's critical path (~100 looks per restore).
RESTORE_POLL_S = 0.001

# Lazy-pages restores (CRIU with userfaultfd): the switch's environment variable, how long the
# `criu lazy-pages` daemon may take to listen, and after how many failed lazy restores (each then
# restored eagerly) this node stops trying them.
LAZY_PAGES_ENV = env.CORRAL_SNAPSHOT_LAZY_PAGES
LAZY_PAGES_READY_TIMEOUT_S = 10.0
LAZY_PAGES_MAX_FAILURES = 3

SpawnTask = Callable[[Coroutine[Any, Any, None]], None]


class Snapshotter:
    """Dumps workers at their snapshot point and restores images as new containers, on one node.

    `spawn_task` runs a background coroutine for the node (the watch over a lazy-pages daemon)."""

    def __init__(self, store: SnapshotStore, *, gpu_checkpoint: bool, lazy_pages: str | None, spawn_task: SpawnTask,
                 sandbox: OciRuntime | None = None) -> None:
        self.store = store
        self.sandbox = sandbox  # containers run by runc: `runc checkpoint` and `runc restore` drive CRIU
        self._spawn_task = spawn_task
        self._dump_locks: dict[str, asyncio.Lock] = {}
        self._gpu_checkpoint = gpu_checkpoint
        self.lazy_pages = self._lazy_pages_mode(lazy_pages)  # restore with --lazy-pages
        self._lazy_failures = 0
        # A lazy-pages daemon started ahead per image: a restore then need not wait for one to start.
        self.spares = LazyPagesSpares(store.root.parent / "lazy-spares",
                                      lambda image, directory: self._start_lazy_pages(image, directory, die_with_node=True))

    def close(self) -> None:
        """The node stops: end the spare lazy-pages daemons."""
        self.spares.close()

    def _lazy_pages_mode(self, setting: str | None) -> bool:
        """Whether restores use CRIU lazy pages: `auto` (the default) when CRIU and the kernel
        support them and GPU checkpointing is off (that combination is unverified), `on` whenever
        they are supported, `off` never."""
        try:
            mode = criu.parse_lazy_pages_setting(setting)
        except ValueError as err:
            log.warning("snapshot restores: %s; lazy pages are off", err)
            return False
        if mode == "off":
            log.info("snapshot restores: lazy pages off (%s=off)", LAZY_PAGES_ENV)
            return False
        supported, reason = criu.lazy_pages_supported(self.store.criu)
        if not supported:
            log.warning("snapshot restores: lazy pages unavailable, restores copy every page up front: %s", reason)
            return False
        if mode == "auto" and self._gpu_checkpoint:
            log.info("snapshot restores: lazy pages off with GPU checkpointing (set %s=on to try them)", LAZY_PAGES_ENV)
            return False
        log.info("snapshot restores: lazy pages (userfaultfd)")
        return True

    async def restore(
        self, start: node_pb2.StartContainer, image: Image, workdir: Path, container_env: dict[str, str], bundle: Path,
    ) -> ContainerProcess:
        """Restore `image` as this container: criu restores the worker at its snapshot point, with
        new pipes as its stdio; the node then hands it its identity. With lazy pages on, a failed
        lazy restore is retried eagerly (and a failed eager restore is the caller's cold start).
        `bundle` is the container's code bundle (runc mounts it where the image expects it)."""
        self.store.check(image)
        if self.lazy_pages:
            try:
                return await self._restore_once(start, image, workdir, container_env, bundle, lazy=True)
            except (CriuError, OSError) as err:
                self._lazy_failures += 1
                log.warning("container %s: lazy restore of snapshot %s failed, restoring it eagerly instead: %s",
                            start.container_id, start.snapshot_key[:12], err)
                if self._lazy_failures >= LAZY_PAGES_MAX_FAILURES and self.lazy_pages:
                    self.lazy_pages = False
                    log.warning("snapshot restores: %d lazy restores failed; this node restores eagerly from now on", self._lazy_failures)
                for name in (PIDFILE, LAZY_PAGES_SOCKET, RUNC_PIDFILE):
                    with contextlib.suppress(OSError):
                        (workdir / name).unlink()
                with contextlib.suppress(OSError):
                    os.replace(workdir / RESTORE_LOG, workdir / f"lazy-{RESTORE_LOG}")
        return await self._restore_once(start, image, workdir, container_env, bundle, lazy=False)

    async def _start_lazy_pages(self, image: Image, workdir: Path, *, die_with_node: bool = False) -> asyncio.subprocess.Process:
        """Start the `criu lazy-pages` daemon for one lazy restore into `workdir`; returns once it
        listens. `die_with_node`: a spare, which may wait long for its restore, is killed if the node dies."""
        loop = asyncio.get_running_loop()
        status_r, status_w = os.pipe()
        try:
            daemon = await asyncio.create_subprocess_exec(
                *self.store.lazy_pages_argv(image, workdir, status_w), pass_fds=(status_w,),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent if die_with_node else None,
            )
        except BaseException:
            os.close(status_r)
            os.close(status_w)
            raise
        os.close(status_w)
        readable: asyncio.Future[bytes] = loop.create_future()

        def on_status() -> None:
            if not readable.done():
                try:
                    readable.set_result(os.read(status_r, 1))
                except OSError as err:
                    readable.set_exception(err)

        loop.add_reader(status_r, on_status)
        try:
            ready = await asyncio.wait_for(readable, timeout=LAZY_PAGES_READY_TIMEOUT_S)
            if not ready:  # it exited (or closed the pipe) without listening
                await asyncio.wait_for(daemon.wait(), timeout=LAZY_PAGES_READY_TIMEOUT_S)
                raise CriuError(f"criu lazy-pages failed: {criu_log_errors(workdir / LAZY_PAGES_LOG) or f'exit status {daemon.returncode}'}")
        except asyncio.TimeoutError:
            await _end_lazy_pages(daemon)
            raise CriuError(f"criu lazy-pages did not start in {LAZY_PAGES_READY_TIMEOUT_S:g} s") from None
        except BaseException:
            await _end_lazy_pages(daemon)
            raise
        finally:
            loop.remove_reader(status_r)
            os.close(status_r)
        return daemon

    async def _restore_once(
        self, start: node_pb2.StartContainer, image: Image, workdir: Path, container_env: dict[str, str], bundle: Path, *, lazy: bool,
    ) -> ContainerProcess:
        loop = asyncio.get_running_loop()
        began = loop.time()
        daemon = None
        if lazy:
            daemon = self.spares.take(image, workdir)
            if daemon is not None:
                log.info("container %s: lazy restore with a spare lazy-pages daemon", start.container_id)
            else:
                daemon = await self._start_lazy_pages(image, workdir)
            self.spares.refill(image, self._spawn_task)  # for the next restore of this image
        if self.sandbox is not None:
            return await self._restore_runc(start, image, workdir, container_env, bundle, daemon, began)
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        child_fds = (stdin_r, stdout_w, stderr_w)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.store.restore_argv(image, workdir, child_fds, lazy=lazy), pass_fds=child_fds,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            for fd in (stdin_r, stdin_w, stdout_r, stdout_w, stderr_r, stderr_w):
                os.close(fd)
            if daemon is not None:
                await _end_lazy_pages(daemon)
            raise
        for fd in child_fds:
            os.close(fd)
        # criu's process stands in for the worker: the node reads the worker's pipes through it.
        process.stdout = await _reader(loop, stdout_r)
        process.stderr = await _reader(loop, stderr_r)
        container = ContainerProcess(start.container_id, process, in_namespace=True, stdin_fd=stdin_w, lazy_pages=daemon)
        pidfile = workdir / PIDFILE
        deadline = began + RESTORE_TIMEOUT_S
        try:
            while not pidfile.exists():
                if process.returncode is not None:
                    raise CriuError(f"criu restore failed: {criu_log_errors(workdir / RESTORE_LOG) or f'exit status {process.returncode}'}")
                if daemon is not None and daemon.returncode is not None:
                    raise CriuError(f"criu lazy-pages exited during the restore: {criu_log_errors(workdir / LAZY_PAGES_LOG) or f'exit status {daemon.returncode}'}")
                if loop.time() > deadline:
                    raise CriuError(f"criu restore did not finish in {RESTORE_TIMEOUT_S:g} s")
                await asyncio.sleep(RESTORE_POLL_S)
            container.worker_pid = int(pidfile.read_text().strip() or 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # criu and whatever it restored so far
            if daemon is not None:
                await _end_lazy_pages(daemon)
            os.close(stdin_w)
            raise
        self.store.count_restore(start.snapshot_key)
        log.info("container %s restored from snapshot %s in %.3f s (%d MB image%s)", start.container_id,
                 start.snapshot_key[:12], loop.time() - began, int(image.meta.get("size_bytes", 0)) // 1_000_000,  # type: ignore[call-overload]
                 ", lazy pages" if lazy else "")
        if daemon is not None:
            self._spawn_task(self._watch_lazy_pages(container, began, workdir))
        hand_identity(container, worker_pb2.SnapshotIdentity(env=container_env, workdir=str(workdir), restored=True), workdir)
        return container

    async def _restore_runc(
        self, start: node_pb2.StartContainer, image: Image, workdir: Path, container_env: dict[str, str], bundle: Path,
        daemon: asyncio.subprocess.Process | None, began: float,
    ) -> ContainerProcess:
        """`runc restore` of a checkpoint as this container: a new OCI bundle and cgroup (its own
        limits), the image's mounts at the same places, runc's stdio (new pipes) as the worker's."""
        runc = self.sandbox
        assert runc is not None
        loop = asyncio.get_running_loop()
        lazy_ready = loop.time() - began
        resources = start.resources
        image_run = getattr(runc, "image_runs", {}).get(start.container_id)  # a container with an image: its root
        runc.prepare(start.container_id, workdir, args=image_run[0] if image_run else [sys.executable, "-m", "corral_runtime.worker"],
                     env={"HOME": "/tmp"}, code_bundle=bundle, cpu=resources.cpu_limit, memory_mib=resources.memory_limit_mib,
                     gpu_indices=list(start.gpu_indices), image=image_run[1] if image_run else None)
        pid_file = runc.pid_file(workdir)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        try:
            process = await asyncio.create_subprocess_exec(
                *runc.restore_argv(start.container_id, image.path, workdir, lazy=daemon is not None), cwd=workdir,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            if daemon is not None:
                await _end_lazy_pages(daemon)
            await runc.remove(start.container_id, workdir)
            raise
        container = ContainerProcess(start.container_id, process, in_namespace=True, lazy_pages=daemon, pid_file=pid_file)
        deadline = began + RESTORE_TIMEOUT_S
        try:
            while not pid_file.exists() or not pid_file.read_text().strip():
                if process.returncode is not None:
                    raise CriuError(f"runc restore failed: {criu_log_errors(workdir / RUNC_RESTORE_LOG) or await _stderr_tail(process)}")
                # runc writes its pid file only once the whole restore is done; by then a small
                # image's lazy-pages daemon may have served every page and exited 0.
                if daemon is not None and daemon.returncode not in (None, 0):
                    raise CriuError(f"criu lazy-pages failed during the restore: {criu_log_errors(workdir / LAZY_PAGES_LOG) or f'exit status {daemon.returncode}'}")
                if loop.time() > deadline:
                    raise CriuError(f"runc restore did not finish in {RESTORE_TIMEOUT_S:g} s")
                await asyncio.sleep(RESTORE_POLL_S)
            container.worker_pid = int(pid_file.read_text().strip())
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=10)
            if daemon is not None:
                await _end_lazy_pages(daemon)
            await runc.remove(start.container_id, workdir)
            raise
        self.store.count_restore(start.snapshot_key)
        log.info("container %s restored from snapshot %s in %.3f s (%d MB image%s) by runc; criu restore %.3f s%s",
                 start.container_id, start.snapshot_key[:12], loop.time() - began,
                 int(image.meta.get("size_bytes", 0)) // 1_000_000,  # type: ignore[call-overload]
                 ", lazy pages" if daemon is not None else "", criu_log_seconds(workdir / RUNC_RESTORE_LOG),
                 f", lazy-pages daemon ready after {lazy_ready:.3f} s" if daemon is not None else "")
        if daemon is not None:
            self._spawn_task(self._watch_lazy_pages(container, began, workdir))
        hand_identity(container, worker_pb2.SnapshotIdentity(env=container_env, workdir="/tmp", restored=True), workdir)
        return container

    async def _watch_lazy_pages(self, container: ContainerProcess, began: float, workdir: Path) -> None:
        """The lazy-pages daemon exits 0 once every page arrived (or the restored tree is gone). If
        it fails while the worker still runs, pages the worker has not touched yet can never
        arrive: the container is killed rather than left to fault on them."""
        daemon = container.lazy_pages
        assert daemon is not None
        code = await daemon.wait()
        if code == 0:
            log.debug("container %s: every page arrived %.2f s after the restore began", container.container_id,
                      asyncio.get_running_loop().time() - began)
        elif container.lazy_pages is daemon and container.process.returncode is None:  # not ended by the node
            log.error("container %s: criu lazy-pages failed (exit status %s) before every page arrived: %s",
                      container.container_id, code, criu_log_errors(workdir / LAZY_PAGES_LOG))
            container.kill_reason = container.kill_reason or "its lazy-pages daemon failed before all its memory was restored"
            container.send_signal(signal.SIGKILL)

    async def take(self, container: ContainerProcess, still_running: Callable[[], bool]) -> node_pb2.SnapshotResult:
        """The worker reached its snapshot point: dump it (left running), then hand it its identity
        if `still_running()`. Returns the result for the control plane."""
        start = container.start
        assert start is not None
        container.start = None
        identity = container.identity
        assert identity is not None
        workdir = Path(identity.workdir)
        lock = self._dump_locks.setdefault(start.snapshot_key, asyncio.Lock())
        result = node_pb2.SnapshotResult(container_id=container.container_id, snapshot_key=start.snapshot_key)
        async with lock:  # one dump per key at a time, whatever the control plane asks
            pid = container.signal_pid()
            try:
                if pid is None:
                    raise CriuError("the worker's pid is unknown")
                runc = self.sandbox
                checkpoint = (lambda image_dir: runc.checkpoint_argv(container.container_id, image_dir)) if runc is not None else None
                image = await self.store.dump(pid, start.app_id, start.snapshot_key, {
                    "bundle_hash": start.bundle_hash, "class_name": start.class_name,
                }, checkpoint_argv=checkpoint)
                result.ok = True
                result.image.CopyFrom(image.to_proto())
                if self.lazy_pages:
                    self.spares.refill(image, self._spawn_task)  # the first restore need not wait for a daemon
            except (CriuError, OSError) as err:
                result.error = str(err)
                log.warning("container %s: snapshot %s failed, it goes on without one: %s", container.container_id, start.snapshot_key[:12], err)
        if still_running():
            with contextlib.suppress(OSError, RuntimeError):
                hand_identity(container, identity, workdir)
        container.identity = None
        return result


def hand_identity(container: ContainerProcess, identity: worker_pb2.SnapshotIdentity, workdir: Path) -> None:
    """Hand the worker its identity, one line on its stdin: the path of a file the node writes
    (the worker deletes it once read), or for a runc container, which sees no node file, the
    identity itself (`inline:` and the message in base64)."""
    if container.pid_file is not None:
        line = f"{INLINE_PREFIX}{base64.b64encode(identity.SerializeToString()).decode()}\n".encode()
    else:
        line = f"{write_identity(workdir, identity)}\n".encode()
    if container.stdin_fd >= 0:
        os.write(container.stdin_fd, line)
    else:
        stdin = container.process.stdin
        assert stdin is not None
        stdin.write(line)


async def release_lazy_pages(container: ContainerProcess, workdir: Path) -> None:
    """The restored tree is gone: end its lazy-pages daemon, if any, and remove its socket."""
    if container.lazy_pages is None:
        return
    daemon, container.lazy_pages = container.lazy_pages, None
    await _end_lazy_pages(daemon)
    with contextlib.suppress(OSError):
        (workdir / LAZY_PAGES_SOCKET).unlink()


async def _end_lazy_pages(daemon: asyncio.subprocess.Process) -> None:
    """End a `criu lazy-pages` daemon (its own process group) and reap it."""
    if daemon.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, signal.SIGKILL)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(daemon.wait(), timeout=10)


async def _stderr_tail(process: asyncio.subprocess.Process) -> str:
    """What a failed `runc restore` said (its last lines), or its exit status."""
    text = b""
    if process.stderr is not None:
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            text = await asyncio.wait_for(process.stderr.read(), timeout=1)
    lines = [line for line in text.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or f"exit status {process.returncode}"


async def _reader(loop: asyncio.AbstractEventLoop, fd: int) -> asyncio.StreamReader:
    """A stream reader over a pipe's read end (the restored worker's stdout or stderr)."""
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    await loop.connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb", buffering=0))
    return reader
