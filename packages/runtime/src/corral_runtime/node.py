"""The node daemon: registers its inventory, then starts and stops containers on command.

    corral-node --server grpc://CONTROL:7470 --token TOKEN [--name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import zipfile
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc

from corral_protocol import AUTHORIZATION_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY
from corral_protocol.v1 import common_pb2, node_pb2, node_pb2_grpc
from corral_runtime import criu, namespaces
from corral_runtime.inventory import read_inventory
from corral_runtime.snapshot_point import SNAPSHOT_POINT_LINE
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
    write_identity,
)

log = logging.getLogger("corral.runtime")

_STDERR_TAIL_LINES = 30
# Credentials of the node or the user never reach a container: it gets only its own token.
_SCRUBBED_ENV = ("CORRAL_TOKEN", "CORRAL_SERVER_URL", "CORRAL_HOME")
# Lazy-pages restores (CRIU with userfaultfd): the switch's environment variable, how long the
# `criu lazy-pages` daemon may take to listen, and after how many failed lazy restores (each then
# restored eagerly) this node stops trying them.
LAZY_PAGES_ENV = "CORRAL_SNAPSHOT_LAZY_PAGES"
LAZY_PAGES_READY_TIMEOUT_S = 10.0
LAZY_PAGES_MAX_FAILURES = 3


@dataclass
class ContainerProcess:
    container_id: str
    process: asyncio.subprocess.Process
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=_STDERR_TAIL_LINES))
    kill_reason: str = ""
    # Snapshot-enabled containers: the worker runs under `unshare` or `criu restore` (process), in
    # its own pid namespace; worker_pid is its host pid, the one to signal.
    in_namespace: bool = False
    worker_pid: int = 0
    # Set while the node owes the worker its identity at the snapshot point (after the dump).
    start: node_pb2.StartContainer | None = None
    identity: dict[str, object] = field(default_factory=dict)
    stdin_fd: int = -1
    # A lazy restore's `criu lazy-pages` daemon, until it has served every page (then it exits by
    # itself) or the container is gone (then the node ends it).
    lazy_pages: asyncio.subprocess.Process | None = None

    def signal_pid(self) -> int | None:
        if not self.in_namespace:
            return None
        if not self.worker_pid:
            self.worker_pid = namespaces.child_pid(self.process.pid) or 0
        return self.worker_pid or None


class NodeDaemon:
    def __init__(
        self,
        control_url: str,
        token: str,
        work_dir: Path,
        *,
        name: str | None = None,
        inventory: common_pb2.NodeInventory | None = None,
        log_stream: TextIO | None = None,
        advertise_host: str = "127.0.0.1",
        lazy_pages: str | None = None,
    ) -> None:
        self.control_url = control_url
        self.target = control_url.split("://", 1)[-1]
        self.metadata = ((AUTHORIZATION_METADATA_KEY, f"Bearer {token}"), (VERSION_METADATA_KEY, str(PROTOCOL_VERSION)))
        self.work_dir = work_dir
        self.name = name or socket.gethostname()
        self.inventory = inventory or read_inventory()
        self.node_id = ""
        self.containers: dict[str, ContainerProcess] = {}
        self._events: asyncio.Queue[node_pb2.NodeSessionRequest] = asyncio.Queue()
        self._bundle_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: grpc.aio.Channel | None = None
        self._log_stream = log_stream or sys.stderr
        self.registered = asyncio.Event()
        self.advertise_host = advertise_host  # where this node's containers accept direct inputs
        self.snapshots: SnapshotStore | None = None
        criu_path = criu.find_criu() if self.inventory.snapshots.available else None
        if criu_path is not None:
            self.snapshots = SnapshotStore(work_dir / "snapshots", criu_path, self.inventory.snapshots.criu_version)
            removed = self.snapshots.collect_garbage()
            if removed:
                log.info("removed %d snapshot image(s) this host can no longer restore", removed)
        self._dump_locks: dict[str, asyncio.Lock] = {}
        self.lazy_pages = False  # restore with --lazy-pages (see _lazy_pages_mode)
        self._lazy_failures = 0
        if self.snapshots is not None:
            self.lazy_pages = self._lazy_pages_mode(lazy_pages if lazy_pages is not None else os.environ.get(LAZY_PAGES_ENV))

    def _lazy_pages_mode(self, setting: str | None) -> bool:
        """Whether restores use CRIU lazy pages: `auto` (the default) when CRIU and the kernel
        support them and GPU checkpointing is off (that combination is unverified), `on` whenever
        they are supported, `off` never."""
        assert self.snapshots is not None
        try:
            mode = criu.parse_lazy_pages_setting(setting)
        except ValueError as err:
            log.warning("snapshot restores: %s; lazy pages are off", err)
            return False
        if mode == "off":
            log.info("snapshot restores: lazy pages off (%s=off)", LAZY_PAGES_ENV)
            return False
        supported, reason = criu.lazy_pages_supported(self.snapshots.criu)
        if not supported:
            log.warning("snapshot restores: lazy pages unavailable, restores copy every page up front: %s", reason)
            return False
        if mode == "auto" and self.inventory.snapshots.gpu_checkpoint:
            log.info("snapshot restores: lazy pages off with GPU checkpointing (set %s=on to try them)", LAZY_PAGES_ENV)
            return False
        log.info("snapshot restores: lazy pages (userfaultfd)")
        return True

    async def run(self) -> None:
        """Serve until cancelled, reconnecting to the control plane when the connection drops."""
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = node_pb2_grpc.NodeServiceStub(self._channel)
        delay = 0.2
        try:
            while True:
                try:
                    await self._session(stub)
                    delay = 0.2
                except grpc.aio.AioRpcError as err:
                    if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION):
                        raise SystemExit(f"corral-node: the control plane refused this node: {err.details()}") from None
                    log.warning("lost the control plane at %s (%s); reconnecting", self.control_url, err.code().name)
                # The control plane forgot this node's containers with the session: stop them.
                for container_id in list(self.containers):
                    self._kill(container_id, "the node lost its control plane session")
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        finally:
            await self._channel.close()

    async def _session(self, stub: node_pb2_grpc.NodeServiceAsyncStub) -> None:
        response = await stub.RegisterNode(
            node_pb2.RegisterNodeRequest(name=self.name, inventory=self.inventory), metadata=self.metadata
        )
        self.node_id = response.node_id
        interval = response.heartbeat_interval_s or 5.0
        self._events = asyncio.Queue()

        async def events() -> AsyncIterator[node_pb2.NodeSessionRequest]:
            yield node_pb2.NodeSessionRequest(node_id=self.node_id, heartbeat=self._heartbeat())
            while True:
                try:
                    event = await asyncio.wait_for(self._events.get(), timeout=interval)
                except asyncio.TimeoutError:
                    event = node_pb2.NodeSessionRequest(heartbeat=self._heartbeat())
                event.node_id = self.node_id
                yield event

        call = stub.NodeSession(events(), metadata=self.metadata)
        self.registered.set()
        log.info("node %s registered as %s with %s", self.name, self.node_id, self.control_url)
        async for command in call:
            kind = command.WhichOneof("command")
            if kind == "start_container":
                self._spawn_task(self._start(command.start_container))
            elif kind == "stop_container":
                stop = command.stop_container
                self._spawn_task(self._stop(stop.container_id, stop.grace_s))
            elif kind == "delete_snapshots" and self.snapshots is not None:
                delete = command.delete_snapshots
                deleted = self.snapshots.delete(list(delete.snapshot_keys), delete.app_id, delete.keep_bundle_hash)
                if deleted:
                    log.info("deleted %d snapshot image(s)", deleted)
                self._emit(heartbeat=self._heartbeat())

    def _heartbeat(self) -> node_pb2.NodeHeartbeat:
        images = [image.to_proto() for image in self.snapshots.images()] if self.snapshots is not None else []
        return node_pb2.NodeHeartbeat(running_containers=list(self.containers), snapshots=images)

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, **event: object) -> None:
        self._events.put_nowait(node_pb2.NodeSessionRequest(**event))  # type: ignore[arg-type]

    async def _bundle_dir(self, bundle_hash: str) -> Path:
        target = self.work_dir / "bundles" / bundle_hash
        if target.exists():
            return target
        lock = self._bundle_locks.setdefault(bundle_hash, asyncio.Lock())
        async with lock:
            if target.exists():
                return target
            assert self._channel is not None
            stub = node_pb2_grpc.NodeServiceStub(self._channel)
            parts = [chunk.data async for chunk in stub.GetBundle(node_pb2.GetBundleRequest(hash=bundle_hash), metadata=self.metadata)]
            archive = self.work_dir / "bundles" / f"{bundle_hash}.zip.part"
            archive.parent.mkdir(parents=True, exist_ok=True)
            archive.write_bytes(b"".join(parts))
            staging = self.work_dir / "bundles" / f"{bundle_hash}.staging{os.getpid()}"
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
            os.replace(staging, target)
            archive.unlink()
        return target

    def _container_env(self, start: node_pb2.StartContainer, bundle: Path) -> dict[str, str]:
        """What a container's environment adds to the node's: its identity, secrets and GPUs."""
        env = dict(start.env)
        env.update({
            "CORRAL_CONTAINER_ID": start.container_id,
            "CORRAL_CONTAINER_TOKEN": start.container_token,
            "CORRAL_CONTROL_URL": self.control_url,
            "CORRAL_BUNDLE_DIR": str(bundle),
            "CORRAL_DIRECT_HOST": self.advertise_host,
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in start.gpu_indices),
            "PYTHONUNBUFFERED": "1",
        })
        return env

    async def _start(self, start: node_pb2.StartContainer) -> None:
        container_id = start.container_id
        snapshot_error = ""
        try:
            bundle = await self._bundle_dir(start.bundle_hash)
            workdir = self.work_dir / "containers" / container_id
            workdir.mkdir(parents=True, exist_ok=True)
            container_env = self._container_env(start, bundle)
            image = None
            if start.snapshot_key and not start.take_snapshot and self.snapshots is not None:
                image = self.snapshots.find(start.app_id, start.snapshot_key)
                if image is None:
                    snapshot_error = "this node holds no image for the key"
            container = None
            if image is not None:
                try:
                    container = await self._restore(start, image, workdir, container_env)
                except (CriuError, OSError) as err:
                    snapshot_error = str(err)
                    log.warning("container %s: restore of snapshot %s failed, starting cold instead: %s",
                                container_id, start.snapshot_key[:12], err)
                    assert self.snapshots is not None
                    self.snapshots.remove(image.path)  # corrupt or unusable here; the next start takes a new one
            if container is None:
                container = await self._spawn(start, workdir, container_env)
        except Exception as err:
            log.exception("cannot start container %s", container_id)
            self._emit(container_exited=node_pb2.ContainerExited(container_id=container_id, exit_code=-1, reason=f"the node could not start it: {err}"))
            return
        restored = image is not None and not snapshot_error
        self.containers[container_id] = container
        self._emit(container_started=node_pb2.ContainerStarted(
            container_id=container_id, pid=container.signal_pid() or container.process.pid,
            restored_from_snapshot=restored, snapshot_error=snapshot_error,
        ))
        process = container.process
        assert process.stdout is not None and process.stderr is not None
        await asyncio.gather(
            self._pump(container, process.stdout, None),
            self._pump(container, process.stderr, container.stderr_tail),
        )
        code = await process.wait()
        if container.lazy_pages is not None:  # the restored tree is gone: nothing left to serve
            daemon, container.lazy_pages = container.lazy_pages, None
            await _end_lazy_pages(daemon)
            with contextlib.suppress(OSError):
                (self.work_dir / "containers" / container_id / LAZY_PAGES_SOCKET).unlink()
        if container.stdin_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(container.stdin_fd)
        self.containers.pop(container_id, None)
        reason = container.kill_reason or ("it exited" if code == 0 else f"it was killed by signal {-code}" if code < 0 else "it exited with an error")
        self._emit(container_exited=node_pb2.ContainerExited(
            container_id=container_id, exit_code=code, reason=reason, stderr_tail="".join(container.stderr_tail),
        ))

    async def _spawn(self, start: node_pb2.StartContainer, workdir: Path, container_env: dict[str, str]) -> ContainerProcess:
        """A cold start. When it is to take a snapshot, the worker runs as pid 1 of its own pid
        namespace, without secrets, its real token or GPUs; those come with its identity after the dump."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        argv = [sys.executable, "-m", "corral_runtime.worker"]
        take = start.take_snapshot and self.snapshots is not None
        cwd = workdir
        if take:
            cwd = self.work_dir / "snapshot-cwd"  # outlives this container: restored copies start there
            cwd.mkdir(mode=0o700, parents=True, exist_ok=True)
            gpu_visible = self.inventory.snapshots.gpu_checkpoint
            env.update({
                "CORRAL_CONTAINER_ID": start.container_id,
                "CORRAL_CONTAINER_TOKEN": start.pre_snapshot_token,
                "CORRAL_CONTROL_URL": self.control_url,
                "CORRAL_BUNDLE_DIR": container_env["CORRAL_BUNDLE_DIR"],
                "CUDA_VISIBLE_DEVICES": container_env["CUDA_VISIBLE_DEVICES"] if gpu_visible else "",
                "PYTHONUNBUFFERED": "1",
            })
            argv = namespaces.command(argv)
        else:
            env.update(container_env)
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE if take else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        container = ContainerProcess(start.container_id, process, in_namespace=take)
        if take:
            container.start = start
            container.identity = {"env": container_env, "workdir": str(workdir), "restored": False}
        return container

    async def _restore(
        self, start: node_pb2.StartContainer, image: Image, workdir: Path, container_env: dict[str, str],
    ) -> ContainerProcess:
        """Restore `image` as this container: criu restores the worker at its snapshot point, with
        new pipes as its stdio; the node then hands it its identity. With lazy pages on, a failed
        lazy restore is retried eagerly (and a failed eager restore is the caller's cold start)."""
        assert self.snapshots is not None
        self.snapshots.check(image)
        if self.lazy_pages:
            try:
                return await self._restore_once(start, image, workdir, container_env, lazy=True)
            except (CriuError, OSError) as err:
                self._lazy_failures += 1
                log.warning("container %s: lazy restore of snapshot %s failed, restoring it eagerly instead: %s",
                            start.container_id, start.snapshot_key[:12], err)
                if self._lazy_failures >= LAZY_PAGES_MAX_FAILURES and self.lazy_pages:
                    self.lazy_pages = False
                    log.warning("snapshot restores: %d lazy restores failed; this node restores eagerly from now on", self._lazy_failures)
                for name in (PIDFILE, LAZY_PAGES_SOCKET):
                    with contextlib.suppress(OSError):
                        (workdir / name).unlink()
                with contextlib.suppress(OSError):
                    os.replace(workdir / RESTORE_LOG, workdir / f"lazy-{RESTORE_LOG}")
        return await self._restore_once(start, image, workdir, container_env, lazy=False)

    async def _start_lazy_pages(self, image: Image, workdir: Path) -> asyncio.subprocess.Process:
        """Start the `criu lazy-pages` daemon for one lazy restore into `workdir`; returns once it listens."""
        assert self.snapshots is not None
        loop = asyncio.get_running_loop()
        status_r, status_w = os.pipe()
        try:
            daemon = await asyncio.create_subprocess_exec(
                *self.snapshots.lazy_pages_argv(image, workdir, status_w), pass_fds=(status_w,),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
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
        self, start: node_pb2.StartContainer, image: Image, workdir: Path, container_env: dict[str, str], *, lazy: bool,
    ) -> ContainerProcess:
        assert self.snapshots is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        daemon = await self._start_lazy_pages(image, workdir) if lazy else None
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        child_fds = (stdin_r, stdout_w, stderr_w)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.snapshots.restore_argv(image, workdir, child_fds, lazy=lazy), pass_fds=child_fds,
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
                await asyncio.sleep(0.005)
            container.worker_pid = int(pidfile.read_text().strip() or 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # criu and whatever it restored so far
            if daemon is not None:
                await _end_lazy_pages(daemon)
            os.close(stdin_w)
            raise
        self.snapshots.count_restore(start.snapshot_key)
        log.info("container %s restored from snapshot %s in %.3f s (%d MB image%s)", start.container_id,
                 start.snapshot_key[:12], loop.time() - began, int(image.meta.get("size_bytes", 0)) // 1_000_000,  # type: ignore[call-overload]
                 ", lazy pages" if lazy else "")
        if daemon is not None:
            self._spawn_task(self._watch_lazy_pages(container, began))
        self._hand_identity(container, {"env": container_env, "workdir": str(workdir), "restored": True}, workdir)
        return container

    async def _watch_lazy_pages(self, container: ContainerProcess, began: float) -> None:
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
                      container.container_id, code, criu_log_errors(self.work_dir / "containers" / container.container_id / LAZY_PAGES_LOG))
            container.kill_reason = container.kill_reason or "its lazy-pages daemon failed before all its memory was restored"
            self._signal_container(container, signal.SIGKILL)

    def _hand_identity(self, container: ContainerProcess, identity: dict[str, object], workdir: Path) -> None:
        path = write_identity(workdir, identity)
        line = f"{path}\n".encode()
        if container.stdin_fd >= 0:
            os.write(container.stdin_fd, line)
        else:
            stdin = container.process.stdin
            assert stdin is not None
            stdin.write(line)

    async def _take_snapshot(self, container: ContainerProcess) -> None:
        """The worker reached its snapshot point: dump it (left running), then hand it its identity."""
        start = container.start
        assert start is not None and self.snapshots is not None
        container.start = None
        workdir = Path(str(container.identity["workdir"]))
        lock = self._dump_locks.setdefault(start.snapshot_key, asyncio.Lock())
        result = node_pb2.SnapshotResult(container_id=container.container_id, snapshot_key=start.snapshot_key)
        async with lock:  # one dump per key at a time, whatever the control plane asks
            pid = container.signal_pid()
            try:
                if pid is None:
                    raise CriuError("the worker's pid is unknown")
                image = await self.snapshots.dump(pid, start.app_id, start.snapshot_key, {
                    "bundle_hash": start.bundle_hash, "class_name": start.class_name,
                })
                result.ok = True
                result.image.CopyFrom(image.to_proto())
            except (CriuError, OSError) as err:
                result.error = str(err)
                log.warning("container %s: snapshot %s failed, it goes on without one: %s", container.container_id, start.snapshot_key[:12], err)
        if container.container_id in self.containers:
            with contextlib.suppress(OSError, RuntimeError):
                self._hand_identity(container, container.identity, workdir)
        container.identity = {}
        self._emit(snapshot_result=result)

    async def _pump(self, container: ContainerProcess, stream: asyncio.StreamReader, tail: deque[str] | None) -> None:
        prefix = f"[{container.container_id}] "
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode(errors="replace")
            if container.start is not None and tail is None and text.rstrip("\n") == SNAPSHOT_POINT_LINE:
                self._spawn_task(self._take_snapshot(container))
                continue
            if tail is not None:
                tail.append(text)
            try:
                self._log_stream.write(prefix + text)
                self._log_stream.flush()
            except (OSError, ValueError):
                pass

    def _signal(self, container_id: str, sig: int) -> None:
        container = self.containers.get(container_id)
        if container is not None:
            self._signal_container(container, sig)

    def _signal_container(self, container: ContainerProcess, sig: int) -> None:
        worker_pid = container.signal_pid()
        if worker_pid is not None:  # pid 1 of its namespace: SIGKILL ends the whole namespace
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(worker_pid, sig)
            if sig != signal.SIGKILL:
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(container.process.pid, sig)

    def _kill(self, container_id: str, reason: str) -> None:
        container = self.containers.get(container_id)
        if container is not None:
            container.kill_reason = container.kill_reason or reason
        self._signal(container_id, signal.SIGKILL)

    async def _stop(self, container_id: str, grace_s: float) -> None:
        container = self.containers.get(container_id)
        if container is None:
            return
        if grace_s <= 0:
            self._kill(container_id, "the control plane stopped it")
            return
        self._signal(container_id, signal.SIGTERM)
        try:
            await asyncio.wait_for(container.process.wait(), timeout=grace_s)
        except asyncio.TimeoutError:
            self._kill(container_id, f"it did not stop within {grace_s:g} s")

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop every container: SIGTERM (the worker runs its exit hooks), then SIGKILL after `grace_s`."""
        await asyncio.gather(*(self._stop(cid, grace_s) for cid in list(self.containers)))
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


async def _end_lazy_pages(daemon: asyncio.subprocess.Process) -> None:
    """End a `criu lazy-pages` daemon (its own process group) and reap it."""
    if daemon.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, signal.SIGKILL)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(daemon.wait(), timeout=10)


async def _reader(loop: asyncio.AbstractEventLoop, fd: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    await loop.connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb", buffering=0))
    return reader


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="corral-node", description="Run a Corral runtime node.")
    parser.add_argument("--server", default=os.environ.get("CORRAL_SERVER_URL"), help="control plane URL, grpc://host:port")
    parser.add_argument("--token", default=os.environ.get("CORRAL_TOKEN"), help="the control plane's token")
    parser.add_argument("--name", default=None, help="node name (default: hostname)")
    parser.add_argument("--work-dir", default=None, help="where bundles and container files live")
    parser.add_argument(
        "--advertise-host", default=os.environ.get("CORRAL_NODE_ADVERTISE_HOST", "127.0.0.1"),
        help="address clients reach this node's containers on for direct calls (default 127.0.0.1)",
    )
    parser.add_argument(
        "--snapshot-lazy-pages", choices=criu.LAZY_PAGES_SETTINGS, default=os.environ.get(LAZY_PAGES_ENV) or "auto",
        help="restore memory snapshots with CRIU lazy pages (userfaultfd): pages arrive on first touch and in the "
             f"background; auto uses them when CRIU and the kernel support them (default auto, or ${LAZY_PAGES_ENV})",
    )
    args = parser.parse_args(argv)
    if not args.server or not args.token:
        parser.error("--server and --token (or CORRAL_SERVER_URL and CORRAL_TOKEN) are required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    work_dir = Path(args.work_dir or Path.home() / ".local" / "share" / "corral-node")
    daemon = NodeDaemon(args.server, args.token, work_dir, name=args.name, advertise_host=args.advertise_host,
                        lazy_pages=args.snapshot_lazy_pages)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(daemon.run())
        await asyncio.wait([runner, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        await daemon.shutdown()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await runner

    asyncio.run(serve())


if __name__ == "__main__":
    main()
