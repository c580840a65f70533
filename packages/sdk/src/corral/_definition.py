"""What `@app.cls` learns from a user class: methods, lifecycle hooks, parameters, options."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from corral import _json, _openapi, _web
from corral._parameters import ParameterField, collect_parameters
from corral._partial import PartialFunction, Role
from corral.exception import InvalidError
from corral_protocol.options import batching_violation
from corral_protocol.v1 import common_pb2


@dataclass(frozen=True)
class Hook:
    name: str
    function: Callable[..., Any]
    snap: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    function: Callable[..., Any]
    partial: PartialFunction
    # The OpenAPI description of a `web_endpoint(docs=True)` method (set by ClassDefinition.from_class).
    openapi_json: str = ""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function) or inspect.isasyncgenfunction(self.function)

    @property
    def is_generator(self) -> bool:
        return inspect.isgeneratorfunction(self.function) or inspect.isasyncgenfunction(self.function)

    @property
    def batching(self) -> common_pb2.BatchingConfig | None:
        return self.partial.options.get("batching")

    @property
    def web_endpoint(self) -> common_pb2.WebEndpoint | None:
        return self.partial.options.get("web_endpoint")

    @property
    def is_asgi_app(self) -> bool:
        return self.web_endpoint is not None and self.web_endpoint.kind == common_pb2.WEB_ENDPOINT_KIND_ASGI_APP

    def to_proto(self) -> common_pb2.MethodDef:
        proto = common_pb2.MethodDef(name=self.name, is_async=self.is_async, is_generator=self.is_generator)
        try:
            proto.signature.CopyFrom(_json.method_signature(self.function, batched=self.batching is not None))
        except (TypeError, ValueError):  # no inspectable signature: the container alone checks calls
            pass
        if self.batching is not None:
            proto.batching.CopyFrom(self.batching)
        if self.web_endpoint is not None:
            proto.web_endpoint.CopyFrom(self.web_endpoint)
            if self.openapi_json:
                proto.web_endpoint.openapi_json = self.openapi_json
        return proto


@dataclass(frozen=True)
class ClassDefinition:
    """A user class as Corral sees it. Built once, at decoration time."""

    user_cls: type
    methods: dict[str, MethodInfo]
    enter_hooks: list[Hook]
    exit_hooks: list[Hook]
    parameters: list[ParameterField]
    options: common_pb2.ServiceOptions = field(default_factory=common_pb2.ServiceOptions)
    # Set by `@app.function()`: the class is a function's one-method class.
    is_function: bool = False
    schedule: common_pb2.Schedule | None = None

    @property
    def name(self) -> str:
        return self.user_cls.__qualname__

    @property
    def module(self) -> str:
        return self.user_cls.__module__

    @classmethod
    def from_class(cls, user_cls: type, options: common_pb2.ServiceOptions) -> ClassDefinition:
        if not isinstance(user_cls, type):
            raise InvalidError(f"@app.cls() decorates a class, got {user_cls!r}")
        for klass in user_cls.__mro__[:-1]:
            if "__init__" in klass.__dict__:
                raise InvalidError(
                    f"{user_cls.__qualname__} defines a custom __init__, which Corral does not support. "
                    "Declare class parameters with corral.parameter() instead, e.g. `name: str = corral.parameter()`, "
                    "and put set-up code in an @corral.enter() hook."
                )
        partials = _collect_partials(user_cls)
        methods = {name: MethodInfo(name, p.raw_f, p) for name, p in partials.items() if p.role & Role.METHOD}
        for info in methods.values():
            if info.is_generator and info.batching is not None:
                raise InvalidError(f"{user_cls.__qualname__}.{info.name} is a generator; a batched method cannot be one")
        batched = [info.name for info in methods.values() if info.batching is not None]
        violation = batching_violation(user_cls.__qualname__, list(methods), batched)
        if violation:
            raise InvalidError(violation)
        parameters = collect_parameters(user_cls)
        _web.check_class(
            user_cls.__qualname__, [(m.name, m.function, m.web_endpoint, m.batching is not None) for m in methods.values()],
            [p.name for p in parameters],
        )
        for name, info in methods.items():
            endpoint = info.web_endpoint
            if endpoint is not None and endpoint.docs and endpoint.kind == common_pb2.WEB_ENDPOINT_KIND_FUNCTION:
                document = _openapi.openapi_json(user_cls.__qualname__, name, info.function, endpoint, parameters)
                methods[name] = replace(info, openapi_json=document)
        concurrency = getattr(user_cls, "__corral_concurrency__", None)
        if concurrency is not None:
            merged = common_pb2.ServiceOptions()
            merged.CopyFrom(options)
            merged.concurrency.CopyFrom(concurrency)
            options = merged
        enter = [Hook(name, p.raw_f, p.snap) for name, p in partials.items() if p.role & Role.ENTER]
        exit_hooks = [Hook(name, p.raw_f) for name, p in partials.items() if p.role & Role.EXIT]
        if any(h.snap for h in enter) and not options.enable_memory_snapshot:
            names = ", ".join(h.name for h in enter if h.snap)
            raise InvalidError(
                f"{user_cls.__qualname__}: @enter(snap=True) on {names} needs enable_memory_snapshot=True in @app.cls()"
            )
        # snap=True hooks run first (before the snapshot point); otherwise definition order, bases first.
        enter.sort(key=lambda h: not h.snap)
        for name, p in partials.items():
            setattr(user_cls, name, p.raw_f)
        return cls(user_cls, methods, enter, exit_hooks, parameters, options)

    def to_proto(self, module: str | None = None) -> common_pb2.ClassDef:
        proto = common_pb2.ClassDef(
            name=self.name,
            module=module or self.module,
            methods=[m.to_proto() for m in self.methods.values()],
            parameters=[p.to_proto() for p in self.parameters],
            options=self.options,
            has_snap_hooks=any(h.snap for h in self.enter_hooks),
            is_function=self.is_function,
        )
        if self.schedule is not None:
            proto.schedule.CopyFrom(self.schedule)
        return proto

    def new_instance(self, parameters: dict[str, Any]) -> Any:
        """A real instance of the user class with its parameters set; no hooks run."""
        # `type` in the stubs resolves `__new__` to the metaclass overloads; this is the class's own.
        instance = cast(Any, self.user_cls).__new__(self.user_cls)
        for name, value in parameters.items():
            setattr(instance, name, value)
        return instance


def _collect_partials(user_cls: type) -> dict[str, PartialFunction]:
    """Decorated members in definition order, base classes first; a subclass's override wins."""
    found: dict[str, PartialFunction] = {}
    seen: set[str] = set()
    for klass in reversed(user_cls.__mro__):
        for name, value in klass.__dict__.items():
            if isinstance(value, PartialFunction):
                found[name] = value
                seen.add(name)
            elif name in seen and callable(value):
                # A subclass overrode a decorated member without re-decorating it: keep the flags.
                found[name] = PartialFunction(value, found[name].role, found[name].snap, found[name].options)
    return found
