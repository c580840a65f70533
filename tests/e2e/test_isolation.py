"""Container isolation, end to end: from inside a method, a container tries to reach what it must
not (the node's CORRAL_HOME, the node's and other containers' processes and environments, writes
outside its /tmp) and is refused; limits users can see (an OOM kill named as such, a CPU quota, usage
in `corral container list`); the fallback to plain processes; no container or cgroup outlives its node.

Needs a node that runs containers with runc (root, runc installed); skipped otherwise, unless CI is set.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import isolation_app
from conftest import Cluster, in_ci, start_cluster, wait_for
from corral.exception import ContainerExitedError
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, pids_with, table_rows
from isolation_app import Echo, EnvReader, Hog, Neighbour, Prober, Spinner

REPO = Path(__file__).resolve().parents[2]


def _isolation(cluster: Cluster) -> control_pb2.NodeInfo:
    client = client_for(cluster)
    [node] = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    return node


def _require_runc(cluster: Cluster) -> None:
    """Skip where the node cannot isolate (not root, or no runc); under CI that is a failure."""
    mode = _isolation(cluster).inventory.isolation
    if mode.mode != "runc":
        if in_ci():
            pytest.fail(f"CI must isolate containers with runc; the node says: {mode.mode} ({mode.reason})")
        pytest.skip(f"the node does not isolate containers (needs root and runc): {mode.reason}")


@pytest.fixture(scope="module")
def isolated(cluster: Cluster) -> Iterator[str]:
    """The session cluster, when its node isolates containers with runc; yields the secret's value."""
    _require_runc(cluster)
    value = f"isolation-secret-{secrets.token_hex(8)}"
    created = cluster.corral("secret", "create", "isolation-secret", f"ISOLATION_SECRET={value}")
    assert created.returncode == 0, created.stderr
    with isolation_app.app.run(client=client_for(cluster)):
        yield value


@pytest.mark.timeout(120)
def test_the_node_home_is_out_of_reach(cluster: Cluster, isolated: str) -> None:
    home = cluster.home
    prober = Prober()
    # The admin token, the state database, the node's bundles and snapshot images: not even there.
    for path in (home / "token", home / "state", home / "node" / "bundles", home / "node" / "snapshots", home):
        assert prober.read_file.remote(str(path)) != "ok", path
        assert prober.list_dir.remote(str(path)) == "FileNotFoundError", path
    assert prober.read_file.remote("/etc/shadow") == "FileNotFoundError"  # only the public part of /etc


@pytest.mark.timeout(120)
def test_processes_of_the_node_and_of_other_containers_are_invisible(cluster: Cluster, isolated: str) -> None:
    prober = Prober()
    assert prober.visible_pids.remote() == [1]  # pid 1 of its own pid namespace, alone
    assert prober.identity.remote()["pid"] == 1
    # The node (corral up) and this test process cannot be signalled: their pids do not exist there.
    assert prober.signal_pid.remote(cluster.process.pid) == "ProcessLookupError"
    assert prober.signal_pid.remote(os.getpid()) == "ProcessLookupError"
    # A neighbour container running at the same time is invisible too.
    held = Neighbour().hold.spawn(5)
    wait_for(lambda: len(_live(cluster, "Neighbour")) >= 1, timeout=60, message="the neighbour container to run")
    assert prober.visible_pids.remote() == [1]
    assert cluster.process.poll() is None
    held.get(timeout=60)


def _live(cluster: Cluster, class_name: str) -> list[control_pb2.ContainerInfo]:
    client = client_for(cluster)
    return [c for c in client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
            if c.class_name == class_name and c.state == control_pb2.CONTAINER_STATE_READY]


@pytest.mark.timeout(120)
def test_other_containers_environments_and_secrets_are_out_of_reach(cluster: Cluster, isolated: str) -> None:
    prober = Prober()
    assert prober.own_secret.remote() == isolated  # the prober has its secret...
    assert prober.environments_mention.remote(isolated) == [1]  # ...in its own environment only
    assert Neighbour().environments_mention.remote(isolated) == []  # while it runs, a neighbour cannot find it


@pytest.mark.timeout(120)
def test_writes_outside_its_own_tmp_are_refused(cluster: Cluster, isolated: str) -> None:
    prober = Prober()
    refused = [
        "/written", "/usr/written", "/etc/written", f"{sys.prefix}/written", str(REPO / "written"),
        "/corral/bundle/written", str(cluster.home / "written"), "/proc/sys/kernel/hostname",
    ]
    for path in refused:
        outcome = prober.write_file.remote(path)
        if Path(path).is_relative_to("/tmp"):
            # Inside the container this path lies in its own private /tmp (a checkout or a
            # CORRAL_HOME under the host's /tmp): the write may land there, never on the host.
            continue
        assert outcome != "ok", path
    assert not (REPO / "written").exists() and not (cluster.home / "written").exists()
    assert prober.write_file.remote("/tmp/written") == "ok"


@pytest.mark.timeout(120)
def test_no_capabilities_no_new_privileges_and_seccomp(cluster: Cluster, isolated: str) -> None:
    status = Prober().status.remote()
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0, status
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status  # 2: a seccomp filter


@pytest.mark.timeout(180)
def test_a_container_over_its_memory_limit_is_killed_with_a_clear_error(cluster: Cluster, isolated: str) -> None:
    with pytest.raises(ContainerExitedError, match=r"out of memory \(limit 128 MiB\)"):
        Hog().allocate.remote(512)
    assert Hog().allocate.remote(16) == 16  # a new container serves what fits


