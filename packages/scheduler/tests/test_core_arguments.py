"""The core refuses a JSON call whose arguments do not fit the method's signature before any
container starts (`corral_protocol.arguments.refusal`, called from `Inputs._invoke`)."""

from __future__ import annotations

import json

from corral_protocol.v1 import common_pb2
from corral_scheduler import events as ev
from corral_scheduler.lifecycle import InputState
from corral_scheduler.testing import Harness, class_def

S = common_pb2
def _serving(h: Harness) -> str:
    h.add_node()
    model = class_def("Model")
    model.methods[0].signature.arguments.append(
        common_pb2.ArgumentSpec(name="n", kind=S.ARGUMENT_KIND_POSITIONAL_OR_KEYWORD, type=S.ARGUMENT_TYPE_INTEGER))
    return h.bind(h.deploy(model, name="app"), "Model", override=common_pb2.ServiceOptions())


def _invoke_json(h: Harness, service: str, body: object) -> str:
    call_id = f"fc-json-{len(h.core.inputs.inputs)}"
    payload = common_pb2.Payload(format=S.PAYLOAD_FORMAT_JSON, data=json.dumps(body).encode())
    h.handle(ev.InvokeRequested(call_id, service, "run", payload, None))
    return call_id


def test_a_json_call_that_does_not_fit_is_answered_at_once_and_starts_nothing() -> None:
    h = Harness()
    service = _serving(h)
    h.service(service)  # bound; the autoscaler has nothing to start yet
    call = _invoke_json(h, service, {"args": ["not a number"]})
    result = h.result(call)
    assert result is not None and result.status == S.RESULT_STATUS_INVALID_ARGUMENT
    assert "Model.run: argument 'n' must be an integer" in result.message
    assert h.input_state(call) == InputState.DONE
    assert h.live_containers(service) == []


def test_a_json_call_that_fits_queues_as_any_other() -> None:
    h = Harness()
    service = _serving(h)
    call = _invoke_json(h, service, {"args": [3]})
    assert h.input_state(call) == InputState.QUEUED
    assert len(h.live_containers(service)) == 1
