"""Container lifecycle: enter hooks (order, once per container), per-container state, parameter sets in
separate containers, and exit hooks on every graceful stop (scale-down, app stop, `corral up` shutdown)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import corral
import lifecycle_app
from conftest import Cluster, read_events, wait_for
from e2e_helpers import client_for, containers, deploy, parameter

ENTER_ORDER = ["enter:snap", "enter:base", "enter:setup"]


def by_container(events: Path) -> dict[str, list[str]]:
    """Event lines grouped by the container that wrote them (the `tag=` detail dropped)."""
    grouped: dict[str, list[str]] = {}
    for line in read_events(events):
        words = line.split()
        grouped.setdefault(words[-1].removeprefix("ct="), []).append(words[0])
    return grouped


def test_parameter_sets_state_and_enter_order(cluster: Cluster, events: Path) -> None:
    client = client_for(cluster)
    with lifecycle_app.app.run(client=client):
        Tracker = lifecycle_app.Tracker.with_options(scaledown_window=600)
        a, b = Tracker(events=str(events), tag="a"), Tracker(events=str(events), tag="b")
        assert [a.bump.remote() for _ in range(3)] == [1, 2, 3]  # instance state persists in one container
        assert b.bump.remote() == 1  # another parameter set: another container, its own state
        assert a.bump.remote() == 4
        ct_a, ct_b = a.container.remote(), b.container.remote()
        assert ct_a != ct_b
        assert Tracker(events=str(events), tag="a").container.remote() == ct_a  # the same parameters, the same service
        assert len(containers(client, "lifecycle", "Tracker")) == 2
        # Enter hooks ran once per container: snap=True first, then definition order with bases first.
        grouped = by_container(events)
        assert grouped == {str(ct_a): ENTER_ORDER, str(ct_b): ENTER_ORDER}
        assert f"enter:setup tag=b ct={ct_b}" in read_events(events)
    # Leaving `app.run()` stops the ephemeral app: both containers run their exit hooks.
    wait_for(lambda: all(lines[-1] == "exit" for lines in by_container(events).values()), message="exit hooks at app exit")
    assert by_container(events) == {str(ct_a): [*ENTER_ORDER, "exit"], str(ct_b): [*ENTER_ORDER, "exit"]}


def test_async_hooks_and_methods(cluster: Cluster, events: Path) -> None:
    client = client_for(cluster)
    with lifecycle_app.app.run(client=client):
        tracker = lifecycle_app.AsyncTracker(events=str(events))
        assert tracker.add.remote("x") == ["x"]

        async def more() -> list[str]:
            return await tracker.add.remote.aio("y")

        assert asyncio.run(more()) == ["x", "y"]
    wait_for(lambda: [e.split()[0] for e in read_events(events)] == ["enter:async", "exit:async"], message="async exit hook")


def test_scale_down_runs_exit_hooks(cluster: Cluster, events: Path) -> None:
    client = client_for(cluster)
    with lifecycle_app.app.run(client=client):
        tracker = lifecycle_app.Tracker(events=str(events), tag="idle")  # scaledown_window=1
        assert tracker.bump.remote() == 1
        ct = tracker.container.remote()
        wait_for(lambda: f"exit tag=idle ct={ct}" in read_events(events), message="the exit hook after scale-down")
        wait_for(
            lambda: not any(parameter(c, "events") == str(events) for c in containers(client, "lifecycle", "Tracker", live_only=False)),
            message="the stopped container to leave the list",
        )
        # A call after the scale-down gets a new container with fresh state.
        assert tracker.bump.remote() == 1
        assert tracker.container.remote() != ct


def test_app_stop_runs_exit_hooks(cluster: Cluster, events: Path) -> None:
    name = "e2e-lifecycle-stop"
    deploy(cluster, "lifecycle_app.py", name)
    client = client_for(cluster)
    Tracker = corral.Cls.from_name(name, "Tracker", client=client).with_options(scaledown_window=600)
    AsyncTracker = corral.Cls.from_name(name, "AsyncTracker", client=client).with_options(scaledown_window=600)
    tracker = Tracker(events=str(events), tag="deployed")
    assert tracker.bump.remote() == 1
    assert AsyncTracker(events=str(events)).add.remote("z") == ["z"]
    ct = tracker.container.remote()
    result = cluster.corral("app", "stop", name)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: f"exit tag=deployed ct={ct}" in read_events(events), message="the exit hook after `corral app stop`")
    wait_for(lambda: any(e.startswith("exit:async") for e in read_events(events)), message="the async exit hook after `corral app stop`")
    wait_for(lambda: not containers(client, name, live_only=False), message="the stopped app's containers to go")


def test_corral_up_shutdown_runs_exit_hooks(fresh_cluster: Cluster, events: Path) -> None:
    name = "e2e-lifecycle-shutdown"
    deploy(fresh_cluster, "lifecycle_app.py", name)
    client = client_for(fresh_cluster)
    Tracker = corral.Cls.from_name(name, "Tracker", client=client).with_options(scaledown_window=600)
    cts = {tag: Tracker(events=str(events), tag=tag).container.remote() for tag in ("one", "two")}
    AsyncTracker = corral.Cls.from_name(name, "AsyncTracker", client=client).with_options(scaledown_window=600)
    assert AsyncTracker(events=str(events)).add.remote("q") == ["q"]
    assert not any(e.startswith("exit") for e in read_events(events))
    client.close()
    assert fresh_cluster.stop() == 0, fresh_cluster.logs()
    # By the time `corral up` has exited, every container ran its exit hooks.
    lines = read_events(events)
    for tag, ct in cts.items():
        assert f"exit tag={tag} ct={ct}" in lines, lines
    assert any(e.startswith("exit:async") for e in lines), lines
    assert "Corral stopped." in fresh_cluster.logs()


def test_redeploy_stops_old_containers_gracefully(cluster: Cluster, events: Path) -> None:
    name = "e2e-lifecycle-redeploy"
    deploy(cluster, "lifecycle_app.py", name)
    client = client_for(cluster)
    tracker = corral.Cls.from_name(name, "Tracker", client=client).with_options(scaledown_window=600)(events=str(events), tag="v1")
    old_ct = tracker.container.remote()
    deploy(cluster, "lifecycle_app.py", name)
    wait_for(lambda: f"exit tag=v1 ct={old_ct}" in read_events(events), message="the old version's exit hook")
    assert tracker.container.remote() != old_ct  # the same handle now serves from the new version
    assert cluster.corral("app", "stop", name).returncode == 0
