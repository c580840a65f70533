"""JSON calls from clients in any language: the signature on the wire, the control plane's check
before a container starts, the container's conversion to annotated types, and JSON answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral import _json
from corral._serialization import JSON, PICKLE, decode_call, encode_result, exception_from, user_error
from corral.exception import InvalidArgumentError
from corral_protocol.arguments import ArgumentError, format_problem, parse_call, refusal
from corral_protocol.v1 import common_pb2


class Model:
    def predict(self, text: str, scale: float = 1.0, *, count: int | None = None) -> dict[str, Any]:
        return {}

    def blob(self, data: bytes, tags: list[bytes]) -> bytes:
        return data

    def anything(self, value, /, *rest: int, **extra: bool) -> None:  # type: ignore[no-untyped-def]
        return None

    def batched(self, xs: list[int]) -> list[int]:
        return xs


def _class_def() -> common_pb2.ClassDef:
    methods = [
        common_pb2.MethodDef(name=name, signature=_json.method_signature(getattr(Model, name), batched=name == "batched"))
        for name in ("predict", "blob", "anything", "batched")
    ]
    methods.append(common_pb2.MethodDef(name="old"))  # deployed by an SDK without signatures
    return common_pb2.ClassDef(name="Model", methods=methods)


def _payload(body: Any) -> common_pb2.Payload:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return common_pb2.Payload(format=JSON, data=data)


def test_the_signature_describes_each_argument_for_the_wire() -> None:
    specs = {a.name: a for a in _json.method_signature(Model.predict).arguments}
    assert list(specs) == ["text", "scale", "count"]
    assert specs["text"].type == common_pb2.ARGUMENT_TYPE_STRING and not specs["text"].has_default
    assert specs["scale"].type == common_pb2.ARGUMENT_TYPE_NUMBER and specs["scale"].has_default
    assert specs["count"].kind == common_pb2.ARGUMENT_KIND_KEYWORD_ONLY
    assert specs["count"].type == common_pb2.ARGUMENT_TYPE_INTEGER and specs["count"].nullable
    batched = _json.method_signature(Model.batched, batched=True).arguments[0]
    assert batched.type == common_pb2.ARGUMENT_TYPE_INTEGER  # one input's value, not the batch's list


@pytest.mark.parametrize(
    ("method", "body", "problem"),
    [
        ("predict", {"args": []}, "missing required argument(s) 'text'"),
        ("predict", {"args": ["a", 1, 2]}, "takes 2 positional argument(s) but 3 were given"),
        ("predict", {"kwargs": {"text": "a", "colour": 1}}, "unexpected keyword argument 'colour'"),
        ("predict", {"args": ["a"], "kwargs": {"text": "b"}}, "multiple values for argument 'text'"),
        ("predict", {"args": [1]}, "argument 'text' must be a string, got the number 1"),
        ("predict", {"args": ["a", "fast"]}, "argument 'scale' must be a number"),
        ("predict", {"args": ["a"], "kwargs": {"count": 1.5}}, "argument 'count' must be an integer"),
        ("blob", {"args": ["not base64!", []]}, "argument 'data' must be a base64 string"),
        ("anything", {"kwargs": {"value": 1}}, "missing required argument(s) 'value'"),  # as Python: `value` lands in **extra
        ("anything", {"args": [1, 2, "x"]}, "argument 'rest' must be an integer"),
        ("anything", {"args": [1], "kwargs": {"flag": "yes"}}, "argument 'extra' must be true or false"),
        ("batched", {"args": ["x"]}, "argument 'xs' must be an integer"),
        ("predict", b"{not json", "malformed JSON arguments"),
        ("predict", [1, 2], "must be an object"),
        ("predict", {"args": {"text": "a"}}, '"args" must be an array'),
        ("predict", {"arguments": []}, "unknown key(s) 'arguments'"),
    ],
)
def test_the_control_plane_refuses_a_json_call_that_does_not_fit(method: str, body: Any, problem: str) -> None:
    refused = refusal(_class_def(), method, _payload(body))
    assert refused is not None
    assert refused.status == common_pb2.RESULT_STATUS_INVALID_ARGUMENT
    assert refused.message.startswith(f"Model.{method}: ")
    assert problem in refused.message


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("predict", {"args": ["a"]}),
        ("predict", {"kwargs": {"text": "a", "scale": 2, "count": "123456789012345678901"}}),
        ("predict", {"args": ["a", 2.5], "kwargs": {"count": None}}),
        ("blob", {"args": ["aGk=", ["", "AA=="]]}),
        ("anything", {"args": [None, 1, 2], "kwargs": {"a": True}}),
        ("batched", {"args": [3]}),
        ("old", {"args": [1, 2, 3]}),  # no signature: the container checks
    ],
)
def test_the_control_plane_lets_a_fitting_json_call_through(method: str, body: Any) -> None:
    assert refusal(_class_def(), method, _payload(body)) is None


def test_pickled_arguments_are_left_to_the_container() -> None:
    assert refusal(_class_def(), "predict", common_pb2.Payload(format=PICKLE, data=b"\x80")) is None


def test_a_payload_must_name_a_supported_format() -> None:
    assert "unset" in (format_problem(common_pb2.Payload(data=b"{}")) or "")
    assert "PAYLOAD_FORMAT_CBOR is not supported" in (format_problem(common_pb2.Payload(format=common_pb2.PAYLOAD_FORMAT_CBOR)) or "")
    assert "99 is not supported" in (format_problem(common_pb2.Payload(format=99)) or "")  # type: ignore[arg-type]
    assert format_problem(common_pb2.Payload(format=JSON)) is None
    assert parse_call(b"") == ([], {})


def test_the_container_converts_json_to_the_annotated_types() -> None:
    instance = Model()
    args, kwargs = decode_call(_payload({"args": ["hi"], "kwargs": {"scale": 2, "count": "123456789012345678901"}}), instance.predict)
    assert args == ("hi", 2.0) and kwargs == {"count": 123456789012345678901}
    assert isinstance(args[1], float)
    args, kwargs = decode_call(_payload({"args": ["aGk=", ["AA=="]]}), instance.blob)
    assert args == (b"hi", [b"\x00"])


def test_the_container_refuses_arguments_that_do_not_fit_pickled_or_json() -> None:
    instance = Model()
    with pytest.raises(ArgumentError, match="missing a required argument: 'text'"):
        decode_call(encode_pickle((), {}), instance.predict)
    with pytest.raises(ArgumentError, match="must be a number"):
        decode_call(_payload({"args": ["a", "b"]}), instance.predict)
    with pytest.raises(ArgumentError, match="unset"):
        decode_call(common_pb2.Payload(data=b"\x80\x04N."), instance.predict)


def encode_pickle(args: tuple[Any, ...], kwargs: dict[str, Any]) -> common_pb2.Payload:
    from corral._serialization import encode_args

    return encode_args(args, kwargs)


def test_json_results_encode_bytes_tuples_and_name_what_json_cannot_hold() -> None:
    result = encode_result({"b": b"hi", "t": (1, 2), "n": None}, JSON, "Model.predict")
    assert result.status == common_pb2.RESULT_STATUS_SUCCESS
    assert json.loads(result.value.data) == {"b": "aGk=", "t": [1, 2], "n": None}

    failed = encode_result(object(), JSON, "Model.predict", dev_mode=False)
    assert failed.status == common_pb2.RESULT_STATUS_USER_ERROR
    assert "the return value of Model.predict could not be serialized" in failed.message
    assert "builtins.object" in failed.message
    assert failed.exception.format == JSON and failed.traceback == ""
    assert "NaN or infinity" in encode_result(float("nan"), JSON).message


def test_a_json_caller_gets_a_json_exception_with_the_traceback_only_in_dev_mode() -> None:
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        deployed = user_error(exc, JSON, dev_mode=False)
        dev = user_error(exc, JSON, dev_mode=True)
    assert deployed.exception.format == JSON
    assert json.loads(deployed.exception.data) == {"type": "ValueError", "qualified_type": "builtins.ValueError", "message": "bad input"}
    assert deployed.traceback == ""
    assert "raise ValueError" in json.loads(dev.exception.data)["traceback"] and dev.traceback


def test_python_callers_see_an_invalid_argument_as_a_type_error() -> None:
    exc = exception_from(common_pb2.Result(status=common_pb2.RESULT_STATUS_INVALID_ARGUMENT, message="Model.predict: missing"))
    assert isinstance(exc, InvalidArgumentError) and isinstance(exc, TypeError)
