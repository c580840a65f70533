"""The warm pool, end to end: an isolated node keeps generic containers started ahead; each serves
one container of one app, once; it gets its class's limits (an OOM kill named as such), its own
bundle only (another app's stays out of reach), its own secret; the pool refills.

Needs a node that runs containers with runc (root, runc installed); skipped otherwise, unless CI is set.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

import warm_pool_app
from conftest import Cluster, in_ci, start_cluster, wait_for
from corral.exception import ContainerExitedError
from corral_protocol import env as corral_env
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for
from warm_pool_app import Pooled, PooledHog

POOL_SIZE = 2
OTHER_APP = """
import os
import corral

app = corral.App("warm-pool-other")


@app.cls(scaledown_window=2, cpu=(0.01, 8))
class Other:
    @corral.method()
    def container(self) -> str:
        return os.environ.get("CORRAL_CONTAINER_ID", "")


if __name__ == "__main__":
    with app.run():
        print(Other().container.remote())
"""
ASSIGNED = re.compile(r"container (\S+): assigned warm container (warm-[0-9a-f]+)")
READY = re.compile(r"warm pool: container (warm-[0-9a-f]+) ready")


@pytest.fixture(scope="module")
def pool_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("warm-pool") / "home", extra_env={corral_env.CORRAL_NODE_WARM_POOL: str(POOL_SIZE)})
    try:
        client = client_for(cluster)
        [node] = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
        if node.inventory.isolation.mode != "runc":
            reason = node.inventory.isolation.reason
            if in_ci():
                pytest.fail(f"CI must isolate containers with runc; the node says: {reason}")
            pytest.skip(f"the warm pool needs a node that isolates containers with runc: {reason}")
        created = cluster.corral("secret", "create", "warm-secret", "WARM_SECRET=pooled-secret")
        assert created.returncode == 0, created.stderr
        yield cluster
    finally:
        cluster.stop()


def _assignments(cluster: Cluster) -> dict[str, str]:
    """Container id -> the warm container it was, from the node's log."""
    return dict(ASSIGNED.findall(cluster.logs()))


def _waiting(cluster: Cluster) -> set[str]:
    """Warm containers ready and never assigned: the pool."""
    return set(READY.findall(cluster.logs())) - set(_assignments(cluster).values())


def _ready_containers(cluster: Cluster, app_name: str) -> list[str]:
    client = client_for(cluster)
    return [c.container_id for c in client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
            if c.app_name == app_name]


@pytest.mark.timeout(120)
def test_a_pooled_container_serves_one_app_once_with_its_own_bundle_and_secret(pool_cluster: Cluster, tmp_path: Path) -> None:
    wait_for(lambda: len(_waiting(pool_cluster)) == POOL_SIZE, timeout=60, message="a full pool")
    # Another app, from its own directory: its bundle is in the node's cache, out of this app's reach.
    other_file = tmp_path / f"warm_other_{secrets.token_hex(4)}.py"
    other_file.write_text(OTHER_APP)
    ran = pool_cluster.python(str(other_file))
    assert ran.returncode == 0, ran.stderr
    other = ran.stdout.strip().splitlines()[-1]
    with warm_pool_app.app.run(client=client_for(pool_cluster)):
        seen = Pooled().identity.remote()
        assert seen["secret"] == "pooled-secret"
        assert "warm_pool_app.py" in seen["bundle"] and other_file.name not in seen["bundle"], seen
        assert Pooled().try_write_bundle.remote() != "ok"  # its bundle is read-only
        assert Pooled().find.remote(other_file.name) == []  # the other app's bundle is nowhere in sight
    assigned = _assignments(pool_cluster)
    assert seen["container"] in assigned and other in assigned, (assigned, pool_cluster.logs()[-3000:])
    first = assigned[seen["container"]]
    assert len(set(assigned.values())) == len(assigned)  # no warm container served twice
    # Once its container is gone, the warm container is removed, not put back; the pool refills.
    wait_for(lambda: not _ready_containers(pool_cluster, "warm-pool"), timeout=60, message="the app's containers to stop")
    wait_for(lambda: not (pool_cluster.home / "node" / "runc" / first).exists(), timeout=30, message="the used warm container removed")
    wait_for(lambda: len(_waiting(pool_cluster)) == POOL_SIZE, timeout=60, message="the pool refilled")
    with warm_pool_app.app.run(client=client_for(pool_cluster)):
        again = Pooled().identity.remote()
    assigned = _assignments(pool_cluster)
    assert again["container"] != seen["container"] and assigned[again["container"]] != first
    assert len(set(assigned.values())) == len(assigned)


@pytest.mark.timeout(120)
def test_a_pooled_container_gets_its_class_memory_limit(pool_cluster: Cluster) -> None:
    wait_for(lambda: len(_waiting(pool_cluster)) >= 1, timeout=60, message="a warm container")
    before = set(_assignments(pool_cluster))
    with warm_pool_app.app.run(client=client_for(pool_cluster)):
        # The first call, so it goes through the control plane, which reports why the container exited
        # (a later one on the direct path sees the connection drop first).
        with pytest.raises(ContainerExitedError, match=r"out of memory \(limit 128 MiB\)"):
            PooledHog().allocate.remote(512)
    assert set(_assignments(pool_cluster)) - before  # its container came from the pool


@pytest.mark.timeout(120)
def test_the_node_keeps_no_warm_container_after_it_stops(tmp_path: Path) -> None:
    """Stopping the node removes the containers still waiting in its pool."""
    cluster = start_cluster(tmp_path / "home", extra_env={corral_env.CORRAL_NODE_WARM_POOL: "1"})
    try:
        runc_root = cluster.home / "node" / "runc"
        if not runc_root.is_dir():
            if in_ci():
                pytest.fail("CI must isolate containers with runc")
            pytest.skip("the warm pool needs a node that isolates containers with runc")
        wait_for(lambda: any(p.name.startswith("warm-") for p in runc_root.iterdir()), timeout=60, message="a warm container")
    finally:
        assert cluster.stop() == 0
    assert not [p for p in runc_root.iterdir() if p.name.startswith("warm-")]
