"""Node failure in the pure core, on a fake clock: the heartbeat timeout, what a lost node's calls
and containers become, a node that comes back, and the node lifecycle's transitions."""

from __future__ import annotations

import pytest

from corral_protocol.v1 import common_pb2
from corral_scheduler import effects as fx
from corral_scheduler import events as ev
from corral_scheduler.errors import NotFound
from corral_scheduler.lifecycle import ContainerState, InvalidTransition, NodeState
from corral_scheduler.nodes import LOST_NODE_KEPT_S, NODE_REJOIN_GRACE_S, heartbeat_interval_s
from corral_scheduler.testing import FakeNode, Harness, class_def

S = common_pb2
TIMEOUT = 10.0


def two_nodes(h: Harness) -> tuple[str, str]:
    """gpu-1, then gpu-2: containers go to gpu-1 first while it has room."""
    return h.add_node("gpu-1", cpu=2), h.add_node("gpu-2", cpu=2)


def running_on(h: Harness, node: str, retries: int = 0, name: str = "Model") -> tuple[str, str, str]:
    """(service, container, call): a call running on a container on `node`."""
    service = h.bind(h.deploy(class_def(name, retries=retries, retry_delay_s=1, cpu=1), name=name.lower()), name)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    assert h.container(container).node_id == node
    h.bring_up(container)
    assert h.pushed(container) == [call]
    return service, container, call


def node_state(h: Harness, node: str) -> NodeState:
    return h.core.nodes.nodes[node].state


def keep_alive(h: Harness, seconds: float, *nodes: str) -> None:
    """Time passes; `nodes` send their heartbeats on schedule, the others stay silent."""
    interval = heartbeat_interval_s(TIMEOUT)
    while seconds > 0:
        step = min(interval, seconds)
        h.run_for(step)
        for node in nodes:
            h.heartbeat(node)
        seconds -= step


def test_the_heartbeat_interval_is_well_under_the_timeout() -> None:
    assert heartbeat_interval_s(10) == 2.5
    assert heartbeat_interval_s(2) == 0.5
    assert heartbeat_interval_s(120) == 5.0


def test_a_silent_node_is_lost_after_the_timeout_and_its_session_ends() -> None:
    h = Harness()
    lost, alive = two_nodes(h)
    service, container, call = running_on(h, lost)
    keep_alive(h, TIMEOUT - 0.5, alive)
    assert node_state(h, lost) is NodeState.READY
    keep_alive(h, 1.0, alive)
    assert node_state(h, lost) is NodeState.LOST and node_state(h, alive) is NodeState.READY
    assert h.nodes[lost].session_closed and not h.nodes[alive].session_closed
    assert "gpu-1 stopped answering (no heartbeat for 10." in h.core.nodes.nodes[lost].state_reason
    assert container not in h.core.containers.containers
    assert h.worker(container).session_closed  # its worker, if it lives on, exits


def test_a_heartbeat_just_before_the_deadline_keeps_the_node() -> None:
    h = Harness()
    node = h.add_node("gpu-1")
    h.run_for(TIMEOUT - 0.2)
    h.heartbeat(node)
    h.run_for(TIMEOUT - 0.2)
    assert node_state(h, node) is NodeState.READY
    h.run_for(0.6)
    assert node_state(h, node) is NodeState.LOST


def test_any_message_from_the_node_counts_as_a_sign_of_life() -> None:
    h = Harness()
    node = h.add_node("gpu-1")
    service = h.bind(h.deploy(class_def(min_containers=1)))
    (container,) = h.live_containers(service)
    h.run_for(TIMEOUT - 1)
    h.handle(ev.ContainerStarted(node, container, pid=7))
    h.run_for(TIMEOUT - 1)
    assert node_state(h, node) is NodeState.READY


def test_a_lost_nodes_calls_retry_elsewhere_or_fail_naming_the_node() -> None:
    h = Harness()
    lost, alive = two_nodes(h)
    retried_service, _, retried = running_on(h, lost, retries=1, name="Retried")
    strict_service, _, strict = running_on(h, lost, name="Strict")
    keep_alive(h, TIMEOUT + 0.5, alive)

    result = h.result(strict)
    assert result is not None and result.status == S.RESULT_STATUS_INTERNAL_ERROR  # ContainerExitedError in the SDK
    assert "the container running Strict.run was lost with its node: node gpu-1 stopped answering (no heartbeat for" in result.message
    assert h.result(retried) is None
    keep_alive(h, 1.0, alive)  # its retry delay
    (replacement,) = h.live_containers(retried_service)
    assert h.container(replacement).node_id == alive
    h.bring_up(replacement)
    assert h.pushed(replacement) == [retried]
    h.output(replacement, retried)
    assert h.result(retried).status == S.RESULT_STATUS_SUCCESS  # type: ignore[union-attr]
    assert h.input(retried).attempts == 2


def test_new_containers_go_to_the_surviving_node() -> None:
    h = Harness()
    lost, alive = two_nodes(h)
    keep_alive(h, TIMEOUT + 0.5, alive)
    service = h.bind(h.deploy(class_def(min_containers=2, cpu=1)))
    assert {h.container(c).node_id for c in h.live_containers(service)} == {alive}
    assert h.started_on(lost) == []


def test_a_container_starting_on_a_lost_node_is_no_init_failure_of_its_class() -> None:
    h = Harness()
    lost, alive = two_nodes(h)
    service = h.bind(h.deploy(class_def(cpu=1)))
    call = h.invoke(service)
    (starting,) = h.live_containers(service)
    assert h.container(starting).node_id == lost
    keep_alive(h, TIMEOUT + 0.5, alive)
    assert h.result(call) is None and h.service(service).init_failures == 0
    (replacement,) = h.live_containers(service)
    assert h.container(replacement).node_id == alive
    h.bring_up(replacement)
    assert h.pushed(replacement) == [call]


