"""The cgroups a node puts its containers in: limits from `cpu=` and `memory=`, a pids limit,
usage for `corral container list`, and whether the kernel killed a container for memory.

Layout: `<scope>/<container id>` holds the limits and belongs to the node; runc creates the
container's own cgroup below it (`<scope>/<container id>/ctr`) and removes it when the container
exits. Because the limits sit on the node's level, the OOM-kill counter and the CPU time survive
runc's cleanup, so the node can tell, after the exit, that the kernel killed the container for
memory. `scope` is `/corral-<node instance>`, unique per node work directory, so a node at start
removes its own leftovers and never another node's.

Both cgroup v1 (one hierarchy per controller, as on this project's machines) and v2 (unified) are
supported; runc picks v2 when `/sys/fs/cgroup` is a cgroup2 mount, and so does this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
DEFAULT_PIDS_LIMIT = 4096
RUNC_LEAF = "ctr"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, options) of every mount of this process."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                found.append((parts[1], parts[2], parts[3]))
    return found


def version() -> int:
    """2 when /sys/fs/cgroup is the unified hierarchy (runc then uses v2), 1 when it holds v1
    controller hierarchies, 0 when there is no usable cgroup filesystem."""
    mounts = _mounts()
    if any(point == str(CGROUP_ROOT) and kind == "cgroup2" for point, kind, _ in mounts):
        return 2
    if any(kind == "cgroup" for _, kind, _ in mounts):
        return 1
    return 0


def v1_hierarchies(controllers: tuple[str, ...] | None = V1_CONTROLLERS) -> dict[str, Path]:
    """Each v1 controller's mount point (comounted controllers share one); every hierarchy when
    `controllers` is None (runc creates the container's cgroup in all of them, and in the unified
    one of a hybrid host)."""
    found: dict[str, Path] = {}
    for point, kind, options in _mounts():
        if controllers is None:
            if kind in ("cgroup", "cgroup2"):  # hybrid hosts: runc uses the unified one too
                found.setdefault(point, Path(point))
            continue
        if kind != "cgroup":
            continue
        for option in options.split(","):
            if option in controllers:
                found.setdefault(option, Path(point))
    return found


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    values = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
    return values


@dataclass
class Usage:
    """A container's use against its limits, read from its cgroup."""

    memory_bytes: int = 0
    memory_limit_bytes: int = 0  # 0: no limit
    cpu_seconds: float = 0.0  # CPU time used since it started
    cpu_limit: float = 0.0  # cores; 0: no limit
    oom_kills: int = 0
    # How often it reached its memory limit (v1: memory.failcnt, or a peak at the limit; v2:
    # memory.events "max"). On v1 the
    # OOM-kill counter is kept by the victim's own cgroup (runc's, gone with it), so a SIGKILL
    # nobody sent plus a reached limit is how the node tells an OOM kill there.
    limit_hits: int = 0

    def out_of_memory(self, exit_code: int) -> str:
        """"out of memory (limit N MiB)" when the kernel killed the container for memory, else "".
        `exit_code` as runc reports it (128 + N for signal N) or as a negative signal number."""
        sigkilled = exit_code in (-signal.SIGKILL, 128 + signal.SIGKILL)
        if not (self.oom_kills or (sigkilled and self.limit_hits)):
            return ""
        limit = f" (limit {self.memory_limit_bytes // (1024 * 1024)} MiB)" if self.memory_limit_bytes else ""
        return f"out of memory{limit}"


