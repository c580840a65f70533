"""The container lifecycle in the pure core: connecting, losing workers and nodes, stopping,
invalid transitions and the story each container keeps."""

from __future__ import annotations

import logging

import pytest

from corral_protocol.v1 import common_pb2
from corral_scheduler import events as ev
from corral_scheduler.lifecycle import ContainerState, InvalidTransition
from corral_scheduler.testing import Harness, class_def

S = common_pb2


def one_container(h: Harness, **options: object) -> tuple[str, str, str]:
    """(service, container, node) with one container placed."""
    node = h.add_node()
    service = h.bind(h.deploy(class_def("Model", min_containers=1, **options)))  # type: ignore[arg-type]
    (container,) = h.live_containers(service)
    return service, container, node


def test_connecting_sends_the_init_and_moves_to_starting() -> None:
    h = Harness()
    service, container, _ = one_container(h)
    init = h.connect(container)
    assert init.class_def.name == "Model" and not init.take_snapshot and init.direct_token
    assert h.container(container).state == ContainerState.STARTING
    assert h.container(container).pid == 100


def test_a_service_with_retries_gets_no_direct_token() -> None:
    h = Harness()
    _, container, _ = one_container(h, retries=1)
    assert h.connect(container).direct_token == ""


def test_ready_records_slots_and_address() -> None:
    h = Harness()
    _, container, _ = one_container(h)
    h.bring_up(container, slots=3)
    c = h.container(container)
    assert c.state == ContainerState.READY and c.slots == 3 and c.direct_address.startswith("127.0.0.1:")
    assert c.ready_at == h.clock.now


def test_a_container_lost_mid_input_fails_the_input_with_the_reason() -> None:
    h = Harness()
    service, container, _ = one_container(h)
    h.bring_up(container)
    call = h.invoke(service)
    h.exit(container, 137, "killed by the OOM killer")
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INTERNAL_ERROR
    assert "exited unexpectedly (exit code 137): killed by the OOM killer" in result.message


def test_a_container_lost_mid_input_retries_elsewhere_when_the_policy_allows() -> None:
    h = Harness()
    service, container, _ = one_container(h, retries=1, retry_delay_s=1)
    h.bring_up(container)
    call = h.invoke(service)
    h.exit(container, 1)
    assert h.result(call) is None
    h.advance(1)
    (replacement,) = h.live_containers(service)
    h.bring_up(replacement)
    assert h.pushed(replacement) == [call]


def test_a_broken_worker_connection_is_lost_then_gone_after_a_grace() -> None:
    h = Harness()
    service, container, _ = one_container(h)
    h.bring_up(container)
    call = h.invoke(service)
    h.handle(ev.WorkerDisconnected(container))
    assert h.container(container).state == ContainerState.LOST
    assert h.container(container).free_slots == 0
    h.advance(h.core.LOST_WORKER_GRACE_S)
    assert container not in h.core.containers.containers
    assert "lost its connection" in h.result(call).message  # type: ignore[union-attr]


def test_a_lost_node_takes_its_containers_with_it() -> None:
    h = Harness()
    service, container, node = one_container(h)
    h.bring_up(container)
    call = h.invoke(service)
    h.handle(ev.NodeLost(node))
    assert container not in h.core.containers.containers
    assert f"was lost with its node: node {node} disconnected" in h.result(call).message  # type: ignore[union-attr]
    assert not h.core.nodes.nodes[node].connected


def test_a_node_registering_again_under_its_name_replaces_the_old_one() -> None:
    h = Harness()
    _, container, node = one_container(h)
    h.handle(ev.NodeJoined("nd-new", node, common_pb2.NodeInventory(cpu=4, memory_mib=1024)))
    assert node not in h.core.nodes.nodes and container not in h.core.containers.containers


def test_an_unknown_node_cannot_connect() -> None:
    h = Harness()
    with pytest.raises(Exception, match="not registered"):
        h.handle(ev.NodeConnected("nd-nope"))


def test_a_connected_node_gets_the_waiting_work() -> None:
    h = Harness()
    h.add_node(cpu=1)
    service = h.bind(h.deploy(class_def(cpu=1)))
    h.invoke(service)
    h.invoke(service)
    assert len(h.live_containers(service)) == 1  # the node is full; the second input waits
    h.backlog()
    second_node = h.add_node(cpu=1)
    assert len(h.started_on(second_node)) == 1


def test_stopping_a_container_that_never_connected_kills_it() -> None:
    h = Harness()
    service, container, node = one_container(h)
    h.handle(ev.ShutdownRequested())
    assert h.container(container).state == ContainerState.KILLED
    assert h.nodes[node].stopped == [container]


def test_a_worker_connecting_after_its_stop_is_told_to_shut_down() -> None:
    h = Harness()
    _, container, _ = one_container(h)
    h.handle(ev.ShutdownRequested())
    h.connect(container)
    assert h.worker(container).init is not None and h.worker(container).shutdown
    assert h.container(container).state == ContainerState.KILLED


