"""Starting a container on a node: its code bundle, its environment, its sandbox (runc's bundle and
cgroup), then a cold start (`runc run` or a plain process) or a restore from a memory snapshot.

The node daemon (`corral_runtime.node`) asks `ContainerLauncher.launch` for a running container and
then supervises it (output, exit, stop); this module owns everything up to the worker's first
instruction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from corral_protocol import env as corral_env
from corral_protocol.v1 import node_pb2, worker_pb2
from corral_runtime import namespaces, oci, runtimes
from corral_runtime.cgroups import Usage
from corral_runtime.container_process import ContainerProcess
from corral_runtime.inventory import cuda_visible_devices
from corral_runtime.node_images import NodeImages, uses_image
from corral_runtime.redaction import secret_keys
from corral_runtime.runc import RuncRuntime
from corral_runtime.snapshots import CriuError, SnapshotStore
from corral_runtime.snapshotter import Snapshotter
from corral_runtime.warm_pool import WarmPool, eligible

__all__ = ["ContainerLauncher", "Launched"]

log = logging.getLogger("corral.runtime")


# Fetches a code bundle (a zip archive) from the control plane by its hash.
FetchBundle = Callable[[str], Awaitable[bytes]]


def base_env(*, home: str, sandboxed: bool) -> dict[str, str]:
    """What a container's environment starts from: the node's variables on the allow-list
    (`corral_protocol.env.container_base_env`; the node's credentials and anything else it holds
    stay on the node) and the runtime's own settings. Plain processes get the same list."""
    return {**corral_env.container_base_env(os.environ), **runtime_settings(home=home, sandboxed=sandboxed)}


def runtime_settings(*, home: str, sandboxed: bool) -> dict[str, str]:
    """The variables the runtime sets in every container, on the node's environment or an image's."""
    settings = {"HOME": home, "PYTHONUNBUFFERED": "1"}
    if sandboxed:
        settings["PYTHONDONTWRITEBYTECODE"] = "1"  # the Python environment is read-only inside
    return settings


@dataclass
class Launched:
    """A started container and how: restored from a snapshot, or cold (with why a restore was not
    used, when one was asked for)."""

    container: ContainerProcess
    restored: bool
    snapshot_error: str = ""


