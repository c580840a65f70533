"""One node at a time on a work directory: a node started again on it waits for the earlier run's
reaper (which shares the lock) to finish removing the earlier containers, so that reaper cannot
remove the new node's containers. Real processes and real `flock`s; `/bin/true` stands in for runc
(the state directory is empty, so the reaper never runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral_runtime import work_dir_claim
from corral_runtime.runc import RuncRuntime


def test_a_second_claim_waits_then_fails_clearly(tmp_path: Path) -> None:
    fd = work_dir_claim.claim(tmp_path)
    try:
        with pytest.raises(work_dir_claim.WorkDirInUseError, match=r"is in use: another node runs on it.*--work-dir"):
            work_dir_claim.claim(tmp_path, timeout_s=0.2)
    finally:
        work_dir_claim.release(fd)
    work_dir_claim.release(work_dir_claim.claim(tmp_path, timeout_s=1))  # free again


def test_a_dead_nodes_reaper_holds_the_work_directory_until_its_sweep_is_done(tmp_path: Path) -> None:
    node = RuncRuntime("/bin/true", tmp_path, cgroup_version=1)
    node.claim()
    node.start_reaper()
    reaper = node._reaper
    assert reaper is not None and reaper.stdin is not None
    try:
        # The node dies (its copy of the lock closes with it); its reaper still holds the lock.
        work_dir_claim.release(node._claim_fd)
        with pytest.raises(work_dir_claim.WorkDirInUseError):
            RuncRuntime("/bin/true", tmp_path, cgroup_version=1).claim_within(0.3)
        # The reaper sweeps (the pipe it waits on closes) and exits: the next node gets the lock.
        reaper.stdin.close()
        assert reaper.wait(timeout=60) == 0
        after = RuncRuntime("/bin/true", tmp_path, cgroup_version=1)
        after.claim_within(10)
        after.stop_reaper()  # releases it
        work_dir_claim.release(work_dir_claim.claim(tmp_path, timeout_s=1))
    finally:
        if reaper.poll() is None:
            reaper.kill()


def test_the_lock_is_not_inherited_by_other_children(tmp_path: Path) -> None:
    fd = work_dir_claim.claim(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], close_fds=False)
    try:
        work_dir_claim.release(fd)
        work_dir_claim.release(work_dir_claim.claim(tmp_path, timeout_s=1))  # the child holds nothing
    finally:
        child.kill()
        child.wait()
