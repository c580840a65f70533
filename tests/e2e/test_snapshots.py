"""Memory snapshots with the real CRIU: taken once, restored side by side (with lazy pages where the
kernel has them, their daemons gone with the containers), secrets kept out of the image, fallback to
an eager restore when a lazy one fails and to a cold start when an image is corrupt, a new image when
the code changes.

Needs root and a working criu (tools/install-criu); skips otherwise, except under CI (the CI
variable set), where that is a failure. Assertions are on behaviour and counts, never on timings.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import corral
import snapshot_app
from conftest import Cluster, read_events, require_snapshot_prerequisites, start_cluster, wait_for
from corral_protocol.v1 import control_pb2
from corral_runtime import criu
from e2e_helpers import client_for, containers


@pytest.fixture(autouse=True)
def _needs_criu() -> None:
    require_snapshot_prerequisites()


@pytest.fixture
def secret_value(cluster: Cluster) -> str:
    """A fresh value for the app's secret; it must never appear in an image."""
    value = f"corral-test-secret-{secrets.token_hex(8)}"
    created = cluster.corral("secret", "create", snapshot_app.SECRET_NAME, f"SNAP_TEST_SECRET={value}")
    assert created.returncode == 0, created.stderr
    return value


def image_dirs(cluster: Cluster, app_id: str) -> list[Path]:
    root = cluster.home / "node" / "snapshots" / app_id
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "corral-meta.json").exists()) if root.exists() else []


def snapshots(client: corral.Client, app_name: str) -> list[control_pb2.SnapshotInfo]:
    listed = client.call(client.stub.ListSnapshots, control_pb2.ListSnapshotsRequest()).snapshots
    return [s for s in listed if s.app_name == app_name]


def lazy_pages_here() -> bool:
    path = criu.find_criu()
    return path is not None and criu.lazy_pages_supported(path)[0]


def lazy_daemons(cluster: Cluster, app_id: str) -> list[int]:
    """Pids of `criu lazy-pages` daemons serving images of the app `app_id` in this cluster (serving
    a restore, or a spare waiting for the next one). Other apps' images keep their spares."""
    images = str(cluster.home / "node" / "snapshots" / app_id).encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"lazy-pages" in argv and any(arg.startswith(images) for arg in argv):
            found.append(int(proc.name))
    return found


def lines(events: Path, kind: str) -> list[str]:
    return [line for line in read_events(events) if line.split()[0] == kind]


