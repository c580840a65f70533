"""Cordon, uncordon and drain in the pure core: where new containers go, when the old ones stop,
and what each request refuses."""

from __future__ import annotations

import pytest

from corral_protocol.v1 import common_pb2
from corral_scheduler import events as ev
from corral_scheduler.errors import InvalidArgument, NotFound
from corral_scheduler.lifecycle import ContainerState, NodeState
from corral_scheduler.testing import Harness, class_def

S = common_pb2
CS = ContainerState


def cordon(h: Harness, node: str, on: bool = True) -> None:
    h.handle(ev.NodeCordonRequested(node, cordon=on))


def drain(h: Harness, node: str, timeout_s: float = 60.0) -> None:
    h.handle(ev.NodeDrainRequested(node, timeout_s))


def state(h: Harness, node: str) -> NodeState:
    return h.core.nodes.nodes[node].state


def serving(h: Harness, node: str, **options: object) -> tuple[str, str]:
    """(service, container): one READY container of a min_containers=1 class on `node`."""
    service = h.bind(h.deploy(class_def(min_containers=1, cpu=1, **options)))  # type: ignore[arg-type]
    (container,) = h.live_containers(service)
    assert h.container(container).node_id == node
    h.bring_up(container)
    return service, container


def test_a_cordoned_node_keeps_serving_but_takes_no_new_container() -> None:
    h = Harness()
    first = h.add_node("a", cpu=4)
    service, container = serving(h, first)
    second = h.add_node("b", cpu=4)
    cordon(h, "a")  # by name
    assert state(h, first) is NodeState.CORDONED
    call = h.invoke(service)
    assert h.pushed(container) == [call]  # it still serves
    other = h.bind(h.deploy(class_def("Other", min_containers=1, cpu=4), name="other"), "Other")
    assert {h.container(c).node_id for c in h.live_containers(other)} == {second}  # b is full now
    cordon(h, first, on=False)  # by id
    assert state(h, first) is NodeState.READY
    third = h.bind(h.deploy(class_def("Third", min_containers=1, cpu=1), name="third"), "Third")
    (placed,) = h.live_containers(third)
    assert h.container(placed).node_id == first


def test_work_that_only_a_cordoned_node_could_run_waits_for_it() -> None:
    h = Harness()
    node = h.add_node("a", cpu=4)
    cordon(h, node)
    service = h.bind(h.deploy(class_def(cpu=1)))
    call = h.invoke(service)
    h.run_for(1)
    assert h.result(call) is None and h.live_containers(service) == []
    cordon(h, node, on=False)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    assert h.pushed(container) == [call]


def test_a_cordon_outlives_the_nodes_session() -> None:
    h = Harness()
    node = h.add_node("a")
    cordon(h, node)
    h.handle(ev.NodeLost(node))
    back = h.add_node("a")
    assert state(h, back) is NodeState.CORDONED
    lost_again = h.add_node("b")
    h.handle(ev.NodeLost(lost_again))
    cordon(h, "b")  # a lost node's name may be cordoned for when it returns
    assert state(h, h.add_node("b")) is NodeState.CORDONED


def test_an_unknown_node_is_a_clear_not_found() -> None:
    h = Harness()
    h.add_node("a")
    with pytest.raises(NotFound, match="node 'nope' not found \\(nodes: a\\)"):
        cordon(h, "nope")
    with pytest.raises(NotFound, match="nope"):
        drain(h, "nope")


def test_a_drain_starts_the_replacement_first_then_stops_the_old_container_gracefully() -> None:
    h = Harness()
    first = h.add_node("a", cpu=4)
    service, old = serving(h, first)
    second = h.add_node("b", cpu=4)
    call = h.invoke(service)
    drain(h, "a", timeout_s=120)
    assert state(h, first) is NodeState.DRAINING
    (replacement,) = h.live_containers(service)
    assert h.container(replacement).node_id == second
    assert h.container(old).state is CS.READY and not h.worker(old).shutdown  # serves until the replacement is ready
    h.bring_up(replacement)
    h.tick(0.2)
    assert h.container(old).state is CS.DRAINING and h.worker(old).shutdown  # graceful: it finishes its input
    assert h.nodes[first].stopped == []
    h.output(old, call)
    assert h.result(call).status == S.RESULT_STATUS_SUCCESS  # type: ignore[union-attr]
    h.exit(old)
    h.tick(0.2)
    assert state(h, first) is NodeState.CORDONED and h.core.nodes.nodes[first].containers == set()