class Cgroups:
    """The cgroups of one node instance (`scope`), in the hierarchy this host uses (`version`)."""

    def __init__(self, scope: str, cgroup_version: int | None = None) -> None:
        self.scope = "/" + scope.strip("/")
        self.version = version() if cgroup_version is None else cgroup_version
        self.hierarchies = v1_hierarchies() if self.version == 1 else {}
        self.all_hierarchies = v1_hierarchies(None) if self.version == 1 else {}

    def runc_path(self, container_id: str) -> str:
        """The cgroupsPath runc gets: below the node's cgroup of the container."""
        return f"{self.scope}/{container_id}/{RUNC_LEAF}"

    def _dirs(self, container_id: str | None, *, every_hierarchy: bool = False) -> dict[str, Path]:
        """Controller -> directory of the container's cgroup (the scope's when container_id is None);
        with `every_hierarchy`, in each v1 hierarchy, not only those that hold limits."""
        rel = self.scope.lstrip("/") + (f"/{container_id}" if container_id else "")
        if self.version == 2:
            return {"unified": CGROUP_ROOT / rel}
        roots = self.all_hierarchies if every_hierarchy else self.hierarchies
        return {name: root / rel for name, root in roots.items()}

    def create(self, container_id: str, *, cpu: float, memory_mib: int, pids: int = DEFAULT_PIDS_LIMIT) -> None:
        """The container's cgroup with its limits: `cpu` cores of CPU time per period (0: none),
        `memory_mib` of memory, swap included (0: none), at most `pids` tasks. On an existing cgroup
        it sets those limits (a warm-pool container's, at its assignment)."""
        if self.version == 2:
            self._create_v2(container_id, cpu, memory_mib, pids)
        elif self.version == 1:
            self._create_v1(container_id, cpu, memory_mib, pids)
        else:
            raise OSError("no cgroup filesystem")

    def _create_v2(self, container_id: str, cpu: float, memory_mib: int, pids: int) -> None:
        path = self._dirs(container_id)["unified"]
        scope = path.parent
        for parent in (CGROUP_ROOT, scope):
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                _write(parent / "cgroup.subtree_control", "+cpu +memory +pids")
        path.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            _write(path / "cgroup.subtree_control", "+cpu +memory +pids")
        if memory_mib:
            _write(path / "memory.max", str(memory_mib * 1024 * 1024))
            with contextlib.suppress(OSError):
                _write(path / "memory.swap.max", "0")
        if cpu:
            _write(path / "cpu.max", f"{max(1000, int(cpu * CPU_PERIOD_US))} {CPU_PERIOD_US}")
        _write(path / "pids.max", str(pids))

    def _create_v1(self, container_id: str, cpu: float, memory_mib: int, pids: int) -> None:
        dirs = self._dirs(container_id)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        if memory_mib and "memory" in dirs:
            limit = str(memory_mib * 1024 * 1024)
            _write(dirs["memory"] / "memory.limit_in_bytes", limit)
            with contextlib.suppress(OSError):  # only with swap accounting
                _write(dirs["memory"] / "memory.memsw.limit_in_bytes", limit)
        if cpu and "cpu" in dirs:
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(max(1000, int(cpu * CPU_PERIOD_US))))
        if "pids" in dirs:
            _write(dirs["pids"] / "pids.max", str(pids))

    def usage(self, container_id: str) -> Usage:
        """What the container uses now (and whether the kernel OOM-killed anything in it)."""
        dirs = self._dirs(container_id)
        usage = Usage()
        if self.version == 2:
            path = dirs["unified"]
            usage.memory_bytes = _read_int(path / "memory.current") or 0
            usage.memory_limit_bytes = _read_int(path / "memory.max") or 0
            usage.cpu_seconds = _read_keyed(path / "cpu.stat").get("usage_usec", 0) / 1e6
            with contextlib.suppress(OSError, ValueError):
                max_quota, max_period = (path / "cpu.max").read_text().split()
                usage.cpu_limit = 0.0 if max_quota == "max" else int(max_quota) / int(max_period)
            events = _read_keyed(path / "memory.events")
            usage.oom_kills, usage.limit_hits = events.get("oom_kill", 0), events.get("max", 0)
            return usage
        if "memory" in dirs:
            usage.memory_bytes = _read_int(dirs["memory"] / "memory.usage_in_bytes") or 0
            limit = _read_int(dirs["memory"] / "memory.limit_in_bytes") or 0
            usage.memory_limit_bytes = limit if limit < 1 << 60 else 0
            usage.oom_kills = _read_keyed(dirs["memory"] / "memory.oom_control").get("oom_kill", 0)
            usage.limit_hits = sum(_read_int(dirs["memory"] / name) or 0 for name in ("memory.failcnt", "memory.memsw.failcnt"))
            peak = _read_int(dirs["memory"] / "memory.max_usage_in_bytes") or 0
            if usage.memory_limit_bytes and peak >= usage.memory_limit_bytes:  # failcnt stays 0 on some kernels
                usage.limit_hits += 1
        if "cpuacct" in dirs:
            usage.cpu_seconds = (_read_int(dirs["cpuacct"] / "cpuacct.usage") or 0) / 1e9
        if "cpu" in dirs:
            quota = _read_int(dirs["cpu"] / "cpu.cfs_quota_us") or -1
            period = _read_int(dirs["cpu"] / "cpu.cfs_period_us") or CPU_PERIOD_US
            usage.cpu_limit = quota / period if quota > 0 else 0.0
        return usage

    def remove(self, container_id: str) -> None:
        """Kill whatever is left in the container's cgroup and remove it (runc's below it too).
        The node's scope stays until the node stops (`sweep`): removing it when it looks empty
        races with a container being created in it (runc then fails to mkdir its cgroup)."""
        for path in self._dirs(container_id, every_hierarchy=True).values():
            _remove_tree(path)

    def sweep(self) -> int:
        """Remove every container cgroup of this scope (leftovers of a node that died); returns
        how many there were."""
        names: set[str] = set()
        for path in self._dirs(None, every_hierarchy=True).values():
            with contextlib.suppress(OSError):
                names.update(child.name for child in path.iterdir() if child.is_dir())
        for name in names:
            self.remove(name)
        for path in self._dirs(None, every_hierarchy=True).values():
            with contextlib.suppress(OSError):
                path.rmdir()
        return len(names)


def _remove_tree(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first, killing their tasks first."""
    if not path.is_dir():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        _remove_tree(child)
    for _ in range(50):
        pids = []
        with contextlib.suppress(OSError):
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)  # the killed tasks are still exiting
