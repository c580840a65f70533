"""The input lifecycle in the pure core: queueing, dispatch, cancel, timeouts, retries, results.

Driven by `corral_scheduler.testing.Harness`: a fake clock and fake nodes/workers, no processes."""

from __future__ import annotations

import pytest

from corral_protocol.v1 import common_pb2, worker_pb2
from corral_scheduler import effects as fx
from corral_scheduler import events as ev
from corral_scheduler.errors import NotFound, QueueFull
from corral_scheduler.lifecycle import ContainerState, InputState
from corral_scheduler.testing import Harness, class_def

S = common_pb2


def serving(h: Harness, slots: int = 1, **options: object) -> tuple[str, str]:
    """A node, an app with one class, its service; returns (service id, node id)."""
    node = h.add_node()
    app = h.deploy(class_def("Model", **options))  # type: ignore[arg-type]
    return h.bind(app, "Model"), node


def test_an_input_queues_and_starts_a_container() -> None:
    h = Harness()
    service, node = serving(h)
    call = h.invoke(service)
    assert h.input_state(call) == InputState.QUEUED
    (container,) = h.live_containers(service)
    assert h.container(container).state == ContainerState.PLACED
    assert h.started_on(node) == [container]
    start = h.nodes[node].started[0]
    assert start.env["CORRAL_APP_KIND"] == "deployed" and start.class_name == "Model"


def test_a_ready_container_gets_the_queued_input_and_its_output_answers_the_caller() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    assert h.pushed(container) == [call]
    assert h.input_state(call) == InputState.RUNNING
    h.output(container, call)
    assert h.result(call) is not None and h.result(call).status == S.RESULT_STATUS_SUCCESS  # type: ignore[union-attr]
    assert h.input_state(call) == InputState.DONE
    assert h.container(container).inputs_served == 1


def test_inputs_fill_concurrency_slots_and_the_rest_wait() -> None:
    h = Harness()
    service, _ = serving(h, max_inputs=2, target_inputs=3)
    calls = [h.invoke(service) for _ in range(3)]
    (container,) = h.live_containers(service)
    h.bring_up(container, slots=2)
    assert h.pushed(container) == calls[:2]
    assert h.input_state(calls[2]) == InputState.QUEUED
    h.output(container, calls[0])
    assert h.pushed(container) == calls


def test_dispatch_picks_the_least_loaded_container() -> None:
    h = Harness()
    service, _ = serving(h, max_inputs=4, target_inputs=4, min_containers=2)
    first, second = h.live_containers(service)
    h.bring_up(first, slots=4)
    a, b = h.invoke(service), h.invoke(service)
    h.bring_up(second, slots=4)
    c = h.invoke(service)
    assert h.pushed(first) == [a, b] and h.pushed(second) == [c]


def test_cancelling_a_queued_input_answers_cancelled_and_removes_it_from_the_queue() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    h.handle(ev.CancelRequested(call, "the caller went away"))
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_CANCELLED and "went away" in result.message
    assert not h.service(service).queue


def test_cancelling_a_running_input_tells_its_worker() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.handle(ev.CancelRequested(call))
    assert h.worker(container).cancelled == [call]
    assert h.container(container).load == 0
    assert h.result(call).status == S.RESULT_STATUS_CANCELLED  # type: ignore[union-attr]


def test_an_unknown_method_is_refused_before_anything_changes() -> None:
    h = Harness()
    service, _ = serving(h)
    with pytest.raises(NotFound, match="no method 'nope'"):
        h.invoke(service, method="nope")
    assert not h.core.inputs.inputs and not h.live_containers(service)


def test_the_queue_is_bounded_and_a_full_queue_refuses_without_touching_it() -> None:
    h = Harness(max_queue_per_service=2)
    app = h.deploy(class_def("Model", max_containers=0))
    service = h.bind(app, "Model")
    first, second = h.invoke(service), h.invoke(service)
    with pytest.raises(QueueFull, match="full"):
        h.invoke(service)
    assert [i.call_id for i in h.service(service).queue] == [first, second]


def test_each_service_has_its_own_queue_bound() -> None:
    h = Harness(max_queue_per_service=1)
    app = h.deploy(class_def("A", max_containers=0), class_def("B", max_containers=0))
    a, b = h.bind(app, "A"), h.bind(app, "B")
    h.invoke(a)
    h.invoke(b)
    with pytest.raises(QueueFull):
        h.invoke(a)


def test_an_input_past_its_timeout_fails_and_its_container_is_killed() -> None:
    h = Harness()
    service, node = serving(h, timeout_s=10)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.advance(9.9)
    assert h.result(call) is None
    h.advance(0.2)
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_TIMEOUT and "timed out after 10 s" in result.message
    assert h.container(container).state == ContainerState.KILLED
    assert h.nodes[node].stopped == [container]


