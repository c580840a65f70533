"""The core's part in generator calls: items relayed in order, the Output ends the call, and a
cancelled generator input is cancelled in its container (the container stays)."""

from __future__ import annotations

from corral_protocol.v1 import common_pb2, worker_pb2
from corral_scheduler import effects as fx
from corral_scheduler import events as ev
from corral_scheduler.lifecycle import ContainerState
from corral_scheduler.testing import Harness, class_def

S = common_pb2


def serving(h: Harness) -> tuple[str, str]:
    h.add_node()
    app = h.deploy(class_def("Gen"))
    return h.bind(app, "Gen"), app


def item(call: str, data: bytes) -> worker_pb2.GeneratorItem:
    return worker_pb2.GeneratorItem(input_id=call, value=S.Payload(format=S.PAYLOAD_FORMAT_PICKLE, data=data))


def test_items_are_relayed_in_order_and_the_output_ends_the_call() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.handle(ev.WorkerItem(container, item(call, b"1")))
    h.handle(ev.WorkerItem(container, item(call, b"2")))
    assert [p.data for p in h.items[call]] == [b"1", b"2"]
    assert h.result(call) is None
    h.output(container, call)
    assert h.result(call).status == S.RESULT_STATUS_SUCCESS  # type: ignore[union-attr]


def test_an_item_of_an_unknown_input_is_dropped() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.handle(ev.WorkerItem(container, item("fc-unknown", b"x")))
    h.handle(ev.WorkerItem("ct-unknown", item(call, b"x")))
    assert not h.items


def test_cancelling_a_running_generator_cancels_it_in_its_container_which_stays() -> None:
    h = Harness()
    service, _ = serving(h)
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.bring_up(container)
    h.handle(ev.WorkerItem(container, item(call, b"1")))
    h.handle(ev.CancelRequested(call, "the caller stopped consuming the generator"))
    assert any(isinstance(e, fx.CancelInput) and e.call_id == call and e.container_id == container for e in h.effects)
    assert h.result(call).status == S.RESULT_STATUS_CANCELLED  # type: ignore[union-attr]
    assert h.core.containers.containers[container].state == ContainerState.READY
