"""Many nodes for real: one control plane on a host bridge with TLS, three `corral-node` daemons,
each in its own network namespace with its own simulated inventory, joined with a join token.
Traffic crosses interfaces: nodes and their containers reach the control plane at the bridge's
address over TLS, and the test process calls a container straight at its node's namespace address.

The cluster (tools/bench/netns_cluster.py, shared with tools/bench/cluster_start.py) is made once
for the module; every check uses its own class or parameters."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from conftest import APPS, in_ci, wait_for
from corral_protocol.v1 import control_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
from netns_cluster import NetnsCluster, NodeSpec, make_certificates, missing_prerequisites  # noqa: E402

NODES = [NodeSpec("node-a", "H100:8"), NodeSpec("node-b", "A100-80GB:4"), NodeSpec("node-c", None)]
APP = "e2e-netns"


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    missing = missing_prerequisites()
    if missing:
        reason = f"network-namespace nodes need {' and '.join(missing)}"
        if in_ci():
            pytest.fail(f"{reason}; CI must provide them")
        pytest.skip(f"{reason}; under CI (CI=1 or CI=true) this is a failure")
    with NetnsCluster.running(tmp_path_factory.mktemp("netns"), NODES) as cluster:
        deployed = subprocess.run(
            [sys.executable, "-m", "corral.cli", "deploy", str(APPS / "netns_app.py"), "--name", APP],
            env=cluster.client_env({"PYTHONPATH": str(APPS)}), capture_output=True, text=True, timeout=120,
        )
        assert deployed.returncode == 0, deployed.stderr
        yield cluster


@pytest.fixture(scope="module")
def client(netns: NetnsCluster) -> Iterator[corral.Client]:
    client = netns.client()
    yield client
    client.close()


def node_names(client: corral.Client) -> dict[str, str]:
    return {n.node_id: n.name for n in client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes}


def node_of(client: corral.Client, container_id: str) -> str:
    found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
    (container,) = [c for c in found if c.container_id == container_id]
    return node_names(client)[container.node_id]


def gpu_uuids(client: corral.Client, name: str) -> set[str]:
    (node,) = [n for n in client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes if n.name == name]
    return {g.uuid for g in node.inventory.gpus}


def test_three_namespace_nodes_join_over_tls_with_a_join_token(netns: NetnsCluster, client: corral.Client) -> None:
    nodes = {n.name: n for n in client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes}
    assert set(nodes) == {"node-a", "node-b", "node-c"}
    assert [g.model for g in nodes["node-a"].inventory.gpus] == ["NVIDIA H100 80GB HBM3"] * 8
    assert [g.model for g in nodes["node-b"].inventory.gpus] == ["NVIDIA A100-SXM4-80GB"] * 4
    assert not nodes["node-c"].inventory.gpus
    assert all(nodes[name].inventory.simulated_gpus for name in ("node-a", "node-b"))
    for node in netns.nodes:
        assert f"with {netns.url}" in node.logs(), node.logs()[-2000:]


def test_gpu_classes_land_on_the_nodes_that_have_their_gpus(client: corral.Client) -> None:
    two = corral.Cls.from_name(APP, "TwoH100", client=client)().where.remote()
    assert node_of(client, two["container"]) == "node-a"
    devices = two["gpus"].split(",")
    assert len(devices) == 2 and len(set(devices)) == 2 and set(devices) <= gpu_uuids(client, "node-a"), two

    # First choice two A100s while node-b has them; once its four are taken, the H100:2 fallback.
    prefers = corral.Cls.from_name(APP, "PrefersA100", client=client)
    first, second, third = (prefers(slot=slot).where.remote() for slot in (1, 2, 3))
    assert [node_of(client, r["container"]) for r in (first, second, third)] == ["node-b", "node-b", "node-a"]
    a100s = first["gpus"].split(",") + second["gpus"].split(",")
    assert sorted(a100s) == sorted(gpu_uuids(client, "node-b")), (first, second)
    fallback = third["gpus"].split(",")
    assert len(set(fallback)) == 2 and set(fallback) <= gpu_uuids(client, "node-a") and not set(fallback) & set(devices)

    # No GPU class ever lands on the CPU node; one no node has fails at once, naming what each offers.
    with pytest.raises(corral.exception.Error, match="no node can ever run") as refused:
        corral.Cls.from_name(APP, "NeedsT4", client=client)().where.remote()
    assert "gpu=T4" in str(refused.value) and "node-c" in str(refused.value), str(refused.value)
    found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
    names = node_names(client)
    assert all(names[c.node_id] != "node-c" for c in found if c.app_name == APP and c.class_name != "Cpu")


def test_a_direct_call_reaches_a_container_at_its_namespace_address(netns: NetnsCluster, client: corral.Client) -> None:
    cpu = corral.Cls.from_name(APP, "Cpu", client=client)()
    assert cpu.add.remote(2, 3) == 5  # binds and starts the container (through the control plane's queue)
    node = netns.node(node_of(client, cpu.where.remote()["container"]))
    # CPU-only containers keep off nodes with free GPUs: node-c, or node-b once its A100s are taken.
    assert node.spec.name in ("node-b", "node-c"), node.spec.name
    service_id = cpu._bind()[1]
    wait_for(
        lambda: len(client.call(client.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id)).routes) == 1,
        message="a route to the READY container",
    )
    (route,) = client.call(client.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id)).routes
    assert route.address.rsplit(":", 1)[0] == node.address, route.address
    # The client fetched its (then empty) route table while the container started; with a warm pool the
    # start can be quicker than that table's refresh (0.25 s), so call until the client knows the route.
    wait_for(lambda: cpu.add.remote(0, 1) == 1 and bool(client.direct._tables[service_id].routes), message="the client's route")
    before = sum(c.inputs_served for c in client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
                 if c.container_id == route.container_id)
    for value in range(5):
        assert cpu.add.remote(value, 1) == value + 1
    (direct,) = client.direct._tables[service_id].routes.values()
    assert direct.host == node.address and direct.idle, direct
    assert {sock.getpeername()[0] for sock, _ in direct.idle} == {node.address}  # the connection crossed the bridge
    wait_for(
        lambda: sum(c.inputs_served for c in client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
                    if c.container_id == route.container_id) >= before + 5,
        message="the direct inputs counted",
    )

    # Code in the container calls another class: its SDK reaches the control plane over TLS with the
    # certificate the node handed down, and the H100 container on node-a answers.
    devices = cpu.gpus_of_two_h100.remote().split(",")
    assert len(devices) == 2 and set(devices) <= gpu_uuids(client, "node-a"), devices


def run_node(netns: NetnsCluster, tmp_path: Path, *, server: str | None = None, token: str | None = None,
             tls_ca: Path | None = None, name: str = "refused") -> subprocess.CompletedProcess[str]:
    """A `corral-node` in the root namespace that is expected to give up; its log is its output."""
    token_file = netns.write_token_file(f"token-{name}", token) if token is not None else None
    # In the root namespace, which reaches the bridge's address too; no containers, so no isolation.
    argv = netns.node_command(NodeSpec(name), None, "127.0.0.1", tmp_path / name, server=server, token_file=token_file, tls_ca=tls_ca)
    argv += ["--isolation", "none"]
    return subprocess.run(argv, env=netns.node_env(), capture_output=True, text=True, timeout=30)


def test_a_join_token_only_joins_and_bad_joins_are_refused_clearly(netns: NetnsCluster, tmp_path: Path) -> None:
    assert netns.join_token_file is not None
    join_token = netns.join_token_file.read_text().strip()
    joiner = corral.Client(netns.url, join_token, ca=str(netns.ca))
    try:
        with pytest.raises(corral.exception.AuthError, match="only lets a machine join as a node"):
            joiner.call(joiner.stub.ListApps, control_pb2.ListAppsRequest())
        with pytest.raises(corral.exception.AuthError, match="only lets a machine join as a node"):
            joiner.call(joiner.stub.SetSecret, control_pb2.SetSecretRequest(name="stolen", values={"K": "v"}))
    finally:
        joiner.close()

    token_id = join_token.split(".")[0]
    wrong = run_node(netns, tmp_path, token=f"{token_id}.{'x' * 32}", name="wrong-secret")
    assert wrong.returncode != 0 and f"invalid join token: join token {token_id} is not valid here" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr, wrong.stderr  # the reason alone, as the node's last line

    plaintext = run_node(netns, tmp_path, server=f"grpc://{netns.host_address}:{netns.port}", name="plaintext")
    assert plaintext.returncode != 0 and "speaks TLS and refuses plaintext" in plaintext.stderr, plaintext.stderr
    assert f"grpcs://{netns.host_address}:{netns.port}" in plaintext.stderr

    other_ca, _, _ = make_certificates(tmp_path / "other-ca", netns.host_address)
    not_trusted = run_node(netns, tmp_path, tls_ca=other_ca, name="untrusted")
    assert not_trusted.returncode != 0 and "is not trusted by --tls-ca" in not_trusted.stderr, not_trusted.stderr


def test_the_cluster_start_benchmark_in_small(netns: NetnsCluster, client: corral.Client) -> None:
    """tools/bench/cluster_start.py's own path, with 6 containers instead of 200: they start at once
    and spread over more than one node."""
    import cluster_start

    deployed = subprocess.run(
        [sys.executable, "-m", "corral.cli", "deploy", str(Path(cluster_start.__file__).with_name("cluster_apps.py"))],
        env=netns.client_env({"PYTHONPATH": str(Path(cluster_start.__file__).parent)}), capture_output=True, text=True, timeout=120,
    )
    assert deployed.returncode == 0, deployed.stderr
    idle = corral.Cls.from_name(cluster_start.APP, "Idle", client=client)
    nodes = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    share = round(max(n.inventory.cpu for n in nodes) / 3.5, 3)  # at most 3 fit on a node, whatever its cores
    times = cluster_start.start(client, idle, "small", 6, cpu=share, deadline=time.monotonic() + 120)
    assert len(times) == 6
    found = client.call(client.stub.ListContainers, control_pb2.ListContainersRequest()).containers
    used = {c.node_id for c in found if c.app_name == cluster_start.APP}
    assert len(used) >= 2, used
