"""Runs one input against the user's instance and encodes its Result.

Two entry points, one per input path: `run_on_loop` for inputs the control plane pushes (async
methods on the container's event loop, sync methods on the slot thread pool) and `run_in_thread`
for direct inputs, which already arrive on a connection thread (sync methods run right there,
with no thread hop; async methods go to the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from corral import container_api as sdk
from corral_protocol import env
from corral_protocol.arguments import ArgumentError, invalid_argument
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.batching import Batcher
from corral_runtime.cancellation import ThreadRegistry
from corral_runtime.fd_capture import RUNNING
from corral_runtime.redaction import Redactor


async def _uninterruptible(future: asyncio.Future[Any]) -> Any:
    """Await a sync call running on a thread. A cancellation (the caller went away) drops its
    result, but only once the thread has returned: a thread cannot be interrupted, so until then the
    input keeps its concurrency slot and the container never runs more calls than it has slots."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


_DONE = object()


async def _in_scope(input_id: str, awaitable: Any) -> Any:
    """Await a user coroutine with `corral.current_input_id()` answering `input_id`."""
    with RUNNING.scope(input_id):
        return await awaitable


THREADS = ThreadRegistry()
"""The threads running sync inputs, for cancellation (one worker per process)."""


def _scoped(input_id: str, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
    """A call of a sync user function, for a thread, with `corral.current_input_id()` answering
    `input_id`; a cancellation can raise InputCancelled in that thread while it runs."""
    def call() -> Any:
        with RUNNING.scope(input_id), THREADS.running(input_id):
            return function(*args, **kwargs)
    return call


class CallerGone(Exception):
    """The caller of a direct generator input closed its connection."""


class _ItemNotEncodable(Exception):
    def __init__(self, result: common_pb2.Result) -> None:
        super().__init__(result.exception_type)
        self.result = result


class InputRunner:
    def __init__(
        self,
        instance: Any,
        method_names: set[str],
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
        batcher: Batcher | None = None,
        redactor: Redactor | None = None,
        dev_mode: bool | None = None,
    ) -> None:
        self.instance = instance
        self.method_names = method_names
        self.loop = loop
        self.executor = executor
        self.batcher = batcher
        # Every Result goes out through it: an error never carries a secret value to the caller.
        self.redactor = redactor or Redactor({})
        # JSON callers get tracebacks only from ephemeral (dev) apps; Python callers always do.
        self.dev_mode = env.is_dev_mode() if dev_mode is None else dev_mode
        self._functions: dict[str, tuple[Any, bool, inspect.Signature]] = {}

    def _function(self, name: str) -> tuple[Any, bool, inspect.Signature]:
        found = self._functions.get(name)
        if found is None:
            if name not in self.method_names:
                raise AttributeError(f"this class has no @corral.method named {name!r} (methods: {', '.join(sorted(self.method_names))})")
            function = getattr(self.instance, name)
            found = self._functions[name] = (function, inspect.iscoroutinefunction(function), inspect.signature(function))
        return found

    def _prepare(self, inp: worker_pb2.Input) -> tuple[Any, bool, tuple[Any, ...], dict[str, Any]] | common_pb2.Result:
        """The method and its decoded arguments, or the Result that refuses the input (no user
        code runs): RESULT_STATUS_INVALID_ARGUMENT when the arguments do not fit."""
        try:
            function, is_async, signature = self._function(inp.method)
            args, kwargs = sdk.decode_call(inp.args, function, signature)
        except ArgumentError as exc:
            return invalid_argument(f"{type(self.instance).__qualname__}.{inp.method}: {exc}")
        except Exception as exc:
            return sdk.user_error(exc, inp.args.format, self.dev_mode)
        return function, is_async, args, kwargs

    def run_in_thread(self, inp: worker_pb2.Input) -> common_pb2.Result:
        """Run a direct input on the calling (non-loop) thread."""
        if self.batcher is not None:
            return self.redactor.result(self.batcher.submit(inp).result())
        prepared = self._prepare(inp)
        if isinstance(prepared, common_pb2.Result):
            return self.redactor.result(prepared)
        function, is_async, args, kwargs = prepared
        fmt = inp.args.format
        try:
            if is_async:
                value = asyncio.run_coroutine_threadsafe(_in_scope(inp.input_id, function(*args, **kwargs)), self.loop).result()
            else:
                value = _scoped(inp.input_id, function, args, kwargs)()
        except Exception as exc:
            return self._failed(inp, exc, fmt)
        return self.redactor.result(sdk.encode_result(value, fmt, inp.method, self.dev_mode))

    def is_generator(self, method: str) -> bool:
        """Whether `method` is a generator method (sync or async): its input streams items."""
        try:
            function = self._function(method)[0]
        except AttributeError:
            return False
        return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)

    async def run_generator(self, inp: worker_pb2.Input, emit: Callable[[common_pb2.Payload], Awaitable[None]]) -> common_pb2.Result:
        """Run a generator input from the event loop, handing each item to `emit` as it is produced;
        the Result says how it ended. Cancelling the task stops the generator: an async one at
        its current await, a sync one before its next item (a thread cannot be interrupted)."""
        prepared = self._prepare(inp)
        if isinstance(prepared, common_pb2.Result):
            return self.redactor.result(prepared)
        function, _, args, kwargs = prepared
        fmt = inp.args.format
        try:
            if inspect.isasyncgenfunction(function):
                agen = function(*args, **kwargs)
                try:
                    with RUNNING.scope(inp.input_id):  # the input's own task: its context is its own
                        async for item in agen:
                            await emit(self._item(item, fmt, inp.method))
                finally:
                    await agen.aclose()
            else:
                gen = function(*args, **kwargs)
                try:
                    while True:
                        step = _scoped(inp.input_id, next, (gen, _DONE), {})
                        item = await _uninterruptible(self.loop.run_in_executor(self.executor, step))
                        if item is _DONE:
                            break
                        await emit(self._item(item, fmt, inp.method))
                finally:
                    await _uninterruptible(self.loop.run_in_executor(self.executor, gen.close))
        except asyncio.CancelledError:
            raise
        except _ItemNotEncodable as err:
            return err.result
        except Exception as exc:
            return self._failed(inp, exc, fmt)
        return common_pb2.Result(status=common_pb2.RESULT_STATUS_SUCCESS)

    async def call_raw(self, inp: worker_pb2.Input) -> tuple[bool, Any]:
        """Call a pushed input's method from the event loop and keep its value as it is, for web
        endpoints (a StreamingResponse or a generator is served, not pickled): (True, value), or
        (False, the Result that refuses or fails it). A generator method is only called: the
        generator object it returns runs as its consumer iterates."""
        if self.batcher is not None:  # a batched endpoint: the input joins a batch, its value comes back encoded
            result = await self.run_on_loop(inp)
            if result.status != common_pb2.RESULT_STATUS_SUCCESS:
                return False, result
            return True, sdk.decode_value(result.value)
        prepared = self._prepare(inp)
        if isinstance(prepared, common_pb2.Result):
            return False, self.redactor.result(prepared)
        function, is_async, args, kwargs = prepared
        try:
            if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
                return True, function(*args, **kwargs)
            if is_async:
                return True, await _in_scope(inp.input_id, function(*args, **kwargs))
            return True, await _uninterruptible(self.loop.run_in_executor(self.executor, _scoped(inp.input_id, function, args, kwargs)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return False, self.redactor.result(sdk.user_error(exc, inp.args.format, self.dev_mode))

    async def next_item(self, gen: Any) -> tuple[bool, Any]:
        """The next item of a sync or async generator object: (True, item), or (False, None) at its end.
        A sync generator steps on the thread pool; cancellation waits for the step, then closes it."""
        if inspect.isasyncgen(gen):
            try:
                return True, await gen.__anext__()
            except StopAsyncIteration:
                return False, None
        item = await _uninterruptible(self.loop.run_in_executor(self.executor, next, gen, _DONE))
        return (False, None) if item is _DONE else (True, item)

    async def close_generator(self, gen: Any) -> None:
        if inspect.isasyncgen(gen):
            await gen.aclose()
        else:
            await _uninterruptible(self.loop.run_in_executor(self.executor, gen.close))

    def run_generator_in_thread(self, inp: worker_pb2.Input, send: Callable[[common_pb2.Payload], None]) -> common_pb2.Result:
        """Run a direct generator input on the calling (non-loop) thread, handing each item to `send`.
        When `send` raises OSError (the caller closed the connection) the generator is closed and
        CallerGone is raised: nobody is left to answer."""
        prepared = self._prepare(inp)
        if isinstance(prepared, common_pb2.Result):
            return self.redactor.result(prepared)
        function, _, args, kwargs = prepared
        fmt = inp.args.format

        def deliver(item: Any) -> None:
            payload = self._item(item, fmt, inp.method)
            try:
                send(payload)
            except OSError as err:
                raise CallerGone(str(err)) from None

        try:
            if inspect.isasyncgenfunction(function):
                agen = function(*args, **kwargs)
                try:
                    while True:
                        try:
                            item = asyncio.run_coroutine_threadsafe(_in_scope(inp.input_id, agen.__anext__()), self.loop).result()
                        except StopAsyncIteration:
                            break
                        deliver(item)
                finally:
                    asyncio.run_coroutine_threadsafe(agen.aclose(), self.loop).result()
            else:
                gen = function(*args, **kwargs)
                try:
                    with RUNNING.scope(inp.input_id):
                        for item in gen:
                            deliver(item)
                finally:
                    gen.close()
        except CallerGone:
            raise
        except _ItemNotEncodable as err:
            return err.result
        except Exception as exc:
            return self._failed(inp, exc, fmt)
        return common_pb2.Result(status=common_pb2.RESULT_STATUS_SUCCESS)

    def _failed(self, inp: worker_pb2.Input, exc: Exception, fmt: common_pb2.PayloadFormat.ValueType) -> common_pb2.Result:
        """The Result of an input whose user code raised; its traceback also goes to the container's
        stderr (so to `corral app logs`), redacted like the Result."""
        with RUNNING.scope(inp.input_id):
            formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            print(f"corral worker: input {inp.input_id} ({inp.method}) raised:\n{self.redactor.text(formatted)}", end="", file=sys.stderr)
        return self.redactor.result(sdk.user_error(exc, fmt, self.dev_mode))

    def _item(self, item: Any, fmt: common_pb2.PayloadFormat.ValueType, method: str) -> common_pb2.Payload:
        result = self.redactor.result(sdk.encode_result(item, fmt, method, self.dev_mode))
        if result.status != common_pb2.RESULT_STATUS_SUCCESS:  # an item that cannot be encoded ends the stream
            raise _ItemNotEncodable(result)
        return result.value

    async def run_on_loop(self, inp: worker_pb2.Input) -> common_pb2.Result:
        """Run a pushed input from the event loop."""
        if self.batcher is not None:
            return self.redactor.result(await asyncio.wrap_future(self.batcher.submit(inp)))
        prepared = self._prepare(inp)
        if isinstance(prepared, common_pb2.Result):
            return self.redactor.result(prepared)
        function, is_async, args, kwargs = prepared
        fmt = inp.args.format
        try:
            if is_async:
                value = await _in_scope(inp.input_id, function(*args, **kwargs))
            else:
                value = await _uninterruptible(self.loop.run_in_executor(self.executor, _scoped(inp.input_id, function, args, kwargs)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failed(inp, exc, fmt)
        return self.redactor.result(sdk.encode_result(value, fmt, inp.method, self.dev_mode))
