"""The node daemon: registers its inventory, then starts and stops containers on command.

    CORRAL_TOKEN=... corral-node --server grpc://CONTROL:7470 [--name NAME] [--simulate-gpus H100:8]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TextIO

import grpc

from corral_protocol import AUTHORIZATION_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY, transport
from corral_protocol import env as corral_env
from corral_protocol.v1 import common_pb2, node_pb2, node_pb2_grpc
from corral_runtime import criu, runtimes
from corral_runtime.build_limits import BuildLimits
from corral_runtime.container_launcher import ContainerLauncher
from corral_runtime.container_process import ContainerProcess
from corral_runtime.control_channel import NODE_CHANNEL_OPTIONS, open_channel, permanent_failure
from corral_runtime.inventory import GpuSource, gpu_source, read_inventory, with_gpus
from corral_runtime.node_images import NodeImages, image_command
from corral_runtime.redaction import Redactor
from corral_runtime.runc import RuncRuntime, parse_volumes
from corral_runtime.snapshot_point import SNAPSHOT_POINT_LINE
from corral_runtime.snapshots import IDENTITY_FILE, SnapshotStore
from corral_runtime.snapshotter import LAZY_PAGES_ENV, Snapshotter, release_lazy_pages

__all__ = ["LAZY_PAGES_ENV", "ContainerProcess", "NodeDaemon"]

log = logging.getLogger("corral.runtime")

# A control plane answers a registration at once; one that does not (or a TLS port that never answers
# a plaintext client's HTTP/2 preface) is diagnosed, then retried.
REGISTER_TIMEOUT_S = 5.0


def warm_pool_size(setting: int | None) -> int:
    """The warm pool's size: `setting` (`--warm-pool`), else $CORRAL_NODE_WARM_POOL, else the default."""
    if setting is not None:
        return max(0, setting)
    text = os.environ.get(corral_env.CORRAL_NODE_WARM_POOL, "").strip()
    try:
        return max(0, int(text)) if text else corral_env.DEFAULT_WARM_POOL
    except ValueError:
        log.warning("%s=%r is not a number; the warm pool keeps its default size %d",
                    corral_env.CORRAL_NODE_WARM_POOL, text, corral_env.DEFAULT_WARM_POOL)
        return corral_env.DEFAULT_WARM_POOL


