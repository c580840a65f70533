"""JSON calls from clients in any language: a method's signature for the wire, arguments converted
to the method's annotated types, return values and exceptions encoded as JSON.

The shape and the type rules are `corral_protocol.arguments`'s (shared with the control plane,
which checks a call before a container starts); this module adds what needs the Python function:
its annotations. A conversion is made only where it is unambiguous: bytes from base64, int from a
JSON integer or a decimal string, float from any JSON number, pydantic models from an object,
recursively inside `list[X]`, `tuple[X, ...]`, `set[X]`, `dict[str, X]` and `X | None`. Anything
else is passed as JSON decoded it.

Example:
    signature = method_signature(Model.predict)          # travels in MethodDef.signature
    args, kwargs = arguments_from_json(instance.predict, b'{"args": ["aGk="]}')  # (b"hi",) if annotated bytes
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import inspect
import json
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from corral_protocol.arguments import ArgumentError, bytes_from_json, integer_from_json, parse_call
from corral_protocol.v1 import common_pb2

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: common_pb2.ARGUMENT_KIND_POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: common_pb2.ARGUMENT_KIND_POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL: common_pb2.ARGUMENT_KIND_VAR_POSITIONAL,
    inspect.Parameter.KEYWORD_ONLY: common_pb2.ARGUMENT_KIND_KEYWORD_ONLY,
    inspect.Parameter.VAR_KEYWORD: common_pb2.ARGUMENT_KIND_VAR_KEYWORD,
}
_SEQUENCES = (list, tuple, set, frozenset)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve: treat every argument as any value
        return {}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(X, True) for `Optional[X]` / `X | None`; (annotation, False) otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        rest = [a for a in members if a is not type(None)]
        if len(rest) == 1 and len(members) == 2:
            return rest[0], True
    return annotation, False


def _element(annotation: Any) -> Any:
    """X for `list[X]` (a batched method's parameter gets one list of each input's values)."""
    if typing.get_origin(annotation) is list:
        return (typing.get_args(annotation) or (Any,))[0]
    return Any


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "model_validate")


def argument_type(annotation: Any) -> tuple[common_pb2.ArgumentType.ValueType, bool]:
    """The JSON type an annotation asks for, and whether null is accepted."""
    annotation, nullable = _unwrap_optional(annotation)
    if annotation is type(None):
        return common_pb2.ARGUMENT_TYPE_UNSPECIFIED, True
    origin = typing.get_origin(annotation) or annotation
    if origin is bool:
        found = common_pb2.ARGUMENT_TYPE_BOOLEAN
    elif origin is int:
        found = common_pb2.ARGUMENT_TYPE_INTEGER
    elif origin is float:
        found = common_pb2.ARGUMENT_TYPE_NUMBER
    elif origin is str:
        found = common_pb2.ARGUMENT_TYPE_STRING
    elif origin in (bytes, bytearray):
        found = common_pb2.ARGUMENT_TYPE_BYTES
    elif origin in _SEQUENCES:
        found = common_pb2.ARGUMENT_TYPE_ARRAY
    elif origin is dict or _is_model(annotation):
        found = common_pb2.ARGUMENT_TYPE_OBJECT
    else:
        found = common_pb2.ARGUMENT_TYPE_UNSPECIFIED
    return found, nullable


def method_signature(function: Callable[..., Any], batched: bool = False) -> common_pb2.MethodSignature:
    """The signature of a method (its first argument, `self`, left out) for `MethodDef.signature`.

    A batched method's arguments are described as one input's values: `xs: list[int]` is an integer."""
    hints = _hints(function)
    parameters = list(inspect.signature(function).parameters.values())[1:]
    signature = common_pb2.MethodSignature()
    for parameter in parameters:
        annotation = hints.get(parameter.name, Any)
        if batched:
            annotation = _element(annotation)
        kind, nullable = argument_type(annotation)
        has_default = parameter.default is not inspect.Parameter.empty
        signature.arguments.append(common_pb2.ArgumentSpec(
            name=parameter.name, kind=_KINDS[parameter.kind], has_default=has_default, type=kind,
            nullable=nullable or (has_default and parameter.default is None),
        ))
    return signature


def arguments_from_json(function: Callable[..., Any], data: bytes, batched: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode a JSON call for a bound method, bind it to the method's signature and convert each
    value to its annotated type; raises ArgumentError when the call does not fit."""
    args, kwargs = parse_call(data)
    signature = inspect.signature(function)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as err:
        raise ArgumentError(str(err)) from None
    hints = _hints(function)
    for name, value in bound.arguments.items():
        parameter = signature.parameters[name]
        annotation = hints.get(name, Any)
        if batched:
            annotation = _element(annotation)
        if parameter.kind == inspect.Parameter.VAR_POSITIONAL:
            bound.arguments[name] = tuple(convert(item, annotation, name) for item in value)
        elif parameter.kind == inspect.Parameter.VAR_KEYWORD:
            bound.arguments[name] = {key: convert(item, annotation, key) for key, item in value.items()}
        else:
            bound.arguments[name] = convert(value, annotation, name)
    return bound.args, bound.kwargs


