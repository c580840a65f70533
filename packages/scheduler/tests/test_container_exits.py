"""Why a container ended, for direct callers (`GetContainerExit`): the core keeps recent exits with
the message a queued input gets; the driver's wait answers at once for what it cannot know."""

from __future__ import annotations

import asyncio

import pytest

from corral_protocol.v1 import control_pb2
from corral_scheduler import container_exits
from corral_scheduler.container_exits import MAX_WAIT_S, ContainerExit, RecentExits, wait_for_exit, wait_seconds
from corral_scheduler.errors import InvalidArgument
from corral_scheduler.testing import Harness, class_def

OOM = "out of memory (limit 128 MiB)"


def _ask(recent: RecentExits, container_id: str, service_id: str = "sv-1", method: str = "run", timeout_s: float = 0.0,
         alive: dict[str, str] | None = None, reader_app_id: str | None = None) -> control_pb2.GetContainerExitResponse:
    request = control_pb2.GetContainerExitRequest(container_id=container_id, service_id=service_id, method=method, timeout_s=timeout_s)
    return asyncio.run(wait_for_exit(request, recent, (alive or {}).get, reader_app_id))


def test_an_oom_exit_is_kept_with_the_message_a_queued_input_gets() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def("Model", methods=("run", "other"))), "Model")
    queued = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.exit(container, exit_code=-9, reason=OOM)
    failed = h.result(queued)
    assert failed is not None and failed.message == f"{OOM}: the container running Model.run was killed (exit code -9)"

    answer = _ask(h.core.containers.recent_exits, container, service, "other")
    assert answer.exited and answer.message == f"{OOM}: the container running Model.other was killed (exit code -9)"


def test_unknown_containers_other_services_and_the_living_are_answered_without_a_reason() -> None:
    recent = RecentExits()
    recent.add("ct-1", ContainerExit("sv-1", "Model", frozenset({"run"}), "it exited with an error", 1, "Traceback ..."))
    assert _ask(recent, "ct-1").message.startswith("the container running Model.run exited unexpectedly (exit code 1)")
    assert not _ask(recent, "ct-1", service_id="sv-other").exited  # only to a caller routed to its service
    assert not _ask(recent, "ct-unknown", timeout_s=60).exited  # nothing to wait for: at once
    assert not _ask(recent, "ct-2", timeout_s=0.1, alive={"ct-2": "sv-1"}).exited  # alive when the (bounded) wait ends
    with pytest.raises(InvalidArgument, match="no method"):
        _ask(recent, "ct-1", method="x" * 10_000)


def test_a_wait_ends_when_the_exit_arrives() -> None:
    recent = RecentExits()
    alive = {"ct-1": "sv-1"}

    async def exit_soon() -> control_pb2.GetContainerExitResponse:
        request = control_pb2.GetContainerExitRequest(container_id="ct-1", service_id="sv-1", method="run", timeout_s=60)
        waiting = asyncio.create_task(wait_for_exit(request, recent, alive.get, None))
        await asyncio.sleep(0)
        recent.add("ct-1", ContainerExit("sv-1", "Model", frozenset({"run"}), OOM, -9, ""))
        del alive["ct-1"]
        return await asyncio.wait_for(waiting, 30)

    assert asyncio.run(exit_soon()).message.startswith(OOM)


def test_recent_exits_are_bounded() -> None:
    recent = RecentExits(bound=2)
    for n in range(3):
        recent.add(f"ct-{n}", ContainerExit("sv-1", "Model", frozenset({"run"}), "it exited", 0, ""))
    assert recent.get("ct-0") is None and recent.get("ct-2") is not None


def test_the_stderr_tail_goes_only_to_the_admin_and_to_containers_of_the_same_app() -> None:
    recent = RecentExits()
    recent.add("ct-1", ContainerExit("sv-1", "Model", frozenset({"run"}), OOM, -9, "secret: hunter2", app_id="ap-1"))
    for reader in (None, "ap-1"):  # the admin token; a container of the exited container's app
        assert _ask(recent, "ct-1", reader_app_id=reader).message.endswith("stderr:\nsecret: hunter2")
    for reader in ("ap-other", ""):  # another app's container; a container the plane does not know
        answer = _ask(recent, "ct-1", reader_app_id=reader)
        assert answer.exited and answer.message == f"{OOM}: the container running Model.run was killed (exit code -9)"


def test_the_plane_records_the_app_of_an_exited_container() -> None:
    h = Harness()
    h.add_node()
    app = h.deploy(class_def("Model"))
    service = h.bind(app, "Model")
    h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.exit(container, exit_code=-9, reason=OOM)
    record = h.core.containers.recent_exits.get(container)
    assert record is not None and record.app_id == app


@pytest.mark.parametrize("timeout_s", [float("nan"), float("inf"), float("-inf")])
def test_a_timeout_that_is_not_a_finite_number_waits_the_longest(timeout_s: float, monkeypatch: pytest.MonkeyPatch) -> None:
    assert wait_seconds(timeout_s) == MAX_WAIT_S
    assert wait_seconds(-1.0) == 0.0 and wait_seconds(1e9) == MAX_WAIT_S and wait_seconds(2.5) == 2.5
    monkeypatch.setattr(container_exits, "MAX_WAIT_S", 0.05)
    request = control_pb2.GetContainerExitRequest(container_id="ct-1", service_id="sv-1", method="run", timeout_s=timeout_s)
    waiting = wait_for_exit(request, RecentExits(), {"ct-1": "sv-1"}.get, None)
    assert not asyncio.run(asyncio.wait_for(waiting, 30)).exited  # still alive: the wait ends (a NaN never ended it)
