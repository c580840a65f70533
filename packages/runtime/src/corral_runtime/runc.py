"""Containers through runc: one OCI bundle per container (its `config.json` from
`corral_runtime.oci`, an empty root directory), the node's cgroup with its limits
(`corral_runtime.cgroups`), `runc run` in the foreground with the node's pipes as its stdio, and
`runc checkpoint --leave-running` / `runc restore` for memory snapshots (CRIU doing the work).

Everything a node creates is named after its instance (`scope`, derived from its work directory):
runc's state lives in `<work_dir>/runc`, its cgroups under `/corral-<hash>`. So several nodes (test
clusters) run side by side, and a node at start removes its own leftovers and nobody else's. A
reaper process (`corral_runtime.reaper`) removes them too when the node dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from corral_runtime import image_store, oci, work_dir_claim
from corral_runtime.build_limits import BuildLimits
from corral_runtime.cgroups import Cgroups, Usage
from corral_runtime.runtimes import RUNC_CAPABILITIES

log = logging.getLogger("corral.runtime")

BUNDLE_DIR = "oci"  # in the container's own directory: config.json and rootfs/
PIDFILE = "container.pid"
CHECKPOINT_LOG = "dump.log"
RUNC_TIMEOUT_S = 30.0
GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


@dataclass(frozen=True)
class ImageRoot:
    """A built image a container runs in: its layers (overlayfs lowerdirs, topmost first) and the
    working directory its recipe set ("" for /tmp)."""

    lower: list[str]
    workdir: str = ""


def node_scope(work_dir: Path) -> str:
    """The name of this node instance's cgroup: one per work directory."""
    return "corral-" + hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:12]


def python_paths(exclude: list[Path]) -> list[str]:
    """The directories the node's Python environment lives in (prefixes, sys.path, editable
    installs): the worker needs them, read-only. The working directory and anything overlapping
    `exclude` (the node's own state) are left out."""
    cwd = os.getcwd()
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [p for p in sys.path if p and os.path.isabs(p) and os.path.normpath(p) != cwd]
    chosen = []
    for path in candidates:
        if any(oci.overlaps(path, str(other)) for other in exclude):
            log.warning("containers: %s is not shown to containers: it overlaps the node's own files", path)
            continue
        chosen.append(path)
    return chosen


def parse_volumes(spec: str) -> list[oci.Bind]:
    """Volumes an operator gives every container: `HOST[:CONTAINER][:ro|rw]`, comma-separated
    (`--volume` on the node, or $CORRAL_NODE_VOLUMES). Read-write unless `:ro`."""
    binds = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        parts = item.split(":")
        mode = "rw"
        if parts[-1] in ("ro", "rw") and len(parts) > 1:
            mode = parts.pop()
        source = os.path.abspath(parts[0])
        destination = parts[1] if len(parts) > 1 else source
        binds.append(oci.Bind(source, destination, read_only=mode == "ro"))
    return binds