def burst(snappy: object, n: int, hold_s: float) -> list[dict]:
    """n calls at once, each holding its container for a while: the autoscaler starts more containers."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: snappy.describe.remote(hold_s), range(n)))  # type: ignore[attr-defined]


def test_snapshot_taken_once_and_restored_side_by_side(cluster: Cluster, events: Path, secret_value: str) -> None:
    client = client_for(cluster)
    with snapshot_app.app.run(client=client) as app:
        app_id = app.running.app_id  # type: ignore[union-attr]
        snappy = snapshot_app.Snappy(events=str(events))
        first = snappy.describe.remote()
        assert first["table"] == 50_000 and first["loaded_in"] == first["container"]
        assert first["secret"] == secret_value  # injected after the dump
        assert lines(events, "snap") == [f"snap secret=- ct={first['container']}"]  # no secret before the dump
        [image] = image_dirs(cluster, app_id)
        assert oct(image.stat().st_mode & 0o777) == "0o700" and image.stat().st_uid == 0

        # Several new containers at once: each restores the image, side by side.
        results = burst(snappy, 4, hold_s=2.0)
        served_by = {r["container"] for r in results}
        restored = [c for c in containers(client, "snapshots", "Snappy") if c.restored_from_snapshot]
        assert len(restored) >= 2, results
        for result in results:
            assert result["table"] == 50_000  # the snap hook's state came with the image
            assert result["loaded_in"] == first["container"]
            assert result["secret"] == secret_value
            assert result["pid"] == 1  # pid 1 of its own pid namespace
        assert len(served_by) >= 2
        # The snap hook ran once for every container; the other @enter hooks once per container.
        assert len(lines(events, "snap")) == 1
        assert len(lines(events, "enter")) == 1 + len(restored)
        # A restored copy's output still reaches the node's log (its stdio are new pipes) and the
        # log store, what it writes to fd 1 directly included.
        restored_ids = {c.container_id for c in restored}
        assert served_by & restored_ids, (served_by, restored_ids)
        for cid in served_by & restored_ids:
            wait_for(lambda: f"[{cid}] fd-level from {cid}" in cluster.logs() and f"[{cid}] print from {cid}" in cluster.logs(),  # noqa: B023
                     message="a restored container's output in the node's log")
            wait_for(lambda: f"fd-level from {cid}" in cluster.corral("container", "logs", cid).stdout,  # noqa: B023
                     message="a restored container's fd-level output in the log store")
        # Each restored copy reseeded its random generator.
        assert len({r["random"] for r in results}) == len(results)
        if lazy_pages_here():  # the default: restores fault their pages in through a lazy-pages daemon
            assert ", lazy pages)" in cluster.logs()
            assert "restoring it eagerly instead" not in cluster.logs()
            # A spare daemon waits for the image's next restore (so the check at the end can see them).
            wait_for(lambda: lazy_daemons(cluster, app_id), message="a spare lazy-pages daemon for the image")

        [listed] = snapshots(client, "snapshots")
        assert listed.image.class_name == "Snappy" and not listed.broken
        shown = cluster.corral("snapshot", "list")
        assert shown.returncode == 0 and listed.image.snapshot_key[:16] in shown.stdout, shown.stdout + shown.stderr

        # Secrets never enter an image; the snap hook's own state does (so the search works).
        contents = b"".join(f.read_bytes() for f in image.iterdir() if f.is_file())
        assert f"{snapshot_app.STATE_MARKER}-built".encode() in contents
        assert secret_value.encode() not in contents
    # Stopping the ephemeral app deletes its images; no lazy-pages daemon outlives its container.
    wait_for(lambda: not image_dirs(cluster, app_id), message="images deleted with their app")
    wait_for(lambda: not containers(client, "snapshots", "Snappy"), message="the app's containers gone")
    wait_for(lambda: not lazy_daemons(cluster, app_id), message="no criu lazy-pages daemon left behind")


def test_failed_lazy_restore_falls_back_to_an_eager_one(tmp_path: Path, events: Path) -> None:
    """A `criu lazy-pages` that cannot start (here a wrapper fails it) costs the lazy path only:
    the container is restored eagerly from the same image, and no call fails."""
    if not lazy_pages_here():
        pytest.skip("this kernel or criu has no lazy pages")
    real = criu.find_criu()
    wrapper = tmp_path / "bin" / "criu"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = lazy-pages ] && {{ echo "Error (test): lazy pages disabled" >&2; exit 1; }}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    cluster = start_cluster(tmp_path / "home", extra_env={"PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}",
                                                          "CORRAL_SNAPSHOT_LAZY_PAGES": "on"})
    try:
        created = cluster.corral("secret", "create", snapshot_app.SECRET_NAME, "SNAP_TEST_SECRET=x")
        assert created.returncode == 0, created.stderr
        client = client_for(cluster)
        with snapshot_app.app.run(client=client):
            snappy = snapshot_app.Snappy(events=str(events))
            first = snappy.describe.remote()
            results = burst(snappy, 2, hold_s=2.0)
            assert all(r["table"] == 50_000 and r["loaded_in"] == first["container"] for r in results)
            restored = [c for c in containers(client, "snapshots", "Snappy") if c.restored_from_snapshot]
            assert restored, results
            logs = cluster.logs()
            assert "restoring it eagerly instead" in logs and "starting cold instead" not in logs, logs[-3000:]
            assert len(lines(events, "snap")) == 1  # nothing started cold
    finally:
        cluster.stop()


def test_corrupt_image_falls_back_to_a_cold_start(cluster: Cluster, events: Path, secret_value: str) -> None:
    client = client_for(cluster)
    with snapshot_app.app.run(client=client) as app:
        app_id = app.running.app_id  # type: ignore[union-attr]
        snappy = snapshot_app.Snappy(events=str(events))
        snappy.describe.remote()
        [image] = image_dirs(cluster, app_id)
        core = image / "core-1.img"  # the worker's registers and state: overwritten, same size
        core.write_bytes(core.read_bytes()[:8] + b"\xff" * (core.stat().st_size - 8))
        # A second container must start while the first is busy: it cannot restore, and starts cold.
        results = burst(snappy, 2, hold_s=2.0)
        assert all(r["table"] == 50_000 and r["secret"] == secret_value for r in results)
        # The second container ran the snap hook itself, after its restore failed; no call failed.
        wait_for(lambda: len(lines(events, "snap")) == 2, message="the fallback container's snap hook")
        wait_for(lambda: len(lines(events, "enter")) == 2, message="the fallback container's enter hook")
        assert "restore of snapshot" in cluster.logs() and "starting cold instead" in cluster.logs()


APP_SOURCE = '''
import os
import corral

app = corral.App("snapshot-redeploy")
VERSION = {version}


@app.cls(enable_memory_snapshot=True)
class Versioned:
    events: str = corral.parameter()

    @corral.enter(snap=True)
    def build(self):
        with open(self.events, "a") as f:
            f.write(f"snap v{{VERSION}}\\n")

    @corral.method()
    def version(self) -> int:
        return VERSION
'''


def test_code_change_makes_a_new_image_and_drops_the_old(cluster: Cluster, events: Path, tmp_path: Path) -> None:
    client = client_for(cluster)
    source = tmp_path / "snapshot_redeploy.py"
    for version in (1, 2):
        source.write_text(textwrap.dedent(APP_SOURCE.format(version=version)))
        deployed = cluster.corral("deploy", str(source), "--name", "snapshot-redeploy")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        versioned = corral.Cls.from_name("snapshot-redeploy", "Versioned", client=client)(events=str(events))
        assert versioned.version.remote() == version
        wait_for(lambda: len(snapshots(client, "snapshot-redeploy")) == 1, message="one image for the app")
    assert read_events(events) == ["snap v1", "snap v2"]  # the changed code took a new snapshot
    [app_id] = {s.image.app_id for s in snapshots(client, "snapshot-redeploy")}
    wait_for(lambda: len(image_dirs(cluster, app_id)) == 1, message="the old image garbage-collected")
    removed = cluster.corral("snapshot", "rm", "--app", "snapshot-redeploy")
    assert removed.returncode == 0 and "Deleted 1 snapshot" in removed.stdout, removed.stdout + removed.stderr
    wait_for(lambda: not image_dirs(cluster, app_id), message="corral snapshot rm deletes the image")
    cluster.corral("app", "stop", "snapshot-redeploy")
