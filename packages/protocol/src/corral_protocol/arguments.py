"""Calls in JSON: the payload's shape, and its check against a method's `MethodSignature`.

One rule for both ends: the control plane checks a JSON call against the class definition before
any container starts, and the SDK's container side applies the same shape when it decodes the
call. A call that does not fit is answered with `RESULT_STATUS_INVALID_ARGUMENT` (`refusal`); no user
code runs. A payload format other than PICKLE or JSON is refused before that (`format_problem`).

docs/protocol.md describes the rules for client authors.

Example:
    refused = refusal(class_def, "predict", payload)
    if refused is not None:
        ...  # answer the call with `refused`, start nothing
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from corral_protocol.v1 import common_pb2

CALLABLE_FORMATS = (common_pb2.PAYLOAD_FORMAT_PICKLE, common_pb2.PAYLOAD_FORMAT_JSON)
"""The payload formats a call's arguments may have."""

MAX_SAFE_INTEGER = 2**53
"""Beyond this, JSON numbers lose precision in many languages (JavaScript's `Number`): such
integers may also travel as strings of decimal digits."""

_DECIMAL = re.compile(r"^-?[0-9]+$")
_KIND = common_pb2.ArgumentKind
_TYPE = common_pb2.ArgumentType


class ArgumentError(ValueError):
    """The arguments of a call do not fit its method, or its JSON is malformed."""


def format_problem(payload: common_pb2.Payload) -> str | None:
    """Why a call's argument payload cannot be decoded at all (its format), or None."""
    if payload.format == common_pb2.PAYLOAD_FORMAT_UNSPECIFIED:
        return "the arguments' payload format is unset; set Payload.format to PAYLOAD_FORMAT_JSON (or PICKLE from Python)"
    if payload.format not in CALLABLE_FORMATS:
        name = common_pb2.PayloadFormat.Name(payload.format) if payload.format in common_pb2.PayloadFormat.values() else str(payload.format)
        return f"payload format {name} is not supported; use PAYLOAD_FORMAT_JSON (or PICKLE from Python)"
    return None


def parse_call(data: bytes) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of a JSON call, `{"args": [...], "kwargs": {...}}`.

    Both keys are optional; an empty payload is a call without arguments."""
    try:
        body = json.loads(data) if data.strip() else {}
    except (UnicodeDecodeError, ValueError) as err:
        raise ArgumentError(f"malformed JSON arguments: {err}") from None
    if not isinstance(body, dict):
        raise ArgumentError(f'JSON arguments must be an object {{"args": [...], "kwargs": {{...}}}}, got {_json_name(body)}')
    unknown = sorted(set(body) - {"args", "kwargs"})
    if unknown:
        raise ArgumentError(f'JSON arguments have unknown key(s) {", ".join(map(repr, unknown))}; only "args" and "kwargs" are allowed')
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(args, list):
        raise ArgumentError(f'"args" must be an array, got {_json_name(args)}')
    if not isinstance(kwargs, dict):
        raise ArgumentError(f'"kwargs" must be an object, got {_json_name(kwargs)}')
    return args, kwargs


def bind(signature: common_pb2.MethodSignature, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Assign the arguments to the signature's names as Python would, checking each value's JSON
    type; returns {name: value} (extra positional and keyword arguments under the var names)."""
    specs = list(signature.arguments)
    positional = [s for s in specs if s.kind in (_KIND.ARGUMENT_KIND_POSITIONAL_ONLY, _KIND.ARGUMENT_KIND_POSITIONAL_OR_KEYWORD)]
    var_positional = next((s for s in specs if s.kind == _KIND.ARGUMENT_KIND_VAR_POSITIONAL), None)
    var_keyword = next((s for s in specs if s.kind == _KIND.ARGUMENT_KIND_VAR_KEYWORD), None)
    bound: dict[str, Any] = {}
    if len(args) > len(positional) and var_positional is None:
        raise ArgumentError(f"takes {len(positional)} positional argument(s) but {len(args)} were given")
    for spec, value in zip(positional, args, strict=False):
        bound[spec.name] = value
    by_name = {s.name: s for s in specs if s.kind in (_KIND.ARGUMENT_KIND_POSITIONAL_OR_KEYWORD, _KIND.ARGUMENT_KIND_KEYWORD_ONLY)}
    extra_keywords: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in by_name:
            if name in bound:
                raise ArgumentError(f"got multiple values for argument {name!r}")
            bound[name] = value
        elif var_keyword is not None:
            extra_keywords[name] = value
        elif any(s.name == name for s in positional):
            raise ArgumentError(f"argument {name!r} is positional-only; pass it in \"args\"")
        else:
            raise ArgumentError(f"got an unexpected keyword argument {name!r}")
    missing = [
        s.name for s in specs
        if s.kind not in (_KIND.ARGUMENT_KIND_VAR_POSITIONAL, _KIND.ARGUMENT_KIND_VAR_KEYWORD)
        and not s.has_default and s.name not in bound
    ]
    if missing:
        raise ArgumentError(f"missing required argument(s) {', '.join(map(repr, missing))}")
    for spec in specs:
        if spec.name in bound:
            check_type(spec, bound[spec.name])
    if var_positional is not None:
        bound[var_positional.name] = args[len(positional):]
        for value in bound[var_positional.name]:
            check_type(var_positional, value)
    if var_keyword is not None:
        bound[var_keyword.name] = extra_keywords
        for value in extra_keywords.values():
            check_type(var_keyword, value)
    return bound