class NodeDaemon:
    """One node: its session with the control plane and its containers' lifecycle. Snapshots are
    taken and restored by its `Snapshotter` (None where this host cannot snapshot)."""

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
        simulate_gpus: str | None = None,
        isolation: str | None = None,
        volumes: str | None = None,
        build_limits: BuildLimits | None = None,
        tls_ca: str | None = None,
        warm_pool: int | None = None,
    ) -> None:
        self.control_url = control_url
        # `grpcs://` URLs: TLS trusting `tls_ca` (else CORRAL_TLS_CA, else the system's roots); the
        # node's containers get the same certificates as text, since they cannot read its files.
        self.tls_ca = tls_ca
        self.tls_roots = transport.trusted_roots(tls_ca) if transport.server_address(control_url).tls else None
        self.metadata = ((AUTHORIZATION_METADATA_KEY, f"Bearer {token}"), (VERSION_METADATA_KEY, str(PROTOCOL_VERSION)))
        self.work_dir = work_dir
        self.name = name or socket.gethostname()
        # GPUs: NVML, or simulated ones (`simulate_gpus`, else CORRAL_SIMULATE_GPUS), read again on heartbeats.
        self.gpu_source: GpuSource | None = None if inventory is not None else gpu_source(simulate_gpus, self.name)
        self.inventory = inventory or read_inventory(gpu_source=self.gpu_source)
        self.node_id = ""
        self.containers: dict[str, ContainerProcess] = {}
        self._events: asyncio.Queue[node_pb2.NodeSessionRequest] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: grpc.aio.Channel | None = None
        self._log_stream = log_stream or sys.stderr
        self.registered = asyncio.Event()
        self.advertise_host = advertise_host  # where this node's containers accept direct inputs
        self.sandbox = self._sandbox(isolation, volumes)
        self.snapshots: SnapshotStore | None = None
        self.snapshotter: Snapshotter | None = None
        criu_path = criu.find_criu() if self.inventory.snapshots.available else None
        if self.sandbox is not None and not self.sandbox.capabilities.checkpoint_restore:
            criu_path = None
            self.inventory.snapshots.available = False
            self.inventory.snapshots.reason = f"the container runtime ({self.sandbox.name}) cannot checkpoint containers"
        if criu_path is not None:
            self.snapshots = SnapshotStore(work_dir / "snapshots", criu_path, self.inventory.snapshots.criu_version,
                                           runtime=self.sandbox.name if self.sandbox is not None else "process")
            removed = self.snapshots.collect_garbage()
            if removed:
                log.info("removed %d snapshot image(s) this host can no longer restore", removed)
            self.snapshotter = Snapshotter(
                self.snapshots, gpu_checkpoint=self.inventory.snapshots.gpu_checkpoint,
                lazy_pages=lazy_pages if lazy_pages is not None else os.environ.get(LAZY_PAGES_ENV),
                spawn_task=self._spawn_task, sandbox=self.sandbox,
            )
        self.launcher = ContainerLauncher(
            work_dir, control_url=control_url, advertise_host=advertise_host, fetch_bundle=self._fetch_bundle, tls_env=self._tls_env(),
            sandbox=self.sandbox, images=None, snapshots=self.snapshots, snapshotter=self.snapshotter,
            gpu_checkpoint=self.inventory.snapshots.gpu_checkpoint, warm_pool=warm_pool_size(warm_pool),
        )
        # Images need runc: the root filesystem of a container is the image's layers.
        self.images = (NodeImages(self.sandbox, work_dir, self.launcher.bundle_dir, self._log_stream, build_limits)
                       if isinstance(self.sandbox, RuncRuntime) else None)
        self.launcher.images = self.images

    def _sandbox(self, setting: str | None, volumes: str | None) -> runtimes.OciRuntime | None:
        """The runc runtime, or None (plain processes, with a loud warning) where it cannot run.
        Removes this node's leftover containers from an earlier run and starts its reaper."""
        isolation = runtimes.detect(setting if setting is not None else os.environ.get(corral_env.CORRAL_NODE_ISOLATION))
        runtime: RuncRuntime | None = None
        if isolation.mode == "runc":
            private = [Path(os.environ[corral_env.CORRAL_HOME])] if os.environ.get(corral_env.CORRAL_HOME) else []
            try:
                runtime = RuncRuntime(isolation.runtime_path, self.work_dir, cgroup_version=isolation.cgroup_version,
                                      volumes=parse_volumes(volumes if volumes is not None else os.environ.get(corral_env.CORRAL_NODE_VOLUMES, "")),
                                      private_paths=private)
                runtime.claim()  # an earlier run's reaper may still be removing its containers
                leftovers = runtime.sweep()
                if leftovers:
                    log.warning("removed %d container(s) an earlier run of this node left behind", leftovers)
                runtime.start_reaper()
            except (OSError, ValueError) as err:
                isolation = runtimes.Isolation("none", f"runc could not be set up: {err}")
                runtime = None
        if runtime is None:
            log.warning(
                "CONTAINERS ARE NOT ISOLATED on this node: %s. They run as plain processes of the node's user and "
                "can read its files (the admin token included), signal its processes and use any amount of CPU and "
                "memory. Run the node as root with runc installed to isolate them.", isolation.reason,
            )
        else:
            log.info("containers: runc (%s), cgroup v%d", runtime.runc, isolation.cgroup_version)
        self.inventory.isolation.CopyFrom(common_pb2.ContainerIsolation(
            mode=isolation.mode, reason=isolation.reason, cgroup_version=isolation.cgroup_version,
        ))
        return runtime

    async def run(self) -> None:
        """Serve until cancelled, reconnecting to the control plane when the connection drops."""
        self._channel = open_channel(self.control_url, self.tls_roots, NODE_CHANNEL_OPTIONS)
        self.launcher.start_pool()
        stub = node_pb2_grpc.NodeServiceStub(self._channel)
        delay = 0.2
        try:
            while True:
                try:
                    await self._session(stub)
                    log.warning("the control plane ended this node's session (it stopped, or lost this node); registering again")
                    delay = 0.2
                except grpc.aio.AioRpcError as err:
                    if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION):
                        raise SystemExit(f"corral-node: the control plane refused this node: {err.details()}") from None
                    if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        reason = await permanent_failure(self.control_url, self.tls_ca, err.details() or "")
                        if reason is not None:
                            raise SystemExit(f"corral-node: cannot join: {reason}") from None
                    log.warning("lost the control plane at %s (%s: %s); reconnecting", self.control_url, err.code().name, err.details())
                # Its containers live on: each worker exits once its session has ended and its running
                # inputs are done (delivered to a restarted plane, which awaits spawned ones); on
                # reconnecting, the heartbeat lists those still running, and the plane stops the
                # ones it does not await.
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        finally:
            await self._channel.close()

    async def _session(self, stub: node_pb2_grpc.NodeServiceAsyncStub) -> None:
        response = await stub.RegisterNode(
            node_pb2.RegisterNodeRequest(name=self.name, inventory=self.inventory), metadata=self.metadata,
            timeout=REGISTER_TIMEOUT_S,
        )
        self.node_id = response.node_id
        interval = response.heartbeat_interval_s or 5.0
        self._events = asyncio.Queue()

        async def events() -> AsyncIterator[node_pb2.NodeSessionRequest]:
            yield node_pb2.NodeSessionRequest(node_id=self.node_id, heartbeat=self._heartbeat())
            loop = asyncio.get_running_loop()
            # On a schedule, however busy the stream: the plane loses a node it has not heard from.
            heartbeat_due = loop.time() + interval
            while True:
                try:
                    event = await asyncio.wait_for(self._events.get(), timeout=max(0.0, heartbeat_due - loop.time()))
                except asyncio.TimeoutError:
                    event = node_pb2.NodeSessionRequest(heartbeat=self._heartbeat())
                if event.HasField("heartbeat"):
                    heartbeat_due = loop.time() + interval
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
                if self.snapshotter is not None:
                    self.snapshotter.spares.end_deleted()  # no daemon outlives its image
                if deleted:
                    log.info("deleted %d snapshot image(s)", deleted)
                self._emit(heartbeat=self._heartbeat())
            elif kind in ("build_image", "manage_image_cache"):
                self._spawn_task(image_command(self.images, command, self._emit, self.name, self.inventory.isolation.reason))

    def _heartbeat(self) -> node_pb2.NodeHeartbeat:
        images = [image.to_proto() for image in self.snapshots.images()] if self.snapshots is not None else []
        if self.gpu_source is not None:
            self.inventory = with_gpus(self.inventory, self.gpu_source.read())
        return node_pb2.NodeHeartbeat(running_containers=list(self.containers), snapshots=images, inventory=self.inventory,
                                      usage=self._usage())

    def _usage(self) -> list[common_pb2.ContainerUsage]:
        """Each isolated container's memory and CPU against its limits, from its cgroup."""
        if self.sandbox is None:
            return []
        now = time.monotonic()
        reports = []
        for container_id, container in self.containers.items():
            usage = self.sandbox.usage(container.runtime_id or container_id)
            previous, container.cpu_sample = container.cpu_sample, (usage.cpu_seconds, now)
            cores = 0.0
            if previous is not None and now > previous[1]:
                cores = max(0.0, (usage.cpu_seconds - previous[0]) / (now - previous[1]))
            reports.append(common_pb2.ContainerUsage(
                container_id=container_id, memory_bytes=usage.memory_bytes, memory_limit_bytes=usage.memory_limit_bytes,
                cpu_cores=cores, cpu_limit=usage.cpu_limit, cpu_seconds=usage.cpu_seconds,
            ))
        return reports

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, **event: object) -> None:
        self._events.put_nowait(node_pb2.NodeSessionRequest(**event))  # type: ignore[arg-type]

    def _tls_env(self) -> dict[str, str]:
        """The certificates a container's worker trusts to reach a `grpcs://` control plane."""
        return {corral_env.CORRAL_TLS_CA_PEM: self.tls_roots.decode()} if self.tls_roots else {}

    async def _fetch_bundle(self, bundle_hash: str) -> bytes:
        """A code bundle's zip archive, from the control plane."""
        assert self._channel is not None
        stub = node_pb2_grpc.NodeServiceStub(self._channel)
        parts = [chunk.data async for chunk in stub.GetBundle(node_pb2.GetBundleRequest(hash=bundle_hash), metadata=self.metadata)]
        return b"".join(parts)

    async def _start(self, start: node_pb2.StartContainer) -> None:
        container_id = start.container_id
        try:
            launched = await self.launcher.launch(start)
        except Exception as err:
            log.exception("cannot start container %s", container_id)
            await self.launcher.abandon(container_id)
            self._emit(container_exited=node_pb2.ContainerExited(container_id=container_id, exit_code=-1, reason=f"the node could not start it: {err}"))
            return
        container = launched.container
        self.containers[container_id] = container
        self._emit(container_started=node_pb2.ContainerStarted(
            container_id=container_id, pid=container.signal_pid() or container.process.pid,
            restored_from_snapshot=launched.restored, snapshot_error=launched.snapshot_error,
        ))
        process = container.process
        assert process.stdout is not None and process.stderr is not None
        redactor = Redactor.from_container_env(start.env)
        await asyncio.gather(
            self._pump(container, process.stdout, None, redactor),
            self._pump(container, process.stderr, container.stderr_tail, redactor),
        )
        code = await process.wait()
        await release_lazy_pages(container, self.work_dir / "containers" / container_id)
        with contextlib.suppress(OSError):  # a worker that died before reading its identity leaves its secrets there
            (self.work_dir / "containers" / container_id / IDENTITY_FILE).unlink()
        if self.sandbox is not None and container.pid_file is not None:
            usage = await self.launcher.remove_sandbox(container)
            if code > 128:  # runc reports a container killed by signal N as 128 + N
                code = 128 - code
            if usage.out_of_memory(code) and not container.kill_reason:
                container.kill_reason = usage.out_of_memory(code)
        if container.stdin_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(container.stdin_fd)
        self.containers.pop(container_id, None)
        self.launcher.forget_image(container_id)
        reason = container.kill_reason or ("it exited" if code == 0 else f"it was killed by signal {-code}" if code < 0 else "it exited with an error")
        self._emit(container_exited=node_pb2.ContainerExited(
            container_id=container_id, exit_code=code, reason=reason, stderr_tail="".join(container.stderr_tail),
        ))

    async def _take_snapshot(self, container: ContainerProcess) -> None:
        """The worker reached its snapshot point: the snapshotter dumps it; the result goes to the control plane."""
        assert self.snapshotter is not None
        result = await self.snapshotter.take(container, lambda: container.container_id in self.containers)
        self._emit(snapshot_result=result)

    async def _pump(self, container: ContainerProcess, stream: asyncio.StreamReader, tail: deque[str] | None, redactor: Redactor) -> None:
        """Forward a container's output to the node's log line by line, its secret values masked
        (user code may print its environment); stderr also feeds the tail reported at exit."""
        prefix = f"[{container.container_id}] "
        while True:
            line = await stream.readline()
            if not line:
                return
            text = redactor.text(line.decode(errors="replace"))
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
            container.send_signal(sig)

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
        await self.launcher.close()
        if self.snapshotter is not None:
            self.snapshotter.close()
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.stop_reaper)  # it removes anything still left
