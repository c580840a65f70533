"""Handles on calls: the `.remote`/`.spawn` invokers and `FunctionCall`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from corral import _blobs
from corral._client import Client
from corral.exception import TimeoutError
from corral_protocol.v1 import control_pb2

R = TypeVar("R")

_POLL_CHUNK_S = 50.0
_OUTCOMES = {
    control_pb2.CANCEL_OUTCOME_NOT_STARTED: "not_started",
    control_pb2.CANCEL_OUTCOME_STOPPING_RUNNING: "stopping",
    control_pb2.CANCEL_OUTCOME_ALREADY_DONE: "already_done",
}


class SyncAndAio(Generic[R]):
    """A callable with an `.aio` variant, as in `method.remote(...)` and `await method.remote.aio(...)`."""

    def __init__(self, sync: Callable[..., R], aio: Callable[..., Awaitable[R]], doc: str = "") -> None:
        self._sync = sync
        self.aio = aio
        self.__doc__ = doc

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self._sync(*args, **kwargs)


class FunctionCall:
    """A spawned call. `get()` waits for its result.

    Example:
        call = model.predict.spawn("input")
        result = call.get(timeout=30)
    """

    def __init__(self, call_id: str, client: Client) -> None:
        self.object_id = call_id
        self._client = client
        self.get = SyncAndAio(self._get, self._get_aio, "Wait for the result; raise what the call raised.")

    @classmethod
    def from_id(cls, call_id: str, client: Client | None = None) -> FunctionCall:
        from corral._client import default_client

        return cls(call_id, client or default_client())

    def _get(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _POLL_CHUNK_S if deadline is None else max(0.0, min(_POLL_CHUNK_S, deadline - time.monotonic()))
            response = self._client.call(
                self._client.stub.GetResult, control_pb2.GetResultRequest(call_id=self.object_id, timeout_s=wait)
            )
            if response.done:
                return _blobs.unwrap(response.result, self._client)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"call {self.object_id} did not finish within {timeout} s")

    async def _get_aio(self, timeout: float | None = None) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            wait = _POLL_CHUNK_S if deadline is None else max(0.0, min(_POLL_CHUNK_S, deadline - loop.time()))
            response = await self._client.call_aio(
                "GetResult", control_pb2.GetResultRequest(call_id=self.object_id, timeout_s=wait)
            )
            if response.done:
                return await _blobs.unwrap_aio(response.result, self._client)
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"call {self.object_id} did not finish within {timeout} s")

    def cancel(self) -> str:
        """Cancel the call; a caller waiting on it gets `InputCancellation`. Returns what the
        cancellation found: "not_started" (no code of it ran), "stopping" (it was running: an async
        method stops at its current await; a sync one gets `InputCancellation` raised in its thread,
        and its container replaces itself if it has not stopped within a grace period), or
        "already_done" (its result stands).

        Example:
            call = model.train.spawn(data)
            if call.cancel() == "not_started":
                print("it never ran")
        """
        response = self._client.call(self._client.stub.CancelCall, control_pb2.CancelCallRequest(call_id=self.object_id))
        return _OUTCOMES.get(response.outcome, "already_done")

    def __repr__(self) -> str:
        return f"FunctionCall({self.object_id!r})"


def ordered_results(calls: Iterable[FunctionCall], return_exceptions: bool) -> Iterator[Any]:
    for call in calls:
        try:
            yield call.get()
        except Exception as exc:
            if not return_exceptions:
                raise
            yield exc
