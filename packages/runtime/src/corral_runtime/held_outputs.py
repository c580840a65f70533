"""Outputs a worker could not send because its session with the control plane ended.

When the control plane dies (`kill -9`) while a container runs spawned inputs, the worker lets them
finish instead of dropping them: their outputs are held here, and once every input is done the
worker delivers them to the restarted control plane (`WorkerService.DeliverOutputs`, with the
container's own token), which takes each one it awaits (the store kept which container ran which
durable call) and ignores the rest. The worker retries for `DELIVER_FOR_S`, then exits regardless.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc

from corral_protocol.v1 import worker_pb2, worker_pb2_grpc
from corral_runtime.control_channel import open_channel

DELIVER_FOR_S = 120.0  # how long a worker keeps trying to reach a restarted control plane
REFUSED_FOR_S = 10.0  # a plane that keeps refusing the token (it awaits nothing of this container)
_FINAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED)


class HeldOutputs:
    def __init__(self) -> None:
        self.outputs: list[worker_pb2.Output] = []

    def hold(self, message: Any) -> None:
        """Keep the output of a session message that could not be sent (other messages are dropped)."""
        if isinstance(message, worker_pb2.WorkerSessionRequest) and message.WhichOneof("message") == "output":
            self.outputs.append(message.output)

    def take_unsent(self, outbox: asyncio.Queue[Any]) -> None:
        """Hold the outputs still queued for the writer of a session that ended."""
        while not outbox.empty():
            self.hold(outbox.get_nowait())

    async def deliver(self, control_url: str, roots: bytes | None, options: Sequence[tuple[str, Any]],
                      metadata: Sequence[tuple[str, str]], container_id: str) -> bool:
        """Deliver the held outputs to the control plane at `control_url` (TLS trusting `roots` for
        `grpcs://`, as the worker's session); True once it took them."""
        if not self.outputs:
            return True
        request = worker_pb2.DeliverOutputsRequest(container_id=container_id, outputs=self.outputs)
        start = time.monotonic()
        refused_since: float | None = None
        delay = 0.5
        while True:
            try:
                async with open_channel(control_url, roots, options) as channel:
                    await worker_pb2_grpc.WorkerServiceStub(channel).DeliverOutputs(request, metadata=tuple(metadata), timeout=10)
                print(f"corral worker: delivered {len(self.outputs)} output(s) to the control plane after its session ended",
                      file=sys.stderr)
                self.outputs.clear()
                return True
            except grpc.aio.AioRpcError as err:
                now = time.monotonic()
                if err.code() in _FINAL:
                    refused_since = now if refused_since is None else refused_since
                else:
                    refused_since = None
                if now - start + delay > DELIVER_FOR_S or (refused_since is not None and now - refused_since > REFUSED_FOR_S):
                    print(f"corral worker: could not deliver {len(self.outputs)} output(s) to the control plane "
                          f"({err.code().name}: {err.details()}); they are lost", file=sys.stderr)
                    return False
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
