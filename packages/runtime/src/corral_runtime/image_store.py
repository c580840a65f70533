"""The node's image store: Debian bases, layers cached by hash, overlayfs mounts, the LRU bound.

Layout under the store's root (`CORRAL_IMAGE_CACHE`; nodes of one machine may share it):

    base/<release>/            a Debian root filesystem from mmdebstrap (minbase + python3)
    layers/<key>/fs/           one build step's changes (an overlayfs upper directory)
    layers/<key>/meta.json     its title and size; `used` (its mtime) is the LRU clock
    locks/<key>.lock           flock held while a layer is built, so one machine builds it once

A layer's key is sha256 of its parent's key and its step, so a layer is reused exactly when its
whole history is the same. A layer appears under `layers/` only once its step succeeded (built in
a `.tmp-` directory, then renamed), so no half-built layer is ever cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corral_protocol import env as corral_env
from corral_protocol.v1 import common_pb2

# Debian release of each Python version a base provides; the SDK refuses others at definition time.
RELEASES = {"3.11": "bookworm", "3.13": "trixie"}
VENV = "/opt/venv"  # the image's virtualenv: the worker and every pip step install here
LOCAL_PYTHON = "/corral/python"  # add_local_python_source copies here; on the venv's path
DEFAULT_MAX_GB = 50.0
# Bumped when the worker layer's recipe changes (not its wheels): every image's layers then rebuild.
WORKER_LAYER_VERSION = 2
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_root(work_dir: Path) -> Path:
    configured = os.environ.get(corral_env.CORRAL_IMAGE_CACHE)
    if configured:
        return Path(configured)
    return Path("/var/cache/corral/images") if os.geteuid() == 0 else work_dir / "images"


@dataclass(frozen=True)
class Step:
    """One entry of a build plan: a layer to build (or reuse), or a config-only step."""

    key: str
    title: str
    kind: str  # "base", "worker", or an ImageStep kind
    step: common_pb2.ImageStep | None = None
    has_layer: bool = True


@dataclass
class Plan:
    """An image's build plan and the configuration its containers get."""

    image_hash: str
    release: str
    python_version: str
    steps: list[Step]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""

    @property
    def layer_keys(self) -> list[str]:
        return [s.key for s in self.steps if s.has_layer and s.kind != "base"]


def _key(parent: str, payload: bytes) -> str:
    return hashlib.sha256(parent.encode() + b"\0" + payload).hexdigest()[:32]


def step_title(step: common_pb2.ImageStep) -> str:
    if step.kind == "pip":
        return "pip install " + (f"-r {step.path}" if step.path else " ".join(step.args))
    if step.kind == "apt":
        return "apt install " + " ".join(step.args)
    if step.kind == "run":
        return "run " + " && ".join(step.args)
    if step.kind == "env":
        return "env " + " ".join(f"{k}={v}" for k, v in sorted(step.env.items()))
    if step.kind == "workdir":
        return f"workdir {step.path}"
    if step.kind == "files":
        return f"add local files to {step.path}"
    return step.kind


def plan(spec: common_pb2.ImageSpec, image_hash: str, worker_fingerprint: str) -> Plan:
    """The layers of `spec`, keyed by their history; `worker_fingerprint` names the corral wheels."""
    version = spec.python_version or "3.11"
    release = RELEASES.get(version)
    if release is None:
        raise ValueError(f"no debian_slim base provides Python {version}; supported: {', '.join(RELEASES)}")
    base_key = f"base-{release}"
    steps = [Step(base_key, f"debian_slim (Debian {release}, Python {version})", "base")]
    worker_key = _key(base_key, f"worker:{WORKER_LAYER_VERSION}:{worker_fingerprint}".encode())
    steps.append(Step(worker_key, "corral worker", "worker"))
    parent = worker_key
    result = Plan(image_hash, release, version, steps)
    for step in spec.steps:
        parent = _key(parent, step.SerializeToString(deterministic=True))
        config_only = step.kind in ("env", "workdir")
        steps.append(Step(parent, step_title(step), step.kind, step, has_layer=not config_only))
        if step.kind == "env":
            result.env.update(step.env)
        elif step.kind == "workdir":
            result.workdir = step.path
    return result


