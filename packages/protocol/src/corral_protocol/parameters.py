"""Class parameters on the wire: their kinds, their typed values, and their parsing from strings.

A parameter's `ParameterType` decides which field of `ParameterValue` carries it and which Python
type it has. The SDK encodes values, the control plane checks them against the schema, the web
gateway parses them from query strings and the worker decodes them: all with these functions.

Example:
    value = parse_parameter(common_pb2.PARAMETER_TYPE_INT, "32")   # ParameterValue(int_value=32)
    decode_value(value)                                            # 32
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from corral_protocol.v1 import common_pb2

PYTHON_TYPES: dict[common_pb2.ParameterType.ValueType, type] = {
    common_pb2.PARAMETER_TYPE_STRING: str,
    common_pb2.PARAMETER_TYPE_INT: int,
    common_pb2.PARAMETER_TYPE_BOOL: bool,
    common_pb2.PARAMETER_TYPE_BYTES: bytes,
    common_pb2.PARAMETER_TYPE_FLOAT: float,
}
"""The Python type of each parameter kind."""

VALUE_FIELDS: dict[common_pb2.ParameterType.ValueType, str] = {
    common_pb2.PARAMETER_TYPE_STRING: "string_value",
    common_pb2.PARAMETER_TYPE_INT: "int_value",
    common_pb2.PARAMETER_TYPE_BOOL: "bool_value",
    common_pb2.PARAMETER_TYPE_BYTES: "bytes_value",
    common_pb2.PARAMETER_TYPE_FLOAT: "float_value",
}
"""The `ParameterValue` field (its `kind` oneof) that carries each parameter kind."""

INT64_RANGE = (-(2**63), 2**63 - 1)
"""Integer parameters travel as int64."""

TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})
FALSE_STRINGS = frozenset({"0", "false", "no", "off"})
"""How a bool is written in a string (a query string), compared case-insensitively."""


def parameter_type(py_type: Any) -> common_pb2.ParameterType.ValueType | None:
    """The parameter kind of a Python type, or None when parameters cannot have that type."""
    for kind, candidate in PYTHON_TYPES.items():
        if py_type is candidate:
            return kind
    return None


def matches(kind: common_pb2.ParameterType.ValueType, value: common_pb2.ParameterValue) -> bool:
    """Whether `value` is a value of parameter kind `kind`."""
    return value.WhichOneof("kind") == VALUE_FIELDS.get(kind)


def float_problem(value: float) -> str | None:
    """Why a float cannot be a parameter value (NaN is not equal to itself, so it could not name one
    service; the infinities are refused with it), or None."""
    if math.isnan(value) or math.isinf(value):
        return f"must be a finite number, got {value!r}"
    return None


def canonical(kind: common_pb2.ParameterType.ValueType, value: common_pb2.ParameterValue) -> common_pb2.ParameterValue:
    """`value` in its one canonical form for kind `kind` (a float's -0.0 becomes 0.0, so a value
    names one service); ValueError, completing "parameter 'name' ...", when it is not a valid value."""
    if not matches(kind, value):
        raise ValueError(f"expects {getattr(PYTHON_TYPES.get(kind), '__name__', 'a known type')}")
    if kind == common_pb2.PARAMETER_TYPE_FLOAT:
        problem = float_problem(value.float_value)
        if problem:
            raise ValueError(problem)
        return common_pb2.ParameterValue(float_value=value.float_value + 0.0)
    return value


def parse_bool(raw: str) -> bool:
    """A bool written in a string; ValueError for anything but the accepted spellings."""
    lowered = raw.lower()
    if lowered in TRUE_STRINGS:
        return True
    if lowered in FALSE_STRINGS:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def parse_parameter(kind: common_pb2.ParameterType.ValueType, raw: str) -> common_pb2.ParameterValue:
    """A parameter value of kind `kind` parsed from a string (a query string); ValueError, with a
    message that completes "parameter 'name' ...", when the string is not one."""
    if kind == common_pb2.PARAMETER_TYPE_INT:
        try:
            number = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not INT64_RANGE[0] <= number <= INT64_RANGE[1]:
            raise ValueError(f"must fit in 64 bits, got {raw!r}")
        return common_pb2.ParameterValue(int_value=number)
    if kind == common_pb2.PARAMETER_TYPE_BOOL:
        return common_pb2.ParameterValue(bool_value=parse_bool(raw))
    if kind == common_pb2.PARAMETER_TYPE_FLOAT:
        try:
            real = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        problem = float_problem(real)
        if problem:
            raise ValueError(problem)
        return common_pb2.ParameterValue(float_value=real + 0.0)
    if kind == common_pb2.PARAMETER_TYPE_BYTES:
        return common_pb2.ParameterValue(bytes_value=raw.encode())
    return common_pb2.ParameterValue(string_value=raw)


def encode_value(value: Any) -> common_pb2.ParameterValue:
    """The typed wire form of a Python parameter value; TypeError for an unsupported type."""
    if isinstance(value, bool):
        return common_pb2.ParameterValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.ParameterValue(int_value=value)
    if isinstance(value, str):
        return common_pb2.ParameterValue(string_value=value)
    if isinstance(value, bytes):
        return common_pb2.ParameterValue(bytes_value=value)
    if isinstance(value, float):
        problem = float_problem(value)
        if problem:
            raise TypeError(f"cannot encode parameter value {value!r}: {problem}")
        # -0.0 + 0.0 is 0.0: one value, one serialized form, one service id.
        return common_pb2.ParameterValue(float_value=value + 0.0)
    raise TypeError(f"cannot encode parameter value {value!r}")


def decode_value(value: common_pb2.ParameterValue) -> Any:
    """The Python value of a typed parameter value; ValueError when it is empty."""
    kind = value.WhichOneof("kind")
    if kind is None:
        raise ValueError("parameter value is empty")
    return getattr(value, kind)


def encode_parameters(bound: Mapping[str, Any]) -> list[common_pb2.NamedParameter]:
    """A parameter set in its canonical wire form: sorted by name (the service id depends on it)."""
    return [common_pb2.NamedParameter(name=k, value=encode_value(bound[k])) for k in sorted(bound)]


def decode_parameters(params: Iterable[common_pb2.NamedParameter]) -> dict[str, Any]:
    """A parameter set's Python values by name."""
    return {p.name: decode_value(p.value) for p in params}
