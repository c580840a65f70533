"""Memory snapshot images on a node: where they live, how CRIU dumps and restores a worker.

An image is keyed by the control plane's snapshot key (code bundle, image recipe, class,
parameters, options) combined with this host's fingerprint (Python, CRIU, kernel, CPU flags), so
an image is only ever restored by the interpreter, kernel and CPU that wrote it. Images live under
`<work_dir>/snapshots/<app_id>/<image_id>/`, root-owned with mode 0700: an image holds everything
the worker had in memory.

The worker side of the protocol (the snapshot point) is `corral_runtime.snapshot_point`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.eager_regions import PAGE_SIZE, ImageFormatError, make_small_regions_eager

log = logging.getLogger("corral.runtime.snapshots")

META_FILE = "corral-meta.json"
DUMP_TIMEOUT_S = 300.0
# A restore of a sound image takes about a second per GB; a damaged one can make criu spin forever.
RESTORE_TIMEOUT_S = 60.0
RESTORE_LOG = "criu-restore.log"
PIDFILE = "criu-restore.pid"
# Lazy restores: the `criu lazy-pages` daemon's log, and the socket it listens on in the work dir.
LAZY_PAGES_LOG = "criu-lazy-pages.log"
LAZY_PAGES_SOCKET = "lazy-pages.socket"
GPU_CHECKPOINT_MIN_DRIVER = 570


def cpu_flags() -> str:
    """The CPU feature flags of this host (a restored process may use any of them)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    return platform.machine()


