"""Serving under load: concurrency slots, dynamic batching, parallel scale-up, backpressure, fairness,
and the direct call path. Assertions are on counts and orderings, never on wall-clock thresholds."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import corral
import serving_app
from conftest import Cluster, start_cluster, wait_for
from corral.exception import QueueFullError
from corral_protocol.v1 import control_pb2
from e2e_helpers import client_for, containers


@pytest.fixture(scope="module")
def running(cluster: Cluster):  # type: ignore[no-untyped-def]
    client = client_for(cluster)
    with serving_app.app.run(client=client):
        yield client


def _waves(intervals: list[tuple[int, float, float]], capacity: int) -> None:
    """Inputs ran `capacity` at a time: the first `capacity` all started before any ended, and the
    rest started only after one of those ended."""
    by_start = sorted(intervals, key=lambda i: i[1])
    first, rest = by_start[:capacity], by_start[capacity:]
    earliest_end = min(end for _, _, end in first)
    assert all(start < earliest_end for _, start, _ in first), "the first wave did not overlap"
    assert all(start >= earliest_end for _, start, _ in rest), "more inputs ran at once than max_inputs"
    # Never more than `capacity` at once: sweep the start/end events.
    events = sorted([(s, 1) for _, s, _ in intervals] + [(e, -1) for _, _, e in intervals], key=lambda x: (x[0], x[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == capacity


def test_twenty_sync_inputs_run_in_two_waves_of_ten_on_one_container(running: corral.Client) -> None:
    obj = serving_app.SyncSlots()
    with ThreadPoolExecutor(20) as pool:
        intervals = list(pool.map(lambda _: obj.nap.remote(1.0), range(20)))
    assert len({pid for pid, _, _ in intervals}) == 1
    _waves(intervals, 10)


def test_async_inputs_share_the_event_loop_with_with_concurrency(running: corral.Client) -> None:
    obj = serving_app.AsyncSlots.with_concurrency(max_inputs=5)()

    async def burst() -> list[tuple[int, float, float]]:
        return await asyncio.gather(*[obj.nap.remote.aio(0.5) for _ in range(10)])

    intervals = asyncio.run(burst())
    assert len({pid for pid, _, _ in intervals}) == 1
    _waves(intervals, 5)


def test_batched_method_gets_lists_and_each_caller_its_own_element(running: corral.Client) -> None:
    obj = serving_app.Embedder()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: obj.embed.remote(i, ys=1), range(8)))
    assert [value for value, _ in results] == [i * 10 + 1 for i in range(8)]
    # wait_ms=3000 is far longer than the burst takes: batches close because they are full.
    assert [size for _, size in results] == [4] * 8


def test_a_lone_input_closes_its_batch_after_wait_ms(running: corral.Client) -> None:
    assert serving_app.QuickBatch().double.remote(21) == (42, 1)


def test_with_batching_batches_a_plain_method(running: corral.Client) -> None:
    obj = serving_app.Scaler.with_batching(max_batch_size=4, wait_ms=3000)()
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(obj.scale.remote, [1.0, 2.0, 3.0, 4.0])) == [3.0, 6.0, 9.0, 12.0]


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("raise", ValueError, "batch of 3 refused"),
        ("dict", TypeError, "must return a list with one element per input"),
        ("short", TypeError, "returned a list of 2 for a batch of 3 inputs"),
    ],
)
def test_a_broken_batch_fails_every_input_with_the_same_error(running: corral.Client, bad: str, error: type, message: str) -> None:
    obj = serving_app.BadBatch()

    def call(mode: str) -> BaseException | None:
        try:
            obj.run.remote(mode)
        except Exception as exc:
            return exc
        return None

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(call, [bad, "ok", "ok"]))
    assert all(isinstance(o, error) and message in str(o) for o in outcomes), outcomes
    assert len({str(o) for o in outcomes}) == 1


def test_scale_up_from_zero_starts_containers_in_parallel(running: corral.Client, shared_dir: Path) -> None:
    events = shared_dir / "enter.log"
    obj = serving_app.SlowStart(events=str(events))
    with ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(lambda _: obj.work.remote(0.5), range(8)))
    enters = [line.split() for line in events.read_text().splitlines()]
    assert len(enters) == 4 and len(set(pids)) == 4  # max_containers=4
    first_end = min(float(end) for _, _, _, end in enters)
    assert all(float(start) < first_end for _, _, start, _ in enters), "containers were started one after another"


def test_queue_bound_refuses_with_a_clear_error_and_loses_nothing(tmp_path: Path, shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_MAX_QUEUE", "5")
    cluster = start_cluster(tmp_path / "home")
    release = shared_dir / "release"
    try:
        client = client_for(cluster)
        with serving_app.bound_app.run(client=client):
            blocker = serving_app.QueueHolder()
            first = blocker.hold.spawn(str(release))
            wait_for(lambda: any(c.running_inputs == 1 for c in containers(client, "serving-bound", "QueueHolder")), message="the holder to run")
            queued = [blocker.hold.spawn(str(release)) for _ in range(5)]
            with pytest.raises(QueueFullError, match=r"queue of QueueHolder is full \(5 inputs waiting\)"):
                blocker.hold.spawn(str(release))
            release.touch()
            assert [c.get(timeout=60) for c in [first, *queued]] == ["released"] * 6
    finally:
        cluster.stop()


def test_a_hot_service_does_not_starve_another(running: corral.Client, shared_dir: Path) -> None:
    release = shared_dir / "release"
    blocker = serving_app.Blocker()
    calls = [blocker.hold.spawn(str(release)) for _ in range(200)]
    try:
        assert serving_app.Bystander().ping.remote() == "pong"
        pending = sum(1 for c in calls if not _done(c))
        assert pending >= 199  # the hot service's queue was still full when the other call was answered
    finally:
        release.touch()
    assert [c.get(timeout=120) for c in calls] == ["released"] * 200


def _done(call: corral.FunctionCall) -> bool:
    try:
        call.get(timeout=0)
    except corral.exception.TimeoutError:
        return False
    return True


def test_container_list_shows_each_containers_load(running: corral.Client, cluster: Cluster) -> None:
    obj = serving_app.SyncSlots()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(obj.nap.remote, 2.0) for _ in range(3)]
        wait_for(lambda: any(c.running_inputs == 3 for c in containers(running, "serving", "SyncSlots")), message="load 3")
        listing = cluster.corral("container", "list").stdout
        assert any("SyncSlots" in line and "3/10" in line for line in listing.splitlines()), listing
        for future in futures:
            future.result()


def test_direct_calls_reach_containers_without_the_control_plane_queue(running: corral.Client) -> None:
    obj = serving_app.SyncSlots()
    obj.nap.remote(0)  # binds the service and starts its container
    service_id = obj._bind()[1]
    wait_for(
        lambda: len(running.call(running.stub.GetRoutes, control_pb2.GetRoutesRequest(service_id=service_id)).routes) == 1,
        message="a route to the READY container",
    )
    before = sum(c.inputs_served for c in containers(running, "serving", "SyncSlots"))
    table = running.direct._tables[service_id]
    obj.nap.remote(0)
    (route,) = table.routes.values()
    pooled = len(route.idle)
    for _ in range(20):
        obj.nap.remote(0)
    assert list(table.routes) == [c.container_id for c in containers(running, "serving", "SyncSlots")]
    assert len(route.idle) == pooled  # sequential calls reuse one pooled connection
    # Direct inputs are counted from the container's load reports.
    wait_for(lambda: sum(c.inputs_served for c in containers(running, "serving", "SyncSlots")) >= before + 20, message="20 more")
