"""Basic autoscaling: start on first call, stop after the scaledown window, min_containers warm pools."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import corral
import lifecycle_app
from conftest import Cluster, read_events, start_cluster, wait_for
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, containers, deploy, parameter

PENDING = control_pb2.CONTAINER_STATE_PENDING
STARTING = control_pb2.CONTAINER_STATE_STARTING
READY = control_pb2.CONTAINER_STATE_READY


def test_first_call_starts_a_container_and_idleness_stops_it(cluster: Cluster, events: Path) -> None:
    name = "e2e-scaling-cold"
    deploy(cluster, "deploy_model.py", name)
    client = client_for(cluster)
    model = corral.Cls.from_name(name, "Model", client=client)(events=str(events))
    assert containers(client, name) == []  # nothing runs before the first call
    pid = model.pid.remote()
    assert read_events(events)[0] == f"enter tag=a pid={pid}"  # the first call started a container
    # scaledown_window=1: once idle, the container is stopped and its exit hook runs.
    wait_for(lambda: not containers(client, name, live_only=False), message="the idle container to be stopped")
    assert read_events(events) == [f"enter tag=a pid={pid}", f"exit tag=a pid={pid}"]
    # The next call starts a fresh container.
    assert model.bump.remote() == 1
    assert model.pid.remote() != pid
    assert cluster.corral("app", "stop", name).returncode == 0


def _in_background(function, *args):  # type: ignore[no-untyped-def]
    """Run `function` in a thread; returns (thread, results list)."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(function(*args)), daemon=True)
    thread.start()
    return thread, results


def test_busy_container_is_not_scaled_down(cluster: Cluster, events: Path) -> None:
    name = "e2e-scaling-busy"
    deploy(cluster, "deploy_model.py", name)
    client = client_for(cluster)
    model = corral.Cls.from_name(name, "Model", client=client)(events=str(events))
    thread, results = _in_background(model.sleep.remote, 3)  # runs well past scaledown_window=1
    seen = []
    while thread.is_alive():
        seen.extend((c.container_id, c.state, c.running_inputs) for c in containers(client, name, "Model", live_only=False))
        time.sleep(0.05)
    thread.join()
    assert results == ["slept"]
    assert len({container_id for container_id, _, _ in seen}) == 1, "the input moved to another container"
    assert {state for _, state, _ in seen} <= {PENDING, STARTING, READY}, "a busy container was stopped"
    assert any(state == READY and running == 1 for _, state, running in seen)
    assert cluster.corral("app", "stop", name).returncode == 0
    wait_for(lambda: [e.split()[0] for e in read_events(events)] == ["enter", "exit"], message="one container, one exit")


def test_load_scales_out_up_to_max_containers(cluster: Cluster) -> None:
    name = "e2e-scaling-out"
    deploy(cluster, "deploy_model.py", name)
    client = client_for(cluster)
    Model = corral.Cls.from_name(name, "Model", client=client)

    capped = Model.with_options(max_containers=2)(tag="capped")
    calls = [capped.sleep.spawn(1.5) for _ in range(4)]
    thread, results = _in_background(lambda: [c.get(timeout=60) for c in calls])
    most = 0
    while thread.is_alive():
        most = max(most, len(containers(client, name, "Model")))
        time.sleep(0.05)
    assert results == [["slept"] * 4]
    assert most == 2, f"expected max_containers=2 to cap the scale-out at 2, saw {most}"

    # Uncapped, four concurrent inputs (one slot per container) get four containers.
    free = Model(tag="free")
    calls = [free.sleep.spawn(2) for _ in range(4)]
    wait_for(lambda: sum(1 for c in containers(client, name, "Model") if parameter(c, "tag") == "free") == 4,
             message="four containers for four concurrent inputs")
    assert [c.get(timeout=60) for c in calls] == ["slept"] * 4
    assert cluster.corral("app", "stop", name).returncode == 0


