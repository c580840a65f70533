"""How a node runs its containers: the runtime interface, its declared capabilities, and which
runtime this host gets.

Two runtimes today: `runc` (an OCI container per Corral container, `corral_runtime.runc`) and
`none` (the worker as a plain process of the node's user, the fallback where runc cannot run: no
root, no runc, no cgroups, or turned off). crun or gVisor would be a third class with the same
methods and its own capabilities (beta9's runtime interface is the model).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corral_protocol import env
from corral_runtime import cgroups
from corral_runtime.cgroups import Usage

ISOLATION_SETTINGS = ("auto", "runc", "none")
RUNC_INSTALL_HINT = "install Debian's runc package (apt-get install runc)"
RUNC_FALLBACK_PATHS = ("/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc")


@dataclass(frozen=True)
class RuntimeCapabilities:
    """What a runtime can do, so that the node asks only for what it offers."""

    isolation: bool  # own namespaces, cgroup limits, no capabilities, read-only root
    checkpoint_restore: bool  # memory snapshots of a running container (with CRIU)
    gpu: bool  # passing GPUs through


@dataclass(frozen=True)
class Isolation:
    """The runtime a node uses, and when it is `none`, why (shown by `corral node list`)."""

    mode: str  # "runc" or "none"
    reason: str = ""
    runtime_path: str = ""
    cgroup_version: int = 0

    def describe(self) -> str:
        if self.mode == "none":
            return f"none ({self.reason})"
        return f"{self.mode} (cgroup v{self.cgroup_version})"


class OciRuntime(Protocol):
    """What the node needs of a runtime that runs OCI bundles with runc's command line (runc
    today; crun and gVisor's runsc speak the same commands). `corral_runtime.runc.RuncRuntime`
    is the one implementation."""

    name: str
    capabilities: RuntimeCapabilities

    def sweep(self) -> int:
        """Remove this node's leftover containers from an earlier run; returns how many."""

    def start_reaper(self) -> None:
        """Start the process that removes the node's containers when the node dies."""

    def stop_reaper(self) -> None:
        """The node cleaned up: let the reaper finish."""

    def prepare(self, container_id: str, workdir: Path, *, args: list[str], env: dict[str, str], code_bundle: Path,
                cpu: float, memory_mib: int, gpu_indices: list[int]) -> Path:
        """Write the container's bundle and create its cgroup with its limits; returns the bundle."""

    def pid_file(self, workdir: Path) -> Path:
        """Where the runtime writes the container's host pid."""

    def run_argv(self, container_id: str, workdir: Path) -> list[str]:
        """Run the prepared container in the foreground, with the caller's stdio."""

    def checkpoint_argv(self, container_id: str, image_dir: Path) -> list[str]:
        """Dump the running container into `image_dir`, leaving it running."""

    def restore_argv(self, container_id: str, image_dir: Path, workdir: Path, *, lazy: bool) -> list[str]:
        """Restore a checkpoint as the prepared container, in the foreground."""

    def usage(self, container_id: str) -> Usage:
        """The container's resource use against its limits."""

    async def remove(self, container_id: str, workdir: Path) -> Usage:
        """After its exit: its last usage, then its state, cgroup and bundle removed."""


PLAIN_CAPABILITIES = RuntimeCapabilities(isolation=False, checkpoint_restore=True, gpu=True)
RUNC_CAPABILITIES = RuntimeCapabilities(isolation=True, checkpoint_restore=True, gpu=True)


def find_runc() -> str | None:
    found = shutil.which("runc")
    if found:
        return found
    for path in RUNC_FALLBACK_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def detect(setting: str | None = None, *, is_root: bool | None = None, runc: str | None = None) -> Isolation:
    """Which runtime this node uses. `setting` (the node's `--isolation`, or `env.CORRAL_NODE_ISOLATION`):
    `auto` (the default) uses runc where it can and falls back to plain processes otherwise; `none`
    turns isolation off; `runc` is the same as auto, but the fallback's warning says it was asked for."""
    choice = (setting or "auto").strip().lower() or "auto"
    if choice not in ISOLATION_SETTINGS:
        return Isolation("none", f"unknown isolation setting {setting!r} (auto, runc or none)")
    if choice == "none":
        return Isolation("none", f"turned off ({env.CORRAL_NODE_ISOLATION}=none or --isolation none)")
    if not (os.geteuid() == 0 if is_root is None else is_root):
        return Isolation("none", "needs root (run the node as root)")
    path = runc or find_runc()
    if path is None:
        return Isolation("none", f"runc not found; {RUNC_INSTALL_HINT}")
    version = cgroups.version()
    if version == 0:
        return Isolation("none", "no cgroup filesystem at /sys/fs/cgroup")
    return Isolation("runc", runtime_path=path, cgroup_version=version)