def test_timeout_then_retry_runs_again_on_another_container() -> None:
    h = Harness()
    service, _ = serving(h, timeout_s=10, retries=1, retry_delay_s=2)
    call = h.invoke(service)
    (first,) = h.live_containers(service)
    h.bring_up(first)
    h.advance(10)
    assert h.input_state(call) == InputState.RETRY_WAIT and h.result(call) is None
    h.advance(2)
    assert h.input_state(call) == InputState.QUEUED
    second = next(c for c in h.live_containers(service) if c != first)
    h.bring_up(second)
    assert h.pushed(second) == [call] and h.input(call).attempts == 2
    h.output(second, call)
    assert h.result(call).status == S.RESULT_STATUS_SUCCESS  # type: ignore[union-attr]


def test_a_retried_input_goes_to_the_front_of_the_queue() -> None:
    h = Harness()
    service, _ = serving(h, retries=1, retry_delay_s=1, max_containers=1)
    first_call, second_call = h.invoke(service), h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, first_call, S.RESULT_STATUS_USER_ERROR, "boom")
    assert h.pushed(container) == [first_call, second_call]
    h.advance(1)
    assert [i.call_id for i in h.service(service).queue] == [first_call]


def test_user_errors_retry_up_to_the_policy_then_fail() -> None:
    h = Harness()
    service, _ = serving(h, retries=2, retry_delay_s=1, max_inputs=1)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    for _ in range(2):
        h.output(container, call, S.RESULT_STATUS_USER_ERROR, "boom")
        assert h.result(call) is None
        h.advance(1)
    h.output(container, call, S.RESULT_STATUS_USER_ERROR, "boom")
    assert h.result(call).status == S.RESULT_STATUS_USER_ERROR  # type: ignore[union-attr]
    assert h.input(call).attempts == 3


def test_a_user_error_without_retries_fails_at_once() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call, S.RESULT_STATUS_USER_ERROR, "ValueError: boom")
    assert h.result(call).message == "ValueError: boom"  # type: ignore[union-attr]


def test_cancelling_during_retry_wait_stops_the_retry() -> None:
    h = Harness()
    service, _ = serving(h, retries=1, retry_delay_s=5)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call, S.RESULT_STATUS_USER_ERROR)
    h.handle(ev.CancelRequested(call))
    assert not h.timer_armed(f"input:{call}")
    h.advance(10)
    assert h.input_state(call) == InputState.DONE and h.result(call).status == S.RESULT_STATUS_CANCELLED  # type: ignore[union-attr]


def test_a_retry_due_after_the_app_stopped_is_cancelled() -> None:
    h = Harness()
    node = h.add_node()
    app = h.deploy(class_def("Model", retries=1, retry_delay_s=5))
    service = h.bind(app, "Model")
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call, S.RESULT_STATUS_USER_ERROR)
    h.handle(ev.AppStopRequested(app, "stopped"))
    h.advance(5)
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_CANCELLED and "before the retry ran" in result.message
    assert node in h.nodes


def test_the_caller_is_answered_exactly_once_even_when_a_late_output_arrives() -> None:
    h = Harness()
    service, _ = serving(h, timeout_s=10)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.advance(10)
    h.output(container, call)  # too late: the harness asserts a second answer never comes
    assert h.result(call).status == S.RESULT_STATUS_TIMEOUT  # type: ignore[union-attr]


def test_results_expire_after_their_ttl() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call)
    h.tick(60)
    assert call in h.core.inputs.inputs
    h.tick(h.core.RESULT_TTL_S + 1)
    assert call not in h.core.inputs.inputs
    assert fx.DropCall(call) in h.effects


def test_a_forgotten_call_is_gone() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    h.handle(ev.CallForgotten(call))
    assert call not in h.core.inputs.inputs


def test_an_http_input_relays_its_response_and_its_last_chunk_completes_it() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service, http=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    assert h.worker(container).inputs[0].http_request.method == "GET"
    h.handle(ev.WorkerHttp(container, worker_pb2.HttpResponseStart(input_id=call, status=200)))
    h.handle(ev.WorkerHttp(container, worker_pb2.HttpBodyChunk(input_id=call, data=b"a", more_body=True)))
    assert h.result(call) is None
    h.handle(ev.WorkerHttp(container, worker_pb2.HttpBodyChunk(input_id=call, data=b"b", more_body=False)))
    assert [type(m).__name__ for m in h.http[call]] == ["HttpResponseStart", "HttpBodyChunk", "HttpBodyChunk"]
    assert h.result(call).status == S.RESULT_STATUS_SUCCESS  # type: ignore[union-attr]


def test_input_history_tells_its_story() -> None:
    h = Harness()
    service, _ = serving(h, retries=1, retry_delay_s=1)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call, S.RESULT_STATUS_USER_ERROR, "boom")
    h.advance(1)
    h.output(container, call)
    steps = [(s.start, s.finish) for s in h.input(call).history.steps]
    assert steps == [("new", "queued"), ("queued", "running"), ("running", "retry-wait"), ("retry-wait", "queued"),
                     ("queued", "running"), ("running", "done")]
