"""The worker's pushed inputs, one at a time: running one within a slot (an HTTP request answered on
the stream, or a call with its blob-backed arguments and result), a cancelled sync method's grace,
and the way out when the container must give up on its inputs (tell the plane it drains, exit 3).
`Worker` owns the session and the input tasks; this module owns what one task does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable

from corral import container_api as sdk
from corral_protocol.options import CANCEL_GRACE_S
from corral_protocol.v1 import common_pb2, worker_pb2
from corral_runtime import payload_blobs
from corral_runtime.cancellation import outlive_grace
from corral_runtime.runner import THREADS, InputRunner
from corral_runtime.slots import SlotGate
from corral_runtime.web import HttpInputs

Send = Callable[[worker_pb2.WorkerSessionRequest], Awaitable[None]]


async def run_pushed_input(
    inp: worker_pb2.Input, gate: SlotGate, runner: InputRunner, http: HttpInputs, http_inputs: set[str], send: Send,
) -> common_pb2.Result | None:
    """Run one pushed input within a slot. Returns its Result, or None for an HTTP request (answered
    with a streamed HTTP response on the stream, not an Output; its id is in `http_inputs` meanwhile)."""
    await gate.acquire()
    try:
        if inp.HasField("http_request"):
            http_inputs.add(inp.input_id)
            try:
                await http.serve(inp, send)
            finally:
                http_inputs.discard(inp.input_id)
            return None
        failed, fetched = await payload_blobs.fetch_args(inp)
        try:
            if failed is not None:
                result = failed
            elif runner.is_generator(inp.method):
                result = await runner.run_generator(inp, lambda value: send(worker_pb2.WorkerSessionRequest(
                    generator_item=worker_pb2.GeneratorItem(input_id=inp.input_id, value=value))))
            else:
                result = await runner.run_on_loop(inp)
        finally:
            sdk.release_args(inp.args, fetched)
        return await payload_blobs.offload_result_aio(inp.input_id, result)
    finally:
        gate.release()


async def exit_draining(send: Send, reason: str) -> None:
    """Give up on this container: tell the control plane it drains (so it pushes nothing more and has
    the node stop it), then exit 3 anyway if it cannot be told or does not act."""
    sys.stderr.flush()
    with contextlib.suppress(Exception):
        await send(worker_pb2.WorkerSessionRequest(draining=worker_pb2.WorkerDraining(reason=reason)))
        await asyncio.sleep(5)
    os._exit(3)


class CancelGrace:
    """A cancelled sync method gets InputCancelled in its thread and CANCEL_GRACE_S to stop; one
    that outlives it makes the container exit (unless other inputs wait on it: `others_waiting`)."""

    def __init__(self, others_waiting: Callable[[str], bool], send: Send) -> None:
        self._others_waiting = others_waiting
        self._send = send
        self._watchers: set[asyncio.Future[None]] = set()

    def stop_sync_method(self, input_id: str) -> None:
        if THREADS.interrupt(input_id):
            watcher = asyncio.ensure_future(self._grace(input_id))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    async def _grace(self, input_id: str) -> None:
        await outlive_grace(THREADS, input_id, CANCEL_GRACE_S, lambda: self._others_waiting(input_id), self._give_up)

    async def _give_up(self, reason: str) -> None:
        print(f"corral worker: {reason}", file=sys.stderr)
        await exit_draining(self._send, reason)
