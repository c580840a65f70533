"""`corral node list` reports each node's memory-snapshot support, from the real criu on this machine.

With a working criu (tools/install-criu) the node, run as root, says `snapshots: available (criu X)`.
Without criu the test skips, except under CI (the CI variable set), where criu must be installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Cluster, in_ci
from corral_runtime import criu_feature_cache

SBIN_PATHS = ("/usr/local/sbin/criu", "/usr/sbin/criu", "/sbin/criu")


def installed_criu() -> tuple[str, str] | None:
    """(path, version) of the criu installed on this machine, found without the runtime's own code."""
    path = shutil.which("criu") or next((p for p in SBIN_PATHS if Path(p).is_file()), None)
    if path is None:
        return None
    shown = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    match = re.search(r"^Version:\s*(\S+)", shown.stdout, re.MULTILINE)
    assert match, f"{path} --version printed no version:\n{shown.stdout}{shown.stderr}"
    return path, match.group(1)


def test_node_list_shows_snapshot_support(cluster: Cluster) -> None:
    found = installed_criu()
    if found is None:
        if in_ci():
            pytest.fail("criu is not installed; CI installs it with tools/install-criu")
        pytest.skip("criu is not installed (tools/install-criu installs it); under CI (CI=1 or CI=true) this is a failure")
    _, version = found

    listed = cluster.corral("node", "list")
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "snapshots:" in line]
    assert len(lines) == 1, listed.stdout  # the session cluster has one node

    if int(version.split(".")[0]) < 4:
        assert "snapshots: unavailable (criu " in lines[0] and "too old" in lines[0], lines[0]
    elif os.geteuid() != 0:
        assert "snapshots: unavailable (needs root" in lines[0], lines[0]
    else:
        assert lines[0].endswith(f"snapshots: available (criu {version})"), listed.stdout
    # The node logged its verdict once, at start.
    assert cluster.logs().count("memory snapshots: ") == 1, cluster.logs()


def test_criu_processes_share_the_nodes_kernel_feature_cache(cluster: Cluster, tmp_path: Path) -> None:
    """The node gave CRIU a tmpfs for its kernel-feature cache before `criu check`, which filled it,
    so a later CRIU process loads the cache instead of probing the kernel (~25 ms each)."""
    found = installed_criu()
    if found is None or os.geteuid() != 0:
        reason = "needs root and criu (tools/install-criu)"
        if in_ci():
            pytest.fail(f"{reason}; CI provides both")
        pytest.skip(f"{reason}; under CI (CI=1 or CI=true) this is a failure")
    path, _ = found
    cache_dir = criu_feature_cache.CACHE_DIR
    if str(criu_feature_cache.cache_file(cache_dir)).encode() not in Path(path).read_bytes():
        # A CRIU not built by tools/install-criu (a distribution's) keeps its cache in /run.
        if in_ci():
            pytest.fail(f"{path} was not built by tools/install-criu, which CI runs")
        pytest.skip(f"{path} keeps its kernel-feature cache elsewhere (not built by tools/install-criu)")
    assert criu_feature_cache.filesystem_type(cache_dir) == "tmpfs", Path("/proc/self/mountinfo").read_text()
    assert criu_feature_cache.cache_file(cache_dir).is_file(), "criu check left no cache"
    mode = criu_feature_cache.cache_file(cache_dir).stat().st_mode & 0o777
    assert mode == 0o600 and cache_dir.stat().st_mode & 0o777 == 0o700

    # Any CRIU command loads it first thing; a restore from an empty directory fails right after.
    run = subprocess.run([path, "restore", "-D", str(tmp_path), "-o", "restore.log", "-v4"], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    log = (tmp_path / "restore.log").read_text()
    assert f"Loaded kdat cache from {cache_dir}/criu.kdat" in log, log[:2000]
