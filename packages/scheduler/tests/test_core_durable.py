"""Durable calls in the pure core: what the store learns of a spawned call, and how each call
continues after the control plane restarts (the harness's store stands in for SQLite)."""

from __future__ import annotations

from corral_protocol.options import DEFAULT_TIMEOUT_S
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_scheduler import effects as fx
from corral_scheduler import events as ev
from corral_scheduler.lifecycle import InputState
from corral_scheduler.model import StoredCall
from corral_scheduler.nodes import NODE_REJOIN_GRACE_S
from corral_scheduler.testing import Harness, class_def


def worker_output(call_id: str, result: common_pb2.Result) -> worker_pb2.Output:
    return worker_pb2.Output(input_id=call_id, result=result)

S = common_pb2


def _cluster(**options: object) -> tuple[Harness, str, str]:
    """A harness with one node, the app deployed as `ap-app` and its class bound."""
    h = Harness()
    h.add_node()
    app = h.deploy(class_def("Model", **options), app_id="ap-app")  # type: ignore[arg-type]
    return h, app, h.bind(app)


def _restart(stored: dict[str, StoredCall], ephemeral: bool = False, running: tuple[str, ...] | None = (),
             **options: object) -> tuple[Harness, str]:
    """A fresh core (the plane restarted): the deployed app comes back, a node joins, the store is
    read, and the node reports the containers it still `running` (None: no heartbeat yet)."""
    h = Harness()
    node = h.add_node()
    if not ephemeral:
        h.deploy(class_def("Model", **options), app_id="ap-app")  # type: ignore[arg-type]
    h.recover(stored)
    if running is not None:
        h.handle(ev.NodeHeartbeat(node, running=running))
    services = list(h.core.registry.services)
    return h, services[0] if services else ""


def test_a_spawned_call_is_stored_until_its_result_is_read() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)
    assert isinstance(h.effects[0], fx.PersistInput)  # stored before anything else happens
    assert h.stored_calls[call].result is None and h.stored_calls[call].attempts == 0
    (container,) = h.live_containers(service)
    h.bring_up(container)
    assert h.stored_calls[call].attempts == 1
    h.output(container, call)
    stored = h.stored_calls[call].result
    assert stored is not None and stored.status == S.RESULT_STATUS_SUCCESS
    h.handle(ev.CallForgotten(call))
    assert call not in h.stored_calls


def test_a_waited_call_writes_nothing_to_the_store() -> None:
    h, _, service = _cluster()
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call)
    assert h.stored_calls == {}
    assert not any(isinstance(e, fx.DURABLE_EFFECTS) for e in h.effects)


def test_an_expired_result_leaves_the_store() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.output(container, call)
    h.tick(h.core.RESULT_TTL_S + h.core.RESULT_SWEEP_S + 1)
    assert call not in h.stored_calls


def test_a_queued_spawn_runs_after_a_restart() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)  # its container never came up: the plane died first

    after, service = _restart(h.stored_calls)
    assert after.input_state(call) == InputState.QUEUED
    (container,) = after.live_containers(service)
    after.bring_up(container)
    assert after.pushed(container) == [call]
    after.output(container, call)
    result = after.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_SUCCESS
    assert after.stored_calls[call].result == result


def test_a_collected_result_is_found_again_after_a_restart() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.handle(ev.WorkerOutput(container, call, common_pb2.Result(status=S.RESULT_STATUS_SUCCESS, message="42")))

    after, _ = _restart(h.stored_calls)
    result = after.result(call)
    assert result is not None and result.message == "42"
    assert after.input(call).state == InputState.DONE
    assert not any(isinstance(e, fx.PersistResult) for e in after.effects)  # it came from the store


def test_a_call_running_when_the_plane_died_runs_again_when_its_policy_allows() -> None:
    h, _, service = _cluster(retries=1)
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)  # attempt 1 runs

    after, service = _restart(h.stored_calls, retries=1)
    (container,) = after.live_containers(service)
    after.bring_up(container)
    assert after.pushed(container) == [call]
    assert after.input(call).attempts == 2
    after.output(container, call)
    result = after.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_SUCCESS


