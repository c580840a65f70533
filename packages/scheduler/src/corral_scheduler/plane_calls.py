"""The control plane's callers (part of `ControlPlane`): queueing an input, the handle a caller
waits on (`CallHandle`: the future of its result, its HTTP response or generator items), looking a
call up again, cancelling and forgetting it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from corral_protocol.v1 import common_pb2, control_pb2, worker_pb2
from corral_scheduler import events as ev
from corral_scheduler import ids
from corral_scheduler.core import PlaneCore
from corral_scheduler.errors import ApiError, NotFound
from corral_scheduler.lifecycle import InputState

HttpMessage = worker_pb2.HttpResponseStart | worker_pb2.HttpBodyChunk


@dataclass
class CallHandle:
    """A caller's view of one input: its id, the future of its result, and (web requests) the
    stream of its HTTP response."""

    call_id: str
    future: asyncio.Future[common_pb2.Result]
    http_events: asyncio.Queue[HttpMessage] | None = None
    # A generator call's items, for `InvokeStream` (None for other calls: their items are dropped).
    items: asyncio.Queue[common_pb2.Payload] | None = None


class Calls:
    """Calls as their callers see them (part of `ControlPlane`, which resolves their futures)."""

    core: PlaneCore
    _calls: dict[str, CallHandle]

    def handle(self, event: ev.Event) -> None:
        raise NotImplementedError

    def invoke(
        self, service_id: str, method: str, args: common_pb2.Payload, http_request: worker_pb2.HttpRequest | None = None,
        stream: bool = False, durable: bool = False,
    ) -> CallHandle:
        """Queue an input. `durable` (spawned calls): the store keeps it, and its result, across a
        restart of the control plane, until the result is read or expires."""
        call = CallHandle(ids.new_id("fc"), asyncio.get_running_loop().create_future(),
                          asyncio.Queue() if http_request is not None else None, asyncio.Queue() if stream else None)
        self._calls[call.call_id] = call
        try:
            self.handle(ev.InvokeRequested(call.call_id, service_id, method, args, http_request, durable))
        except ApiError:
            self._calls.pop(call.call_id, None)
            raise
        return call

    def register_call(self, call: CallHandle) -> None:
        """A caller's handle for a call the core is about to learn of (a call recovered at start)."""
        self._calls[call.call_id] = call

    def get_input(self, call_id: str) -> CallHandle:
        call = self._calls.get(call_id)
        if call is None:
            raise NotFound(f"call {call_id!r} not found (unknown, or its result expired)")
        return call

    def cancel(self, call_id: str, reason: str = "the call was cancelled") -> control_pb2.CancelOutcome.ValueType:
        """Cancel a call; the answer says what the cancellation found."""
        inp = self.core.inputs.inputs.get(call_id)
        if inp is None or inp.state == InputState.DONE:
            outcome = control_pb2.CANCEL_OUTCOME_ALREADY_DONE
        elif inp.state == InputState.RUNNING:
            outcome = control_pb2.CANCEL_OUTCOME_STOPPING_RUNNING
        else:
            outcome = control_pb2.CANCEL_OUTCOME_NOT_STARTED
        self.handle(ev.CancelRequested(call_id, reason))
        return outcome

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        self.handle(ev.CallForgotten(call_id))
