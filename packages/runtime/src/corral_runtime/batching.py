"""Dynamic batching: group single inputs of a batched method into one call with lists.

A batch closes when it holds `max_batch_size` inputs, or `wait_ms` after its first input arrived.
The method receives one list per argument and must return a list of the same length; caller i gets
element i. A raised exception, or a wrong return, fails every input of that batch with the same error.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from corral import container_api as sdk
from corral_protocol import env
from corral_protocol.arguments import ArgumentError, invalid_argument
from corral_protocol.v1 import common_pb2, worker_pb2


@dataclass
class _Pending:
    arguments: dict[str, Any]
    format: int
    future: Future[common_pb2.Result]


class BatchError(TypeError):
    """A batched method broke the batching contract (its return value)."""


class Batcher:
    def __init__(
        self,
        function: Callable[..., Any],
        max_batch_size: int,
        wait_ms: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.function = function
        self.name = getattr(function, "__name__", "method")
        self.max_batch_size = max(1, max_batch_size)
        self.wait_s = wait_ms / 1000.0
        self._loop = loop
        self._signature = inspect.signature(function)
        self._parameters = [p.name for p in self._signature.parameters.values()]
        self._is_async = inspect.iscoroutinefunction(function)
        self.dev_mode = env.is_dev_mode()
        self._pending: list[_Pending] = []
        self._first_at = 0.0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._collect, name="corral-batcher", daemon=True)
        self._thread.start()

    def submit(self, inp: worker_pb2.Input) -> Future[common_pb2.Result]:
        """Queue one input (any thread); the future resolves with that input's own Result."""
        future: Future[common_pb2.Result] = Future()
        fmt = inp.args.format
        try:
            args, kwargs = sdk.decode_call(inp.args, self.function, self._signature, batched=True)
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
        except ArgumentError as exc:  # bad arguments fail this input only
            future.set_result(invalid_argument(f"{self.name}: {exc}"))
            return future
        except Exception as exc:
            future.set_result(sdk.user_error(exc, fmt, self.dev_mode))
            return future
        with self._cond:
            if not self._pending:
                self._first_at = time.monotonic()
            self._pending.append(_Pending(dict(bound.arguments), fmt, future))
            if len(self._pending) >= self.max_batch_size or len(self._pending) == 1:
                self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=60)

    def _collect(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                while len(self._pending) < self.max_batch_size and not self._closed:
                    left = self._first_at + self.wait_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._pending[: self.max_batch_size]
                del self._pending[: self.max_batch_size]
                if self._pending:
                    self._first_at = time.monotonic()
            # One batch at a time, on this thread; the next one fills meanwhile.
            self._deliver(batch, self._call(batch))

    def _call(self, batch: list[_Pending]) -> list[Any] | Exception:
        columns = {name: [p.arguments[name] for p in batch] for name in self._parameters}
        try:
            if self._is_async:
                values = asyncio.run_coroutine_threadsafe(self.function(**columns), self._loop).result()
            else:
                values = self.function(**columns)
        except Exception as exc:
            return exc
        if not isinstance(values, list):
            return BatchError(
                f"batched method {self.name} must return a list with one element per input "
                f"({len(batch)} here), got {type(values).__name__}"
            )
        if len(values) != len(batch):
            return BatchError(
                f"batched method {self.name} returned a list of {len(values)} for a batch of {len(batch)} inputs; "
                "it must return one element per input"
            )
        return values

    def _deliver(self, batch: list[_Pending], outcome: list[Any] | Exception) -> None:
        if isinstance(outcome, Exception):  # every input of the batch fails, each in its caller's format
            for pending in batch:
                pending.future.set_result(sdk.user_error(outcome, pending.format, self.dev_mode))
            return
        for pending, value in zip(batch, outcome, strict=True):
            pending.future.set_result(sdk.encode_result(value, pending.format, self.name, self.dev_mode))
