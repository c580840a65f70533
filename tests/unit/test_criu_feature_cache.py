"""Where CRIU keeps its kernel-feature cache: the mount that holds a path, and one home for the
directory that tools/install-criu compiles into CRIU."""

from __future__ import annotations

import re
from pathlib import Path

from corral_runtime import criu_feature_cache

ROOT = Path(__file__).resolve().parents[2]

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:21 / /run rw,nosuid shared:5 - ext4 /dev/sda1 rw
40 25 0:35 / /run/corral-criu rw,nosuid,nodev,noexec shared:20 - tmpfs corral-criu rw,size=1024k,mode=700
41 25 0:36 / /run/corral-criu-other rw shared:21 - ext4 /dev/sdb1 rw
42 22 0:37 / /srv/with\\040space rw shared:22 - xfs /dev/sdc1 rw
"""


def test_the_deepest_mount_holding_a_path_wins() -> None:
    assert criu_feature_cache.mount_point_and_type(Path("/run/corral-criu"), MOUNTINFO) == ("/run/corral-criu", "tmpfs")
    assert criu_feature_cache.mount_point_and_type(Path("/run/corral-criu/criu.kdat"), MOUNTINFO)[1] == "tmpfs"
    assert criu_feature_cache.mount_point_and_type(Path("/run/other"), MOUNTINFO) == ("/run", "ext4")
    # A sibling whose name starts the same is not a parent.
    assert criu_feature_cache.mount_point_and_type(Path("/run/corral-criu-other/x"), MOUNTINFO)[1] == "ext4"
    assert criu_feature_cache.mount_point_and_type(Path("/srv/with space/a"), MOUNTINFO) == ("/srv/with space", "xfs")
    assert criu_feature_cache.mount_point_and_type(Path("/etc"), MOUNTINFO) == ("/", "ext4")


def test_a_later_mount_on_the_same_point_hides_the_earlier() -> None:
    stacked = MOUNTINFO + "43 40 0:38 / /run/corral-criu rw shared:23 - ext4 /dev/sdd1 rw\n"
    assert criu_feature_cache.mount_point_and_type(Path("/run/corral-criu"), stacked)[1] == "ext4"


def test_install_criu_compiles_in_the_directory_the_node_prepares() -> None:
    script = (ROOT / "tools" / "install-criu").read_text()
    match = re.search(r"^KDAT_RUNDIR=(\S+)$", script, re.MULTILINE)
    assert match, "tools/install-criu sets no KDAT_RUNDIR"
    assert Path(match.group(1)) == criu_feature_cache.CACHE_DIR
    assert 'RUNDIR="$KDAT_RUNDIR"' in script
