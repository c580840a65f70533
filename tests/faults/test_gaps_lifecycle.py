"""Gaps of the suite closed, end to end: a hanging @exit is killed after the stop grace, and a web
client that goes away cancels its input (the container is not killed by the input's timeout)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

import gaps_app
import web_app
from conftest import Cluster, wait_for
from e2e.e2e_helpers import client_for, containers, pids_with


@pytest.mark.timeout(300)
def test_a_hanging_exit_hook_is_killed_after_the_stop_grace(cluster: Cluster, tmp_path: Path) -> None:
    client = client_for(cluster)
    path = tmp_path / "exits"
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
