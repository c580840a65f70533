"""Decoration-time validation: misuse is refused with a clear message, before anything runs."""

from __future__ import annotations

import pytest

import corral
from corral.exception import InvalidError


def make_app() -> corral.App:
    return corral.App("unit")


def test_custom_init_is_refused_with_a_pointer_to_parameter() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match=r"parameter\(\)"):
        @app.cls()
        class WithInit:
            def __init__(self) -> None:
                pass

            @corral.method()
            def f(self) -> None: ...


@pytest.mark.parametrize("annotation", [list, dict, complex])
def test_unsupported_parameter_types_are_refused(annotation: type) -> None:
    app = make_app()
    with pytest.raises(InvalidError, match="str, int, float, bool or bytes"):
        app.cls()(type("Bad", (), {"__annotations__": {"x": annotation}, "x": corral.parameter(), "f": corral.method()(lambda self: 1)}))


def test_float_parameters_take_ints_and_refuse_nan() -> None:
    app = make_app()

    @app.cls()
    class Sampler:
        temperature: float = corral.parameter(default=0.7)

        @corral.method()
        def f(self) -> None: ...

    (field,) = Sampler.definition.parameters
    assert field.type is float and field.default == 0.7
    from corral._parameters import bind_parameters

    assert bind_parameters([field], (), {"temperature": 1}, "Sampler") == {"temperature": 1.0}
    with pytest.raises(InvalidError, match="finite"):
        bind_parameters([field], (), {"temperature": float("nan")}, "Sampler")
    with pytest.raises(InvalidError, match="expects float"):
        bind_parameters([field], (), {"temperature": "hot"}, "Sampler")


def test_parameter_default_of_wrong_type_is_refused() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match="expects int"):
        @app.cls()
        class Bad:
            n: int = corral.parameter(default="three")

            @corral.method()
            def f(self) -> None: ...


def test_snap_hook_needs_memory_snapshots_enabled() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match="enable_memory_snapshot"):
        @app.cls()
        class Snappy:
            @corral.enter(snap=True)
            def load(self) -> None: ...

            @corral.method()
            def f(self) -> None: ...


def test_hook_that_is_also_a_method_is_refused() -> None:
    with pytest.raises(InvalidError, match="both a lifecycle hook and a @method"):
        corral.method()(corral.enter()(lambda self: None))
    with pytest.raises(InvalidError, match="both a lifecycle hook and a @method"):
        corral.exit()(corral.method()(lambda self: None))


def test_decorators_need_parentheses() -> None:
    with pytest.raises(InvalidError, match="parentheses"):
        corral.method(lambda self: None)  # type: ignore[arg-type]


def test_hooks_take_only_self() -> None:
    with pytest.raises(InvalidError, match="only `self`"):
        corral.enter()(lambda self, x: None)


def test_generator_methods_are_recorded_as_generators() -> None:
    app = make_app()

    @app.cls()
    class Gen:
        @corral.method()
        def stream(self):  # type: ignore[no-untyped-def]
            yield 1

        @corral.method()
        async def astream(self):  # type: ignore[no-untyped-def]
            yield 1

    assert Gen.definition is not None
    assert [m.is_generator for m in Gen.definition.to_proto().methods] == [True, True]


def test_class_without_methods_is_refused() -> None:
    app = make_app()
    with pytest.raises(InvalidError, match="no @corral.method"):
        @app.cls()
        class Empty:
            pass


def test_enter_hooks_order_snap_first_then_definition_order_bases_first() -> None:
    app = make_app()

    class Base:
        @corral.enter()
        def base_hook(self) -> None: ...

    @app.cls(enable_memory_snapshot=True)
    class Child(Base):
        @corral.enter()
        def first(self) -> None: ...

        @corral.enter(snap=True)
        def snapped(self) -> None: ...

        @corral.method()
        def f(self) -> None: ...

    assert Child.definition is not None
    assert [h.name for h in Child.definition.enter_hooks] == ["snapped", "base_hook", "first"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu": "A100:0"}, "between 1 and 8"),
        ({"gpu": "H100:two"}, "MODEL:COUNT"),
        ({"gpu": "A10X"}, "unknown GPU 'A10X'; choose one of T4, L4, A10, A10G, A100, A100-40GB, A100-80GB, L40S, H100"),
        ({"gpu": "H100 80GB"}, "unknown GPU"),
        ({"gpu": ["H100", "h100:2"]}, "name a model twice"),
        ({"cpu": 0}, "cpu must be between"),
        ({"cpu": (2.0, 1.0)}, "below its request"),
        ({"memory": 1.5}, "int number of MiB"),
        ({"timeout": 0}, "timeout must be between"),
        ({"retries": -1}, "between 0 and 10"),
        ({"retries": "3"}, "int or corral.Retries"),
        ({"min_containers": 3, "max_containers": 2}, "above max_containers"),
        ({"max_containers": 0}, "at least 1"),
        ({"scaledown_window": 0}, "scaledown_window"),
        ({"image": "python:3.11"}, "corral.Image"),
        ({"secrets": [{"A": "b"}]}, "corral.Secret"),
    ],
)
def test_class_options_are_validated_at_decoration(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        make_app().cls(**kwargs)


def test_valid_options_are_recorded() -> None:
    app = make_app()

    @app.cls(gpu=["h100", "A100"], cpu=(1.0, 2.0), memory=512, timeout=30, retries=2, min_containers=1, max_containers=3)
    class Configured:
        @corral.method()
        def f(self) -> None: ...

    assert Configured.definition is not None
    options = Configured.definition.options
    assert list(options.resources.gpu.models) == ["H100", "A100"]
    assert [(c.model, c.count) for c in options.resources.gpu.choices] == [("H100", 1), ("A100", 1)]
    assert options.resources.cpu == 1.0 and options.resources.cpu_limit == 2.0
    assert options.resources.memory_mib == 512
    assert options.timeout_s == 30
    assert options.retries.max_retries == 2
    assert options.autoscaler.min_containers == 1 and options.autoscaler.max_containers == 3
    assert options.autoscaler.scaledown_window_s == 60


def test_with_concurrency_and_batching_limits_are_validated() -> None:
    app = make_app()

    @app.cls()
    class Model:
        @corral.method()
        def f(self) -> None: ...

    with pytest.raises(InvalidError, match="max_inputs"):
        Model.with_concurrency(max_inputs=0)
    with pytest.raises(InvalidError, match="target_inputs"):
        Model.with_concurrency(max_inputs=4, target_inputs=5)
    with pytest.raises(InvalidError, match="max_batch_size"):
        Model.with_batching(max_batch_size=1001, wait_ms=10)


def test_local_runs_enter_hooks_once_in_process() -> None:
    app = make_app()

    @app.cls()
    class Counter:
        start: int = corral.parameter(default=10)

        @corral.enter()
        async def setup(self) -> None:
            self.count = self.start

        @corral.method()
        def increment(self) -> int:
            self.count += 1
            return self.count

    counter = Counter(start=1)
    assert counter.increment.local() == 2
    assert counter.increment.local() == 3


def test_calling_remote_outside_a_running_app_says_how_to_run_it() -> None:
    app = make_app()

    @app.cls()
    class Model:
        @corral.method()
        def f(self) -> None: ...

    with pytest.raises(InvalidError, match="app.run"):
        Model().f.remote()
