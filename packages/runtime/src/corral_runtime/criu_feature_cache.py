"""CRIU's cache of kernel features, kept on a tmpfs so that only the first CRIU process probes the kernel.

Every CRIU process starts by probing the kernel's features ("kerndat": ~25 ms on the 2-core
development VM, `iptables -L` among other things) unless it finds its cache file, `criu.kdat`. CRIU
writes that file, and so trusts it, only on a tmpfs, so that a reboot (perhaps into another kernel)
clears it. A restore runs its CRIU process on the critical path of a container's start, so the
cache takes the probe off every restore but the first after a boot.

`tools/install-criu` builds CRIU with its cache directory at `CACHE_DIR` (make's RUNDIR). On a host
whose `/run` is a tmpfs (most) that directory is a tmpfs already; elsewhere `prepare()` mounts a
small tmpfs of its own there. A CRIU from elsewhere (a distribution's, RUNDIR `/run`) keeps its
cache where it always has and ignores this directory.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from pathlib import Path

# tools/install-criu passes this as make's RUNDIR (its KDAT_RUNDIR): keep the two equal
# (tests/unit/test_criu_feature_cache.py checks).
CACHE_DIR = Path("/run/corral-criu")
CACHE_FILE_NAME = "criu.kdat"
TMPFS_SIZE = "1m"  # the cache is under 1 KiB
MOUNT_TIMEOUT_S = 30.0


def mount_point_and_type(path: Path, mountinfo: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount that holds `path`, from the text of
    /proc/self/mountinfo: the last-mounted of the deepest mount points above it."""
    target = os.path.normpath(str(path))
    best = ("", "")
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        fstype = line.split(" - ", 1)[1].split()[0]
        inside = target == point or point == "/" or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def filesystem_type(path: Path) -> str:
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""
    return mount_point_and_type(path, mountinfo)[1]


def prepare(cache_dir: Path = CACHE_DIR) -> str:
    """Make `cache_dir` a root-only directory on a tmpfs, mounting one there when it is not; a
    node calls this once, as root, before its first CRIU process. Returns what it found or did, for
    the node's log. Never raises: without the cache every CRIU process probes the kernel itself."""
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(cache_dir, 0, 0)
        os.chmod(cache_dir, 0o700)
        # Nodes started side by side (the tests) must not stack tmpfs mounts on one another.
        with open(cache_dir.with_name(cache_dir.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fstype = filesystem_type(cache_dir)
            if fstype == "tmpfs":
                return f"{cache_dir} is on a tmpfs"
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700,nosuid,nodev,noexec", "corral-criu",
                            str(cache_dir)], check=True, capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S)
            return f"mounted a tmpfs at {cache_dir} ({fstype or 'unknown filesystem'} underneath)"
    except subprocess.CalledProcessError as err:
        return f"no cache: mounting a tmpfs at {cache_dir} failed: {(err.stderr or '').strip() or err}"
    except (OSError, subprocess.SubprocessError) as err:
        return f"no cache: {cache_dir}: {err}"


def cache_file(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / CACHE_FILE_NAME