def test_a_call_running_when_the_plane_died_fails_clearly_without_retries() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)

    after, service = _restart(h.stored_calls)
    result = after.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INTERNAL_ERROR
    assert "restarted while Model.run ran" in result.message and "retry policy" in result.message
    assert after.live_containers(service) == []
    assert after.stored_calls[call].result == result


def test_a_call_of_an_app_gone_with_the_restart_fails_with_the_reason() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)

    after, _ = _restart(h.stored_calls, ephemeral=True)
    result = after.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INTERNAL_ERROR
    assert "could not resume after the control plane restarted" in result.message and "ap-app" in result.message


def test_inputs_that_never_left_the_plane_go_back_to_the_queue_at_once() -> None:
    h, _, service = _cluster(max_containers=2)
    first, second = h.invoke(service), h.invoke(service)
    h.backlog()
    one, two = h.live_containers(service)
    h.bring_up(one)
    assert h.pushed(one) == [first]
    # The stream ends with the input still in the plane's outbox: it never started.
    h.handle(ev.WorkerDisconnected(one, undelivered=(first,)))
    assert h.input(first).state == InputState.QUEUED and h.input(first).attempts == 0
    assert h.result(first) is None
    h.bring_up(two)
    assert h.pushed(two) == [first]
    h.output(two, first)
    h.output(two, second)
    assert h.result(first) is not None and h.result(second) is not None


def test_a_lost_container_gets_nothing_more() -> None:
    h, _, service = _cluster(max_containers=1, max_inputs=2)
    first = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container, slots=2)
    h.handle(ev.WorkerDisconnected(container))
    h.invoke(service)
    assert h.pushed(container) == [first]


def test_a_node_running_a_container_the_plane_does_not_know_is_told_to_stop_it() -> None:
    h, _, service = _cluster()
    node = next(iter(h.nodes))
    h.invoke(service)
    (known,) = h.live_containers(service)
    h.handle(ev.NodeHeartbeat(node, (), running=(known, "ct-orphan")))
    assert h.nodes[node].stopped == ["ct-orphan"]


def test_recovered_calls_wait_for_a_node_to_rejoin_within_a_grace() -> None:
    h, _, service = _cluster()
    waiting, late = h.invoke(service, durable=True), h.invoke(service, durable=True)

    after = Harness()
    after.deploy(class_def("Model"), app_id="ap-app")
    after.recover({waiting: h.stored_calls[waiting]})
    assert after.result(waiting) is None  # no node yet, and no failure either
    node = after.add_node()
    (container,) = after.started_on(node)
    after.bring_up(container)
    assert after.pushed(container) == [waiting]

    alone = Harness()
    alone.deploy(class_def("Model"), app_id="ap-app")
    alone.recover({late: h.stored_calls[late]})
    alone.tick(NODE_REJOIN_GRACE_S + 1)
    result = alone.result(late)
    assert result is not None and "no runtime node is connected" in result.message


def test_the_queue_waits_for_a_node_to_come_back_after_its_only_node_is_lost() -> None:
    h, _, service = _cluster(retries=1, max_containers=1)
    node = next(iter(h.nodes))
    running, queued = h.invoke(service), h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.handle(ev.NodeLost(node))
    h.tick(1.5)  # the retry is due; no node yet
    assert h.result(running) is None and h.result(queued) is None
    second = h.add_node()
    (replacement,) = h.started_on(second)
    h.bring_up(replacement)
    assert h.pushed(replacement) == [running]
    h.tick(NODE_REJOIN_GRACE_S)  # past the grace with a node: nothing fails
    assert h.result(queued) is None


def test_the_store_knows_which_container_runs_a_spawned_call() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    container_id, digest, node = h.stored_calls[call].runner.split(" ", 2)
    assert container_id == container and node == h.container(container).node_id
    assert digest != h.container(container).token and len(digest) == 64  # a digest, never the token
    h.output(container, call)


