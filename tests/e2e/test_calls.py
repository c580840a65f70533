"""`startup_timeout`, `FunctionCall.cancel()`, `corral.current_input_id()` and `corral.is_local()`
end to end (issue 14, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

import calls_app
import corral
from conftest import Cluster, read_events, wait_for
from e2e_helpers import client_for, containers


@pytest.fixture(scope="module")
def running(cluster: Cluster):  # type: ignore[no-untyped-def]
    with calls_app.app.run(client=client_for(cluster)):
        yield calls_app.app.running


def test_current_input_id_names_the_call_and_is_local_tells_where_code_runs(running) -> None:  # type: ignore[no-untyped-def]
    call = calls_app.input_id.spawn()
    assert call.get(timeout=60) == call.object_id
    assert (calls_app.input_id.remote() or "").startswith(("fc-", "di-"))
    assert calls_app.input_id_async.spawn().get(timeout=60).startswith("fc-")
    assert corral.current_input_id() is None
    assert corral.is_local() is True
    assert calls_app.where.remote() is False


def test_cancel_stops_a_running_sync_method_and_a_queued_call_never_runs(running, events: Path) -> None:  # type: ignore[no-untyped-def]
    first = calls_app.busy.spawn(str(events), "first")
    wait_for(lambda: any(line.startswith("first started") for line in read_events(events)), message="the first call to start")
    busy_pid = read_events(events)[0].rsplit(" ", 1)[1]
    queued = calls_app.busy.spawn(str(events), "second")  # max_containers=1, one slot: it waits
    assert queued.cancel() == "not_started"
    assert first.cancel() == "stopping"
    wait_for(lambda: "first stopped by InputCancelled" in read_events(events), message="the sync method to stop")
    with pytest.raises(corral.exception.InputCancellation):
        first.get(timeout=60)
    with pytest.raises(corral.exception.InputCancellation):
        queued.get(timeout=60)
    assert calls_app.busy.remote(str(events), "pid") == busy_pid  # the same container serves on
    assert not any(line.startswith("second") for line in read_events(events))
    done = calls_app.input_id.spawn()
    done.get(timeout=60)
    assert done.cancel() == "already_done"


def test_startup_timeout_bounds_enter_apart_from_timeout(running) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(corral.exception.Error, match="within 2 s"):
        calls_app.SlowStart().run.remote()


def test_a_sync_method_that_does_not_stop_within_the_grace_period_gets_its_container_replaced(running, events: Path) -> None:  # type: ignore[no-untyped-def]
    call = calls_app.sleeper.spawn(str(events), 25)
    wait_for(lambda: any(line.startswith("sleeper started") for line in read_events(events)), message="the sleeper to start")
    old_pid = read_events(events)[0].rsplit(" ", 1)[1]
    assert call.cancel() == "stopping"
    with pytest.raises(corral.exception.InputCancellation):
        call.get(timeout=60)
    # Blocked in C past the grace period: its container exits and a new one serves the next call.
    # (A call pushed to it during the grace period would fail with it: see docs/architecture.md.)
    client = running.client
    wait_for(lambda: not containers(client, "calls", "sleeper"), timeout=60, message="the stuck container to exit")
    assert calls_app.sleeper.remote(str(events), 0) != old_pid
