"""Can this node take memory snapshots? Find CRIU, read its version, run `criu check` once (after
giving CRIU a tmpfs for its kernel-feature cache, `criu_feature_cache`).

The node calls `detect()` once at start and reports the answer in `NodeInventory.snapshots`. Memory
snapshots need CRIU >= 4 (Debian bookworm's 3.17 fails on current kernels), a kernel that passes
`criu check`, and root. `tools/install-criu` (in a Corral checkout) installs a CRIU that qualifies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from corral_protocol.parameters import parse_bool
from corral_runtime import criu_feature_cache

log = logging.getLogger(__name__)

MIN_MAJOR_VERSION = 4
INSTALL_HINT = "install it with tools/install-criu"
CHECK_TIMEOUT_S = 60.0
# Where tools/install-criu and distribution packages put the binary; sbin is often not on a
# non-login PATH, so look there too.
FALLBACK_PATHS = ("/usr/local/sbin/criu", "/usr/sbin/criu", "/sbin/criu")

_VERSION_LINE = re.compile(r"^Version:\s*(\d+(?:\.\d+)*)", re.MULTILINE)
# "Error (criu/cr-check.c:1234): message"; "Warn  (criu/kerndat.c:56): message"
_LOG_PREFIX = re.compile(r"^(Error|Warn)\s*\([^)]*\):\s*")


@dataclass(frozen=True)
class CriuSupport:
    available: bool
    reason: str  # why snapshots are unavailable; empty when available
    version: str = ""  # "4.1.1", or empty when criu was not found or its version is unreadable
    path: str = ""

    def describe(self) -> str:
        if self.available:
            return f"available (criu {self.version})"
        return f"unavailable ({self.reason})"


def find_criu() -> str | None:
    """`criu` on PATH, else the usual sbin locations."""
    found = shutil.which("criu")
    if found:
        return found
    for path in FALLBACK_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def parse_version(output: str) -> str | None:
    """The version in `criu --version` output ("Version: 4.1.1", then a GitID line for git builds)."""
    match = _VERSION_LINE.search(output)
    return match.group(1) if match else None


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def parse_check(returncode: int, output: str) -> tuple[bool, str]:
    """(passed, reason) from `criu check`'s exit status and its stdout+stderr.

    It passes with exit status 0 and "Looks good." A failure's reason is its last error line, without
    the source location CRIU prefixes it with, or else the first line it printed.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if returncode == 0 and any(line.startswith("Looks good") for line in lines):
        return True, ""
    errors = [_LOG_PREFIX.sub("", line) for line in lines if line.startswith("Error")]
    others = [text for text in (_LOG_PREFIX.sub("", line) for line in lines) if text != "Does not look good."]
    detail = errors[-1] if errors else others[0].rstrip(": ") if others else f"exit status {returncode}"
    return False, f"criu check failed: {detail}"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL)


def detect(criu: str | None = None, *, is_root: bool | None = None) -> CriuSupport:
    """Whether memory snapshots work on this node, and if not, why.

    `criu` (the binary) defaults to `find_criu()`, `is_root` to whether the effective uid is 0.
    """
    path = criu or find_criu()
    if path is None:
        return CriuSupport(False, f"criu not found; {INSTALL_HINT}")
    try:
        shown = _run([path, "--version"])
    except (OSError, subprocess.SubprocessError) as err:
        return CriuSupport(False, f"cannot run {path}: {err}", path=path)
    version = parse_version(shown.stdout + shown.stderr)
    if version is None:
        return CriuSupport(False, f"cannot read the version of {path}; {INSTALL_HINT}", path=path)
    if version_tuple(version)[0] < MIN_MAJOR_VERSION:
        return CriuSupport(
            False, f"criu {version} is too old, snapshots need criu >= {MIN_MAJOR_VERSION}; {INSTALL_HINT}", version, path
        )
    if not (os.geteuid() == 0 if is_root is None else is_root):
        return CriuSupport(False, "needs root (run the node as root)", version, path)
    if os.geteuid() == 0:  # before `criu check`, whose kernel probe then fills the cache
        log.info("criu's kernel-feature cache: %s", criu_feature_cache.prepare())
    try:
        checked = _run([path, "check"])
    except subprocess.TimeoutExpired:
        return CriuSupport(False, f"criu check did not finish in {CHECK_TIMEOUT_S:g} s", version, path)
    except (OSError, subprocess.SubprocessError) as err:
        return CriuSupport(False, f"cannot run {path} check: {err}", version, path)
    passed, reason = parse_check(checked.returncode, checked.stdout + checked.stderr)
    return CriuSupport(passed, reason, version, path)


def lazy_pages_supported(criu: str) -> tuple[bool, str]:
    """(supported, reason): can `criu restore --lazy-pages` with a `criu lazy-pages` daemon work
    here? It needs non-cooperative userfaultfd (fork, mremap and unmap events), which
    `criu check --feature uffd-noncoop` tests on this kernel."""
    try:
        checked = _run([criu, "check", "--feature", "uffd-noncoop"])
    except (OSError, subprocess.SubprocessError) as err:
        return False, f"cannot run {criu} check: {err}"
    output = (checked.stdout + checked.stderr).strip()
    if checked.returncode == 0 and "is supported" in output:
        return True, ""
    return False, f"criu check --feature uffd-noncoop: {output.splitlines()[-1] if output else f'exit status {checked.returncode}'}"


LAZY_PAGES_SETTINGS = ("auto", "on", "off")


def parse_lazy_pages_setting(value: str | None) -> str:
    """The node's lazy-pages switch: auto (the default), on or off; 1/true/yes and 0/false/no too."""
    text = (value or "auto").strip().lower() or "auto"
    if text not in LAZY_PAGES_SETTINGS:
        with contextlib.suppress(ValueError):
            text = "on" if parse_bool(text) else "off"
    if text not in LAZY_PAGES_SETTINGS:
        raise ValueError(f"lazy pages must be one of auto, on, off (not {value!r})")
    return text
