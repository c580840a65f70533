"""Core rules added with functions (issue 14): `startup_timeout` bounds a start separately from
`timeout`."""

from __future__ import annotations

from corral_protocol.v1 import common_pb2
from corral_scheduler.lifecycle import ContainerState
from corral_scheduler.testing import Harness, class_def

S = common_pb2


def test_startup_timeout_bounds_the_start_apart_from_the_input_timeout() -> None:
    h = Harness()
    h.add_node()
    definition = class_def(timeout_s=600)
    definition.options.startup_timeout_s = 2
    service = h.bind(h.deploy(definition))
    call = h.invoke(service)
    (container,) = h.live_containers(service)
    h.connect(container)
    h.advance(1.9)
    assert h.container(container).state == ContainerState.STARTING
    h.advance(0.1)
    assert h.container(container).state == ContainerState.START_TIMED_OUT
    h.exit(container, -9)
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INIT_ERROR
    assert "within 2 s" in result.message


def test_a_long_startup_timeout_outlasts_a_short_input_timeout() -> None:
    h = Harness()
    h.add_node()
    definition = class_def(timeout_s=1)
    definition.options.startup_timeout_s = 60
    service = h.bind(h.deploy(definition))
    h.invoke(service)
    (container,) = h.live_containers(service)
    h.connect(container)
    h.advance(59)
    assert h.container(container).state == ContainerState.STARTING
