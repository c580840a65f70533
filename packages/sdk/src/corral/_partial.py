"""The decorators that mark a class's members: `method`, `batched`, `enter`, `exit`.

Each decorator wraps the function in a `PartialFunction` that records flags; `@app.cls` reads the
flags and puts the plain function back on the class. Misuse is refused here, at decoration time.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from corral.exception import InvalidError


class Role(enum.Flag):
    NONE = 0
    METHOD = enum.auto()
    ENTER = enum.auto()
    EXIT = enum.auto()


@dataclass(frozen=True)
class PartialFunction:
    """A class member with Corral flags; replaced by `raw_f` once `@app.cls` has read it."""

    raw_f: Callable[..., Any]
    role: Role
    snap: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def with_role(self, role: Role, **changes: Any) -> PartialFunction:
        if self.role & (Role.ENTER | Role.EXIT) and role & Role.METHOD or self.role & Role.METHOD and role & (Role.ENTER | Role.EXIT):
            raise InvalidError(
                f"{self.raw_f.__qualname__} cannot be both a lifecycle hook and a @method; "
                "split it into two functions"
            )
        if self.role & role:
            raise InvalidError(f"{self.raw_f.__qualname__} is decorated with the same decorator twice")
        return replace(self, role=self.role | role, **changes)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)


def params_after_self(f: Callable[..., Any]) -> list[inspect.Parameter]:
    """A decorated function's own parameters: a method's after `self`, a plain function's all (the
    same decorators serve `@app.cls` methods and `@app.function` functions)."""
    params = list(inspect.signature(f).parameters.values())
    return params[1:] if params and params[0].name == "self" else params


def _as_partial(f: Any, decorator: str) -> PartialFunction:
    if isinstance(f, PartialFunction):
        return f
    if isinstance(f, (staticmethod, classmethod)):
        raise InvalidError(f"@corral.{decorator}() must decorate a plain instance method, not a {type(f).__name__}")
    if not callable(f) or not inspect.isfunction(f):
        raise InvalidError(f"@corral.{decorator}() must decorate a function, got {f!r}")
    return PartialFunction(raw_f=f, role=Role.NONE)


def _refuse_bare_use(decorator: str, arg: Any) -> None:
    if arg is not None:
        raise InvalidError(f"use @corral.{decorator}() with parentheses")


def method(_warn_parentheses_missing: Any = None) -> Callable[[Any], PartialFunction]:
    """Mark an instance method as remotely callable.

    Example:
        @app.cls()
        class Counter:
            @corral.method()
            def increment(self, value: int):
                return value + 1
    """
    _refuse_bare_use("method", _warn_parentheses_missing)

    def wrap(f: Any) -> PartialFunction:
        partial = _as_partial(f, "method")
        if partial.role & Role.METHOD and ("batching" in partial.options or "web_endpoint" in partial.options):
            return partial  # @corral.batched or a web decorator already made it a method
        return partial.with_role(Role.METHOD)

    return wrap


def concurrent(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[Any], Any]:
    """Let one container run up to `max_inputs` inputs at once; the autoscaler aims at `target_inputs`
    per container (default: max_inputs). Sync methods run on a thread pool, async ones on the
    container's event loop. Goes below `@app.cls()`, as in Modal.

    Example:
        @app.cls()
        @corral.concurrent(max_inputs=100, target_inputs=80)
        class Server: ...

        @app.function()
        @corral.concurrent(max_inputs=10)
        def fetch(url: str) -> str: ...
    """
    from corral._options import concurrency

    config = concurrency(max_inputs, target_inputs)

    def wrap(target: Any) -> Any:
        if isinstance(target, PartialFunction):  # a function below @app.function, already marked
            return replace(target, options={**target.options, "concurrency": config})
        if not isinstance(target, type) and not inspect.isfunction(target):
            raise InvalidError(
                f"@corral.concurrent() decorates a class (below @app.cls()) or a function (below @app.function()); "
                f"got {target!r}. For an existing handle use Cls.with_concurrency(max_inputs=...)"
            )
        target.__corral_concurrency__ = config  # type: ignore[union-attr]
        return target

    return wrap


def batched(*, max_batch_size: int, wait_ms: int) -> Callable[[Any], PartialFunction]:
    """Make a method batched: single calls are grouped, and the method gets one list per argument.

    A batch closes when it holds `max_batch_size` inputs (1-1000) or `wait_ms` after its first
    input. The method returns a list with one result per input. It must be the class's only method.
    Use it instead of, or stacked with, `@corral.method()`.

    Example:
        @corral.batched(max_batch_size=32, wait_ms=10)
        def embed(self, texts: list[str]) -> list[list[float]]:
            return self.model.encode(texts).tolist()
    """
    from corral._options import batching

    config = batching(max_batch_size, wait_ms)

    def wrap(f: Any) -> PartialFunction:
        partial = _as_partial(f, "batched")
        if "batching" in partial.options:
            raise InvalidError(f"{partial.raw_f.__qualname__} is decorated with @corral.batched twice")
        params = params_after_self(partial.raw_f)
        if not params or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            raise InvalidError(
                f"batched method {partial.raw_f.__qualname__} must take named arguments after `self` "
                "(each receives a list with one element per input)"
            )
        options = {**partial.options, "batching": config}
        role = partial.role if partial.role & Role.METHOD else partial.role | Role.METHOD
        if partial.role & (Role.ENTER | Role.EXIT):
            raise InvalidError(f"{partial.raw_f.__qualname__} cannot be both a lifecycle hook and a batched method")
        return replace(partial, role=role, options=options)

    return wrap


def enter(_warn_parentheses_missing: Any = None, *, snap: bool = False) -> Callable[[Any], PartialFunction]:
    """Run this method once when a container starts, before it serves any input.

    With `snap=True` it runs before the memory snapshot is taken (it needs
    `enable_memory_snapshot=True` on the class). Hooks may be async.

    Example:
        @corral.enter()
        def load_model(self):
            self.model = load()
    """
    _refuse_bare_use("enter", _warn_parentheses_missing)
    if not isinstance(snap, bool):
        raise InvalidError(f"@corral.enter(snap=...) takes a bool, got {snap!r}")

    def wrap(f: Any) -> PartialFunction:
        partial = _as_partial(f, "enter")
        _refuse_parameters(partial.raw_f, "enter")
        return partial.with_role(Role.ENTER, snap=snap)

    return wrap


def exit(_warn_parentheses_missing: Any = None) -> Callable[[Any], PartialFunction]:  # noqa: A001
    """Run this method when a container stops gracefully (scale-down, app stop, server shutdown).

    Exit hooks do not run when an `@enter` hook failed. They may be async.

    Example:
        @corral.exit()
        def disconnect(self):
            self.db.close()
    """
    _refuse_bare_use("exit", _warn_parentheses_missing)

    def wrap(f: Any) -> PartialFunction:
        partial = _as_partial(f, "exit")
        _refuse_parameters(partial.raw_f, "exit")
        return partial.with_role(Role.EXIT)

    return wrap


def _refuse_parameters(f: Callable[..., Any], decorator: str) -> None:
    params = list(inspect.signature(f).parameters.values())
    if len(params) != 1:
        raise InvalidError(f"@corral.{decorator}() hook {f.__qualname__} must take only `self`")