class ContainerLauncher:
    """Starts one node's containers. `sandbox` is its OCI runtime (None: plain processes),
    `images` its built images (runc only), `snapshots`/`snapshotter` its memory snapshots (None
    where the host cannot take them)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        control_url: str,
        advertise_host: str,
        fetch_bundle: FetchBundle,
        tls_env: dict[str, str],
        sandbox: runtimes.OciRuntime | None,
        images: NodeImages | None,
        snapshots: SnapshotStore | None,
        snapshotter: Snapshotter | None,
        gpu_checkpoint: bool,
        warm_pool: int = 0,
    ) -> None:
        self.work_dir = work_dir
        self.control_url = control_url
        self.advertise_host = advertise_host
        self.fetch_bundle = fetch_bundle
        self.tls_env = tls_env  # the control plane's certificates as text, for a `grpcs://` control plane
        self.sandbox = sandbox
        self.images = images
        self.snapshots = snapshots
        self.snapshotter = snapshotter
        self.gpu_checkpoint = gpu_checkpoint
        self._bundle_locks: dict[str, asyncio.Lock] = {}
        # Containers started ahead (isolated nodes only: plain processes start fast enough).
        self.pool = WarmPool(sandbox, work_dir, size=warm_pool, env=base_env(home=oci.CONTAINER_CWD, sandboxed=True)) \
            if isinstance(sandbox, RuncRuntime) and warm_pool > 0 else None

    def start_pool(self) -> None:
        """Start filling the warm pool, if this node keeps one."""
        if self.pool is not None:
            self.pool.start()

    async def close(self) -> None:
        """The node stops: remove the containers still waiting in the warm pool."""
        if self.pool is not None:
            await self.pool.close()

    def workdir(self, container_id: str) -> Path:
        """The node's directory of one container (its OCI bundle, pid file, identity file)."""
        return self.work_dir / "containers" / container_id

    async def launch(self, start: node_pb2.StartContainer) -> Launched:
        """Start the container `start` describes: restored from its snapshot when this node holds a
        usable image for the key, else cold. Raises when it cannot start at all (the caller cleans up
        with `abandon`)."""
        container_id = start.container_id
        snapshot_error = ""
        bundle = await self.bundle_dir(start.bundle_hash)
        container_env = self._container_env(start, bundle)
        with_image = self.images is not None and uses_image(start)
        if self.pool is not None and eligible(start, uses_image=with_image):
            pooled = await self.pool.assign(start, container_env, bundle)
            if pooled is not None:
                return Launched(pooled, restored=False)
        workdir = self.workdir(container_id)
        workdir.mkdir(parents=True, exist_ok=True)
        if self.images is not None and with_image:
            assert isinstance(self.sandbox, RuncRuntime)
            self.sandbox.image_runs[container_id] = await self.images.prepare(start)
        image = None
        if start.snapshot_key and not start.take_snapshot and self.snapshots is not None:
            image = self.snapshots.find(start.app_id, start.snapshot_key)
            if image is None:
                snapshot_error = "this node holds no image for the key"
        container = None
        if image is not None:
            assert self.snapshotter is not None
            try:
                container = await self.snapshotter.restore(start, image, workdir, container_env, bundle)
            except (CriuError, OSError) as err:
                snapshot_error = str(err)
                log.warning("container %s: restore of snapshot %s failed, starting cold instead: %s",
                            container_id, start.snapshot_key[:12], err)
                assert self.snapshots is not None
                self.snapshots.remove(image.path)  # corrupt or unusable here; the next start takes a new one
                self.snapshotter.spares.end_deleted()
        if container is None:
            container = await self._spawn(start, workdir, container_env, bundle)
        return Launched(container, restored=image is not None and not snapshot_error, snapshot_error=snapshot_error)

    async def remove_sandbox(self, container: ContainerProcess) -> Usage:
        """After an isolated container's exit: its last usage, then its runc state, cgroup and
        bundle removed (a warm-pool container's whole directory too: it is never used again)."""
        assert self.sandbox is not None
        workdir = container.workdir or self.workdir(container.container_id)
        usage = await self.sandbox.remove(container.runtime_id or container.container_id, workdir)
        if container.runtime_id:
            shutil.rmtree(workdir, ignore_errors=True)
        return usage

    async def abandon(self, container_id: str) -> None:
        """A launch failed: release its image and remove whatever of its sandbox exists."""
        self.forget_image(container_id)
        if self.sandbox is not None:
            await self.sandbox.remove(container_id, self.workdir(container_id))

    async def bundle_dir(self, bundle_hash: str) -> Path:
        """The code bundle with this hash, unpacked in the node's bundle cache (fetched once)."""
        target = self.work_dir / "bundles" / bundle_hash
        if target.exists():
            return target
        lock = self._bundle_locks.setdefault(bundle_hash, asyncio.Lock())
        async with lock:
            if target.exists():
                return target
            data = await self.fetch_bundle(bundle_hash)
            archive = self.work_dir / "bundles" / f"{bundle_hash}.zip.part"
            archive.parent.mkdir(parents=True, exist_ok=True)
            archive.write_bytes(data)
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
            corral_env.CORRAL_CONTAINER_ID: start.container_id,
            corral_env.CORRAL_CONTAINER_TOKEN: start.container_token,
            corral_env.CORRAL_CONTROL_URL: self.control_url,
            corral_env.CORRAL_BUNDLE_DIR: oci.BUNDLE_MOUNT if self.sandbox is not None else str(bundle),
            corral_env.CORRAL_DIRECT_HOST: self.advertise_host,
            **self.tls_env,
            "CUDA_VISIBLE_DEVICES": cuda_visible_devices(start),
            "PYTHONUNBUFFERED": "1",
            corral_env.CORRAL_SECRET_KEYS: ",".join(secret_keys(start.env)),  # names only: the worker masks their values
        })
        return env

    def forget_image(self, container_id: str) -> None:
        if self.images is not None:
            self.images.release(container_id)

    async def _spawn(self, start: node_pb2.StartContainer, workdir: Path, container_env: dict[str, str], bundle: Path) -> ContainerProcess:
        """A cold start. When it is to take a snapshot, the worker runs as pid 1 of its own pid
        namespace, without secrets, its real token or GPUs; those come with its identity after the dump."""
        take = start.take_snapshot and self.snapshots is not None
        cwd = workdir
        if self.sandbox is None and take:
            cwd = self.work_dir / "snapshot-cwd"  # outlives this container: restored copies start there
        home, sandboxed = oci.CONTAINER_CWD if self.sandbox is not None else str(cwd), self.sandbox is not None
        env = base_env(home=home, sandboxed=sandboxed)
        argv = [sys.executable, "-m", "corral_runtime.worker"]
        image_run = self.sandbox.image_runs.get(start.container_id) if isinstance(self.sandbox, RuncRuntime) else None
        if image_run is not None:  # the image's Python and a clean environment, not the node's
            argv, env = list(image_run[0]), {**image_run[2], **runtime_settings(home=home, sandboxed=sandboxed)}
        gpu_visible = not take or self.gpu_checkpoint
        if take:
            env.update({
                corral_env.CORRAL_CONTAINER_ID: start.container_id,
                corral_env.CORRAL_CONTAINER_TOKEN: start.pre_snapshot_token,
                corral_env.CORRAL_CONTROL_URL: self.control_url,
                **self.tls_env,
                corral_env.CORRAL_BUNDLE_DIR: container_env[corral_env.CORRAL_BUNDLE_DIR],
                "CUDA_VISIBLE_DEVICES": container_env["CUDA_VISIBLE_DEVICES"] if gpu_visible else "",
            })
        else:
            env.update(container_env)
        stdin = asyncio.subprocess.PIPE if take else asyncio.subprocess.DEVNULL
        if self.sandbox is not None:
            # The worker's environment is in config.json; runc itself runs with the node's.
            self._prepare_sandbox(start, workdir, argv, env, bundle, gpu_visible=gpu_visible)
            process = await asyncio.create_subprocess_exec(
                *self.sandbox.run_argv(start.container_id, workdir), cwd=workdir, stdin=stdin,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
            container = ContainerProcess(start.container_id, process, in_namespace=True, pid_file=self.sandbox.pid_file(workdir))
            identity_workdir = oci.CONTAINER_CWD
        else:
            if take:
                cwd.mkdir(mode=0o700, parents=True, exist_ok=True)
                argv = namespaces.command(argv)
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=stdin,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
            container = ContainerProcess(start.container_id, process, in_namespace=take)
            identity_workdir = str(workdir)
        if take:
            container.start = start
            container.identity = worker_pb2.SnapshotIdentity(env=container_env, workdir=identity_workdir, restored=False)
        return container

    def _prepare_sandbox(self, start: node_pb2.StartContainer, workdir: Path, argv: list[str], env: dict[str, str], bundle: Path,
                      *, gpu_visible: bool) -> None:
        """The container's OCI bundle and cgroup, its limits from the class's cpu= and memory=."""
        assert self.sandbox is not None
        if (start.gpu_indices or start.gpu_uuids) and gpu_visible and not self.sandbox.capabilities.gpu:
            raise RuntimeError(f"this node's container runtime ({self.sandbox.name}) cannot give containers GPUs")
        resources = start.resources
        self.sandbox.prepare(
            start.container_id, workdir, args=argv, env=env, code_bundle=bundle,
            cpu=resources.cpu_limit, memory_mib=resources.memory_limit_mib,
            gpu_indices=list(start.gpu_indices) if gpu_visible else [],
            image=self.sandbox.image_runs[start.container_id][1] if isinstance(self.sandbox, RuncRuntime)
            and start.container_id in self.sandbox.image_runs else None,
        )