def convert(value: Any, annotation: Any, name: str) -> Any:
    """A JSON value as the annotated Python type, where that is unambiguous."""
    annotation, nullable = _unwrap_optional(annotation)
    if value is None:
        if nullable or annotation is Any or annotation is type(None):
            return None
        kind, _ = argument_type(annotation)
        if kind != common_pb2.ARGUMENT_TYPE_UNSPECIFIED:
            raise ArgumentError(f"argument {name!r} must not be null")
        return None
    origin = typing.get_origin(annotation) or annotation
    items = typing.get_args(annotation)
    if origin is bool:
        if not isinstance(value, bool):
            raise ArgumentError(f"argument {name!r} must be true or false, got {json.dumps(value)[:40]}")
        return value
    if origin is int:
        number = integer_from_json(value)
        if number is None:
            raise ArgumentError(f"argument {name!r} must be an integer, got {json.dumps(value)[:40]}")
        return number
    if origin is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentError(f"argument {name!r} must be a number, got {json.dumps(value)[:40]}")
        return float(value)
    if origin is str:
        if not isinstance(value, str):
            raise ArgumentError(f"argument {name!r} must be a string, got {json.dumps(value)[:40]}")
        return value
    if origin in (bytes, bytearray):
        data = bytes_from_json(value)
        if data is None:
            raise ArgumentError(f"argument {name!r} must be a base64 string")
        return origin(data)
    if origin in _SEQUENCES:
        if not isinstance(value, list):
            raise ArgumentError(f"argument {name!r} must be an array")
        if origin is tuple and items and items[-1] is not Ellipsis:
            if len(items) != len(value):
                raise ArgumentError(f"argument {name!r} must be an array of {len(items)} items")
            return tuple(convert(v, a, name) for v, a in zip(value, items, strict=True))
        element = items[0] if items else Any
        return origin(convert(v, element, name) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ArgumentError(f"argument {name!r} must be an object")
        element = items[1] if len(items) == 2 else Any
        return {k: convert(v, element, name) for k, v in value.items()}
    if _is_model(annotation):
        if not isinstance(value, dict):
            raise ArgumentError(f"argument {name!r} must be an object")
        try:
            return annotation.model_validate(value)
        except Exception as err:
            raise ArgumentError(f"argument {name!r} is not a valid {annotation.__name__}: {err}") from None
    return value


def to_json(value: Any, what: str = "the return value") -> bytes:
    """Encode a value as JSON: bytes as base64, tuples and sets as arrays, dataclasses and pydantic
    models as objects, dates as ISO 8601. Raises TypeError naming the first type JSON cannot hold."""

    def default(item: Any) -> Any:
        if isinstance(item, (bytes, bytearray, memoryview)):
            return base64.b64encode(bytes(item)).decode()
        if isinstance(item, (set, frozenset, tuple)):
            return list(item)
        if hasattr(item, "model_dump"):  # pydantic v2
            return item.model_dump(mode="json")
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return dataclasses.asdict(item)
        if isinstance(item, (datetime.datetime, datetime.date, datetime.time)):
            return item.isoformat()
        kind = type(item)
        raise TypeError(
            f"{what} cannot be encoded as JSON: it holds a {kind.__module__}.{kind.__qualname__}; return str, int, float, "
            "bool, None, bytes, lists, dicts with string keys, dataclasses or pydantic models (or call it from Python)"
        )

    try:
        return json.dumps(value, default=default, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as err:  # NaN or infinity: JSON has no spelling for them
        if _has_non_finite(value):
            raise TypeError(f"{what} cannot be encoded as JSON: it holds a float NaN or infinity, which JSON cannot represent") from None
        raise TypeError(f"{what} cannot be encoded as JSON: {err}") from None


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


def exception_to_json(exc: BaseException, traceback: str) -> bytes:
    """The JSON form of a user exception: `{"type", "qualified_type", "message"}`, plus
    "traceback" when one is given (dev mode only)."""
    kind = type(exc)
    body: dict[str, Any] = {"type": kind.__name__, "qualified_type": f"{kind.__module__}.{kind.__qualname__}", "message": str(exc)}
    if traceback:
        body["traceback"] = traceback
    return json.dumps(body, separators=(",", ":")).encode()
