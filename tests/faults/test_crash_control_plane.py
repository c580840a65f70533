"""kill -9 of the control plane (`corral up`), then a restart on the same home: spawned calls are
not lost. Each one is answered, its result or a clear error, within a bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import corral
from conftest import APPS, Cluster, free_port, read_events, start_cluster, wait_for
from corral_protocol.v1 import control_pb2
from e2e.e2e_helpers import client_for, containers, deploy, parameter, pids_with

NAME = "faults-crash-plane"
BOUND_S = 120  # every answer arrives within this, restart included


def test_spawned_calls_survive_a_kill_9_of_the_control_plane(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "home")
    restarted = None
    try:
        deploy(cluster, "deploy_model.py", NAME)
        client = client_for(cluster)
        Model = corral.Cls.from_name(NAME, "Model", client=client)
        collected = Model(tag="collected").bump.spawn()
        assert collected.get(timeout=BOUND_S) == 1  # read once; its result stays in the store

        # One container each: the first input runs, the rest wait in the queue.
        retried = Model.with_options(max_containers=1, retries=1)(tag="retried")
        strict = Model.with_options(max_containers=1)(tag="strict")
        retried_calls = [retried.sleep.spawn(1.0) for _ in range(3)]
        strict_calls = [strict.sleep.spawn(30.0), strict.sleep.spawn(0.1)]

        def running(tag: str) -> bool:
            return any(parameter(c, "tag") == tag and c.running_inputs == 1 for c in containers(client, NAME, "Model"))

        wait_for(lambda: running("retried") and running("strict"), timeout=60, message="both services running an input")
        old_containers = [c.container_id for c in containers(client, NAME, "Model")]
        client.close()

        cluster.process.kill()
        cluster.process.wait(timeout=30)
        (cluster.home / "server.json").unlink()  # a killed server leaves it; the restart writes it again
        restarted = start_cluster(cluster.home, cluster.port)
        client = client_for(restarted)

        assert corral.FunctionCall.from_id(collected.object_id, client=client).get(timeout=BOUND_S) == 1
        # Queued spawns run; the running one runs again, as its retry policy allows.
        assert [corral.FunctionCall.from_id(c.object_id, client=client).get(timeout=BOUND_S) for c in retried_calls] == ["slept"] * 3
        # Without retries, the input that was running fails clearly; the queued one still runs.
        with pytest.raises(Exception, match="restarted while Model.sleep ran"):
            corral.FunctionCall.from_id(strict_calls[0].object_id, client=client).get(timeout=BOUND_S)
        assert corral.FunctionCall.from_id(strict_calls[1].object_id, client=client).get(timeout=BOUND_S) == "slept"
        # The containers of the killed plane do not live on outside any cluster.
        wait_for(lambda: not any(pids_with(c) for c in old_containers), timeout=60, message="the old workers to exit")
        client.close()
    finally:
        if restarted is not None:
            restarted.stop()
        cluster.stop()


def _start_plane(home: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """`corral up --no-node`: its nodes are separate daemons, which outlive a kill -9 of the plane."""
    process = subprocess.Popen([sys.executable, "-m", "corral.cli", "up", "--port", str(port), "--http-port", "0", "--no-node"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    wait_for(lambda: (home / "server.json").exists(), message="control plane start")
    return process


class _PlaneWithSurvivingNode:
    """`corral up --no-node` and a separate node daemon, which outlives a kill -9 of the plane."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.home, self.port = tmp_path / "control", free_port()
        self.env = dict(os.environ, CORRAL_HOME=str(self.home), PYTHONPATH=str(APPS))
        self.env.pop("CORRAL_SERVER_URL", None)
        self.env.pop("CORRAL_TOKEN", None)
        self.processes: list[subprocess.Popen[str]] = [_start_plane(self.home, self.port, self.env)]
        token = (self.home / "token").read_text().strip()
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "corral_runtime.node_cli", "--server", f"grpc://127.0.0.1:{self.port}",
             "--name", "surviving-node", "--work-dir", str(tmp_path / "node-work")],
            env=dict(self.env, CORRAL_HOME=str(tmp_path / "node-home"), CORRAL_TOKEN=token),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        ))

    def client(self) -> corral.Client:
        return client_for(Cluster(self.home, self.port, self.processes[0], self.tmp_path / "unused.log"))

    def deploy(self) -> None:
        deploy(Cluster(self.home, self.port, self.processes[0], self.tmp_path / "unused.log"), "deploy_model.py", NAME)
        client = self.client()
        wait_for(lambda: len(client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes) == 1, timeout=60,
                 message="the node to join")
        client.close()

    def restart(self) -> None:
        """kill -9 of the plane, then a restart on the same home and port."""
        self.processes[0].kill()
        self.processes[0].wait(timeout=30)
        (self.home / "server.json").unlink()  # a killed server leaves it; the restart writes it again
        self.processes[0] = _start_plane(self.home, self.port, self.env)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_a_running_spawned_call_is_delivered_by_its_container_after_a_restart(tmp_path: Path, events: Path, shared_dir: Path) -> None:
    """The node daemon lives on while the plane is killed; its container finishes the running input
    and delivers the result to the restarted plane, which does not run it again."""
    plane = _PlaneWithSurvivingNode(tmp_path)
    try:
        plane.deploy()
        client = plane.client()
        model = corral.Cls.from_name(NAME, "Model", client=client).with_options(max_containers=1)(tag="held", events=str(events))
        release = shared_dir / "release"
        call = model.hold.spawn(str(release))  # no retries: a second run would be an error, not a retry
        wait_for(lambda: "hold tag=held" in events.read_text(), timeout=60, message="the input to run")
        client.close()

        plane.restart()
        client = plane.client()
        release.touch()
        assert corral.FunctionCall.from_id(call.object_id, client=client).get(timeout=BOUND_S) == "released"
        assert len([line for line in read_events(events) if line.startswith("hold tag=held")]) == 1  # ran exactly once
        client.close()
    finally:
        plane.stop()


