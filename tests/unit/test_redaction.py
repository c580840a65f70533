"""Masking secret values in what a container reports (corral_runtime.redaction)."""

from __future__ import annotations

import pickle

from corral import _serialization  # the SDK side of Results: what a caller decodes
from corral.exception import RemoteError
from corral_protocol import env
from corral_protocol.v1 import common_pb2
from corral_runtime.redaction import Redactor, secret_keys

VALUE = "sk-9f8e7d6c5b4a"
QUOTED = 'it\'s "quoted" \\ and é'


class Holder:
    def __init__(self, value: str) -> None:
        self.value = value


class HolderError(Exception):
    def __init__(self, holder: Holder) -> None:
        super().__init__("a holder")
        self.holder = holder


class EnvError(Exception):
    def __init__(self, message: str, env: dict[str, str]) -> None:
        super().__init__(message, env)
        self.env = env


def test_text_forms() -> None:
    redactor = Redactor({"API_KEY": VALUE, "PASSWORD": QUOTED, "SHORT": "1", "EMPTY": ""})
    assert redactor.text(f"key={VALUE}") == "key=<secret API_KEY>"
    assert VALUE not in redactor.text(repr({"API_KEY": VALUE}))
    for form in (QUOTED, repr(QUOTED), repr({"P": QUOTED}), str({"P": QUOTED})):
        assert "quoted" not in redactor.text(form), form
    assert redactor.text("1 true") == "1 true"  # too short to mask
    assert redactor.data(VALUE.encode()) == b"<secret API_KEY>"
    assert not Redactor({"SHORT": "abc"})


def test_keys_from_the_container_env_and_the_worker_env() -> None:
    start_env = {"API_KEY": VALUE, env.CORRAL_APP_NAME: "my-app", env.CORRAL_APP_ID: "ap-123456"}
    assert secret_keys(start_env) == ["API_KEY"]
    assert Redactor.from_container_env(start_env).text("my-app ap-123456") == "my-app ap-123456"
    environ = {env.CORRAL_SECRET_KEYS: "API_KEY", "API_KEY": VALUE, "HOME": "/home/someone"}
    redactor = Redactor.from_environ(environ)
    assert redactor.text(f"{VALUE} /home/someone") == "<secret API_KEY> /home/someone"


def test_a_failed_result_keeps_the_exception_type_without_the_value() -> None:
    redactor = Redactor({"API_KEY": VALUE})
    try:
        raise EnvError(f"boom {VALUE}", {"API_KEY": VALUE})
    except EnvError as exc:
        result = redactor.result(_serialization.user_error(exc))
    assert VALUE not in result.message and VALUE not in result.traceback
    assert VALUE.encode() not in result.SerializeToString()
    raised = _serialization.exception_from(result)
    assert isinstance(raised, EnvError)
    assert raised.env == {"API_KEY": "<secret API_KEY>"}
    assert "<secret API_KEY>" in str(raised)


def test_an_exception_that_still_holds_the_value_becomes_a_remote_error() -> None:
    redactor = Redactor({"API_KEY": VALUE})
    result = common_pb2.Result(
        status=common_pb2.RESULT_STATUS_USER_ERROR,
        exception_type="x.Stubborn",
        message=f"m {VALUE}",
        traceback=f"t {VALUE}",
        exception=common_pb2.Payload(format=_serialization.PICKLE, data=pickle.dumps(ValueError(VALUE))),
    )
    masked = redactor.result(result)
    assert VALUE.encode() not in masked.SerializeToString()
    assert isinstance(_serialization.exception_from(masked), ValueError)
    try:
        raise HolderError(Holder(VALUE))  # inside an object the masking does not look into
    except HolderError as exc:
        masked = redactor.result(_serialization.user_error(exc))
    assert VALUE.encode() not in masked.SerializeToString()
    assert isinstance(_serialization.exception_from(masked), RemoteError)


def test_successes_and_clean_errors_pass_untouched() -> None:
    redactor = Redactor({"API_KEY": VALUE})
    success = _serialization.success(VALUE)  # a value the method returns is the user's choice
    assert redactor.result(success) is success
    clean = _serialization.user_error(ValueError("nothing secret"))
    assert redactor.result(clean) is clean


def test_a_json_callers_exception_is_masked_and_stays_json() -> None:
    import json

    redactor = Redactor({"API_KEY": "sk-live-123456"})
    try:
        raise RuntimeError('token "sk-live-123456" refused')
    except RuntimeError as exc:
        result = _serialization.user_error(exc, _serialization.JSON, dev_mode=True)
    masked = redactor.result(result)
    body = json.loads(masked.exception.data)
    assert masked.exception.format == common_pb2.PAYLOAD_FORMAT_JSON
    assert "sk-live-123456" not in masked.exception.data.decode() + masked.message + masked.traceback
    assert body["message"] == 'token "<secret API_KEY>" refused' and "<secret API_KEY>" in body["traceback"]