def test_a_running_call_is_answered_by_its_container_after_a_restart_and_not_run_again() -> None:
    h, _, service = _cluster(retries=3)
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    token = h.container(container).token

    after, service = _restart(h.stored_calls, running=(container,), retries=3)
    assert after.live_containers(service) == []  # nothing runs it again, and its container is not stopped
    assert not any(isinstance(e, fx.StopContainer) for e in after.effects)
    assert after.core.durable.awaits_token(token) and not after.core.durable.awaits_token("another")
    result = common_pb2.Result(status=S.RESULT_STATUS_SUCCESS, message="done there")
    after.handle(ev.OutputsDelivered(container, "a guessed token", (worker_output(call, result),)))
    assert after.result(call) is None  # the wrong token: ignored
    after.handle(ev.OutputsDelivered(container, token, (worker_output(call, result),)))
    got = after.result(call)
    assert got is not None and got.message == "done there"
    assert after.stored_calls[call].result == got and after.stored_calls[call].attempts == 1
    after.handle(ev.OutputsDelivered(container, token, (worker_output(call, result),)))  # twice: no harm
    assert after.live_containers(service) == []


def test_a_running_call_runs_again_when_its_node_reports_the_container_gone() -> None:
    h, _, service = _cluster(retries=1)
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)

    after, service = _restart(h.stored_calls, running=(container,), retries=1)
    assert after.live_containers(service) == []
    node = next(iter(after.core.nodes.nodes))
    after.handle(ev.NodeHeartbeat(node, running=()))  # the container finished without delivering, or died
    (fresh,) = after.live_containers(service)
    after.bring_up(fresh)
    assert after.pushed(fresh) == [call] and after.input(call).attempts == 2


def test_a_running_call_waits_for_no_node_longer_than_the_rejoin_grace() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)

    after, _ = _restart(h.stored_calls, running=None)  # no node reports anything
    after.tick(1.0)
    assert after.result(call) is None
    after.tick(NODE_REJOIN_GRACE_S + 1)
    result = after.result(call)
    assert result is not None and "restarted while Model.run ran" in result.message


def _past_the_timeout(after: Harness, container: str, seconds: float) -> str:
    """Time passes with the node alive and still running `container`; returns the node's id."""
    node = next(iter(after.core.nodes.nodes))
    after.advance(seconds)
    after.handle(ev.NodeHeartbeat(node, running=(container,)))
    after.tick()
    return node


def test_a_running_call_that_overruns_its_timeout_after_a_restart_times_out_and_its_container_stops() -> None:
    h, _, service = _cluster(timeout_s=30.0)
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    token = h.container(container).token

    after, service = _restart(h.stored_calls, running=(container,), timeout_s=30.0)
    _past_the_timeout(after, container, 29.0)
    assert after.result(call) is None  # still within its timeout
    node = _past_the_timeout(after, container, 2.0)
    result = after.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_TIMEOUT
    assert result.message == "Model.run ran past its timeout of 30 s while the control plane restarted"
    assert after.stored_calls[call].result == result
    assert container in after.nodes[node].stopped
    assert not after.core.durable.awaits_container(container) and not after.core.durable.awaits_token(token)
    late = common_pb2.Result(status=S.RESULT_STATUS_SUCCESS, message="too late")
    after.handle(ev.OutputsDelivered(container, token, (worker_output(call, late),)))
    assert after.result(call) == result  # a late delivery changes nothing


def test_a_running_call_that_overruns_its_timeout_after_a_restart_runs_again_when_its_policy_allows() -> None:
    h, _, service = _cluster(timeout_s=30.0, retries=1)
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)

    after, service = _restart(h.stored_calls, running=(container,), timeout_s=30.0, retries=1)
    node = _past_the_timeout(after, container, 31.0)
    assert container in after.nodes[node].stopped
    assert after.result(call) is None
    (fresh,) = after.live_containers(service)
    after.bring_up(fresh)
    assert after.pushed(fresh) == [call] and after.input(call).attempts == 2


def test_a_running_call_without_a_class_timeout_waits_at_most_the_default_one() -> None:
    h, _, service = _cluster()
    call = h.invoke(service, durable=True)
    (container,) = h.live_containers(service)
    h.bring_up(container)

    after, _ = _restart(h.stored_calls, running=(container,))
    _past_the_timeout(after, container, DEFAULT_TIMEOUT_S - 1)
    assert after.result(call) is None
    _past_the_timeout(after, container, 2.0)
    result = after.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_TIMEOUT
    assert f"timeout of {DEFAULT_TIMEOUT_S:g} s" in result.message