def test_work_only_a_lost_node_could_run_waits_for_it_to_come_back_a_while() -> None:
    h = Harness()
    gpu = h.add_node("gpu-1", gpus=["NVIDIA H100 80GB HBM3"])
    cpu = h.add_node("cpu-1")
    service = h.bind(h.deploy(class_def(gpu="H100", retries=1, retry_delay_s=1)))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    assert h.container(container).node_id == gpu
    h.bring_up(container)
    keep_alive(h, TIMEOUT + 0.5, cpu)
    keep_alive(h, 2, cpu)  # its retry is due: no node that is left could run it, so it waits
    assert h.result(call) is None and h.live_containers(service) == []
    back = h.add_node("gpu-1", gpus=["NVIDIA H100 80GB HBM3"])
    (replacement,) = h.live_containers(service)
    assert h.container(replacement).node_id == back

    h.handle(ev.NodeLost(back))  # lost again, and never back: after the grace the call fails, explained
    assert h.result(call) is None
    h.tick(NODE_REJOIN_GRACE_S)
    h.run_for(0.4)
    result = h.result(call)
    assert result is not None and "no node can ever run a container that needs" in result.message


def test_the_stream_closing_gives_the_same_result_as_the_timeout() -> None:
    h = Harness()
    lost, alive = two_nodes(h)
    _, container, strict = running_on(h, lost)
    h.handle(ev.NodeLost(lost))
    assert node_state(h, lost) is NodeState.LOST
    assert "lost with its node: node gpu-1 disconnected" in h.result(strict).message  # type: ignore[union-attr]
    assert container not in h.core.containers.containers


def test_a_late_stream_of_a_lost_node_is_refused_and_it_registers_afresh() -> None:
    h = Harness()
    lost, alive = two_nodes(h)
    _, old_container, _ = running_on(h, lost)
    keep_alive(h, TIMEOUT + 0.5, alive)
    with pytest.raises(NotFound, match="gpu-1 .* was lost .*must register again"):
        h.handle(ev.NodeConnected(lost))
    h.heartbeat(lost)  # the last words of the ended stream change nothing
    assert node_state(h, lost) is NodeState.LOST

    back = h.add_node("gpu-1", cpu=2)  # the machine registers again: a new node, a fresh session
    assert lost not in h.core.nodes.nodes and node_state(h, back) is NodeState.READY
    h.handle(ev.NodeHeartbeat(back, (), (old_container,)))  # it still runs its old container
    assert h.nodes[back].stopped == [old_container]
    assert old_container not in h.core.containers.containers  # stopped, not adopted twice


def test_a_node_registering_again_while_connected_ends_its_old_session() -> None:
    h = Harness()
    old, _ = two_nodes(h)
    service, container, call = running_on(h, old, retries=1)
    new = h.add_node("gpu-1")
    assert h.core.nodes.nodes[new].state.value == "ready"
    assert h.nodes[old].session_closed and old not in h.core.nodes.nodes
    assert "registered again" in h.input(call).history.steps[-1].cause


def test_a_stalled_plane_does_not_lose_its_nodes() -> None:
    h = Harness()
    node = h.add_node("gpu-1")
    h.run_for(1)
    h.tick(TIMEOUT * 3)  # the plane's own loop did not run: the node's messages wait unread
    assert node_state(h, node) is NodeState.READY
    h.run_for(TIMEOUT + 0.5)
    assert node_state(h, node) is NodeState.LOST


def test_a_node_that_registers_but_never_opens_its_session_is_lost() -> None:
    h = Harness()
    h.nodes["nd-x"] = FakeNode("nd-x")
    h.handle(ev.NodeJoined("nd-x", "half", common_pb2.NodeInventory(cpu=1, memory_mib=1024)))
    h.run_for(TIMEOUT + 0.5)
    assert node_state(h, "nd-x") is NodeState.LOST
    assert "did not open its session" in h.core.nodes.nodes["nd-x"].state_reason


def test_a_lost_node_is_listed_until_an_hour_passes() -> None:
    h = Harness()
    node = h.add_node("gpu-1")
    h.handle(ev.NodeLost(node))
    h.run_for(1)
    assert node in h.core.nodes.nodes
    h.tick(LOST_NODE_KEPT_S)
    h.run_for(0.4)
    assert node not in h.core.nodes.nodes


def test_node_transitions_outside_the_table_are_refused() -> None:
    h = Harness()
    node = h.add_node("gpu-1")
    h.handle(ev.NodeLost(node))
    with pytest.raises(InvalidTransition, match="node nd-1: lost -> ready"):
        h.core.move_node(h.core.nodes.nodes[node], NodeState.READY, "test")
    steps = [(s.start, s.finish) for s in h.core.nodes.nodes[node].history.steps]
    assert steps == [("new", "joining"), ("joining", "ready"), ("ready", "lost")]


def test_a_lost_container_keeps_its_story() -> None:
    h = Harness()
    lost, _ = two_nodes(h)
    _, container, _ = running_on(h, lost)
    story = h.container(container).history
    h.handle(ev.NodeLost(lost, "node gpu-1 disconnected (test)"))
    assert [(s.start, s.finish) for s in story.steps][-2:] == [("ready", "lost"), ("lost", "exited")]
    assert ContainerState.LOST.wire == ContainerState.DRAINING.wire
    assert any(isinstance(e, fx.CloseNodeSession) for e in h.effects)
