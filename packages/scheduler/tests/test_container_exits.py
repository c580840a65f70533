"""Why a container ended, for direct callers (`GetContainerExit`): the core keeps recent exits with
the message a queued input gets; the driver's wait answers at once for what it cannot know."""

from __future__ import annotations

import asyncio

import pytest

from corral_protocol.v1 import control_pb2
from corral_scheduler.container_exits import ContainerExit, RecentExits, wait_for_exit
from corral_scheduler.errors import InvalidArgument
from corral_scheduler.testing import Harness, class_def

OOM = "out of memory (limit 128 MiB)"


def _ask(recent: RecentExits, container_id: str, service_id: str = "sv-1", method: str = "run", timeout_s: float = 0.0,
         alive: dict[str, str] | None = None) -> control_pb2.GetContainerExitResponse:
    request = control_pb2.GetContainerExitRequest(container_id=container_id, service_id=service_id, method=method, timeout_s=timeout_s)
    return asyncio.run(wait_for_exit(request, recent, (alive or {}).get))


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
        waiting = asyncio.create_task(wait_for_exit(request, recent, alive.get))
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
