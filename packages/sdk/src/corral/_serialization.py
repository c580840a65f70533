"""Payloads on the wire: arguments, return values and exceptions.

PICKLE (cloudpickle) is the Python SDK's own format; JSON is for clients in any language. The
container answers in the format of the call's arguments: a JSON caller never gets a pickle.
"""

from __future__ import annotations

import inspect
import json
import pickle
import traceback as traceback_module
from collections.abc import Callable
from typing import Any

import cloudpickle

from corral import _json
from corral.exception import (
    ContainerExitedError,
    ExecutionError,
    FunctionTimeoutError,
    InitError,
    InputCancellation,
    InvalidArgumentError,
    InvalidError,
    RemoteError,
    RemoteTraceback,
)
from corral_protocol import payloads
from corral_protocol.arguments import ArgumentError, format_problem, parse_call
from corral_protocol.v1 import common_pb2

PICKLE = common_pb2.PAYLOAD_FORMAT_PICKLE
JSON = common_pb2.PAYLOAD_FORMAT_JSON


_PLAIN_SCALARS = (str, int, float, bool, bytes, type(None))


def _is_plain(value: Any, depth: int = 0) -> bool:
    """True for builtin scalars and small containers of them, which the C pickler handles exactly
    like cloudpickle does (cloudpickle's pure-Python hooks cost microseconds on every call)."""
    if type(value) in _PLAIN_SCALARS:
        return True
    if depth > 3:
        return False
    if type(value) in (list, tuple):
        return len(value) <= 64 and all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return len(value) <= 64 and all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def dumps(value: Any) -> bytes:
    if _is_plain(value):
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def pickle_args(args: tuple[Any, ...], kwargs: dict[str, Any], what: str = "the arguments") -> bytes:
    """The pickled (args, kwargs); InvalidError, before anything is sent, when it is over the payload limit."""
    data = dumps((args, kwargs))
    limit = payloads.max_payload_bytes()
    if len(data) > limit:
        raise InvalidError(payloads.too_large(what, len(data), limit))
    return data


def encode_args(args: tuple[Any, ...], kwargs: dict[str, Any], what: str = "the arguments") -> common_pb2.Payload:
    """The pickled (args, kwargs) inline; InvalidError, before anything is sent, when it is over the payload limit."""
    return common_pb2.Payload(format=PICKLE, data=pickle_args(args, kwargs, what))


def decode_args(payload: common_pb2.Payload) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of a call as sent (no signature check, no conversion); raises ArgumentError
    for a payload that cannot be decoded."""
    problem = format_problem(payload)
    if problem is not None:
        raise ArgumentError(problem)
    if payload.format == JSON:
        args, kwargs = parse_call(payload.data)
        return tuple(args), kwargs
    args, kwargs = pickle.loads(payload.data)
    return tuple(args), dict(kwargs)


def decode_call(
    payload: common_pb2.Payload,
    function: Callable[..., Any],
    signature: inspect.Signature | None = None,
    batched: bool = False,
    data: Any = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of a call to `function` (a bound method), checked against its signature and,
    for JSON, converted to its annotated types. Raises ArgumentError when they do not fit: the
    caller gets RESULT_STATUS_INVALID_ARGUMENT and no user code runs. `signature` saves looking it
    up on every call. `data`: the bytes of arguments stored as a blob, read already."""
    problem = format_problem(payload)
    if problem is not None:
        raise ArgumentError(problem)
    if payload.blob_id and data is None:
        raise ArgumentError(f"the arguments' blob {payload.blob_id} was not read")
    if payload.format == JSON:
        return _json.arguments_from_json(function, payload.data if data is None else bytes(data), batched)
    args, kwargs = pickle.loads(payload.data if data is None else data)
    try:
        (signature or inspect.signature(function)).bind(*args, **kwargs)
    except TypeError as err:
        raise ArgumentError(str(err)) from None
    return tuple(args), dict(kwargs)


def encode_value(value: Any, fmt: int = PICKLE) -> common_pb2.Payload:
    """A value in `fmt`; raises TypeError (naming the type) for a value JSON cannot encode."""
    if fmt == JSON:
        return common_pb2.Payload(format=JSON, data=_json.to_json(value))
    return common_pb2.Payload(format=PICKLE, data=dumps(value))


