"""The decorators that mark a class's members: `method`, `enter`, `exit`.

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
        return _as_partial(f, "method").with_role(Role.METHOD)

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
