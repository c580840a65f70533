"""`Method`: one method of a bound instance, called in a container (`remote`, `spawn`, `remote_gen`,
`map` and friends; each through the direct path when it can take the input, else the control
plane's queue, rebinding once after a redeploy) or in this process (`local`). The instance it
belongs to (`corral.cls.Obj`) is seen through `MethodOwner`, so this module does not import `cls`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Protocol

from corral import _blobs, _serialization, _streams
from corral._calls import FunctionCall, SyncAndAio, ordered_results
from corral._class_source import ResolvedClass
from corral.exception import InvalidError, NotFoundError, ServiceGoneError
from corral_protocol import payloads
from corral_protocol.v1 import common_pb2, control_pb2

_MAP_WINDOW = 1000


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class MethodOwner(Protocol):
    """What a `Method` needs of its instance handle (`corral.cls.Obj`)."""

    @property
    def _cls(self) -> _Named: ...

    @property
    def _service(self) -> tuple[ResolvedClass, str] | None: ...

    def _bind(self) -> tuple[ResolvedClass, str]: ...

    def _rebind_after_redeploy(self) -> None: ...

    def _local(self) -> Any: ...


def _run_maybe_async(value: Any) -> Any:
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(value: Any) -> Any:
    return await value


class Method:
    """A remotely callable method of an `Obj`.

    Example:
        counter.increment.remote(5)
        await counter.increment.remote.aio(5)
        call = counter.increment.spawn(5); call.get()
        list(counter.increment.map([1, 2, 3]))
    """

    def __init__(self, obj: MethodOwner, name: str) -> None:
        self._obj = obj
        self.name = name
        self.remote = SyncAndAio(self._remote, self._remote_aio, "Run the method in a container and return its result.")
        self.spawn = SyncAndAio(self._spawn, self._spawn_aio, "Start the method in a container; return a FunctionCall.")
        self.remote_gen = _streams.RemoteGen(self._remote_gen, self._remote_gen_aio)

    def _bound(self) -> tuple[ResolvedClass, str]:
        resolved, service_id = self._obj._bind()
        if self.name not in resolved.method_names:
            raise NotFoundError(
                f"class {self._obj._cls.name} has no method {self.name!r} (methods: {', '.join(resolved.method_names) or 'none'})"
            )
        return resolved, service_id

    def _invoke(self, payload: common_pb2.Payload, wait: bool) -> tuple[ResolvedClass, control_pb2.InvokeResponse]:
        """Send the input through the control plane's queue (rebinding once after a redeploy)."""
        for attempt in (1, 2):
            resolved, service_id = self._bound()
            request = control_pb2.InvokeRequest(service_id=service_id, method=self.name, args=payload, wait=wait)
            try:
                return resolved, resolved.client.call(resolved.client.stub.Invoke, request)
            except ServiceGoneError:
                if attempt == 2:
                    raise
                self._obj._rebind_after_redeploy()
        raise AssertionError("unreachable")

    async def _bound_aio(self) -> tuple[ResolvedClass, str]:
        if self._obj._service is not None:  # already bound: no RPC, so no need to leave the event loop
            return self._bound()
        return await asyncio.to_thread(self._bound)

    async def _invoke_aio(self, payload: common_pb2.Payload, wait: bool) -> tuple[ResolvedClass, control_pb2.InvokeResponse]:
        for attempt in (1, 2):
            resolved, service_id = await self._bound_aio()
            request = control_pb2.InvokeRequest(service_id=service_id, method=self.name, args=payload, wait=wait)
            try:
                return resolved, await resolved.client.call_aio("Invoke", request)
            except ServiceGoneError:
                if attempt == 2:
                    raise
                self._obj._rebind_after_redeploy()
        raise AssertionError("unreachable")

    @property
    def _what(self) -> str:
        return f"the arguments of {self._obj._cls.name}.{self.name}"

    def _remote(self, *args: Any, **kwargs: Any) -> Any:
        data = _serialization.pickle_args(args, kwargs, self._what)
        resolved, service_id = self._bound()
        client = resolved.client
        result = None
        if len(data) <= payloads.BLOB_THRESHOLD_BYTES:  # a blob's input goes through the queue
            result = client.direct.call(service_id, self.name, common_pb2.Payload(format=_serialization.PICKLE, data=data))
        if result is None:
            result = self._invoke(_blobs.payload(client, _serialization.PICKLE, data), wait=True)[1].result
        return _blobs.unwrap(result, client)

    async def _remote_aio(self, *args: Any, **kwargs: Any) -> Any:
        data = _serialization.pickle_args(args, kwargs, self._what)
        resolved, service_id = await self._bound_aio()
        client = resolved.client
        result = None
        if len(data) <= payloads.BLOB_THRESHOLD_BYTES:
            result = await client.direct.call_aio(service_id, self.name, common_pb2.Payload(format=_serialization.PICKLE, data=data))
        if result is None:
            payload = await _blobs.payload_aio(client, _serialization.PICKLE, data)
            result = (await self._invoke_aio(payload, wait=True))[1].result
        return await _blobs.unwrap_aio(result, client)

    def _stream_request(self, resolved: ResolvedClass, service_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> control_pb2.InvokeStreamRequest:
        if not any(m.name == self.name and m.is_generator for m in resolved.class_def.methods):
            raise InvalidError(f"{self._obj._cls.name}.{self.name} is not a generator; call it with .remote()")
        payload = _serialization.encode_args(args, kwargs, self._what)
        return control_pb2.InvokeStreamRequest(service_id=service_id, method=self.name, args=payload)

    def _remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        resolved, service_id = self._bound()
        return _streams.stream(resolved.client, self._stream_request(resolved, service_id, args, kwargs))

    async def _remote_gen_aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        resolved, service_id = await self._bound_aio()
        items = await _streams.stream_aio(resolved.client, self._stream_request(resolved, service_id, args, kwargs))
        async with contextlib.aclosing(items):  # leaving the loop closes the stream now, so the container stops
            async for item in items:
                yield item

    def _spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        data = _serialization.pickle_args(args, kwargs, self._what)
        client = self._bound()[0].client
        resolved, response = self._invoke(_blobs.payload(client, _serialization.PICKLE, data), wait=False)
        return FunctionCall(response.call_id, resolved.client)

    async def _spawn_aio(self, *args: Any, **kwargs: Any) -> FunctionCall:
        data = _serialization.pickle_args(args, kwargs, self._what)
        client = (await self._bound_aio())[0].client
        resolved, response = await self._invoke_aio(await _blobs.payload_aio(client, _serialization.PICKLE, data), wait=False)
        return FunctionCall(response.call_id, resolved.client)

    def map(self, *iterables: Iterable[Any], return_exceptions: bool = False) -> Iterator[Any]:
        """Call the method once per element (zipped across iterables); yield results in input order.

        Example:
            results = list(model.predict.map(["a", "b", "c"]))
        """
        window: deque[FunctionCall] = deque()
        for args in zip(*iterables):
            window.append(self._spawn(*args))
            if len(window) >= _MAP_WINDOW:
                yield from ordered_results([window.popleft()], return_exceptions)
        yield from ordered_results(window, return_exceptions)

    def starmap(self, iterable: Iterable[tuple[Any, ...]], return_exceptions: bool = False) -> Iterator[Any]:
        """Like `map`, with each element unpacked as the arguments."""
        rows = [tuple(row) for row in iterable]
        return self.map(*zip(*rows), return_exceptions=return_exceptions) if rows else iter(())

    def for_each(self, *iterables: Iterable[Any], ignore_exceptions: bool = False) -> None:
        """Call the method once per element (zipped across iterables) and wait for every call;
        results are dropped. The first failure is raised unless `ignore_exceptions`."""
        for result in self.map(*iterables, return_exceptions=ignore_exceptions):
            del result

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method in this process, on an instance whose enter hooks ran here once."""
        instance = self._obj._local()
        return _run_maybe_async(getattr(instance, self.name)(*args, **kwargs))