def test_a_drain_keeps_a_service_within_its_max_containers() -> None:
    h = Harness()
    first = h.add_node("a", cpu=4)
    service, old = serving(h, first, max_containers=1)
    h.add_node("b", cpu=4)
    drain(h, first)
    assert h.container(old).state is CS.DRAINING  # no room under its cap for a replacement first
    assert h.live_containers(service) == []
    h.exit(old)
    (replacement,) = h.live_containers(service)
    assert h.container(replacement).node_id != first


def test_a_drain_without_room_elsewhere_stops_at_once_and_the_work_waits() -> None:
    h = Harness()
    node = h.add_node("a", cpu=1)
    service, old = serving(h, node)
    drain(h, node)
    assert h.container(old).state is CS.DRAINING
    h.exit(old)
    h.tick(0.2)
    assert state(h, node) is NodeState.CORDONED
    call = h.invoke(service)
    h.run_for(1)
    assert h.result(call) is None  # it waits for the node to be uncordoned (or another to join)
    h.add_node("b", cpu=1)
    (replacement,) = h.live_containers(service)
    h.bring_up(replacement)
    assert h.pushed(replacement) == [call]


def test_a_drain_kills_what_still_runs_at_its_timeout() -> None:
    h = Harness()
    node = h.add_node("a", cpu=1)
    service, old = serving(h, node, retries=1)
    call = h.invoke(service)
    drain(h, node, timeout_s=5)
    assert h.container(old).state is CS.DRAINING  # its input runs on
    h.run_for(5.2)
    assert h.nodes[node].stopped == [old] and h.container(old).state is CS.KILLED
    h.exit(old, 137)
    assert h.result(call) is None  # retried
    h.tick(0.2)
    assert state(h, node) is NodeState.CORDONED


def test_containers_that_never_served_stop_at_once_in_a_drain() -> None:
    h = Harness()
    first = h.add_node("a", cpu=4)
    service = h.bind(h.deploy(class_def(min_containers=1, cpu=1)))
    (starting,) = h.live_containers(service)
    second = h.add_node("b", cpu=4)
    drain(h, first)
    assert h.nodes[first].stopped == [starting]
    (replacement,) = h.live_containers(service)
    assert h.container(replacement).node_id == second


def test_uncordon_ends_a_drain() -> None:
    h = Harness()
    first = h.add_node("a", cpu=4)
    service, old = serving(h, first)
    h.add_node("b", cpu=4)
    drain(h, first)
    cordon(h, first, on=False)
    assert state(h, first) is NodeState.READY and not h.container(old).retiring
    assert h.container(old).state is CS.READY
    h.run_for(1)
    assert h.container(old).state is CS.READY


def test_a_lost_node_cannot_be_drained() -> None:
    h = Harness()
    node = h.add_node("a")
    h.handle(ev.NodeLost(node))
    with pytest.raises(InvalidArgument, match="node a is lost"):
        drain(h, node)


@pytest.mark.parametrize("timeout", [-1.0, float("inf"), float("nan"), 1e12])
def test_a_drain_timeout_out_of_range_is_refused(timeout: float) -> None:
    h = Harness()
    node = h.add_node("a")
    with pytest.raises(InvalidArgument, match="drain timeout"):
        drain(h, node, timeout_s=timeout)
    assert state(h, node) is NodeState.READY


def test_a_node_lost_while_draining_ends_its_drain() -> None:
    h = Harness()
    node = h.add_node("a", cpu=1)
    serving(h, node)
    drain(h, node)
    h.handle(ev.NodeLost(node))
    assert state(h, node) is NodeState.LOST and node not in h.core.drains.deadlines
