"""`.remote_gen`: a generator method's items, as the container yields them.

Sync and asyncio callers try the direct path first (`_direct_stream`: items on a container
connection of the call's own); otherwise the call goes through the control plane's `InvokeStream`
(call id, items, then the Result). Leaving the loop early (or cancelling the consuming task)
closes the connection or cancels the RPC; either way the container stops the generator and takes
its next input.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from corral import _serialization
from corral._client import Client, translate_rpc_error
from corral._direct_stream import AioDirectStream, DirectStream, open_stream, open_stream_aio
from corral_protocol.v1 import common_pb2, control_pb2


def _item_or_end(response: control_pb2.InvokeStreamResponse) -> tuple[bool, Any]:
    """(True, item) for an item; (False, None) at a successful end; raises the call's error."""
    kind = response.WhichOneof("message")
    if kind == "item":
        return True, _serialization.decode_value(response.item)
    if kind == "result":
        if response.result.status != common_pb2.RESULT_STATUS_SUCCESS:
            raise _serialization.exception_from(response.result)
        return False, None
    return True, _SKIP  # the call id: nothing to hand out


_SKIP = object()


def stream(client: Client, request: control_pb2.InvokeStreamRequest) -> Iterator[Any]:
    """Iterate over a generator call's items (blocking): straight from a container when the direct
    path takes the call, else through the control plane."""
    direct = open_stream(client.direct, request.service_id, request.method, request.args)
    if direct is not None:
        return _direct_items(direct)
    return _queued_items(client, request)


def _direct_items(direct: DirectStream) -> Iterator[Any]:
    for payload in direct.items():
        yield _serialization.decode_value(payload)
    if direct.result is not None and direct.result.status != common_pb2.RESULT_STATUS_SUCCESS:
        raise _serialization.exception_from(direct.result)


def _queued_items(client: Client, request: control_pb2.InvokeStreamRequest) -> Iterator[Any]:
    responses = client.stub.InvokeStream(request, metadata=client.metadata)
    try:
        for response in responses:
            more, item = _item_or_end(response)
            if not more:
                return
            if item is not _SKIP:
                yield item
    except grpc.RpcError as err:
        raise translate_rpc_error(err, client.url) from None
    finally:
        responses.cancel()


async def stream_aio(client: Client, request: control_pb2.InvokeStreamRequest) -> AsyncGenerator[Any, None]:
    """Iterate over a generator call's items (asyncio): straight from a container when the direct
    path takes the call, else through the control plane."""
    direct = await open_stream_aio(client.direct, request.service_id, request.method, request.args)
    if direct is not None:
        return _direct_items_aio(direct)
    return _queued_items_aio(client, request)


async def _direct_items_aio(direct: AioDirectStream) -> AsyncGenerator[Any, None]:
    items = direct.items()
    try:
        async for payload in items:
            yield _serialization.decode_value(payload)
    finally:
        await items.aclose()  # at once, not when the garbage collector finds it: the container stops
    if direct.result is not None and direct.result.status != common_pb2.RESULT_STATUS_SUCCESS:
        raise _serialization.exception_from(direct.result)


async def _queued_items_aio(client: Client, request: control_pb2.InvokeStreamRequest) -> AsyncGenerator[Any, None]:
    call: Any = client.aio_stub().InvokeStream(request, metadata=client.metadata)
    try:
        async for response in call:
            more, item = _item_or_end(response)
            if not more:
                return
            if item is not _SKIP:
                yield item
    except grpc.RpcError as err:
        raise translate_rpc_error(err, client.url) from None
    finally:
        call.cancel()


class RemoteGen:
    """`method.remote_gen(...)` (an iterator) and `method.remote_gen.aio(...)` (an async iterator)."""

    def __init__(self, sync: Callable[..., Iterator[Any]], aio: Callable[..., AsyncIterator[Any]]) -> None:
        self._sync = sync
        self.aio = aio
        self.__doc__ = "Run a generator method in a container; iterate over its items as they are produced."

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return self._sync(*args, **kwargs)
