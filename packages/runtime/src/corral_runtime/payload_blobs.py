"""The worker's side of blob payloads (`corral_protocol.payloads`): an input's arguments that name
a blob are read before the input runs (held beside the message, not copied into it), and a PICKLE result above the threshold is stored as a blob
before it is sent; both on a thread, off the event loop. A failure becomes the input's Result."""

from __future__ import annotations

import asyncio
from typing import Any

from corral import container_api as sdk
from corral_protocol import payloads
from corral_protocol.v1 import common_pb2, worker_pb2


async def fetch_args(inp: worker_pb2.Input) -> tuple[common_pb2.Result | None, Any]:
    """Read the arguments' blob for the input's decoding, if they name one: (a Result when that
    fails, the handle the worker gives `sdk.release_args` when the input is over)."""
    if not inp.args.blob_id:
        return None, None
    try:
        return None, await asyncio.to_thread(sdk.fetch_args, inp.args)
    except Exception as err:
        return common_pb2.Result(status=common_pb2.RESULT_STATUS_INTERNAL_ERROR,
                                 message=f"could not read the arguments' blob {inp.args.blob_id}: {err}"), None


def offload_result(input_id: str, result: common_pb2.Result, for_direct_caller: bool = False) -> common_pb2.Result:
    """The result, with a large PICKLE value stored as a blob (blocking)."""
    if len(result.value.data) <= payloads.BLOB_THRESHOLD_BYTES:
        return result
    try:
        return sdk.offload_result(result, for_direct_caller)
    except Exception as err:
        return common_pb2.Result(status=common_pb2.RESULT_STATUS_INTERNAL_ERROR,
                                 message=f"could not store the result of input {input_id} as a blob: {err}")


async def offload_result_aio(input_id: str, result: common_pb2.Result) -> common_pb2.Result:
    if len(result.value.data) <= payloads.BLOB_THRESHOLD_BYTES:
        return result
    return await asyncio.to_thread(offload_result, input_id, result)
