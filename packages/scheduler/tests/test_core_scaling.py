"""Dispatch and scaling in the pure core: autoscaler arithmetic under load, min/buffer/max
containers, scale-down after the scaledown window, init-failure backoff, fairness, placement."""

from __future__ import annotations

import pytest

from corral_protocol.v1 import common_pb2
from corral_scheduler import events as ev
from corral_scheduler.errors import InvalidArgument
from corral_scheduler.lifecycle import ContainerState
from corral_scheduler.testing import Harness, class_def

S = common_pb2


def test_one_container_per_queued_input_by_default() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def()))
    for _ in range(3):
        h.invoke(service)
    assert len(h.live_containers(service)) == 3


def test_target_inputs_divides_the_load() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(max_inputs=4, target_inputs=2)))
    for _ in range(5):
        h.invoke(service)
    h.backlog()
    assert len(h.live_containers(service)) == 3  # ceil(5 / 2)


def test_max_containers_caps_the_scale_up() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(max_containers=2)))
    for _ in range(5):
        h.invoke(service)
    h.backlog()
    assert len(h.live_containers(service)) == 2
    assert len(h.service(service).queue) == 5


def test_min_containers_start_at_deploy_for_a_class_without_parameters() -> None:
    h = Harness()
    node = h.add_node()
    h.deploy(class_def(min_containers=2))
    assert len(h.started_on(node)) == 2


def test_buffer_containers_apply_only_under_load() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(buffer_containers=1)))
    assert h.live_containers(service) == []
    h.invoke(service)
    assert len(h.live_containers(service)) == 2


def test_min_plus_buffer_under_load() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(min_containers=1, buffer_containers=2, max_inputs=2, target_inputs=2)))
    assert len(h.live_containers(service)) == 1
    for _ in range(3):
        h.invoke(service)
    h.backlog()
    assert len(h.live_containers(service)) == 4  # ceil(3 / 2) + 2


def test_running_direct_inputs_count_as_load() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(max_inputs=4, target_inputs=2, min_containers=1)))
    (container,) = h.live_containers(service)
    h.bring_up(container, slots=4)
    h.handle(ev.WorkerLoad(container, direct_running=4, direct_served=10))
    assert h.container(container).load == 4 and h.container(container).inputs_served == 10
    assert h.core.dispatch.desired(h.service(service)) == 2
    # A full container is not a backlog by itself; inputs waiting inside it, for a while, are.
    h.backlog()
    assert len(h.live_containers(service)) == 1
    h.handle(ev.WorkerLoad(container, direct_running=5, direct_served=10))  # one more than its slots
    assert len(h.live_containers(service)) == 1
    h.backlog()
    assert len(h.live_containers(service)) == 3  # ceil(5 / 2)


def test_idle_containers_scale_down_after_the_scaledown_window() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(scaledown_window_s=30)))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call)
    h.tick(29)
    assert h.container(container).state == ContainerState.READY
    h.tick(1)
    assert h.container(container).state == ContainerState.DRAINING
    assert h.worker(container).shutdown


def test_a_draining_container_is_killed_after_the_stop_grace() -> None:
    h = Harness()
    node = h.add_node()
    service = h.bind(h.deploy(class_def(scaledown_window_s=1)))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call)
    h.tick(1)
    h.advance(h.core.STOP_GRACE_S)
    assert h.container(container).state == ContainerState.KILLED
    assert h.nodes[node].stopped == [container]
    h.exit(container, -9)
    assert container not in h.core.containers.containers


def test_a_container_that_exits_while_draining_needs_no_kill() -> None:
    h = Harness()
    node = h.add_node()
    service = h.bind(h.deploy(class_def(scaledown_window_s=1)))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call)
    h.tick(1)
    h.exit(container, 0)
    h.advance(h.core.STOP_GRACE_S)
    assert h.nodes[node].stopped == []


def test_busy_containers_are_never_scaled_down() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(scaledown_window_s=1)))
    h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.tick(100)
    assert h.container(container).state == ContainerState.READY


def test_min_containers_are_kept_when_idle() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(min_containers=1, scaledown_window_s=1)))
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.tick(1000)
    assert h.container(container).state == ContainerState.READY


def test_scale_down_stops_the_longest_idle_first() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(scaledown_window_s=10)))
    first_call, second_call = h.invoke(service), h.invoke(service)
    h.backlog()
    first, second = h.live_containers(service)
    h.bring_up(first)
    h.bring_up(second)
    h.output(first, first_call)
    h.advance(5)
    h.output(second, second_call)
    h.tick(5)
    assert h.container(first).state == ContainerState.DRAINING
    assert h.container(second).state == ContainerState.READY


def test_raising_min_containers_at_runtime_starts_containers() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def()))
    h.handle(ev.AutoscalerUpdated(service, common_pb2.AutoscalerSettings(min_containers=2)))
    assert len(h.live_containers(service)) == 2


def test_an_autoscaler_update_with_min_above_max_is_refused_and_changes_nothing() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(max_containers=1)))
    with pytest.raises(InvalidArgument, match="above max_containers"):
        h.handle(ev.AutoscalerUpdated(service, common_pb2.AutoscalerSettings(min_containers=3)))
    assert h.service(service).autoscaler.min_containers == 0 and h.live_containers(service) == []


def test_an_init_failure_fails_the_queue_and_backs_off_exponentially() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def()))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.connect(container)
    h.handle(ev.InitFailed(container, "RuntimeError", "no model", "Traceback ..."))
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INIT_ERROR
    assert "its @enter hook raised RuntimeError: no model" in result.message and result.traceback == "Traceback ..."
    assert h.container(container).state == ContainerState.FAILED
    h.exit(container, 1)
    h.invoke(service)
    assert h.live_containers(service) == []  # backing off for 1 s
    h.tick(1)
    (again,) = h.live_containers(service)
    h.connect(again)
    h.handle(ev.InitFailed(again, "RuntimeError", "no model"))
    h.exit(again, 1)
    h.invoke(service)
    h.tick(1.5)
    assert h.live_containers(service) == []  # now 2 s
    h.tick(0.5)
    assert len(h.live_containers(service)) == 1