def test_a_ready_message_that_crosses_a_stop_is_ignored() -> None:
    h = Harness()
    _, container, _ = one_container(h)
    h.connect(container)
    h.handle(ev.ShutdownRequested())
    h.ready(container)
    assert h.container(container).state == ContainerState.DRAINING


def test_a_worker_giving_up_is_killed() -> None:
    h = Harness()
    _, container, node = one_container(h)
    h.bring_up(container)
    h.handle(ev.WorkerDraining(container, "a direct input timed out"))
    assert h.container(container).state == ContainerState.KILLED
    assert h.container(container).exit_reason == "a direct input timed out"
    assert h.nodes[node].stopped == [container]


def test_exit_while_killed_is_not_an_init_failure() -> None:
    h = Harness()
    service, container, _ = one_container(h)
    h.handle(ev.WorkerDraining(container, "bye"))
    h.exit(container, -9)
    assert h.service(service).init_failures == 0


def test_a_missing_secret_refuses_the_start_and_fails_the_queue() -> None:
    h = Harness()
    node = h.add_node()
    service = h.bind(h.deploy(class_def(secrets=["db"])))
    call = h.invoke(service)
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INIT_ERROR and "'db' not found" in result.message
    assert h.live_containers(service) == [] and h.nodes[node].started == []
    assert h.core.nodes.nodes[node].capacity.cpu_reserved == 0


def test_a_present_secret_starts_the_container() -> None:
    h = Harness(secrets={"db": {"PASSWORD": "x"}})
    node = h.add_node()
    service = h.bind(h.deploy(class_def(secrets=["db"])))
    h.invoke(service)
    assert [r.name for r in h.service(service).options.secrets] == ["db"]
    assert len(h.nodes[node].started) == 1


def test_container_history_tells_its_story() -> None:
    h = Harness()
    _, container, _ = one_container(h)
    h.bring_up(container)
    h.handle(ev.WorkerDraining(container, "bye"))
    history = h.container(container).history
    assert [(s.start, s.finish) for s in history.steps] == [
        ("new", "placed"), ("placed", "starting"), ("starting", "ready"), ("ready", "killed"),
    ]
    assert "ready -> killed (bye)" in str(history)


def test_an_invalid_transition_raises_with_the_story_in_strict_mode() -> None:
    h = Harness()
    _, container, _ = one_container(h)
    h.bring_up(container)
    h.container(container).state = ContainerState.EXITED  # a bug elsewhere left it here
    with pytest.raises(InvalidTransition) as raised:
        h.handle(ev.WorkerDraining(container, "bye"))
    assert "exited -> killed" in str(raised.value) and "starting -> ready" in str(raised.value)


def test_an_invalid_transition_is_logged_and_survived_in_production(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(strict=False)
    node = h.add_node()
    service = h.bind(h.deploy(class_def(min_containers=1)))
    (container,) = h.live_containers(service)
    h.container(container).state = ContainerState.EXITED
    with caplog.at_level(logging.ERROR, logger="corral.scheduler"):
        h.handle(ev.WorkerDraining(container, "bye"))
    assert "exited -> killed is not a transition" in caplog.text
    h.handle(ev.Tick())  # the plane carries on
    assert node in h.core.nodes.nodes


def test_every_state_has_a_wire_state() -> None:
    for state in ContainerState:
        assert state.wire in (1, 2, 3, 4, 5, 6)


def test_a_ready_message_before_the_worker_connected_is_an_invalid_transition() -> None:
    h = Harness()
    _, container, _ = one_container(h)
    with pytest.raises(InvalidTransition, match="placed -> ready"):
        h.ready(container)


def test_a_snapshot_point_of_a_container_not_taking_one_is_an_invalid_transition() -> None:
    h = Harness()
    _, container, _ = one_container(h)
    h.bring_up(container)
    with pytest.raises(InvalidTransition, match="ready -> at-snapshot-point"):
        h.handle(ev.SnapshotReady(container))


def test_a_snapshot_point_that_crosses_a_stop_keeps_the_container_draining() -> None:
    h = Harness()
    node = h.add_node(snapshots=True)
    service = h.bind(h.deploy(class_def(snapshot=True)))
    h.invoke(service)
    (container,) = h.live_containers(service)
    h.connect(container)
    h.handle(ev.ShutdownRequested())
    h.handle(ev.SnapshotReady(container))
    assert h.container(container).state == ContainerState.DRAINING and h.worker(container).session_closed
    h.worker(container).shutdown = False
    h.connect(container)  # back after its dump: told to shut down
    assert h.worker(container).shutdown and node in h.nodes


def test_a_failing_handler_is_logged_and_the_plane_carries_on_when_lenient(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(strict=False)
    service, container, _ = one_container(h)
    with caplog.at_level(logging.ERROR, logger="corral.scheduler"):
        h.handle(ev.WorkerConnected("ct-unknown"))  # the driver never lets this through
    assert "failed to handle" in caplog.text
    h.bring_up(container)
    assert h.container(container).state == ContainerState.READY
    with pytest.raises(KeyError):
        Harness().handle(ev.WorkerConnected("ct-unknown"))
