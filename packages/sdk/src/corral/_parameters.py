"""`corral.parameter()` fields: their schema and validation. Their kinds and typed wire encoding
are the protocol's (`corral_protocol.parameters`)."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.exception import InvalidError
from corral_protocol import parameters as wire
from corral_protocol.v1 import common_pb2

_MISSING: Any = object()

_TYPES: dict[type, common_pb2.ParameterType.ValueType] = {py_type: kind for kind, py_type in wire.PYTHON_TYPES.items()}
_INT64 = wire.INT64_RANGE


class _Parameter:
    """The marker `parameter()` leaves on the class until `@app.cls` reads it."""

    def __init__(self, default: Any) -> None:
        self.default = default

    def __repr__(self) -> str:
        return "corral.parameter()" if self.default is _MISSING else f"corral.parameter(default={self.default!r})"


def parameter(*, default: Any = _MISSING, init: bool = True) -> Any:
    """Declare a class parameter: a typed field set when the class is instantiated.

    Supported types are str, int, float, bool and bytes. Each parameter set gets its own containers.

    Example:
        @app.cls()
        class Model:
            model_id: str = corral.parameter()
            batch_size: int = corral.parameter(default=32)

        Model(model_id="gpt2").predict.remote("hello")
    """
    if not init:
        raise InvalidError("parameter(init=False) is not supported")
    return _Parameter(default)


@dataclass(frozen=True)
class ParameterField:
    name: str
    type: type
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def to_proto(self) -> common_pb2.ParameterSpec:
        spec = common_pb2.ParameterSpec(name=self.name, type=_TYPES[self.type], has_default=not self.required)
        if not self.required:
            spec.default.CopyFrom(encode_value(self.default))
        return spec

    @classmethod
    def from_proto(cls, spec: common_pb2.ParameterSpec) -> ParameterField:
        py_type = wire.PYTHON_TYPES[spec.type]
        return cls(spec.name, py_type, decode_value(spec.default) if spec.has_default else _MISSING)


def collect_parameters(user_cls: type) -> list[ParameterField]:
    """Read `parameter()` fields from a class and its bases, refusing unsupported types."""
    fields: dict[str, ParameterField] = {}
    for klass in reversed(user_cls.__mro__):
        raw_annotations = klass.__dict__.get("__annotations__", {})
        for name, value in klass.__dict__.items():
            if not isinstance(value, _Parameter):
                continue
            if name not in raw_annotations:
                raise InvalidError(f"parameter {klass.__qualname__}.{name} needs a type annotation (str, int, float, bool or bytes)")
            py_type = _resolve_annotation(klass, name, raw_annotations[name])
            if py_type not in _TYPES:
                raise InvalidError(
                    f"parameter {klass.__qualname__}.{name} has type {getattr(py_type, '__name__', py_type)!s}; "
                    "parameters must be str, int, float, bool or bytes"
                )
            if value.default is not _MISSING:
                _check_type(name, py_type, value.default, "default")
            default = float(value.default) if py_type is float and value.default is not _MISSING else value.default
            fields[name] = ParameterField(name, py_type, default)
    return list(fields.values())


def _resolve_annotation(klass: type, name: str, annotation: Any) -> Any:
    if isinstance(annotation, str):
        try:
            return typing.get_type_hints(klass)[name]
        except Exception:
            builtin = {t.__name__: t for t in _TYPES}
            return builtin.get(annotation, annotation)
    return annotation


def _check_type(name: str, py_type: type, value: Any, what: str = "value") -> None:
    if py_type is float and type(value) is int:
        value = float(value)  # an int where a float is declared is that float, as in Python's typing
    ok = type(value) is bool if py_type is bool else isinstance(value, py_type) and not isinstance(value, bool)
    if not ok:
        raise InvalidError(f"parameter {name!r} expects {py_type.__name__}, got {what} {value!r} ({type(value).__name__})")
    if py_type is int and not _INT64[0] <= value <= _INT64[1]:
        raise InvalidError(f"parameter {name!r} must fit in 64 bits, got {value}")
    problem = wire.float_problem(value) if py_type is float else None
    if problem:
        raise InvalidError(f"parameter {name!r} {problem}")


def bind_parameters(fields: list[ParameterField], args: tuple[Any, ...], kwargs: Mapping[str, Any], class_name: str) -> dict[str, Any]:
    """Check a constructor call against the schema and return the full parameter set."""
    if args:
        raise InvalidError(f"{class_name}() takes parameters by keyword only, e.g. {class_name}(name=...)")
    by_name = {f.name: f for f in fields}
    extra = sorted(set(kwargs) - set(by_name))
    if extra:
        known = ", ".join(by_name) or "none"
        raise InvalidError(f"{class_name}() got unknown parameter(s) {', '.join(extra)}; its parameters are: {known}")
    missing = [f.name for f in fields if f.required and f.name not in kwargs]
    if missing:
        raise InvalidError(f"{class_name}() is missing required parameter(s): {', '.join(missing)}")
    bound: dict[str, Any] = {}
    for f in fields:
        value = kwargs.get(f.name, f.default)
        _check_type(f.name, f.type, value)
        bound[f.name] = float(value) if f.type is float else value
    return bound


def encode_value(value: Any) -> common_pb2.ParameterValue:
    try:
        return wire.encode_value(value)
    except TypeError as err:
        raise InvalidError(str(err)) from None


def decode_value(value: common_pb2.ParameterValue) -> Any:
    try:
        return wire.decode_value(value)
    except ValueError as err:
        raise InvalidError(str(err)) from None


def encode_parameters(bound: Mapping[str, Any]) -> list[common_pb2.NamedParameter]:
    """The parameter set in its canonical wire form: sorted by name."""
    try:
        return wire.encode_parameters(bound)
    except TypeError as err:
        raise InvalidError(str(err)) from None


def decode_parameters(params: typing.Iterable[common_pb2.NamedParameter]) -> dict[str, Any]:
    try:
        return wire.decode_parameters(params)
    except ValueError as err:
        raise InvalidError(str(err)) from None