def test_a_ready_container_resets_the_backoff() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def()))
    h.invoke(service)
    (container,) = h.live_containers(service)
    h.connect(container)
    h.handle(ev.InitFailed(container, "E", "x"))
    h.exit(container, 1)
    h.tick(1)
    h.invoke(service)
    (again,) = h.live_containers(service)
    h.bring_up(again)
    assert h.service(service).init_failures == 0


def test_a_container_that_dies_before_ready_is_an_init_failure_with_its_stderr() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def()))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.exit(container, 1, "exited", stderr_tail="ImportError: numpy")
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INIT_ERROR
    assert "exited before it was ready (exit code 1)" in result.message and "ImportError: numpy" in result.message


def test_a_start_past_the_startup_timeout_is_killed_and_counts_as_an_init_failure() -> None:
    h = Harness()
    node = h.add_node()
    service = h.bind(h.deploy(class_def(timeout_s=1)))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.connect(container)
    h.advance(4.9)
    assert h.container(container).state == ContainerState.STARTING  # the floor is 5 s
    h.advance(0.1)
    assert h.container(container).state == ContainerState.START_TIMED_OUT
    assert h.nodes[node].stopped == [container]
    h.exit(container, -9)
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INIT_ERROR
    assert "did not finish starting" in result.message


def test_freed_capacity_goes_to_the_service_with_the_fewest_containers() -> None:
    h = Harness()
    h.add_node(cpu=2)
    app = h.deploy(class_def("Hot"), class_def("Cold"))
    hot, cold = h.bind(app, "Hot"), h.bind(app, "Cold")
    hot_calls = [h.invoke(hot) for _ in range(3)]
    h.backlog()
    cold_call = h.invoke(cold)
    first, second = h.live_containers(hot)
    assert h.live_containers(cold) == []  # the node is full
    h.bring_up(first)
    h.output(first, hot_calls[0])
    h.handle(ev.WorkerDraining(first, "bye"))
    h.exit(first, 0)
    (cold_container,) = h.live_containers(cold)
    h.bring_up(cold_container)
    assert h.pushed(cold_container) == [cold_call]
    assert len(h.live_containers(hot)) == 1 and second in h.live_containers(hot)


def test_two_services_share_a_busy_cluster_without_starving_either() -> None:
    h = Harness()
    h.add_node(cpu=2)
    app = h.deploy(class_def("A", max_inputs=1), class_def("B", max_inputs=1))
    a, b = h.bind(app, "A"), h.bind(app, "B")
    for _ in range(4):
        h.invoke(a)
    h.backlog()  # A takes the whole node
    for _ in range(4):
        h.invoke(b)
    (a1, a2) = h.live_containers(a)
    h.exit(a1, 0, "crashed")
    h.tick()
    assert len(h.live_containers(b)) == 1 and len(h.live_containers(a)) == 1


def test_a_busy_cluster_queues_and_starts_when_capacity_frees() -> None:
    h = Harness()
    h.add_node(cpu=1)
    service = h.bind(h.deploy(class_def(cpu=1)))
    first_call, second_call = h.invoke(service), h.invoke(service)
    (container,) = h.live_containers(service)
    assert h.input(second_call).state.value == "queued"
    h.bring_up(container)
    h.output(container, first_call)
    assert h.pushed(container) == [first_call, second_call]


def test_a_request_no_node_can_ever_run_fails_its_queue_with_the_reason() -> None:
    h = Harness()
    h.add_node(cpu=2)
    service = h.bind(h.deploy(class_def(cpu=4)))
    call = h.invoke(service)
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INTERNAL_ERROR
    assert "no node can ever run" in result.message


def test_no_node_at_all_fails_the_queue() -> None:
    h = Harness()
    service = h.bind(h.deploy(class_def()))
    call = h.invoke(service)
    assert "no runtime node is connected" in h.result(call).message  # type: ignore[union-attr]


def test_gpus_are_reserved_per_container_and_released_on_exit() -> None:
    h = Harness()
    node = h.add_node(gpus=["NVIDIA H100 80GB HBM3"])
    service = h.bind(h.deploy(class_def(gpu=("H100", 1))))
    first_call = h.invoke(service)
    h.invoke(service)
    (container,) = h.live_containers(service)
    assert list(h.nodes[node].started[0].gpu_indices) == [0]
    assert list(h.nodes[node].started[0].gpu_uuids) == ["GPU-0"]
    h.bring_up(container)
    h.exit(container, 1, "crash")
    assert h.result(first_call).status == S.RESULT_STATUS_INTERNAL_ERROR  # type: ignore[union-attr]
    assert len(h.live_containers(service)) == 1  # the freed GPU went to the next start
    assert h.core.nodes.nodes[node].capacity.gpus_in_use == {"GPU-0"}


def test_shutdown_stops_every_container_and_starts_none() -> None:
    h = Harness()
    h.add_node()
    service = h.bind(h.deploy(class_def(min_containers=2)))
    first, second = h.live_containers(service)
    h.bring_up(first)
    h.handle(ev.ShutdownRequested())
    assert h.container(first).state == ContainerState.DRAINING
    assert h.container(second).state == ContainerState.KILLED
    h.exit(first, 0)
    h.exit(second, -9)
    h.tick(1)
    assert h.live_containers(service) == []
