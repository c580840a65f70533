"""Snapshot support: reading CRIU's version and `criu check` verdict, and the node's answer.

The parsing tests use output captured from CRIU 4.1.1 on this kind of machine (and, for a kernel
that fails the check, output in the format of CRIU's cr-check.c, since this one passes). The
detection tests run the real criu (installed by tools/install-criu); without one they skip, except
under CI, where a missing criu is a failure.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from corral_runtime import criu
from corral_runtime.criu import CriuSupport, detect, parse_check, parse_version, version_tuple

# `criu check`, as root, on a kernel CRIU supports (exit status 0).
CHECK_GOOD = "Looks good.\n"
# `criu check --all` on the same kernel (exit status 0): optional features missing.
CHECK_MAYBE = (
    "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n"
    "Looks good but some kernel features are missing\n"
    "which, depending on your process tree, may cause\n"
    "dump or restore failure.\n"
)
# `criu check` as an unprivileged user (exit status 1).
CHECK_UNPRIVILEGED = (
    "CRIU needs to have the CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE capability: \n"
    "setcap cap_checkpoint_restore+eip /usr/local/sbin/criu\n"
)
# `criu check` on a kernel that lacks a required feature (exit status 1), in cr-check.c's format.
CHECK_BAD = (
    "Warn  (criu/kerndat.c:1103): Can't load /run/criu.kdat\n"
    "Error (criu/cr-check.c:612): Kernel doesn't support PTRACE_O_SUSPEND_SECCOMP\n"
    "Warn  (criu/cr-check.c:1608): Does not look good.\n"
)


def test_version_from_criu_version_output() -> None:
    assert parse_version("Version: 4.1.1\n") == "4.1.1"
    assert parse_version("Version: 4.2\nGitID: v4.2-12-gdeadbee\n") == "4.2"
    assert parse_version("Version: 3.17.1\n") == "3.17.1"
    assert parse_version("criu: unrecognized option '--version'\n") is None
    assert parse_version("") is None


def test_versions_compare_numerically() -> None:
    assert version_tuple("4.1.1") == (4, 1, 1)
    assert version_tuple("3.17.1") < version_tuple("4.0") < version_tuple("4.1.1") < version_tuple("4.10")


def test_check_passes_on_looks_good_with_exit_status_zero() -> None:
    assert parse_check(0, CHECK_GOOD) == (True, "")
    assert parse_check(0, CHECK_MAYBE) == (True, "")


def test_check_failure_reason_is_the_last_error_without_its_source_location() -> None:
    assert parse_check(1, CHECK_BAD) == (False, "criu check failed: Kernel doesn't support PTRACE_O_SUSPEND_SECCOMP")


def test_check_failure_without_error_lines_gives_the_first_line() -> None:
    passed, reason = parse_check(1, CHECK_UNPRIVILEGED)
    assert not passed
    assert reason == "criu check failed: CRIU needs to have the CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE capability"


def test_check_failure_with_no_output_gives_the_exit_status() -> None:
    assert parse_check(1, "") == (False, "criu check failed: exit status 1")
    assert parse_check(0, "") == (False, "criu check failed: exit status 0")  # no "Looks good": not a pass


def test_describe() -> None:
    assert CriuSupport(True, "", "4.1.1").describe() == "available (criu 4.1.1)"
    assert CriuSupport(False, "needs root (run the node as root)", "4.1.1").describe() == "unavailable (needs root (run the node as root))"


def test_missing_criu_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no criu on PATH
    monkeypatch.setattr(criu, "FALLBACK_PATHS", ())
    support = detect()
    assert not support.available
    assert support.reason == "criu not found; install it with tools/install-criu"


def write_stand_in_criu(path: Path, version: str) -> str:
    """A stand-in executable that answers `--version` like an old criu, for the too-old branch."""
    path.write_text(f"#!/bin/sh\necho 'Version: {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_criu_older_than_4_is_refused(tmp_path: Path) -> None:
    old = write_stand_in_criu(tmp_path / "criu", "3.17.1")
    support = detect(old, is_root=True)
    assert not support.available
    assert support.version == "3.17.1"
    assert "criu 3.17.1 is too old" in support.reason and "tools/install-criu" in support.reason


def real_criu() -> str:
    path = criu.find_criu()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs criu (tools/install-criu installs it), and it is not installed")
        pytest.skip("criu is not installed (tools/install-criu installs it)")
    return path


def test_real_criu_is_available_as_root() -> None:
    path = real_criu()
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root, and criu's check needs root")
        pytest.skip("criu check needs root; run the tests as root to check the real criu")
    support = detect(path)
    assert support == CriuSupport(True, "", support.version, path), support
    assert version_tuple(support.version)[0] >= 4


def test_real_criu_without_root_says_it_needs_root() -> None:
    path = real_criu()
    support = detect(path, is_root=False)
    assert not support.available
    assert support.reason == "needs root (run the node as root)"
    assert version_tuple(support.version)[0] >= 4
