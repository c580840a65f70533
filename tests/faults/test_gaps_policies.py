"""Gaps of the suite closed: retries of user exceptions and of timeouts, @enter failures never
retried, fairness on a node that really runs out of capacity, an unplaceable request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
import gaps_app
from conftest import Cluster, start_cluster
from corral_protocol.v1 import control_pb2
from e2e.e2e_helpers import client_for

BOUND_S = 120


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, corral.Client]]:
    cluster = start_cluster(tmp_path_factory.mktemp("gaps") / "home")
    client = client_for(cluster)
    try:
        with gaps_app.app.run(client=client):
            yield cluster, client
    finally:
        client.close()
        cluster.stop()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_user_exception_is_retried_by_the_policy(small: tuple[Cluster, corral.Client], shared_dir: Path) -> None:
    path = shared_dir / "attempts"
    assert gaps_app.Retried().fail_until.remote(str(path), 3) == 3  # two failures, then success
    exhausted = shared_dir / "exhausted"
    with pytest.raises(gaps_app.Flaky, match="attempt 3 fails"):
        gaps_app.Retried().fail_until.remote(str(exhausted), 99)
    assert _lines(exhausted) == 3  # max_retries=2: three attempts, no more


def test_a_timeout_is_retried_by_the_policy(small: tuple[Cluster, corral.Client], shared_dir: Path) -> None:
    path = shared_dir / "attempts"
    assert gaps_app.Retried().hang_once.remote(str(path)) == 2


def test_an_enter_failure_is_never_retried(small: tuple[Cluster, corral.Client], shared_dir: Path) -> None:
    path = shared_dir / "enters"
    with pytest.raises(corral.exception.InitError, match="enter fails"):
        gaps_app.BadEnter(path=str(path)).work.remote()
    assert _lines(path) == 1  # retries=3, and still one start for this call


def test_a_service_starved_of_capacity_gets_a_container_while_a_hog_holds_the_node(
    small: tuple[Cluster, corral.Client],
) -> None:
    _, client = small
    (node,) = client.call(client.stub.ListNodes, control_pb2.ListNodesRequest()).nodes
    half = node.inventory.cpu / 2  # two containers fill the node; the bystander must take one
    hog = gaps_app.Hog.with_options(cpu=half)()
    calls = [hog.work.spawn(0.5) for _ in range(40)]
    assert gaps_app.Bystander.with_options(cpu=half)().ping.remote() == "pong"
    pending = sum(1 for c in calls if not _done(c))
    assert pending >= 10, f"the bystander waited for the hog's queue to drain ({pending} left)"
    assert [c.get(timeout=BOUND_S) for c in calls] == ["worked"] * 40


def _done(call: corral.FunctionCall) -> bool:
    try:
        call.get(timeout=0)
    except corral.exception.TimeoutError:
        return False
    return True


def test_an_unplaceable_request_fails_its_calls_with_the_explanation(small: tuple[Cluster, corral.Client]) -> None:
    with pytest.raises(corral.exception.ContainerExitedError, match=r"cannot start Bystander: .*gpu"):
        gaps_app.Bystander.with_options(gpu="H100")().ping.remote()
