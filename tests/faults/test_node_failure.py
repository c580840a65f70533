"""Node failure with a control plane and two node daemons as separate processes, the node timeout
at 2 s: a node killed with kill -9 (its stream closes), a node stopped with SIGSTOP (its stream
stays open and its heartbeats stop, as in a cut network, which test_node_network_cut.py makes for
real), and an operator's drain.

Calls placed on the failing node retry on the survivor where their policy allows and fail naming
the node otherwise; new containers start on the survivor; the node comes back as a fresh node,
and nothing of what it ran before lives on beside the new containers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import corral
from conftest import Cluster, read_events, start_cluster, wait_for
from corral_protocol.v1 import control_pb2
from e2e.e2e_helpers import client_for, containers, deploy, parameter, pids_with

NODE_TIMEOUT_S = 2.0
BOUND_S = 60  # a bound on a hang, not a timing assertion


@dataclass
class TwoNodes:
    cluster: Cluster
    client: corral.Client
    work: Path
    daemons: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """Start (or restart) the node daemon `name` and wait until it is READY."""
        env = dict(self.cluster.env(), CORRAL_HOME=str(self.work / f"{name}-home"), CORRAL_TOKEN=self.cluster.token)
        log = open(self.work / f"{name}.log", "a")
        self.daemons[name] = subprocess.Popen(
            [sys.executable, "-m", "corral_runtime.node_cli", "--server", self.cluster.url, "--name", name,
             "--work-dir", str(self.work / f"{name}-work")],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        wait_for(lambda: self.state(name) == control_pb2.NODE_STATE_READY, timeout=BOUND_S, message=f"node {name} to be ready")

    def node(self, name: str) -> control_pb2.NodeInfo | None:
        nodes = self.client.call(self.client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
        return next((n for n in nodes if n.name == name), None)

    def state(self, name: str) -> int:
        node = self.node(name)
        return node.state if node is not None else control_pb2.NODE_STATE_UNSPECIFIED

    def node_id(self, name: str) -> str:
        node = self.node(name)
        assert node is not None
        return node.node_id

    def ensure_running(self, name: str) -> None:
        daemon = self.daemons.get(name)
        if daemon is None or daemon.poll() is not None or self.state(name) != control_pb2.NODE_STATE_READY:
            if daemon is not None and daemon.poll() is None:
                self.stop(name)
            self.start(name)

    def stop(self, name: str) -> None:
        daemon = self.daemons[name]
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGCONT)
            daemon.send_signal(signal.SIGINT)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.corral(*args)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    work = tmp_path_factory.mktemp("node-failure")
    cluster = start_cluster(work / "control", args=("--no-node", "--node-timeout", str(NODE_TIMEOUT_S)))
    client = client_for(cluster)
    nodes = TwoNodes(cluster, client, work)
    try:
        nodes.start("node-a")
        nodes.start("node-b")
        yield nodes
    finally:
        for name in list(nodes.daemons):
            nodes.stop(name)
        client.close()
        cluster.stop()


def _holding(client: corral.Client, app: str, tag: str) -> list[control_pb2.ContainerInfo]:
    return [c for c in containers(client, app, "Holder") if parameter(c, "tag") == tag and c.running_inputs == 1]


def _cordon(nodes: TwoNodes, name: str, cordon: bool = True) -> None:
    client = nodes.client
    if cordon:
        client.call(client.stub.CordonNode, control_pb2.CordonNodeRequest(node=name))
    else:
        client.call(client.stub.UncordonNode, control_pb2.UncordonNodeRequest(node=name))


def _stop_app(nodes: TwoNodes, app: str) -> None:
    nodes.client.call(nodes.client.stub.StopApp, control_pb2.StopAppRequest(app=app))


def _calls_held_on_node_a(nodes: TwoNodes, app: str, shared_dir: Path) -> tuple[corral.FunctionCall, corral.FunctionCall, list[str]]:
    """A retried and a strict call running on node-a (node-b is cordoned meanwhile), and their
    containers' ids. Each runs long on its first attempt only."""
    deploy(nodes.cluster, "node_failure_app.py", app)
    _cordon(nodes, "node-b")
    Holder = corral.Cls.from_name(app, "Holder", client=nodes.client)
    retried = Holder.with_options(retries=1, max_containers=1)(tag="retried").hold.spawn(str(shared_dir / "retried"), 30.0)
    strict = Holder.with_options(max_containers=1)(tag="strict").hold.spawn(str(shared_dir / "strict"), 30.0)
    wait_for(lambda: _holding(nodes.client, app, "retried") and _holding(nodes.client, app, "strict"), timeout=BOUND_S,
             message="both inputs running")
    old = containers(nodes.client, app, "Holder")
    assert {c.node_id for c in old} == {nodes.node_id("node-a")}
    _cordon(nodes, "node-b", cordon=False)
    return retried, strict, [c.container_id for c in old]


