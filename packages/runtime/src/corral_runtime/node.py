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
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from corral_protocol import AUTHORIZATION_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY
from corral_protocol.v1 import common_pb2, node_pb2, node_pb2_grpc
from corral_runtime.inventory import read_inventory

log = logging.getLogger("corral.runtime")

_STDERR_TAIL_LINES = 30
# Credentials of the node or the user never reach a container: it gets only its own token.
_SCRUBBED_ENV = ("CORRAL_TOKEN", "CORRAL_SERVER_URL", "CORRAL_HOME")


@dataclass
class ContainerProcess:
    container_id: str
    process: asyncio.subprocess.Process
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=_STDERR_TAIL_LINES))
    kill_reason: str = ""


class NodeDaemon:
    def __init__(
        self,
        control_url: str,
        token: str,
        work_dir: Path,
        *,
        name: str | None = None,
        inventory: common_pb2.NodeInventory | None = None,
        log_stream: object = None,
        advertise_host: str = "127.0.0.1",
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

    async def _session(self, stub: node_pb2_grpc.NodeServiceStub) -> None:
        response = await stub.RegisterNode(
            node_pb2.RegisterNodeRequest(name=self.name, inventory=self.inventory), metadata=self.metadata
        )
        self.node_id = response.node_id
        interval = response.heartbeat_interval_s or 5.0
        self._events = asyncio.Queue()

        async def events() -> object:
            yield node_pb2.NodeSessionRequest(node_id=self.node_id, heartbeat=node_pb2.NodeHeartbeat())
            while True:
                try:
                    event = await asyncio.wait_for(self._events.get(), timeout=interval)
                except asyncio.TimeoutError:
                    event = node_pb2.NodeSessionRequest(
                        heartbeat=node_pb2.NodeHeartbeat(running_containers=list(self.containers))
                    )
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

    def _spawn_task(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
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

    async def _start(self, start: node_pb2.StartContainer) -> None:
        container_id = start.container_id
        try:
            bundle = await self._bundle_dir(start.bundle_hash)
            workdir = self.work_dir / "containers" / container_id
            workdir.mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
            env.update(start.env)
            env.update({
                "CORRAL_CONTAINER_ID": container_id,
                "CORRAL_CONTAINER_TOKEN": start.container_token,
                "CORRAL_CONTROL_URL": self.control_url,
                "CORRAL_BUNDLE_DIR": str(bundle),
                "CORRAL_DIRECT_HOST": self.advertise_host,
                "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in start.gpu_indices),
                "PYTHONUNBUFFERED": "1",
            })
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "corral_runtime.worker",
                cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except Exception as err:
            log.exception("cannot start container %s", container_id)
            self._emit(container_exited=node_pb2.ContainerExited(container_id=container_id, exit_code=-1, reason=f"the node could not start it: {err}"))
            return
        container = ContainerProcess(container_id, process)
        self.containers[container_id] = container
        self._emit(container_started=node_pb2.ContainerStarted(container_id=container_id, pid=process.pid))
        assert process.stdout is not None and process.stderr is not None
        await asyncio.gather(
            self._pump(container, process.stdout, None),
            self._pump(container, process.stderr, container.stderr_tail),
        )
        code = await process.wait()
        self.containers.pop(container_id, None)
        reason = container.kill_reason or ("it exited" if code == 0 else f"it was killed by signal {-code}" if code < 0 else "it exited with an error")
        self._emit(container_exited=node_pb2.ContainerExited(
            container_id=container_id, exit_code=code, reason=reason, stderr_tail="".join(container.stderr_tail),
        ))

    async def _pump(self, container: ContainerProcess, stream: asyncio.StreamReader, tail: deque[str] | None) -> None:
        prefix = f"[{container.container_id}] "
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode(errors="replace")
            if tail is not None:
                tail.append(text)
            try:
                self._log_stream.write(prefix + text)  # type: ignore[attr-defined]
                self._log_stream.flush()  # type: ignore[attr-defined]
            except (OSError, ValueError):
                pass

    def _signal(self, container_id: str, sig: int) -> None:
        container = self.containers.get(container_id)
        if container is None:
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
    args = parser.parse_args(argv)
    if not args.server or not args.token:
        parser.error("--server and --token (or CORRAL_SERVER_URL and CORRAL_TOKEN) are required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    work_dir = Path(args.work_dir or Path.home() / ".local" / "share" / "corral-node")
    daemon = NodeDaemon(args.server, args.token, work_dir, name=args.name, advertise_host=args.advertise_host)

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
