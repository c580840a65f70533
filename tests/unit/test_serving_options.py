"""`@corral.concurrent`, `@corral.batched` and `with_batching`: misuse is refused at definition time."""

from __future__ import annotations

import pytest

import corral
from corral.exception import InvalidError


def test_concurrent_decorator_sets_the_class_concurrency() -> None:
    app = corral.App("unit")

    @app.cls()
    @corral.concurrent(max_inputs=8, target_inputs=6)
    class Server:
        @corral.method()
        def f(self) -> None: ...

    assert Server.definition is not None
    concurrency = Server.definition.options.concurrency
    assert (concurrency.max_inputs, concurrency.target_inputs) == (8, 6)


@pytest.mark.parametrize(("max_inputs", "target"), [(0, None), (1001, None), (4, 5), (True, None)])
def test_concurrent_limits_are_validated(max_inputs: int, target: int | None) -> None:
    with pytest.raises(InvalidError, match="max_inputs|target_inputs"):
        corral.concurrent(max_inputs=max_inputs, target_inputs=target)


def test_concurrent_above_app_cls_is_refused() -> None:
    app = corral.App("unit")

    @app.cls()
    class Server:
        @corral.method()
        def f(self) -> None: ...

    with pytest.raises(InvalidError, match="below @app.cls"):
        corral.concurrent(max_inputs=2)(Server)  # type: ignore[arg-type]


def test_batched_method_records_its_config_alone_or_stacked_with_method() -> None:
    app = corral.App("unit")

    @app.cls()
    class Alone:
        @corral.batched(max_batch_size=8, wait_ms=5)
        def embed(self, xs: list[str]) -> list[int]:
            return [len(x) for x in xs]

    @app.cls()
    class Stacked:
        @corral.method()
        @corral.batched(max_batch_size=4, wait_ms=0)
        def embed(self, xs: list[str]) -> list[int]:
            return [len(x) for x in xs]

    for cls, size in ((Alone, 8), (Stacked, 4)):
        assert cls.definition is not None
        (method,) = cls.definition.to_proto().methods
        assert method.name == "embed" and method.batching.max_batch_size == size


@pytest.mark.parametrize(("size", "wait"), [(0, 10), (1001, 10), (4, -1), (True, 10)])
def test_batch_limits_are_validated(size: int, wait: int) -> None:
    with pytest.raises(InvalidError, match="max_batch_size|wait_ms"):
        corral.batched(max_batch_size=size, wait_ms=wait)


def test_a_batched_method_beside_other_methods_is_refused() -> None:
    app = corral.App("unit")
    with pytest.raises(InvalidError, match="must be the class's only method"):
        @app.cls()
        class Mixed:
            @corral.batched(max_batch_size=4, wait_ms=5)
            def embed(self, xs: list[str]) -> list[int]:
                return [len(x) for x in xs]

            @corral.method()
            def other(self) -> None: ...


def test_a_batched_generator_is_refused() -> None:
    app = corral.App("unit")
    with pytest.raises(InvalidError, match="generator"):
        @app.cls()
        class Gen:
            @corral.batched(max_batch_size=4, wait_ms=5)
            def embed(self, xs: list[str]):  # type: ignore[no-untyped-def]
                yield from xs


def test_a_batched_method_needs_named_arguments() -> None:
    with pytest.raises(InvalidError, match="named arguments"):
        corral.batched(max_batch_size=4, wait_ms=5)(lambda self, *xs: xs)
    with pytest.raises(InvalidError, match="named arguments"):
        def only_self(self):  # type: ignore[no-untyped-def]
            return []
        corral.batched(max_batch_size=4, wait_ms=5)(only_self)


def test_with_batching_needs_a_single_method_class() -> None:
    app = corral.App("unit")

    @app.cls()
    class Two:
        @corral.method()
        def a(self, xs: list[int]) -> list[int]:
            return xs

        @corral.method()
        def b(self) -> None: ...

    with pytest.raises(InvalidError, match="exactly one method"):
        Two.with_batching(max_batch_size=4, wait_ms=5)