def host_fingerprint(criu_version: str, runtime: str = "process") -> str:
    """What must match between dump and restore besides the service itself (the container runtime
    too: a runc checkpoint is restored only by runc)."""
    uname = os.uname()
    parts = [sys.version, sys.executable, f"criu {criu_version}", uname.release, uname.version, uname.machine, cpu_flags()]
    if runtime != "process":
        parts.append(f"runtime {runtime}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def gpu_checkpoint_supported(driver_version: str) -> bool:
    """cuda-checkpoint is installed and the NVIDIA driver is >= 570: CRIU's cuda plugin can then
    checkpoint GPU state, so snap hooks may see GPUs. Not verified on real hardware."""
    if not driver_version or shutil.which("cuda-checkpoint") is None:
        return False
    try:
        return int(driver_version.split(".")[0]) >= GPU_CHECKPOINT_MIN_DRIVER
    except ValueError:
        return False


@dataclass
class Image:
    path: Path
    meta: dict[str, object]

    @property
    def snapshot_key(self) -> str:
        return str(self.meta["snapshot_key"])

    @property
    def app_id(self) -> str:
        return str(self.meta["app_id"])

    def to_proto(self) -> common_pb2.SnapshotImage:
        return common_pb2.SnapshotImage(
            snapshot_key=self.snapshot_key, app_id=self.app_id, class_name=str(self.meta.get("class_name", "")),
            bundle_hash=str(self.meta.get("bundle_hash", "")), size_bytes=int(self.meta.get("size_bytes", 0)),  # type: ignore[call-overload]
            created_at=float(self.meta.get("created_at", 0.0)), restores=int(self.meta.get("restores", 0)),  # type: ignore[arg-type,call-overload]
        )


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


class SnapshotStore:
    """The images of one node. Every method is cheap filesystem work, safe on the event loop."""

    def __init__(self, root: Path, criu: str, criu_version: str, *, runtime: str = "process") -> None:
        self.root = root
        self.criu = criu
        self.fingerprint = host_fingerprint(criu_version, runtime)
        self.restores: dict[str, int] = {}
        _private_dir(root)

    def image_dir(self, app_id: str, snapshot_key: str) -> Path:
        image_id = hashlib.sha256(f"{app_id}\n{snapshot_key}\n{self.fingerprint}".encode()).hexdigest()[:40]
        return self.root / app_id / image_id

    def find(self, app_id: str, snapshot_key: str) -> Image | None:
        """The complete image for this app and key, written by this host; None otherwise."""
        path = self.image_dir(app_id, snapshot_key)
        image = self._read(path)
        # An image of one app is never restored for another, whatever the key says.
        if image is None or image.app_id != app_id or image.snapshot_key != snapshot_key:
            return None
        return image

    def _read(self, path: Path) -> Image | None:
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("fingerprint") != self.fingerprint:
            return None
        meta["restores"] = self.restores.get(str(meta.get("snapshot_key")), 0)
        return Image(path, meta)

    def images(self) -> list[Image]:
        found = []
        for app_dir in sorted(self.root.iterdir()) if self.root.exists() else []:
            if not app_dir.is_dir():
                continue
            for path in sorted(app_dir.iterdir()):
                image = self._read(path) if path.is_dir() else None
                if image is not None:
                    found.append(image)
        return found

    def delete(self, keys: list[str] = (), app_id: str = "", keep_bundle_hash: str = "") -> int:  # type: ignore[assignment]
        """Delete the images named by key, and those of `app_id` not built from `keep_bundle_hash`."""
        deleted = 0
        for image in self.images():
            named = image.snapshot_key in keys
            stale = bool(app_id) and image.app_id == app_id and image.meta.get("bundle_hash") != keep_bundle_hash
            if named or stale:
                self.remove(image.path)
                deleted += 1
                with contextlib.suppress(OSError):
                    image.path.parent.rmdir()  # the app's folder, once empty
        return deleted

    def remove(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def collect_garbage(self) -> int:
        """Remove what can never be restored here: other fingerprints, unfinished dumps."""
        removed = 0
        for app_dir in list(self.root.iterdir()) if self.root.exists() else []:
            for path in list(app_dir.iterdir()) if app_dir.is_dir() else []:
                if self._read(path) is None:
                    self.remove(path)
                    removed += 1
            with contextlib.suppress(OSError):
                app_dir.rmdir()  # only when empty
        return removed

    async def dump(self, pid: int, app_id: str, snapshot_key: str, meta: dict[str, object],
                   checkpoint_argv: Callable[[Path], list[str]] | None = None) -> Image:
        """Dump the process tree rooted at `pid` (left running) as the image for this key; with
        `checkpoint_argv` (an image directory -> argv, e.g. `runc checkpoint --leave-running`), that
        command dumps it instead of `criu dump` (its log is dump.log in the image directory too)."""
        final = self.image_dir(app_id, snapshot_key)
        _private_dir(final.parent)
        staging = final.with_name(f"{final.name}.dump{os.getpid()}.{time.monotonic_ns()}")
        _private_dir(staging)
        stdio = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in range(3)]
        try:
            started = time.monotonic()
            argv = checkpoint_argv(staging) if checkpoint_argv is not None else [
                self.criu, "dump", "-t", str(pid), "-D", str(staging), "--leave-running", "-o", "dump.log"]
            await run_criu(argv, staging, "dump.log")
            try:
                eager_pages = make_small_regions_eager(staging)  # lazy restores copy small regions up front
            except (ImageFormatError, OSError) as err:
                log.warning("snapshot %s: every page stays lazy (cannot read the image's memory map: %s)", snapshot_key[:12], err)
                eager_pages = 0
            files = {f.name: f.stat().st_size for f in staging.iterdir() if f.is_file() and f.name.endswith(".img")}
            size = sum(files.values())
            meta = {
                **meta, "snapshot_key": snapshot_key, "app_id": app_id, "fingerprint": self.fingerprint,
                "stdio": stdio, "size_bytes": size, "files": files, "created_at": time.time(),
                "dump_s": time.monotonic() - started, "eager_bytes": eager_pages * PAGE_SIZE,
            }
            (staging / META_FILE).write_text(json.dumps(meta))
            if final.exists():
                self.remove(final)
            os.replace(staging, final)
        except BaseException:
            self.remove(staging)
            raise
        log.info("dumped pid %d as snapshot %s (%.0f MB in %.2f s)", pid, snapshot_key[:12], size / 1e6, meta["dump_s"])
        return Image(final, meta)

    def check(self, image: Image) -> None:
        """Cheap sanity check before a restore: every image file is there, with its size at dump
        time (criu can hang on a truncated pages file instead of failing)."""
        files: dict[str, int] = image.meta.get("files", {})  # type: ignore[assignment]
        for name, size in files.items():
            try:
                actual = (image.path / name).stat().st_size
            except OSError:
                raise CriuError(f"the image lacks {name}") from None
            if actual != size:
                raise CriuError(f"the image's {name} has {actual} bytes, {size} when it was dumped")

    def restore_argv(self, image: Image, workdir: Path, stdio_fds: tuple[int, int, int], *, lazy: bool = False) -> list[str]:
        """`criu restore` of `image`, its stdio connected to `stdio_fds` (stdin's read end, stdout's
        and stderr's write ends), without --shell-job; its log and pidfile go to `workdir`. criu stays
        the restored tree's parent and exits when it does. `lazy`: anonymous memory is left empty,
        registered with userfaultfd and handed to the `lazy_pages_argv` daemon of the same `workdir`."""
        argv = [self.criu, "restore", "-D", str(image.path), "-W", str(workdir), "-o", RESTORE_LOG, "--pidfile", PIDFILE]
        if lazy:
            argv.append("--lazy-pages")
        for fd, inode in zip(stdio_fds, image.meta["stdio"]):  # type: ignore[call-overload]
            argv += ["--inherit-fd", f"fd[{fd}]:{inode}"]
        return argv

    def lazy_pages_argv(self, image: Image, workdir: Path, status_fd: int) -> list[str]:
        """`criu lazy-pages`: serves `image`'s pages to the lazy restore run with the same `workdir`
        (it listens on `workdir`/lazy-pages.socket), on page faults and in the background, then exits
        once every page arrived or the restored tree is gone. It writes one byte on `status_fd` when
        it is listening."""
        return [self.criu, "lazy-pages", "-D", str(image.path), "-W", str(workdir), "-o", LAZY_PAGES_LOG,
                "--status-fd", str(status_fd)]

    def count_restore(self, snapshot_key: str) -> None:
        self.restores[snapshot_key] = self.restores.get(snapshot_key, 0) + 1


class CriuError(Exception):
    """CRIU failed; the message carries the last error lines of its log."""


async def run_criu(argv: list[str], log_dir: Path, log_name: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=DUMP_TIMEOUT_S)
    except asyncio.TimeoutError:
        process.kill()
        raise CriuError(f"criu {argv[1]} did not finish in {DUMP_TIMEOUT_S:g} s") from None
    if process.returncode != 0:
        raise CriuError(f"criu {argv[1]} failed: {criu_log_errors(log_dir / log_name) or stderr.decode(errors='replace')[-500:]}")


def criu_log_errors(path: Path, lines: int = 3) -> str:
    """The last error lines of a CRIU log, for messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    errors = [line.strip() for line in text.splitlines() if "Error" in line]
    return " | ".join(errors[-lines:])


IDENTITY_FILE = "corral-identity.pb"


def write_identity(workdir: Path, identity: worker_pb2.SnapshotIdentity) -> Path:
    """The file a worker reads at its snapshot point: its identity and environment, secrets
    included, which therefore never enter an image. Mode 0600; the worker deletes it once read
    (and the node when the container ends, in case it never was)."""
    path = workdir / IDENTITY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(identity.SerializeToString())
    return path


def criu_log_seconds(path: Path) -> float:
    """How long CRIU itself worked, from the timestamp of its log's last line ("(00.103260) ...")."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            last = f.read().decode(errors="replace").strip().splitlines()[-1]
        return float(last[1:last.index(")")])
    except (OSError, ValueError, IndexError):
        return float("nan")
