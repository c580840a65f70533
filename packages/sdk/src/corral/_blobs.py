"""Payloads above the inline threshold travel as content-addressed blobs (`corral_protocol.payloads`).

The sender streams the serialized bytes to the control plane (`PutBlob`, in 1 MiB chunks sliced
from the one buffer it already holds, so the client never needs twice the payload) and sends only
the blob's id and size; the receiver streams it back (`GetBlob`) into one preallocated buffer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc

from corral import _serialization
from corral.exception import InvalidError
from corral_protocol import payloads
from corral_protocol.v1 import common_pb2, control_pb2

if TYPE_CHECKING:
    from corral._client import Client


def put(client: Client, data: bytes | bytearray | memoryview, for_direct_caller: bool = False) -> str:
    """Store `data` as a blob on the control plane; returns its id (the sha256 of the bytes).
    `for_direct_caller`: a container's result for a direct input (any token naming it may read it)."""
    view = memoryview(data).cast("B")
    blob_id = hashlib.sha256(view).hexdigest()
    size = len(view)

    def chunks() -> Iterator[control_pb2.PutBlobRequest]:
        step = payloads.BLOB_CHUNK_BYTES
        yield control_pb2.PutBlobRequest(blob_id=blob_id, size=size, chunk=bytes(view[:step]), for_direct_caller=for_direct_caller)
        for start in range(step, size, step):
            yield control_pb2.PutBlobRequest(chunk=bytes(view[start:start + step]))

    response: control_pb2.PutBlobResponse = client.call(client.stub.PutBlob, chunks())
    return response.blob_id


def get(client: Client, blob_id: str, size: int) -> bytearray:
    """A blob's bytes, read into one buffer of the size the payload declared."""
    buffer = bytearray(size)
    filled = 0
    try:
        for message in client.stub.GetBlob(control_pb2.GetBlobRequest(blob_id=blob_id), metadata=client.metadata):
            end = filled + len(message.chunk)
            if end > size:
                raise InvalidError(f"blob {blob_id} is larger than the {size} bytes its payload declared")
            buffer[filled:end] = message.chunk
            filled = end
    except grpc.RpcError as err:
        from corral._client import translate_rpc_error

        raise translate_rpc_error(err, client.url) from None
    if filled != size:
        raise InvalidError(f"blob {blob_id} has {filled} bytes; its payload declared {size}")
    return buffer


def payload(client: Client, fmt: common_pb2.PayloadFormat.ValueType, data: bytes) -> common_pb2.Payload:
    """`data` inline, or above the threshold stored as a blob and referenced."""
    if len(data) <= payloads.BLOB_THRESHOLD_BYTES:
        return common_pb2.Payload(format=fmt, data=data)
    return common_pb2.Payload(format=fmt, blob_id=put(client, data), blob_size=len(data))


async def payload_aio(client: Client, fmt: common_pb2.PayloadFormat.ValueType, data: bytes) -> common_pb2.Payload:
    """`payload`, off the event loop when it uploads a blob."""
    if len(data) <= payloads.BLOB_THRESHOLD_BYTES:
        return common_pb2.Payload(format=fmt, data=data)
    return await asyncio.to_thread(payload, client, fmt, data)


def unwrap(result: common_pb2.Result, client: Client) -> Any:
    """`_serialization.unwrap`, reading a value stored as a blob through `client`."""
    if result.status == common_pb2.RESULT_STATUS_SUCCESS and result.value.blob_id:
        return _serialization.unwrap(result, get(client, result.value.blob_id, result.value.blob_size))
    return _serialization.unwrap(result)


async def unwrap_aio(result: common_pb2.Result, client: Client) -> Any:
    """`unwrap`, off the event loop when it reads a blob."""
    if result.status == common_pb2.RESULT_STATUS_SUCCESS and result.value.blob_id:
        return await asyncio.to_thread(unwrap, result, client)
    return _serialization.unwrap(result)


def offload_result(client: Client, result: common_pb2.Result, for_direct_caller: bool = False) -> common_pb2.Result:
    """A result whose value is above the threshold, with the value stored as a blob (a container's side)."""
    if len(result.value.data) <= payloads.BLOB_THRESHOLD_BYTES:
        return result
    data = result.value.data
    slim = common_pb2.Result()
    slim.CopyFrom(result)
    slim.value.Clear()
    slim.value.CopyFrom(common_pb2.Payload(format=result.value.format, blob_id=put(client, data, for_direct_caller), blob_size=len(data)))
    return slim
