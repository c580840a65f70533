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
