"""The autoscaler does not thrash: it grows on a sustained backlog (queue wait), not on the
instantaneous queue length, and bounds container starts per tick by the cluster's spare cores."""

from __future__ import annotations

from corral_scheduler.lifecycle import ContainerState
from corral_scheduler.testing import Harness, class_def


def test_a_burst_the_running_container_clears_quickly_starts_nothing_more() -> None:
    h = Harness()
    h.add_node(cpu=16)
    service = h.bind(h.deploy(class_def(max_inputs=1)))
    first = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, first)
    # 200 requests, 64 at a time, each answered in a millisecond: the queue is long but never old.
    for _ in range(200 // 64 + 1):
        calls = [h.invoke(service) for _ in range(64)]
        for call in calls:
            h.advance(0.001)
            h.output(container, call)
        h.tick()
    assert h.live_containers(service) == [container]


def test_a_sustained_backlog_behind_a_serving_container_scales_out() -> None:
    h = Harness()
    h.add_node(cpu=16)
    service = h.bind(h.deploy(class_def(cpu=0.1)))
    first = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    assert h.pushed(container) == [first]  # a slow input: it runs on
    for _ in range(3):
        h.invoke(service)
    h.tick(h.core.SCALE_UP_WAIT_S - 0.1)
    assert len(h.live_containers(service)) == 1  # not yet waited long enough
    h.tick(0.1)
    assert len(h.live_containers(service)) == 4


def test_scale_up_from_zero_starts_at_once_a_bounded_number_per_tick() -> None:
    h = Harness()
    h.add_node(cpu=4)  # 3 starts per tick: one core is left to the control plane
    service = h.bind(h.deploy(class_def(cpu=0.1)))
    for _ in range(10):
        h.invoke(service)
    counts = [len(h.live_containers(service))]
    for _ in range(3):
        h.tick(0.2)
        counts.append(len(h.live_containers(service)))
    assert counts == [3, 6, 9, 10]  # none is ready: every input waits a cold start anyway


def test_a_two_core_node_starts_one_container_per_tick() -> None:
    h = Harness()
    h.add_node(cpu=2)
    service = h.bind(h.deploy(class_def(cpu=0.1)))
    for _ in range(4):
        h.invoke(service)
    counts = [len(h.live_containers(service))]
    for _ in range(4):
        h.tick(0.2)
        counts.append(len(h.live_containers(service)))
    assert counts == [1, 2, 3, 4, 4]


def test_the_first_container_of_each_service_is_never_held_back() -> None:
    h = Harness()
    h.add_node(cpu=2)
    app = h.deploy(*(class_def(f"C{i}", cpu=0.1) for i in range(3)))
    services = [h.bind(app, f"C{i}") for i in range(3)]
    for service in services:
        h.invoke(service)
    assert [len(h.live_containers(s)) for s in services] == [1, 1, 1]


def test_containers_started_for_a_backlog_still_count_toward_it() -> None:
    h = Harness()
    h.add_node(cpu=16)
    service = h.bind(h.deploy(class_def(cpu=0.1)))
    for _ in range(3):
        h.invoke(service)
    for _ in range(10):  # the containers take long to start: the backlog persists, nothing more starts
        h.tick(h.core.SCALE_UP_WAIT_S)
    assert len(h.live_containers(service)) == 3


def test_a_service_starved_of_capacity_gets_a_container_from_the_one_holding_most() -> None:
    h = Harness()
    h.add_node(cpu=2)
    app = h.deploy(class_def("Hot"), class_def("Cold"))
    hot, cold = h.bind(app, "Hot"), h.bind(app, "Cold")
    hot_calls = [h.invoke(hot) for _ in range(20)]
    h.tick(0.2)  # one start per tick on two cores
    one, two = h.live_containers(hot)  # the node is full
    h.bring_up(one)
    h.bring_up(two)
    cold_call = h.invoke(cold)
    assert h.live_containers(cold) == []
    h.tick(h.core.SCALE_UP_WAIT_S)
    draining = h.containers(hot, ContainerState.DRAINING)
    assert len(draining) == 1 and h.worker(draining[0]).shutdown
    h.tick(0.2)
    assert len(h.containers(hot, ContainerState.DRAINING)) == 1  # one at a time
    # It finishes the input it runs, exits, and the freed capacity goes to Cold.
    (victim,) = draining
    h.output(victim, h.pushed(victim)[-1])
    h.exit(victim, 0)
    (cold_container,) = h.live_containers(cold)
    h.bring_up(cold_container)
    assert h.pushed(cold_container) == [cold_call]
    assert len(h.live_containers(hot)) == 1 and sum(h.result(c) is None for c in hot_calls) == 19


def test_the_last_container_of_a_service_is_never_taken() -> None:
    h = Harness()
    h.add_node(cpu=1)
    app = h.deploy(class_def("Hot"), class_def("Cold"))
    hot, cold = h.bind(app, "Hot"), h.bind(app, "Cold")
    for _ in range(5):
        h.invoke(hot)
    (only,) = h.live_containers(hot)
    h.bring_up(only)
    h.invoke(cold)
    h.tick(h.core.SCALE_UP_WAIT_S * 4)
    assert h.container(only).state == ContainerState.READY