def decode_value(payload: common_pb2.Payload, data: Any = None) -> Any:
    """The value of an inline payload, or of `data` (a blob's bytes) in the payload's format."""
    data = payload.data if data is None else data
    if payload.format == JSON:
        return json.loads(data)
    return pickle.loads(data)


def success(value: Any, fmt: int = PICKLE) -> common_pb2.Result:
    return common_pb2.Result(status=common_pb2.RESULT_STATUS_SUCCESS, value=encode_value(value, fmt))


def encode_result(value: Any, fmt: int = PICKLE, method: str = "the method", dev_mode: bool = True) -> common_pb2.Result:
    """A success Result, or a clear user error when the value cannot be serialized or is over the
    payload limit (then the caller gets `InvalidError` naming both sizes; the container lives on)."""
    try:
        result = success(value, fmt)
    except Exception as exc:
        return user_error(TypeError(f"the return value of {method} could not be serialized: {exc}"), fmt, dev_mode)
    # A PICKLE result above the blob threshold travels as a blob (container_api.offload_result);
    # a JSON one stays inline for clients in any language, so the inline limit bounds it.
    limit = payloads.max_payload_bytes() if fmt == PICKLE else payloads.inline_limit()
    if len(result.value.data) > limit:
        return user_error(InvalidError(payloads.too_large(f"the return value of {method}", len(result.value.data), limit)), fmt, dev_mode)
    return result


def user_error(exc: BaseException, fmt: int = PICKLE, dev_mode: bool = True) -> common_pb2.Result:
    """A Result for an exception raised by user code, in the caller's format: for PICKLE the
    exception itself, pickled when that works and round-trips; for JSON its type and message (and
    traceback only in dev mode: a deployed app's traceback would show server paths)."""
    formatted = "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))
    result = common_pb2.Result(
        status=common_pb2.RESULT_STATUS_USER_ERROR,
        exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        message=str(exc),
        traceback=formatted if fmt != JSON or dev_mode else "",
    )
    if fmt == JSON:
        result.exception.CopyFrom(common_pb2.Payload(format=JSON, data=_json.exception_to_json(exc, result.traceback)))
        return result
    try:
        data = dumps(exc)
        pickle.loads(data)
    except Exception:
        return result
    result.exception.CopyFrom(common_pb2.Payload(format=PICKLE, data=data))
    return result


def unwrap(result: common_pb2.Result, data: Any = None) -> Any:
    """Return the value of a successful Result, or raise what the call raised. `data`: the bytes
    of a value stored as a blob (`corral._blobs.unwrap` reads them)."""
    if result.status == common_pb2.RESULT_STATUS_SUCCESS:
        if result.value.blob_id and data is None:
            raise InvalidError("this result is stored as a blob; read it with corral._blobs.unwrap")
        return decode_value(result.value, data)
    raise exception_from(result)


def exception_from(result: common_pb2.Result) -> BaseException:
    status = result.status
    if status == common_pb2.RESULT_STATUS_USER_ERROR:
        if result.HasField("exception"):
            try:
                exc = decode_value(result.exception)
            except Exception:
                exc = None
            if isinstance(exc, BaseException):
                exc.__cause__ = RemoteTraceback(result.traceback)
                return exc
        return RemoteError(f"{result.exception_type}: {result.message}", result.exception_type, result.traceback)
    if status == common_pb2.RESULT_STATUS_TIMEOUT:
        return FunctionTimeoutError(result.message)
    if status == common_pb2.RESULT_STATUS_INIT_ERROR:
        detail = f"\n\n{result.traceback}" if result.traceback else ""
        return InitError(f"{result.message}{detail}")
    if status == common_pb2.RESULT_STATUS_INTERNAL_ERROR:
        return ContainerExitedError(result.message)
    if status == common_pb2.RESULT_STATUS_CANCELLED:
        return InputCancellation(result.message or "the call was cancelled")
    if status == common_pb2.RESULT_STATUS_INVALID_ARGUMENT:
        return InvalidArgumentError(result.message)
    return ExecutionError(result.message or f"call failed with status {status}")
