"""kill -9 of a container, and of a node daemon (then a new one joins): no call is lost. Each caller
gets its result (retried, as its policy allows) or a clear error, within a bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import corral
from conftest import APPS, Cluster, free_port, wait_for
from corral_protocol.v1 import control_pb2
from e2e.e2e_helpers import client_for, containers, deploy, parameter, pids_with

BOUND_S = 120


def _running(client: corral.Client, app: str, tag: str) -> list[str]:
    return [c.container_id for c in containers(client, app, "Model") if parameter(c, "tag") == tag and c.running_inputs == 1]


def test_kill_9_of_a_container_retries_or_fails_clearly(cluster: Cluster) -> None:
    name = "faults-crash-container"
    deploy(cluster, "deploy_model.py", name)
    client = client_for(cluster)
    Model = corral.Cls.from_name(name, "Model", client=client)
    retried = Model.with_options(retries=1)(tag="retried")
    strict = Model(tag="strict")
    retried_call, strict_call = retried.sleep.spawn(2.0), strict.sleep.spawn(30.0)
    wait_for(lambda: _running(client, name, "retried") and _running(client, name, "strict"), timeout=60, message="both inputs running")
    for tag in ("retried", "strict"):
        (container_id,) = _running(client, name, tag)
        for pid in pids_with(container_id):
            os.kill(pid, signal.SIGKILL)
    assert retried_call.get(timeout=BOUND_S) == "slept"
    with pytest.raises(corral.exception.ContainerExitedError, match="exited unexpectedly"):
        strict_call.get(timeout=BOUND_S)
    client.close()
    assert cluster.corral("app", "stop", name).returncode == 0


def _nodes(client: corral.Client) -> list[control_pb2.NodeInfo]:
    return list(client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes)


def _node(url: str, token: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "corral_runtime.node_cli", "--server", url, "--name", "fault-node",
         "--work-dir", str(tmp_path / "node-work")],
        env=dict(env, CORRAL_TOKEN=token), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )


def test_kill_9_of_a_node_daemon_loses_no_call(tmp_path: Path) -> None:
    home = tmp_path / "control"
    port = free_port()
    env = dict(os.environ, CORRAL_HOME=str(home), PYTHONPATH=str(APPS))
    env.pop("CORRAL_SERVER_URL", None)
    env.pop("CORRAL_TOKEN", None)
    control = subprocess.Popen([sys.executable, "-m", "corral.cli", "up", "--port", str(port), "--http-port", "0", "--no-node"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    nodes: list[subprocess.Popen[str]] = []
    try:
        wait_for(lambda: (home / "server.json").exists(), message="control plane start")
        url, token = f"grpc://127.0.0.1:{port}", (home / "token").read_text().strip()
        node_env = dict(env, CORRAL_HOME=str(tmp_path / "node-home"))
        nodes.append(_node(url, token, tmp_path, node_env))
        cluster = Cluster(home, port, control, tmp_path / "unused.log")
        name = "faults-crash-node"
        deploy(cluster, "deploy_model.py", name)
        client = client_for(cluster)
        wait_for(lambda: len(_nodes(client)) == 1, timeout=60, message="the node to join")
        Model = corral.Cls.from_name(name, "Model", client=client)
        retried = Model.with_options(retries=1, max_containers=1)(tag="retried")
        strict = Model.with_options(max_containers=1)(tag="strict")
        retried_calls = [retried.sleep.spawn(1.0) for _ in range(3)]
        strict_calls = [strict.sleep.spawn(30.0), strict.sleep.spawn(0.1)]
        wait_for(lambda: _running(client, name, "retried") and _running(client, name, "strict"), timeout=60, message="both inputs running")
        old = [c.container_id for c in containers(client, name, "Model")]

        nodes[0].kill()
        nodes[0].wait(timeout=30)
        with pytest.raises(corral.exception.ContainerExitedError, match="node fault-node disconnected"):
            strict_calls[0].get(timeout=BOUND_S)
        nodes.append(_node(url, token, tmp_path, node_env))  # the machine comes back
        assert [c.get(timeout=BOUND_S) for c in retried_calls] == ["slept"] * 3
        assert strict_calls[1].get(timeout=BOUND_S) == "slept"
        # The killed node's workers do not live on: the plane ends their sessions, and they exit.
        wait_for(lambda: not any(pids_with(c) for c in old), timeout=60, message="the orphaned workers to exit")
        client.close()
    finally:
        for process in (*nodes, control):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_a_container_dying_after_a_direct_input_was_sent_fails_its_caller_clearly(cluster: Cluster) -> None:
    name = "faults-crash-direct"
    deploy(cluster, "deploy_model.py", name)
    client = client_for(cluster)
    model = corral.Cls.from_name(name, "Model", client=client)(tag="direct")  # no retries: the direct path
    pid = model.pid.remote()
    service_id = model._bind()[1]
    wait_for(lambda: len(client.call(client.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id)).routes) == 1,
             message="a route to the READY container")

    def routed() -> bool:
        model.pid.remote()  # a call refreshes the client's stale routes
        table = client.direct._tables.get(service_id)
        return table is not None and bool(table.routes)

    wait_for(routed, message="the client to know the route")
    outcome: list[BaseException | str] = []

    def call() -> None:
        try:
            outcome.append(model.sleep.remote(60))
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            outcome.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: any(c.running_inputs == 1 for c in containers(client, name, "Model")), timeout=60, message="the direct input to run")
    for host_pid in pids_with(pid):  # `pid` is the container's id (every container is pid 1 inside)
        os.kill(host_pid, signal.SIGKILL)
    caller.join(timeout=BOUND_S)
    assert not caller.is_alive(), "the caller was not answered"
    (error,) = outcome
    assert isinstance(error, corral.exception.ContainerExitedError), error
    # The direct path (the client knew the route and the container had a free slot): the broken
    # connection made the SDK ask the control plane why the container ended (GetContainerExit).
    assert "exited unexpectedly (exit code -9): it was killed by signal 9" in str(error), error
    assert not client.direct._tables[service_id].routes, "the direct path forgets a container whose connection broke"
    # The service recovers with a new container. (A connection the client pooled to the dead
    # container can still fail one call with "Connection reset by peer" before its input was sent;
    # falling back to the queue there is the direct port's part of issue 15, not tested here.)
    def recovered() -> bool:
        try:
            return model.pid.remote() != pid
        except corral.exception.ContainerExitedError:
            return False

    wait_for(recovered, timeout=BOUND_S, message="a call served by a new container")
    client.close()
    assert cluster.corral("app", "stop", name).returncode == 0
