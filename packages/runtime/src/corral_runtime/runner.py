"""Runs one input against the user's instance and encodes its Result.

Two entry points, one per input path: `run_on_loop` for inputs the control plane pushes (async
methods on the container's event loop, sync methods on the slot thread pool) and `run_in_thread`
for direct inputs, which already arrive on a connection thread (sync methods run right there,
with no thread hop; async methods go to the event loop).
"""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from corral import container_api as sdk
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime.batching import Batcher
from corral_runtime.redaction import Redactor


class InputRunner:
    def __init__(
        self,
        instance: Any,
        method_names: set[str],
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
        batcher: Batcher | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.instance = instance
        self.method_names = method_names
        self.loop = loop
        self.executor = executor
        self.batcher = batcher
        # Every Result goes out through it: an error never carries a secret value to the caller.
        self.redactor = redactor or Redactor({})
        self._functions: dict[str, tuple[Any, bool]] = {}

    def _function(self, name: str) -> tuple[Any, bool]:
        found = self._functions.get(name)
        if found is None:
            if name not in self.method_names:
                raise AttributeError(f"this class has no @corral.method named {name!r} (methods: {', '.join(sorted(self.method_names))})")
            function = getattr(self.instance, name)
            found = self._functions[name] = (function, inspect.iscoroutinefunction(function))
        return found

    def run_in_thread(self, inp: worker_pb2.Input) -> common_pb2.Result:
        """Run a direct input on the calling (non-loop) thread."""
        if self.batcher is not None:
            return self.redactor.result(self.batcher.submit(inp).result())
        fmt = inp.args.format or sdk.PICKLE
        try:
            args, kwargs = sdk.decode_args(inp.args)
            function, is_async = self._function(inp.method)
            if is_async:
                value = asyncio.run_coroutine_threadsafe(function(*args, **kwargs), self.loop).result()
            else:
                value = function(*args, **kwargs)
        except Exception as exc:
            return self.redactor.result(sdk.user_error(exc))
        return self.redactor.result(sdk.encode_result(value, fmt, inp.method))

    async def run_on_loop(self, inp: worker_pb2.Input) -> common_pb2.Result:
        """Run a pushed input from the event loop."""
        if self.batcher is not None:
            return self.redactor.result(await asyncio.wrap_future(self.batcher.submit(inp)))
        fmt = inp.args.format or sdk.PICKLE
        try:
            args, kwargs = sdk.decode_args(inp.args)
            function, is_async = self._function(inp.method)
            if is_async:
                value = await function(*args, **kwargs)
            else:
                value = await self.loop.run_in_executor(self.executor, lambda: function(*args, **kwargs))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self.redactor.result(sdk.user_error(exc))
        return self.redactor.result(sdk.encode_result(value, fmt, inp.method))
