"""The shared rules in `corral_protocol`: option semantics, parameter kinds and error reasons."""

from __future__ import annotations

import pytest

from corral_protocol import errors, options, parameters
from corral_protocol.v1 import common_pb2

S = common_pb2


def test_effective_timeout_and_max_inputs_have_defaults() -> None:
    assert options.effective_timeout_s(S.ServiceOptions()) == options.DEFAULT_TIMEOUT_S == 300.0
    assert options.effective_timeout_s(S.ServiceOptions(timeout_s=12)) == 12
    assert options.effective_max_inputs(S.ServiceOptions()) == 1
    assert options.effective_max_inputs(S.ServiceOptions(concurrency=S.ConcurrencyConfig(max_inputs=8))) == 8


def _class(batching: S.BatchingConfig | None = None) -> S.ClassDef:
    method = S.MethodDef(name="embed")
    if batching is not None:
        method.batching.CopyFrom(batching)
    return S.ClassDef(name="Model", methods=[method])


def test_with_batching_wins_over_the_decorator() -> None:
    decorated = S.BatchingConfig(max_batch_size=4, wait_ms=10)
    service = S.BatchingConfig(max_batch_size=32, wait_ms=100)
    assert options.batched_method(_class(), S.ServiceOptions()) is None
    assert options.batched_method(_class(decorated), S.ServiceOptions()) == ("embed", decorated)
    assert options.batched_method(_class(decorated), S.ServiceOptions(batching=service)) == ("embed", service)
    assert options.batched_method(_class(), S.ServiceOptions(batching=service)) == ("embed", service)


def test_a_batched_method_must_be_alone() -> None:
    assert options.batching_violation("M", ["f"], ["f"]) is None
    assert options.batching_violation("M", ["f"], with_batching=True) is None
    assert "only method (it also has g)" in (options.batching_violation("M", ["f", "g"], ["f"]) or "")
    assert "exactly one method; M has f, g" in (options.batching_violation("M", ["f", "g"], with_batching=True) or "")
    assert options.batching_violation("M", ["f", "g"]) is None


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (S.PARAMETER_TYPE_STRING, "x", S.ParameterValue(string_value="x")),
        (S.PARAMETER_TYPE_INT, "-7", S.ParameterValue(int_value=-7)),
        (S.PARAMETER_TYPE_BOOL, "Yes", S.ParameterValue(bool_value=True)),
        (S.PARAMETER_TYPE_BOOL, "off", S.ParameterValue(bool_value=False)),
        (S.PARAMETER_TYPE_BYTES, "ab", S.ParameterValue(bytes_value=b"ab")),
    ],
)
def test_parameters_parse_from_strings(kind: S.ParameterType.ValueType, raw: str, expected: S.ParameterValue) -> None:
    value = parameters.parse_parameter(kind, raw)
    assert value == expected
    assert parameters.matches(kind, value)


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        (S.PARAMETER_TYPE_INT, "1.5", "must be an integer"),
        (S.PARAMETER_TYPE_INT, str(2**63), "must fit in 64 bits"),
        (S.PARAMETER_TYPE_BOOL, "maybe", "must be true or false"),
    ],
)
def test_bad_parameter_strings_are_refused(kind: S.ParameterType.ValueType, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parameters.parse_parameter(kind, raw)


def test_parameter_values_round_trip_in_canonical_order() -> None:
    wire = parameters.encode_parameters({"b": b"x", "a": 1, "c": True, "d": "s"})
    assert [p.name for p in wire] == ["a", "b", "c", "d"]
    assert parameters.decode_parameters(wire) == {"a": 1, "b": b"x", "c": True, "d": "s"}
    assert not parameters.matches(S.PARAMETER_TYPE_INT, S.ParameterValue(bool_value=True))
    assert parameters.parameter_type(bool) == S.PARAMETER_TYPE_BOOL
    assert parameters.parameter_type(float) == S.PARAMETER_TYPE_FLOAT
    assert parameters.parameter_type(list) is None


def test_float_parameters_have_one_canonical_finite_form() -> None:
    assert parameters.encode_value(0.7) == S.ParameterValue(float_value=0.7)
    negative_zero = parameters.encode_value(-0.0)
    assert negative_zero.SerializeToString(deterministic=True) == parameters.encode_value(0.0).SerializeToString(deterministic=True)
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(TypeError, match="finite"):
            parameters.encode_value(bad)
    assert parameters.parse_parameter(S.PARAMETER_TYPE_FLOAT, "0.25") == S.ParameterValue(float_value=0.25)
    assert parameters.parse_parameter(S.PARAMETER_TYPE_FLOAT, "3") == S.ParameterValue(float_value=3.0)
    for raw, message in (("nan", "finite"), ("inf", "finite"), ("warm", "must be a number")):
        with pytest.raises(ValueError, match=message):
            parameters.parse_parameter(S.PARAMETER_TYPE_FLOAT, raw)
    # What the control plane checks for every bound parameter (third-party clients included).
    canonical = parameters.canonical(S.PARAMETER_TYPE_FLOAT, S.ParameterValue(float_value=-0.0))
    assert canonical.SerializeToString(deterministic=True) == S.ParameterValue(float_value=0.0).SerializeToString(deterministic=True)
    with pytest.raises(ValueError, match="finite"):
        parameters.canonical(S.PARAMETER_TYPE_FLOAT, S.ParameterValue(float_value=float("nan")))
    with pytest.raises(ValueError, match="expects float"):
        parameters.canonical(S.PARAMETER_TYPE_FLOAT, S.ParameterValue(int_value=1))


def test_error_reasons_travel_in_trailing_metadata() -> None:
    trailers = errors.reason_metadata(S.ERROR_REASON_SERVICE_GONE)
    assert trailers == (("corral-error-reason", "ERROR_REASON_SERVICE_GONE"),)
    assert errors.error_reason(trailers) == S.ERROR_REASON_SERVICE_GONE
    assert errors.reason_metadata(S.ERROR_REASON_UNSPECIFIED) == ()
    assert errors.error_reason(None) == S.ERROR_REASON_UNSPECIFIED
    assert errors.error_reason((("corral-error-reason", "ERROR_REASON_FROM_THE_FUTURE"),)) == S.ERROR_REASON_UNSPECIFIED