class RuncRuntime:
    """The runc runtime of one node."""

    name = "runc"
    capabilities = RUNC_CAPABILITIES

    def __init__(self, runc: str, work_dir: Path, *, cgroup_version: int, volumes: list[oci.Bind] = (),  # type: ignore[assignment]
                 private_paths: list[Path] = ()) -> None:  # type: ignore[assignment]
        self.runc = runc
        self.work_dir = work_dir
        self.root = work_dir / "runc"
        self.scope = node_scope(work_dir)
        self.cgroups = Cgroups(self.scope, cgroup_version)
        self.volumes = list(volumes)
        private = [work_dir, *private_paths]
        for volume in self.volumes:
            if any(oci.overlaps(volume.source, str(p)) for p in private):
                raise ValueError(f"volume {volume.source} overlaps the node's own files")
        self.python = python_paths(private)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.public_etc = work_dir / "public-etc"  # what containers see as /etc
        self.empty_dir = work_dir / "empty"  # hides /sys/firmware and the like
        self.empty_dir.mkdir(mode=0o555, exist_ok=True)
        self._reaper: subprocess.Popen[bytes] | None = None
        self._claim_fd = -1  # work_dir_claim's lock, held from claim() until the reaper is stopped
        # Containers with an image: the worker's argv, the image's root and base environment.
        self.image_runs: dict[str, tuple[list[str], ImageRoot, dict[str, str]]] = {}

    # Node lifetime ----------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.root), *args]

    def claim(self) -> None:
        """Wait until no other node, and no earlier run's reaper, works on this work directory,
        then hold it (`work_dir_claim`); before `sweep` and `start_reaper`."""
        self.claim_within(work_dir_claim.CLAIM_TIMEOUT_S)

    def claim_within(self, timeout_s: float) -> None:
        self._claim_fd = work_dir_claim.claim(self.work_dir, timeout_s)

    def sweep(self) -> int:
        """Remove this node's leftover containers (runc state and cgroups) from an earlier run
        that did not clean up; returns how many there were."""
        return sweep(self.runc, self.root, self.cgroups)

    def start_reaper(self) -> None:
        """A process that outlives the node and removes its containers when the node dies: it
        waits for EOF on a pipe only the node holds. It shares the work directory's lock, so that
        the next node on this directory waits for its sweep."""
        shared = (self._claim_fd,) if self._claim_fd >= 0 else ()
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "corral_runtime.reaper", "--runc", self.runc, "--root", str(self.root),
             "--scope", self.scope, "--cgroup-version", str(self.cgroups.version)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True, pass_fds=shared,
        )

    def stop_reaper(self) -> None:
        """The node cleaned up: let the reaper sweep (nothing is left) and exit, then let go of
        the work directory."""
        if self._reaper is not None and self._reaper.stdin is not None:
            with contextlib.suppress(OSError):
                self._reaper.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=10)
        if self._claim_fd >= 0:
            work_dir_claim.release(self._claim_fd)
            self._claim_fd = -1

    # Containers -------------------------------------------------------------------------------

    def bundle_path(self, workdir: Path) -> Path:
        return workdir / BUNDLE_DIR

    def pid_file(self, workdir: Path) -> Path:
        return workdir / PIDFILE

    def prepare(self, container_id: str, workdir: Path, *, args: list[str], env: dict[str, str], code_bundle: Path,
                cpu: float, memory_mib: int, gpu_indices: list[int], image: ImageRoot | None = None) -> Path:
        """Write the container's OCI bundle and create its cgroup; returns the bundle's path. With
        `image`, the root is a read-only overlay of the image's layers (a private upper directory
        only takes runc's mount points) instead of the node's own system and Python directories."""
        bundle = self.bundle_path(workdir)
        rootfs = bundle / "rootfs"
        oci.sync_public_etc(self.public_etc)
        cwd = oci.CONTAINER_CWD
        if image is None:
            binds = oci.prepare_rootfs(rootfs, self.public_etc)
            binds += oci.covering_binds(self.python, [b.destination for b in binds])
        else:
            image_store.mount_overlay(rootfs, image.lower, workdir / "image-upper", workdir / "image-work")
            binds = [oci.Bind(str(self.public_etc / name), f"/etc/{name}") for name in ("resolv.conf", "hosts")
                     if (self.public_etc / name).exists()]
            cwd = image.workdir or cwd
        binds.append(oci.Bind(str(code_bundle), oci.BUNDLE_MOUNT))
        binds += self.volumes
        devices = [*GPU_DEVICES, *(f"/dev/nvidia{i}" for i in gpu_indices)] if gpu_indices else []
        spec = oci.ContainerSpec(args=args, env=env, binds=binds, cgroups_path=self.cgroups.runc_path(container_id), cwd=cwd,
                                 devices=[d for d in devices if os.path.exists(d)], empty_dir=str(self.empty_dir))
        (bundle / "config.json").write_text(json.dumps(oci.config_json(spec), indent=1))
        self.cgroups.create(container_id, cpu=cpu, memory_mib=memory_mib)
        return bundle

    def set_limits(self, container_id: str, *, cpu: float, memory_mib: int) -> None:
        """The class's limits on an existing container's cgroup (a warm-pool container, when it is
        assigned); 0 leaves a limit unset."""
        self.cgroups.create(container_id, cpu=cpu, memory_mib=memory_mib)

    def prepare_build(self, container_id: str, workdir: Path, *, args: list[str], env: dict[str, str], binds: list[oci.Bind],
                      limits: BuildLimits) -> None:
        """The bundle of an image build step: its root (`<bundle>/rootfs`, already mounted by the
        builder) writable, the capabilities a package manager needs, the host's network, and the
        node's build limits on its cgroup."""
        spec = oci.ContainerSpec(args=args, env=env, binds=binds, cgroups_path=self.cgroups.runc_path(container_id), cwd="/",
                                 empty_dir=str(self.empty_dir), read_only_root=False, capabilities=list(oci.BUILD_CAPABILITIES))
        (self.bundle_path(workdir) / "config.json").write_text(json.dumps(oci.config_json(spec), indent=1))
        self.cgroups.create(container_id, cpu=limits.cpu, memory_mib=limits.memory_mib, pids=limits.pids)

    def run_argv(self, container_id: str, workdir: Path) -> list[str]:
        """`runc run` in the foreground: it stays the container's parent, passes its stdio (the
        node's pipes) to the worker and exits with it."""
        return self.argv("run", "--bundle", str(self.bundle_path(workdir)), "--pid-file", str(workdir / PIDFILE), container_id)

    def restore_argv(self, container_id: str, image_dir: Path, workdir: Path, *, lazy: bool) -> list[str]:
        """`runc restore` of a checkpoint as a new container, in the foreground; the restored
        worker's stdio become runc's own (new pipes)."""
        argv = self.argv("restore", "--image-path", str(image_dir), "--work-path", str(workdir),
                         "--bundle", str(self.bundle_path(workdir)), "--pid-file", str(workdir / PIDFILE))
        if lazy:
            argv.append("--lazy-pages")
        return [*argv, container_id]

    def checkpoint_argv(self, container_id: str, image_dir: Path) -> list[str]:
        """`runc checkpoint --leave-running` into `image_dir` (its log there too)."""
        return self.argv("checkpoint", "--leave-running", "--image-path", str(image_dir), "--work-path", str(image_dir), container_id)

    def usage(self, container_id: str) -> Usage:
        return self.cgroups.usage(container_id)

    async def remove(self, container_id: str, workdir: Path) -> Usage:
        """After the container's exit: its last usage (OOM kills included), then its runc state,
        cgroup and bundle are removed."""
        usage = self.cgroups.usage(container_id)
        if (self.root / container_id).exists():
            await _run_quietly(self.argv("delete", "--force", container_id))
        self.cgroups.remove(container_id)
        image_store.unmount(self.bundle_path(workdir) / "rootfs")  # an image's overlay: never delete through it
        shutil.rmtree(self.bundle_path(workdir), ignore_errors=True)
        for name in ("image-upper", "image-work"):
            shutil.rmtree(workdir / name, ignore_errors=True)
        for name in (PIDFILE, f".{PIDFILE}"):  # runc writes the pid file through a dotted temporary
            with contextlib.suppress(OSError):
                (workdir / name).unlink()
        return usage


async def _run_quietly(argv: list[str]) -> None:
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(process.wait(), timeout=RUNC_TIMEOUT_S)


def sweep(runc: str, root: Path, cgroups: Cgroups) -> int:
    """Kill and delete every container in runc's state directory `root`, then remove the scope's
    cgroups. Synchronous: for node start and the reaper."""
    names = []
    with contextlib.suppress(OSError):
        names = [p.name for p in root.iterdir() if p.is_dir()]
    for name in names:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([runc, "--root", str(root), "delete", "--force", name], capture_output=True, timeout=RUNC_TIMEOUT_S)
    return max(len(names), cgroups.sweep())