class ImageStore:
    """Bases and layers on disk; see the module docstring."""

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        for sub in ("base", "layers", "locks", "uv-cache"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        if max_bytes is None:
            max_bytes = int(float(os.environ.get(corral_env.CORRAL_IMAGE_CACHE_MAX_GB) or DEFAULT_MAX_GB) * 1e9)
        self.max_bytes = max_bytes
        self.in_use: dict[str, int] = {}  # layer key -> containers of this node using it

    def base_dir(self, release: str) -> Path:
        return self.root / "base" / release

    def layer_dir(self, key: str) -> Path:
        return self.root / "layers" / key

    def has(self, key: str) -> bool:
        if key.startswith("base-"):
            return self.base_dir(key.removeprefix("base-")).is_dir()
        return (self.layer_dir(key) / "meta.json").is_file()

    def missing(self, plan: Plan) -> list[Step]:
        return [s for s in plan.steps if s.has_layer and not self.has(s.key)]

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Held while `key` is built: another node of this machine waits, then finds it built."""
        with open(self.root / "locks" / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def lower_dirs(self, plan: Plan, upto: int | None = None) -> list[str]:
        """overlayfs lowerdir entries, topmost first, of the plan's layers (the first `upto` steps)."""
        steps = plan.steps if upto is None else plan.steps[:upto]
        dirs = [str(self.base_dir(plan.release))]
        dirs += [str(self.layer_dir(s.key) / "fs") for s in steps if s.has_layer and s.kind != "base"]
        return list(reversed(dirs))

    def commit(self, key: str, staging: Path, title: str) -> None:
        """A built layer enters the cache (atomically): `staging/fs` becomes `layers/<key>/fs`."""
        size = _size(staging / "fs")
        (staging / "meta.json").write_text(json.dumps({"key": key, "title": title, "size": size, "built_at": time.time()}))
        (staging / "used").touch()
        shutil.rmtree(staging / "work", ignore_errors=True)
        os.replace(staging, self.layer_dir(key))

    def touch(self, plan: Plan) -> None:
        for key in plan.layer_keys:
            with contextlib.suppress(OSError):
                os.utime(self.layer_dir(key) / "used")

    def layers(self) -> list[dict[str, object]]:
        """Every cached layer: key, title, size, last use (for `corral image list`)."""
        found = []
        for path in sorted((self.root / "layers").iterdir()):
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads((path / "meta.json").read_text())
                meta["last_used"] = (path / "used").stat().st_mtime
                found.append(meta)
        return found

    def remove(self, keys: list[str] | None = None) -> int:
        """Remove these layers (all when None), except those in use; returns how many went."""
        removed = 0
        for meta in self.layers():
            key = str(meta["key"])
            if (keys is None or any(key.startswith(k) for k in keys)) and not self.in_use.get(key):
                shutil.rmtree(self.layer_dir(key), ignore_errors=True)
                removed += 1
        return removed

    def enforce_bound(self) -> int:
        """Remove least-recently-used layers (not in use) until the cache fits its bound."""
        layers = sorted(self.layers(), key=lambda m: float(m["last_used"]))  # type: ignore[arg-type]
        total = sum(int(m["size"]) for m in layers)  # type: ignore[call-overload]
        removed = 0
        for meta in layers:
            if total <= self.max_bytes:
                break
            key = str(meta["key"])
            if self.in_use.get(key):
                continue
            shutil.rmtree(self.layer_dir(key), ignore_errors=True)
            total -= int(meta["size"])  # type: ignore[call-overload]
            removed += 1
        return removed

    def collect_staging(self) -> None:
        """Staging directories of builds that died: never a cached layer. A build holds its key's
        lock while it runs (in this process or another node's), so only unlocked ones go."""
        stale = [(path, path.name.split(".tmp-", 1)[0]) for path in (self.root / "layers").glob("*.tmp-*")]
        stale += [(path, "base-" + path.name.split(".tmp-", 1)[0]) for path in (self.root / "base").glob("*.tmp-*")]
        for path, key in stale:
            with open(self.root / "locks" / f"{key}.lock", "w") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a build in progress
                try:
                    discard(path)
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def mount_overlay(target: Path, lower: list[str], upper: Path | None = None, work: Path | None = None) -> None:
    """Mount an overlay of `lower` (topmost first) at `target`, writable when `upper` is given."""
    target.mkdir(parents=True, exist_ok=True)
    options = "lowerdir=" + ":".join(lower)
    if upper is not None and work is not None:
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        options += f",upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True, capture_output=True, text=True)


def discard(path: Path) -> None:
    """Remove a staging directory that a killed build may have left mounts in (mmdebstrap mounts
    /proc and /dev in its target): unmount them first, deepest first, so nothing is removed through
    a mount."""
    root = str(path).rstrip("/")
    points = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == root or point.startswith(root + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    shutil.rmtree(path, ignore_errors=True)


def unmount(target: Path) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)
