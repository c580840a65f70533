"""`Function`: a plain function made remotely callable by `@app.function()`.

Underneath, a function is a class with one method of the function's name and no parameters, so
services, queues, autoscaling, batching, web endpoints and snapshots are the classes' own. Users,
the CLI and `ClassDef.is_function` see a function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from corral._partial import PartialFunction, Role
from corral.cls import Cls, Method, Obj, _run_maybe_async
from corral.exception import InvalidError
from corral.image import Image
from corral.retries import Retries
from corral.secret import Secret


def as_class(f: Any) -> type:
    """The one-method class a function is built as: named and placed like the function, its method
    a wrapper whose signature is the function's with `self` in front (what every method path reads)."""
    partial = f if isinstance(f, PartialFunction) else None
    raw = partial.raw_f if partial is not None else f
    if isinstance(raw, type) or not inspect.isfunction(raw):
        raise InvalidError(f"@app.function() decorates a function, got {raw!r}; decorate classes with @app.cls()")
    method = _method_wrapper(raw)
    if partial is None:
        marked = PartialFunction(method, Role.METHOD)
    else:
        role = partial.role if partial.role & Role.METHOD else partial.role | Role.METHOD
        marked = PartialFunction(method, role, partial.snap, {k: v for k, v in partial.options.items() if k != "concurrency"})
    namespace: dict[str, Any] = {raw.__name__: marked, "__module__": raw.__module__, "__qualname__": raw.__qualname__, "__doc__": raw.__doc__}
    concurrency = (partial.options.get("concurrency") if partial is not None else None) or getattr(raw, "__corral_concurrency__", None)
    if concurrency is not None:
        namespace["__corral_concurrency__"] = concurrency
    return type(raw.__name__, (), namespace)


def _method_wrapper(f: Callable[..., Any]) -> Callable[..., Any]:
    method: Callable[..., Any]
    if inspect.isasyncgenfunction(f):
        async def method(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async for item in f(*args, **kwargs):
                yield item
    elif inspect.iscoroutinefunction(f):
        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await f(*args, **kwargs)
    elif inspect.isgeneratorfunction(f):
        def method(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            return (yield from f(*args, **kwargs))
    else:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return f(*args, **kwargs)
    functools.update_wrapper(method, f)
    signature = inspect.signature(f)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = signature.replace(parameters=[self_param, *signature.parameters.values()])  # type: ignore[union-attr]
    return method


class Function:
    """A remotely callable function.

    Made by `@app.function()` or `Function.from_name(...)`. Lazy like `Cls`: nothing is bound
    until the first call.

    Example:
        @app.function(timeout=60)
        def square(x: int) -> int:
            return x * x

        with app.run():
            square.remote(3)                 # 9
            list(square.map(range(4)))       # [0, 1, 4, 9]
            square.local(5)                  # 25, in this process

        square = corral.Function.from_name("my-app", "square")
    """

    def __init__(self, cls: Cls, raw_f: Callable[..., Any] | None = None) -> None:
        self._cls = cls
        self._raw_f = raw_f
        self._obj: Obj | None = None
        if raw_f is not None:
            functools.update_wrapper(self, raw_f)

    @classmethod
    def from_name(cls, app_name: str, name: str, *, client: Any = None) -> Function:
        """A lazy handle to function `name` of the deployed app `app_name` (looked up on first use)."""
        return cls(Cls.from_name(app_name, name, client=client))

    @property
    def name(self) -> str:
        return self._cls.name

    @property
    def _method(self) -> Method:
        if self._obj is None:
            self._obj = self._cls()
        return getattr(self._obj, self._cls.name)

    @property
    def remote(self) -> Any:
        """Run the function in a container and return its result (`.remote.aio` to await it)."""
        return self._method.remote

    @property
    def spawn(self) -> Any:
        """Start the function in a container; return a `FunctionCall` (`.spawn.aio` to await it)."""
        return self._method.spawn

    @property
    def remote_gen(self) -> Any:
        """Run a generator function in a container; iterate over its items as they are produced
        (`async for` over `.remote_gen.aio(...)`)."""
        return self._method.remote_gen

    def map(self, *iterables: Iterable[Any], return_exceptions: bool = False) -> Iterator[Any]:
        """Call the function once per element (zipped across iterables); yield results in input order."""
        return self._method.map(*iterables, return_exceptions=return_exceptions)

    def starmap(self, iterable: Iterable[tuple[Any, ...]], return_exceptions: bool = False) -> Iterator[Any]:
        """Like `map`, with each element unpacked as the arguments."""
        return self._method.starmap(iterable, return_exceptions=return_exceptions)

    def for_each(self, *iterables: Iterable[Any], ignore_exceptions: bool = False) -> None:
        """Call the function once per element and wait for all; results are dropped."""
        self._method.for_each(*iterables, ignore_exceptions=ignore_exceptions)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in this process."""
        if self._raw_f is None:
            raise InvalidError(f".local() needs the function's code in this program; {self.name} was looked up by name")
        return _run_maybe_async(self._raw_f(*args, **kwargs))

    def update_autoscaler(self, **settings: Any) -> None:
        """Change the function's autoscaling at once, until the app is redeployed (see `Obj.update_autoscaler`)."""
        if self._obj is None:
            self._obj = self._cls()
        self._obj.update_autoscaler(**settings)

    def with_options(
        self,
        *,
        gpu: str | list[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        secrets: list[Secret] | None = None,
        timeout: float | None = None,
        retries: int | Retries | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        image: Image | None = None,
        startup_timeout: float | None = None,
    ) -> Function:
        """A new handle whose calls use these options; this one is unchanged.

        Example:
            big = corral.Function.from_name("my-app", "train").with_options(gpu="H100", timeout=3600)
        """
        return Function(
            self._cls.with_options(
                gpu=gpu, cpu=cpu, memory=memory, secrets=secrets, timeout=timeout, retries=retries,
                min_containers=min_containers, max_containers=max_containers, buffer_containers=buffer_containers,
                scaledown_window=scaledown_window, image=image, startup_timeout=startup_timeout,
            ),
            self._raw_f,
        )

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> Function:
        """A new handle whose containers each run up to `max_inputs` calls at once."""
        return Function(self._cls.with_concurrency(max_inputs=max_inputs, target_inputs=target_inputs), self._raw_f)

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> Function:
        """A new handle whose calls are grouped into batches (the function takes lists)."""
        return Function(self._cls.with_batching(max_batch_size=max_batch_size, wait_ms=wait_ms), self._raw_f)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calling the function directly runs it here, as the undecorated function would."""
        return self.local(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Function({self.name!r})"


__all__ = ["Function", "as_class"]