def test_min_containers_keeps_a_container_warm(cluster: Cluster) -> None:
    name = "e2e-scaling-warm"
    deploy(cluster, "scaling_warm.py", name)
    client = client_for(cluster)
    # Deploying starts the warm container of the default parameter set without any call.
    wait_for(lambda: [c.state for c in containers(client, name, "Warm")] == [READY], message="a warm container")
    (warm,) = containers(client, name, "Warm")
    assert parameter(warm, "size") == 3
    time.sleep(3)  # well past scaledown_window=1: the warm container must still be the same one
    assert [c.container_id for c in containers(client, name, "Warm")] == [warm.container_id]
    Warm = corral.Cls.from_name(name, "Warm", client=client)
    Warm().pid.remote()
    # A direct call reaches the control plane's count with the container's next load report.
    wait_for(lambda: [c.inputs_served for c in containers(client, name, "Warm")] == [1], message="the call to be counted")
    (served,) = containers(client, name, "Warm")
    assert served.container_id == warm.container_id
    assert cluster.corral("app", "stop", name).returncode == 0
    wait_for(lambda: not containers(client, name, live_only=False), message="the warm container to stop with its app")


def test_update_autoscaler_min_containers_on_ephemeral_app(cluster: Cluster, events: Path) -> None:
    client = client_for(cluster)
    with lifecycle_app.app.run(client=client):
        tracker = lifecycle_app.Tracker(events=str(events), tag="warm")
        tracker.update_autoscaler(min_containers=1)
        wait_for(
            lambda: any(c.state == READY and parameter(c, "events") == str(events) for c in containers(client, "lifecycle", "Tracker")),
            message="a container started by update_autoscaler(min_containers=1)",
        )
        time.sleep(2.5)
        assert not any(e.startswith("exit") for e in read_events(events))
        assert tracker.bump.remote() == 1
    wait_for(lambda: any(e.startswith("exit tag=warm") for e in read_events(events)), message="the exit hook at app stop")


def test_warm_pool_comes_back_after_a_restart(fresh_cluster: Cluster) -> None:
    name = "e2e-scaling-warm-restart"
    deploy(fresh_cluster, "scaling_warm.py", name)
    client = client_for(fresh_cluster)
    wait_for(lambda: [c.state for c in containers(client, name, "Warm")] == [READY], message="a warm container")
    client.close()
    assert fresh_cluster.stop() == 0, fresh_cluster.logs()
    restarted = start_cluster(fresh_cluster.home, fresh_cluster.port)
    try:
        client = client_for(restarted)
        wait_for(lambda: [c.state for c in containers(client, name, "Warm")] == [READY], message="the warm container after a restart")
        (warm,) = containers(client, name, "Warm")
        corral.Cls.from_name(name, "Warm", client=client)().pid.remote()
        wait_for(lambda: [c.inputs_served for c in containers(client, name, "Warm")] == [1], message="the call to be counted")
        assert containers(client, name, "Warm")[0].container_id == warm.container_id
        client.close()
    finally:
        assert restarted.stop() == 0, restarted.logs()


def test_update_autoscaler_lasts_until_a_redeploy_restores_the_static_config(cluster: Cluster, events: Path) -> None:
    name = "e2e-scaling-override"
    deploy(cluster, "deploy_model.py", name)
    client = client_for(cluster)
    model = corral.Cls.from_name(name, "Model", client=client)(events=str(events))
    model.update_autoscaler(min_containers=2, scaledown_window=600)
    # Applies at once, with no call: two warm containers of this parameter set.
    wait_for(lambda: [c.state for c in containers(client, name, "Model")] == [READY, READY], message="two warm containers")
    time.sleep(2)  # past the class's static scaledown_window=1: the override keeps them
    assert len(containers(client, name, "Model")) == 2
    deploy(cluster, "deploy_model.py", name)  # a redeploy: the old version's service drains and goes away
    wait_for(lambda: not containers(client, name, "Model"), message="the old version's warm containers to stop")
    fresh = corral.Cls.from_name(name, "Model", client=client)(events=str(events))
    assert fresh.bump.remote() == 1
    # The static config is back: min_containers=0 and scaledown_window=1, so the container goes idle away.
    wait_for(lambda: not containers(client, name, "Model"), message="the static scaledown after the redeploy")
    assert cluster.corral("app", "stop", name).returncode == 0
