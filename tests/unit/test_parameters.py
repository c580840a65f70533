"""Parameter binding and its typed wire encoding."""

from __future__ import annotations

import pytest

import corral
from corral._parameters import ParameterField, bind_parameters, decode_parameters, encode_parameters
from corral.exception import InvalidError

FIELDS = [ParameterField("name", str), ParameterField("size", int, 32), ParameterField("flag", bool, False), ParameterField("blob", bytes, b"")]


def test_binding_fills_defaults_and_round_trips_through_the_wire() -> None:
    bound = bind_parameters(FIELDS, (), {"name": "gpt2", "blob": b"\x00"}, "Model")
    assert bound == {"name": "gpt2", "size": 32, "flag": False, "blob": b"\x00"}
    encoded = encode_parameters(bound)
    assert [p.name for p in encoded] == sorted(bound)
    assert decode_parameters(encoded) == bound


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing required parameter.*name"),
        ((), {"name": "a", "colour": "red"}, "unknown parameter.*colour"),
        ((), {"name": 3}, "expects str"),
        ((), {"name": "a", "size": True}, "expects int"),
        ((), {"name": "a", "flag": 1}, "expects bool"),
        ((), {"name": "a", "size": 2**64}, "64 bits"),
        (("a",), {}, "keyword only"),
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        bind_parameters(FIELDS, args, kwargs, "Model")


def test_same_parameters_encode_identically_whatever_the_order() -> None:
    a = encode_parameters({"b": 1, "a": "x"})
    b = encode_parameters({"a": "x", "b": 1})
    assert [p.SerializeToString(deterministic=True) for p in a] == [p.SerializeToString(deterministic=True) for p in b]


def test_string_annotations_are_resolved() -> None:
    app = corral.App("unit")
    namespace: dict = {}
    exec(
        "from __future__ import annotations\n"
        "import corral\n"
        "class Model:\n"
        "    name: str = corral.parameter()\n"
        "    @corral.method()\n"
        "    def f(self): ...\n",
        namespace,
    )
    handle = app.cls()(namespace["Model"])
    assert handle.definition is not None
    assert [(p.name, p.type) for p in handle.definition.parameters] == [("name", str)]