def test_a_running_spawned_call_that_overruns_its_timeout_is_not_awaited_forever_after_a_restart(
        tmp_path: Path, events: Path, shared_dir: Path) -> None:
    """The same restart, but the input never finishes: the restarted plane waits for it at most its
    class timeout, then the call fails with a timeout that says so, and its container is stopped."""
    plane = _PlaneWithSurvivingNode(tmp_path)
    try:
        plane.deploy()
        client = plane.client()
        model = corral.Cls.from_name(NAME, "Model", client=client).with_options(max_containers=1, timeout=20)(
            tag="overrun", events=str(events))  # long enough for the restart: the worker stops the input itself at 20 s
        call = model.hold.spawn(str(shared_dir / "never-released"))
        wait_for(lambda: "hold tag=overrun" in events.read_text(), timeout=60, message="the input to run")
        (container,) = containers(client, NAME)
        client.close()

        plane.restart()
        client = plane.client()
        with pytest.raises(corral.exception.FunctionTimeoutError, match="ran past its timeout of 20 s while the control plane restarted"):
            corral.FunctionCall.from_id(call.object_id, client=client).get(timeout=BOUND_S)
        wait_for(lambda: not pids_with(container.container_id), timeout=60, message="its container to be stopped")
        client.close()
    finally:
        plane.stop()


def test_a_container_stops_an_input_past_its_timeout_while_the_plane_stays_away(
        tmp_path: Path, events: Path, shared_dir: Path) -> None:
    """The plane is killed and not restarted: nobody enforces the class timeout but the worker,
    which stops the input once it has run that long, then exits (its exit hooks run)."""
    plane = _PlaneWithSurvivingNode(tmp_path)
    try:
        plane.deploy()
        client = plane.client()
        model = corral.Cls.from_name(NAME, "Model", client=client).with_options(max_containers=1, timeout=4)(
            tag="abandoned", events=str(events))
        model.hold.spawn(str(shared_dir / "never-released-either"))
        wait_for(lambda: "hold tag=abandoned" in events.read_text(), timeout=60, message="the input to run")
        (container,) = containers(client, NAME)
        client.close()

        plane.processes[0].kill()
        plane.processes[0].wait(timeout=30)
        wait_for(lambda: not pids_with(container.container_id), timeout=60, message="the container to stop its overdue input and exit")
        assert "exit tag=abandoned" in events.read_text()
    finally:
        plane.stop()
