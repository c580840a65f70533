"""The image store's logic without building anything: layer keys follow history, config-only steps
make no layer, the LRU bound removes least-recently-used layers but never one in use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from corral_protocol.v1 import common_pb2
from corral_runtime import image_store
from corral_runtime.image_store import ImageStore


def _spec(*steps: common_pb2.ImageStep, python: str = "3.11") -> common_pb2.ImageSpec:
    return common_pb2.ImageSpec(base="debian_slim", python_version=python, steps=list(steps))


PIP = common_pb2.ImageStep(kind="pip", args=["six"])
APT = common_pb2.ImageStep(kind="apt", args=["jq"])
ENV = common_pb2.ImageStep(kind="env", env={"A": "1"})


def test_keys_follow_the_whole_history() -> None:
    a = image_store.plan(_spec(PIP, APT), "h", "worker-1")
    b = image_store.plan(_spec(PIP, common_pb2.ImageStep(kind="apt", args=["curl"])), "h", "worker-1")
    assert a.steps[2].key == b.steps[2].key  # same history up to the pip step: one layer
    assert a.steps[3].key != b.steps[3].key
    swapped = image_store.plan(_spec(APT, PIP), "h", "worker-1")
    assert {s.key for s in swapped.steps[2:]}.isdisjoint({s.key for s in a.steps[2:]})  # order matters
    new_worker = image_store.plan(_spec(PIP, APT), "h", "worker-2")
    assert new_worker.steps[0].key == a.steps[0].key and new_worker.steps[1].key != a.steps[1].key
    assert image_store.plan(_spec(PIP, python="3.13"), "h", "w").release == "trixie"
    with pytest.raises(ValueError, match="3.11, 3.13"):
        image_store.plan(_spec(PIP, python="3.12"), "h", "w")


def test_env_and_workdir_make_no_layer_but_shape_later_ones() -> None:
    plain = image_store.plan(_spec(PIP), "h", "w")
    with_env = image_store.plan(_spec(ENV, common_pb2.ImageStep(kind="workdir", path="/srv"), PIP), "h", "w")
    assert [s.has_layer for s in with_env.steps] == [True, True, False, False, True]
    assert with_env.env == {"A": "1"} and with_env.workdir == "/srv"
    assert with_env.layer_keys[-1] != plain.layer_keys[-1]  # pip after an env change is another layer


def _fake_layer(store: ImageStore, key: str, size: int, used: float) -> None:
    staging = store.root / "layers" / f"{key}.tmp-x"
    (staging / "fs").mkdir(parents=True)
    (staging / "fs" / "blob").write_bytes(b"x" * size)
    store.commit(key, staging, f"step {key}")
    os.utime(store.layer_dir(key) / "used", (used, used))


def test_lru_bound_keeps_recent_and_in_use_layers(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, max_bytes=2500)
    for index, key in enumerate(["old", "in-use", "mid", "new"]):
        _fake_layer(store, key, 1000, used=1000.0 + index)
    store.in_use["in-use"] = 1
    assert store.enforce_bound() == 2
    assert sorted(str(m["key"]) for m in store.layers()) == ["in-use", "new"]
    assert store.remove(["in"]) == 0  # in use: stays
    assert store.remove(None) == 1 and [m["key"] for m in store.layers()] == ["in-use"]


def test_a_dead_build_leaves_no_layer_and_a_running_one_is_left_alone(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    (tmp_path / "layers" / "abc.tmp-1-x" / "fs").mkdir(parents=True)
    (tmp_path / "layers" / "running.tmp-2-y" / "fs").mkdir(parents=True)
    assert not store.has("abc")
    with store.locked("running"):  # another node of the machine is building it
        store.collect_staging()
    assert [p.name for p in (tmp_path / "layers").iterdir()] == ["running.tmp-2-y"]


def test_a_killed_builds_mounts_are_unmounted_before_its_staging_goes(tmp_path: Path) -> None:
    """mmdebstrap killed mid-build leaves /proc and bind mounts in its target: removing the staging
    directory must never delete through them."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root")
        pytest.skip("mounting needs root")
    host = tmp_path / "host dir"  # a space: mountinfo escapes it as \040
    host.mkdir()
    (host / "keep.txt").write_text("host file")
    staging = tmp_path / "base" / "trixie.tmp-1"
    (staging / "dev").mkdir(parents=True)
    (staging / "proc").mkdir()
    subprocess.run(["mount", "--bind", str(host), str(staging / "dev")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(staging / "proc")], check=True)
    image_store.discard(staging)
    assert not staging.exists()
    assert (host / "keep.txt").read_text() == "host file"
