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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from corral import container_api as sdk
from corral_protocol import env
from corral_protocol.arguments import ArgumentError, invalid_argument
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.batching import Batcher
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
                value = asyncio.run_coroutine_threadsafe(function(*args, **kwargs), self.loop).result()
            else:
                value = function(*args, **kwargs)
        except Exception as exc:
            return self.redactor.result(sdk.user_error(exc, fmt, self.dev_mode))
        return self.redactor.result(sdk.encode_result(value, fmt, inp.method, self.dev_mode))

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
                value = await function(*args, **kwargs)
            else:
                value = await _uninterruptible(self.loop.run_in_executor(self.executor, lambda: function(*args, **kwargs)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self.redactor.result(sdk.user_error(exc, fmt, self.dev_mode))
        return self.redactor.result(sdk.encode_result(value, fmt, inp.method, self.dev_mode))