@pytest.mark.timeout(180)
def test_a_direct_caller_whose_container_runs_out_of_memory_is_told_so(cluster: Cluster, isolated: str) -> None:
    """On the direct path the caller only sees its connection break; it asks the control plane why
    the container ended and gets the queued path's error, not "connection closed"."""
    from corral import _serialization

    hog = Hog()
    client = client_for(cluster)
    payload = _serialization.encode_args((512,), {}, "allocate")
    resolved, service_id = hog._bind()
    for attempt in ("sync", "asyncio"):
        assert hog.allocate.remote(1) == 1  # a READY container
        wait_for(
            lambda: len(client.call(client.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id)).routes) == 1,
            message="a route to the READY container",
        )
        direct = resolved.client.direct
        direct._table(service_id).fetched_at = float("-inf")  # fetched before the route existed
        with pytest.raises(ContainerExitedError, match=r"out of memory \(limit 128 MiB\): the container running Hog.allocate"):
            if attempt == "sync":
                result = direct.call(service_id, "allocate", payload)
            else:
                result = asyncio.run(direct.call_aio(service_id, "allocate", payload))
            pytest.fail(f"the direct path answered {result!r} ({attempt})")  # None: it did not take the call


@pytest.mark.timeout(180)
def test_a_cpu_limit_caps_a_spinning_container(cluster: Cluster, isolated: str) -> None:
    """cpu=0.5: a busy loop gets about half a core. A generous bound on CPU time over wall time
    (an uncapped loop gets close to 1.0; contention only lowers it)."""
    result = Spinner().spin.remote(3.0)
    assert result["cpu"] / result["wall"] < 0.75, result


@pytest.mark.timeout(180)
def test_container_list_shows_usage_against_limits(cluster: Cluster, isolated: str) -> None:
    assert Hog().allocate.remote(8) == 8

    def hog_row() -> list[str] | None:
        result = cluster.corral("container", "list")
        rows = [r for r in table_rows(result.stdout) if len(r) > 1 and r[1] == "Hog" and r[4] == "ready"]
        return rows[0] if rows and rows[0][-2] != "-" else None

    wait_for(lambda: hog_row() is not None, timeout=60, message="a heartbeat with the Hog container's usage")
    row = hog_row()
    assert row is not None
    assert row[-2].endswith("/128 MiB"), row  # memory used / its limit
    assert row[-1].count("/") == 0, row  # no cpu= given: no CPU limit shown


@pytest.mark.timeout(180)
def test_without_runc_the_node_falls_back_loudly(tmp_path: Path) -> None:
    """A node told not to isolate (as one without root or runc) runs plain processes and says so."""
    cluster = start_cluster(tmp_path / "home", extra_env={"CORRAL_NODE_ISOLATION": "none"})
    try:
        listed = cluster.corral("node", "list")
        assert "isolation: none (turned off" in listed.stdout, listed.stdout
        assert "CONTAINERS ARE NOT ISOLATED" in cluster.logs()
        with isolation_app.own_cluster_app.run(client=client_for(cluster)):
            assert Echo().container.remote()  # it still serves
    finally:
        cluster.stop()


NODE_ONLY_ENV = {"AWS_SECRET_ACCESS_KEY": "node-secret-value", "SOME_NODE_SETTING": "node-setting-value"}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("isolation", ["runc", "none"])
def test_a_container_inherits_only_the_allow_listed_part_of_its_nodes_environment(tmp_path: Path, isolation: str) -> None:
    """The node's own variables (a cloud credential, a setting) stay on the node, isolated or not; the
    container still gets its own secret, PATH and a HOME of its own."""
    cluster = start_cluster(tmp_path / "home", extra_env={**NODE_ONLY_ENV, "CORRAL_NODE_ISOLATION": isolation})
    try:
        if isolation == "runc":
            _require_runc(cluster)
        created = cluster.corral("secret", "create", "env-secret", "ENV_SECRET=its-own-secret")
        assert created.returncode == 0, created.stderr
        with isolation_app.env_app.run(client=client_for(cluster)):
            seen = EnvReader().environ.remote()
        assert not set(NODE_ONLY_ENV) & set(seen), sorted(seen)
        assert not any(value in seen.values() for value in NODE_ONLY_ENV.values())
        assert seen["ENV_SECRET"] == "its-own-secret"
        assert seen["PATH"] == os.environ["PATH"]
        assert "CORRAL_HOME" not in seen and "CORRAL_TOKEN" not in seen
        assert seen["HOME"] != os.environ.get("HOME"), seen["HOME"]
    finally:
        cluster.stop()


@pytest.mark.timeout(180)
def test_no_container_or_cgroup_outlives_a_killed_node(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "home")
    try:
        _require_runc(cluster)
        with isolation_app.own_cluster_app.run(client=client_for(cluster)):
            container = Echo().container.remote()
            assert pids_with(f"CORRAL_CONTAINER_ID={container}\0")
            scopes = _cgroup_scopes_with(container)
            assert scopes
            cluster.process.send_signal(signal.SIGKILL)  # no cleanup of its own: the reaper's job
            cluster.process.wait()
            wait_for(lambda: not pids_with(f"CORRAL_CONTAINER_ID={container}\0"), timeout=60, message="the container to go")
            wait_for(lambda: not any(p.exists() for p in scopes), timeout=60, message="its cgroups to go")
            runc_state = cluster.home / "node" / "runc"
            wait_for(lambda: not any(runc_state.iterdir()), timeout=60, message="runc's state to go")
    finally:
        cluster.stop()


def _cgroup_scopes_with(container_id: str) -> list[Path]:
    found = subprocess.run(["find", "/sys/fs/cgroup", "-maxdepth", "3", "-type", "d", "-name", container_id],
                           capture_output=True, text=True).stdout.split()
    return [Path(p) for p in found]
