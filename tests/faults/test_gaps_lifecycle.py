"""Gaps of the suite closed, end to end: a hanging @exit is killed after the stop grace, a web client
that goes away cancels its input (the container is not killed by the input's timeout), and an
ephemeral app dies when its client stops heartbeating."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import gaps_app
import web_app
from conftest import Cluster, start_cluster, wait_for
from corral_protocol import env
from corral_protocol.v1 import control_pb2
from e2e.e2e_helpers import client_for, containers, pids_with


@pytest.mark.timeout(300)
def test_a_hanging_exit_hook_is_killed_after_the_stop_grace(cluster: Cluster, shared_dir: Path) -> None:
    client = client_for(cluster)
    path = shared_dir / "exits"
    with gaps_app.app.run(client=client):
        gaps_app.HangingExit(path=str(path)).pid.remote()
        (container,) = containers(client, "gaps", "HangingExit")
    # The app stopped: the container drains, its @exit hook hangs, and the grace (30 s) runs out.
    wait_for(lambda: path.exists(), timeout=60, message="the exit hook to start")
    wait_for(lambda: not pids_with(container.container_id), timeout=120, message="the hanging container to be killed")
    assert len(path.read_text().splitlines()) == 1  # the hook ran once, and was killed, not restarted
    client.close()


def test_a_web_client_that_goes_away_cancels_its_input(cluster: Cluster) -> None:
    client = client_for(cluster)
    with web_app.app.run(client=client) as app:
        url = app.running.web_urls["Slow.nap"]  # type: ignore[union-attr]
        assert httpx.get(url, params={"seconds": 0}, timeout=60).status_code == 200
        (before,) = containers(client, "web", "Slow")
        with pytest.raises(httpx.TimeoutException):
            httpx.get(url, params={"seconds": 1.8}, timeout=0.3)  # the class's timeout is 2 s
        # The input is cancelled at once: the container no longer counts it, and nothing times it out.
        wait_for(lambda: all(c.running_inputs == 0 for c in containers(client, "web", "Slow")), timeout=30, message="the input cancelled")
        time.sleep(2.5)  # past the class's timeout: an input left running would have killed the container
        assert [c.container_id for c in containers(client, "web", "Slow")] == [before.container_id]
        assert httpx.get(url, params={"seconds": 0}, timeout=60).status_code == 200
    client.close()


CLIENT = """
import sys, time
import deploy_model
with deploy_model.app.run():
    model = deploy_model.Model(tag="orphaned-client")
    model.pid.remote()
    print(deploy_model.app.running.app_id, flush=True)
    time.sleep(600)
"""


@pytest.mark.timeout(300)
def test_an_ephemeral_app_dies_when_its_client_stops_heartbeating(tmp_path: Path) -> None:
    """On a plane whose CORRAL_APP_HEARTBEAT_TIMEOUT_S is 20 s (60 s by default; clients beat every 10 s)."""
    cluster = start_cluster(tmp_path / "home", extra_env={env.CORRAL_APP_HEARTBEAT_TIMEOUT_S: "20"})
    client = client_for(cluster)
    process = subprocess.Popen([sys.executable, "-c", CLIENT], env=cluster.env(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        app_id = process.stdout.readline().strip()
        assert app_id.startswith("ap"), app_id
        (container,) = [c for c in containers(client, "e2e-deploy", "Model") if c.app_id == app_id]
        process.kill()  # no more heartbeats, and no goodbye
        process.wait(timeout=30)

        def stopped() -> bool:
            apps = client.call(client.stub.ListApps, control_pb2.ListAppsRequest()).apps
            return all(a.state != control_pb2.APP_STATE_RUNNING for a in apps if a.app_id == app_id)

        wait_for(stopped, timeout=90, message="the ephemeral app to be stopped (20 s without heartbeats)")
        wait_for(lambda: not pids_with(container.container_id), timeout=60, message="its container to exit")
    finally:
        if process.poll() is None:
            process.kill()
        client.close()
        cluster.stop()