def check_type(spec: common_pb2.ArgumentSpec, value: Any) -> None:
    """Raise ArgumentError when a JSON value cannot be the argument's type."""
    if value is None:
        if spec.nullable or spec.type == _TYPE.ARGUMENT_TYPE_UNSPECIFIED:
            return
        raise ArgumentError(f"argument {spec.name!r} must be {_expected(spec.type)}, got null")
    if not _fits(spec.type, value):
        raise ArgumentError(f"argument {spec.name!r} must be {_expected(spec.type)}{' or null' if spec.nullable else ''}, got {_json_name(value)}")


def _fits(kind: int, value: Any) -> bool:
    if kind == _TYPE.ARGUMENT_TYPE_STRING:
        return isinstance(value, str)
    if kind == _TYPE.ARGUMENT_TYPE_INTEGER:
        return integer_from_json(value) is not None
    if kind == _TYPE.ARGUMENT_TYPE_NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _TYPE.ARGUMENT_TYPE_BOOLEAN:
        return isinstance(value, bool)
    if kind == _TYPE.ARGUMENT_TYPE_BYTES:
        return bytes_from_json(value) is not None
    if kind == _TYPE.ARGUMENT_TYPE_ARRAY:
        return isinstance(value, list)
    if kind == _TYPE.ARGUMENT_TYPE_OBJECT:
        return isinstance(value, dict)
    return True


def integer_from_json(value: Any) -> int | None:
    """An integer from a JSON integer, an integral number within 2^53, or a string of decimal digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, str) and _DECIMAL.match(value):
        return int(value)
    return None


def bytes_from_json(value: Any) -> bytes | None:
    """Bytes from a standard, padded base64 string."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def refusal(class_def: common_pb2.ClassDef, method: str, payload: common_pb2.Payload) -> common_pb2.Result | None:
    """The RESULT_STATUS_INVALID_ARGUMENT answer to a JSON call whose arguments do not fit the
    method's signature (or whose JSON is malformed); None when it fits, when the arguments are not
    JSON, or when the definition carries no signature (then the container checks)."""
    if payload.format != common_pb2.PAYLOAD_FORMAT_JSON:
        return None
    found = next((m for m in class_def.methods if m.name == method), None)
    if found is None or not found.HasField("signature"):
        return None
    try:
        args, kwargs = parse_call(payload.data)
        bind(found.signature, args, kwargs)
    except ArgumentError as err:
        return invalid_argument(f"{class_def.name}.{method}: {err}")
    return None


def invalid_argument(message: str) -> common_pb2.Result:
    """A RESULT_STATUS_INVALID_ARGUMENT Result."""
    return common_pb2.Result(status=common_pb2.RESULT_STATUS_INVALID_ARGUMENT, message=message)


def _expected(kind: int) -> str:
    names: dict[int, str] = {
        _TYPE.ARGUMENT_TYPE_STRING: "a string",
        _TYPE.ARGUMENT_TYPE_INTEGER: "an integer (a JSON integer or a string of decimal digits)",
        _TYPE.ARGUMENT_TYPE_NUMBER: "a number",
        _TYPE.ARGUMENT_TYPE_BOOLEAN: "true or false",
        _TYPE.ARGUMENT_TYPE_BYTES: "a base64 string",
        _TYPE.ARGUMENT_TYPE_ARRAY: "an array",
        _TYPE.ARGUMENT_TYPE_OBJECT: "an object",
    }
    return names.get(kind, "a JSON value")


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
