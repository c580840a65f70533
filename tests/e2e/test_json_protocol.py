"""corral.v1 as a client in another language sees it: raw gRPC and JSON payloads, no Python SDK
on the calling side (docs/protocol.md). Success, every error path, spawned calls, and a deadline
on Invoke(wait=true) that leaves the call running for GetResult."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from conftest import Cluster
from corral_protocol import CALL_ID_METADATA_KEY, PROTOCOL_VERSION, VERSION_METADATA_KEY
from corral_protocol.v1 import common_pb2, control_pb2, control_pb2_grpc
from e2e_helpers import containers, deploy

APP = "json-protocol-e2e"
JSON = common_pb2.PAYLOAD_FORMAT_JSON


class Wire:
    """What a third-party client holds: a channel, a stub and the two metadata keys."""

    def __init__(self, cluster: Cluster) -> None:
        self.channel = grpc.insecure_channel(cluster.url.split("://", 1)[1])
        self.stub = control_pb2_grpc.ControlServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {cluster.token}"), (VERSION_METADATA_KEY, str(PROTOCOL_VERSION)))

    def bind(self, class_name: str = "JsonModel", prefix: str | None = None) -> str:
        lookup = self.stub.LookupClass(control_pb2.LookupClassRequest(app_name=APP, class_name=class_name), metadata=self.metadata, timeout=30)
        parameters = [common_pb2.NamedParameter(name="prefix", value=common_pb2.ParameterValue(string_value=prefix))] if prefix is not None else []
        bound = self.stub.BindService(
            control_pb2.BindServiceRequest(app_id=lookup.app_id, class_name=class_name, parameters=parameters), metadata=self.metadata, timeout=30,
        )
        return bound.service_id

    def invoke(self, service_id: str, method: str, body: Any, wait: bool = True) -> control_pb2.InvokeResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = control_pb2.InvokeRequest(service_id=service_id, method=method, args=common_pb2.Payload(format=JSON, data=data), wait=wait)
        return self.stub.Invoke(request, metadata=self.metadata, timeout=120)

    def result(self, call_id: str) -> common_pb2.Result:
        for _ in range(10):
            answer = self.stub.GetResult(control_pb2.GetResultRequest(call_id=call_id, timeout_s=30), metadata=self.metadata, timeout=60)
            if answer.done:
                return answer.result
        raise AssertionError(f"call {call_id} did not finish")


@pytest.fixture(scope="module")
def wire(cluster: Cluster) -> Iterator[Wire]:
    deploy(cluster, "json_app.py", APP)
    client = Wire(cluster)
    try:
        yield client
    finally:
        client.stub.StopApp(control_pb2.StopAppRequest(app=APP), metadata=client.metadata, timeout=60)
        client.channel.close()


def test_lookup_describes_each_methods_signature(wire: Wire) -> None:
    lookup = wire.stub.LookupClass(control_pb2.LookupClassRequest(app_name=APP, class_name="JsonModel"), metadata=wire.metadata, timeout=30)
    echo = next(m for m in lookup.class_def.methods if m.name == "echo")
    assert [(a.name, a.type, a.has_default) for a in echo.signature.arguments] == [
        ("text", common_pb2.ARGUMENT_TYPE_STRING, False),
        ("times", common_pb2.ARGUMENT_TYPE_INTEGER, True),
        ("data", common_pb2.ARGUMENT_TYPE_BYTES, True),
        ("scale", common_pb2.ARGUMENT_TYPE_NUMBER, True),
        ("tag", common_pb2.ARGUMENT_TYPE_STRING, True),
    ]
    assert echo.signature.arguments[4].nullable


def test_json_arguments_are_converted_to_the_annotated_types_and_answered_in_json(wire: Wire) -> None:
    service = wire.bind(prefix=">")
    answer = wire.invoke(service, "echo", {"args": ["ab"], "kwargs": {"times": "2", "data": base64.b64encode(b"\x00hi").decode(), "scale": 3}})
    assert answer.result.status == common_pb2.RESULT_STATUS_SUCCESS, answer.result.message
    assert answer.result.value.format == JSON
    assert json.loads(answer.result.value.data) == {
        "text": ">abab", "times": 2, "data": base64.b64encode(b"\x00hi").decode(), "scale": 3.0, "tag": None,
        "types": ["int", "bytes", "float"],
    }
    # Integers beyond 2^53 travel as strings of digits (JavaScript's numbers cannot hold them).
    big = wire.invoke(service, "big", {"args": ["9007199254740993"]})
    assert json.loads(big.result.value.data) == 9007199254740994


def test_a_user_exception_comes_back_as_json_without_a_traceback_for_a_deployed_app(wire: Wire) -> None:
    answer = wire.invoke(wire.bind(), "fail", {"args": ["no good"]})
    result = answer.result
    assert result.status == common_pb2.RESULT_STATUS_USER_ERROR
    assert result.exception.format == JSON
    assert json.loads(result.exception.data) == {"type": "ValueError", "qualified_type": "builtins.ValueError", "message": "no good"}
    assert result.message == "no good" and result.traceback == ""


def test_a_return_value_json_cannot_encode_is_an_error_naming_its_type(wire: Wire) -> None:
    result = wire.invoke(wire.bind(), "opaque", {}).result
    assert result.status == common_pb2.RESULT_STATUS_USER_ERROR
    assert "builtins.object" in result.message and "JSON" in result.message
    assert json.loads(result.exception.data)["type"] == "TypeError"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"args": []}, "'text'"),
        ({"args": ["a"], "kwargs": {"colour": "red"}}, "colour"),
        ({"args": ["a"], "kwargs": {"times": 1.5}}, "times"),
        ({"args": ["a"], "kwargs": {"data": "%%%"}}, "base64"),
        (b"{oops", "malformed JSON"),
        (b"[1]", "must be an object"),
    ],
)
def test_arguments_that_do_not_fit_get_invalid_argument_not_a_user_error(wire: Wire, body: Any, problem: str) -> None:
    result = wire.invoke(wire.bind(), "echo", body).result
    assert result.status == common_pb2.RESULT_STATUS_INVALID_ARGUMENT
    assert problem in result.message and "JsonModel.echo" in result.message


def test_a_spawned_call_with_bad_arguments_is_answered_by_get_result(wire: Wire) -> None:
    call_id = wire.invoke(wire.bind(), "echo", {"args": []}, wait=False).call_id
    assert wire.result(call_id).status == common_pb2.RESULT_STATUS_INVALID_ARGUMENT


def test_bad_json_arguments_are_refused_before_a_container_starts(wire: Wire, cluster: Cluster) -> None:
    from e2e_helpers import client_for

    service = wire.bind(prefix="never-started")
    result = wire.invoke(service, "echo", {"kwargs": {"nope": 1}}).result
    assert result.status == common_pb2.RESULT_STATUS_INVALID_ARGUMENT
    client = client_for(cluster)
    try:
        started = [c for c in containers(client, APP, "JsonModel", live_only=False) if c.service_id == service]
    finally:
        client.close()
    assert started == []


@pytest.mark.parametrize("fmt", [common_pb2.PAYLOAD_FORMAT_UNSPECIFIED, common_pb2.PAYLOAD_FORMAT_CBOR])
def test_a_payload_format_other_than_json_or_pickle_is_refused(wire: Wire, fmt: int) -> None:
    request = control_pb2.InvokeRequest(service_id=wire.bind(), method="echo", args=common_pb2.Payload(format=fmt, data=b"\xa0"), wait=True)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        wire.stub.Invoke(request, metadata=wire.metadata, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "payload format" in (caught.value.details() or "")


def test_spawn_then_get_and_cancel(wire: Wire) -> None:
    service = wire.bind()
    call_id = wire.invoke(service, "echo", {"args": ["x"]}, wait=False).call_id
    assert call_id
    result = wire.result(call_id)
    assert result.status == common_pb2.RESULT_STATUS_SUCCESS and json.loads(result.value.data)["text"] == "x"
    slow = wire.invoke(service, "slow", {"args": [10]}, wait=False).call_id
    wire.stub.CancelCall(control_pb2.CancelCallRequest(call_id=slow), metadata=wire.metadata, timeout=30)
    assert wire.result(slow).status == common_pb2.RESULT_STATUS_CANCELLED


def test_a_deadline_on_invoke_leaves_the_call_running_and_its_id_in_the_initial_metadata(wire: Wire) -> None:
    service = wire.bind()
    request = control_pb2.InvokeRequest(
        service_id=service, method="slow", args=common_pb2.Payload(format=JSON, data=b'{"args": [3]}'), wait=True,
    )
    call = wire.stub.Invoke.future(request, metadata=wire.metadata, timeout=1)
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    call_id = dict(call.initial_metadata() or ()).get(CALL_ID_METADATA_KEY)
    assert call_id, "Invoke(wait=true) sends the call id in its initial metadata"
    result = wire.result(call_id)
    assert result.status == common_pb2.RESULT_STATUS_SUCCESS and json.loads(result.value.data) == "done"


def test_http_json_invocation_for_clients_without_grpc(wire: Wire, cluster: Cluster) -> None:
    import httpx

    url = f"{cluster.http_url}/v1/apps/{APP}/classes/JsonModel/methods"
    admin = {"authorization": f"Bearer {cluster.token}"}
    with httpx.Client(timeout=120) as http:
        ok = http.post(f"{url}/echo", params={"prefix": "~"}, json={"args": ["hi"], "kwargs": {"times": "2"}}, headers=admin)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["status"] == "RESULT_STATUS_SUCCESS" and body["value"]["text"] == "~hihi"
        assert ok.headers[CALL_ID_METADATA_KEY] == body["call_id"]

        failed = http.post(f"{url}/fail", json={"args": ["no good"]}, headers=admin)
        assert failed.status_code == 500
        assert failed.json()["exception"] == {"type": "ValueError", "qualified_type": "builtins.ValueError", "message": "no good"}

        invalid = http.post(f"{url}/echo", json={"kwargs": {"colour": 1}}, headers=admin)
        assert invalid.status_code == 400 and invalid.json()["status"] == "RESULT_STATUS_INVALID_ARGUMENT"

        token = wire.stub.CreateProxyToken(control_pb2.CreateProxyTokenRequest(name="json-http"), metadata=wire.metadata, timeout=30)
        proxy = {"corral-key": token.token_id, "corral-secret": token.token_secret}
        assert http.post(f"{url}/big", json={"args": [1]}, headers=proxy).json()["value"] == 2

        assert http.post(f"{url}/echo", json={"args": ["x"]}).status_code == 401
        assert http.post(f"{url}/echo", json={"args": ["x"]}, headers={"authorization": "Bearer nope"}).status_code == 401
        assert http.post(f"{url}/nope", json={}, headers=admin).status_code == 404
        assert http.post(f"{cluster.http_url}/v1/apps/{APP}/classes/Nope/methods/echo", json={}, headers=admin).status_code == 404
        assert http.get(f"{url}/echo", headers=admin).status_code == 405
        assert http.post(f"{url}/echo", params={"colour": "red"}, json={"args": ["x"]}, headers=admin).status_code == 400