def _on_survivor(nodes: TwoNodes, app: str) -> None:
    """A new container for a new call starts on node-b."""
    Holder = corral.Cls.from_name(app, "Holder", client=nodes.client)
    served_by = Holder.with_options(max_containers=1)(tag="strict").where.remote()
    placed = {c.container_id: c.node_id for c in containers(nodes.client, app, "Holder")}
    assert placed.get(served_by) == nodes.node_id("node-b"), placed


def test_kill_9_of_a_node_daemon(two_nodes: TwoNodes, shared_dir: Path) -> None:
    nodes, app = two_nodes, "faults-node-kill"
    nodes.ensure_running("node-a")
    retried, strict, old = _calls_held_on_node_a(nodes, app, shared_dir)
    old_node_id = nodes.node_id("node-a")

    nodes.daemons["node-a"].kill()
    nodes.daemons["node-a"].wait(timeout=30)
    with pytest.raises(corral.exception.ContainerExitedError, match="lost with its node: node node-a disconnected"):
        strict.get(timeout=BOUND_S)
    assert retried.get(timeout=BOUND_S) == "held"  # retried on node-b
    _on_survivor(nodes, app)
    listed = nodes.cli("node", "list")
    assert "): lost: node node-a disconnected" in listed.stdout, listed.stdout

    # What a killed node leaves behind: its reaper removes its runc containers; nothing of them lives on.
    wait_for(lambda: not any(pids_with(c) for c in old), timeout=BOUND_S, message="the killed node's containers to go")
    nodes.start("node-a")  # the machine comes back: a fresh node under the same name
    assert nodes.node_id("node-a") != old_node_id
    assert not set(old) & {c.container_id for c in containers(nodes.client, app, live_only=False)}
    _stop_app(nodes, app)


def test_a_stopped_node_daemon_is_lost_by_its_silence_then_comes_back(two_nodes: TwoNodes, shared_dir: Path) -> None:
    nodes, app = two_nodes, "faults-node-stop"
    nodes.ensure_running("node-a")
    retried, strict, old = _calls_held_on_node_a(nodes, app, shared_dir)
    old_node_id = nodes.node_id("node-a")
    daemon = nodes.daemons["node-a"]

    os.kill(daemon.pid, signal.SIGSTOP)  # its stream stays open; its heartbeats stop
    try:
        with pytest.raises(corral.exception.ContainerExitedError, match=r"node node-a stopped answering \(no heartbeat for"):
            strict.get(timeout=BOUND_S)
        assert retried.get(timeout=BOUND_S) == "held"
        _on_survivor(nodes, app)
        assert nodes.state("node-a") == control_pb2.NODE_STATE_LOST
    finally:
        os.kill(daemon.pid, signal.SIGCONT)

    # It finds its session ended, kills what it still ran (the lost workers finish their running
    # inputs otherwise), and registers again as a fresh node.
    wait_for(lambda: nodes.state("node-a") == control_pb2.NODE_STATE_READY, timeout=BOUND_S, message="node-a to register again")
    assert nodes.node_id("node-a") != old_node_id
    wait_for(lambda: not any(pids_with(c) for c in old), timeout=BOUND_S, message="the lost node's containers to be stopped")
    live = containers(nodes.client, app, "Holder")
    assert not set(old) & {c.container_id for c in live}
    for tag in ("retried", "strict"):  # max_containers=1: one container each at most, never a duplicate
        assert len([c for c in live if parameter(c, "tag") == tag]) <= 1
    _stop_app(nodes, app)


def test_drain_moves_a_nodes_work_to_another_node_gracefully(two_nodes: TwoNodes, shared_dir: Path, events: Path) -> None:
    nodes, app = two_nodes, "faults-node-drain"
    nodes.ensure_running("node-a")
    deploy(nodes.cluster, "node_failure_app.py", app)
    _cordon(nodes, "node-b")
    holder = corral.Cls.from_name(app, "Holder", client=nodes.client)(tag="drained", events=str(events))
    running = holder.hold.spawn(str(shared_dir / "drained"), 2.0)
    wait_for(lambda: _holding(nodes.client, app, "drained"), timeout=BOUND_S, message="the input to run on node-a")
    _cordon(nodes, "node-b", cordon=False)

    drained = nodes.cli("node", "drain", "node-a", "--timeout", "60")
    assert drained.returncode == 0 and "Node node-a drained" in drained.stdout, drained.stdout + drained.stderr
    assert running.get(timeout=BOUND_S) == "held"  # its running input finished
    assert "exit tag=drained" in read_events(events)  # its exit hook ran
    listed = nodes.cli("node", "list")
    assert any("node-a" in row and "cordoned" in row for row in listed.stdout.splitlines()), listed.stdout

    served_by = holder.where.remote()
    assert {c.container_id: c.node_id for c in containers(nodes.client, app, "Holder")}.get(served_by) == nodes.node_id("node-b")

    uncordoned = nodes.cli("node", "uncordon", "node-a")
    assert uncordoned.returncode == 0 and nodes.state("node-a") == control_pb2.NODE_STATE_READY, uncordoned.stderr
    unknown = nodes.cli("node", "cordon", "no-such-node")
    assert unknown.returncode == 1 and "NotFoundError" in unknown.stderr and "no-such-node" in unknown.stderr
    _stop_app(nodes, app)
