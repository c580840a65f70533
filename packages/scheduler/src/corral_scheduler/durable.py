"""Durable calls: spawned inputs and their uncollected results survive a restart of the control plane.

The core stays pure: it emits `PersistInput`, `PersistAttempt`, `PersistResult` and `ForgetInput`
(`corral_scheduler.effects`) and the driver writes each handled event's batch of them in one
transaction. At start the driver reads the store back and hands the core one `CallRecovered` per
call; what happens to it is decided here:

- a call with a stored result is done again, and `FunctionCall.from_id(...).get()` finds it;
- a call that never ran is queued again;
- a call that had run (it was running, or waiting for a retry, when the plane stopped) counts as a
  failed attempt, as a container death does: it runs again if its retry policy allows another
  attempt, and otherwise fails with a clear error;
- a call whose app is gone (an ephemeral app does not survive a restart) fails with the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral_protocol.v1 import common_pb2
from corral_scheduler.effects import ForgetInput, PersistAttempt, PersistInput, PersistResult
from corral_scheduler.errors import ApiError
from corral_scheduler.events import CallRecovered, Event
from corral_scheduler.lifecycle import InputState
from corral_scheduler.model import Input, Service, StoredCall, failure
from corral_scheduler.nodes import NODE_REJOIN_GRACE_S

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

S = common_pb2


class DurableCalls:
    """The core's side of durable calls: what to persist, and how a recovered call continues."""

    def __init__(self, core: PlaneCore) -> None:
        self.core = core

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {CallRecovered: self._recovered}

    # What the store learns ------------------------------------------------------------------------

    def accepted(self, inp: Input, service: Service) -> None:
        """A durable input joined its queue: the store keeps it, with what binds its service again."""
        self.core.emit(PersistInput(StoredCall(
            call_id=inp.call_id, app_id=service.app_id, class_name=service.class_def.name,
            parameters=tuple(service.parameters), override=service.override, method=inp.method, args=inp.args,
            created_at=self.core.wall,
        )))

    def attempted(self, inp: Input) -> None:
        """Its attempt count changed (pushed to a container, or given back undelivered)."""
        if inp.durable:
            self.core.emit(PersistAttempt(inp.call_id, inp.attempts))

    def finished(self, inp: Input, result: common_pb2.Result) -> None:
        """It is done: its result waits in the store for the caller."""
        if inp.durable:
            self.core.emit(PersistResult(inp.call_id, result, self.core.wall))

    def forgotten(self, inp: Input) -> None:
        """Its result was read, or expired: the store drops it."""
        if inp.durable:
            self.core.emit(ForgetInput(inp.call_id))

    # Recovery ---------------------------------------------------------------------------------------

    def _recovered(self, event: CallRecovered) -> None:
        core = self.core
        call: StoredCall = event.call
        if call.call_id in core.inputs.inputs:
            return
        inp = Input(call_id=call.call_id, service_id=event.service_id, method=call.method, args=call.args,
                    attempts=call.attempts, durable=True, queued_at=core.now)
        inp.history.record(core.now, None, InputState.QUEUED, "recovered from the store after a restart")
        core.inputs.inputs[inp.call_id] = inp
        if call.result is not None:
            core.inputs.finish(inp, call.result, persist=False)
            # Its result keeps the time to live it had left.
            inp.done_at = core.now - max(0.0, core.wall - call.finished_at)
            return
        service = core.registry.services.get(event.service_id)
        if service is None or service.retired:
            reason = event.reason or "its service is gone"
            core.inputs.finish(inp, failure(S.RESULT_STATUS_INTERNAL_ERROR, f"call {call.call_id} could not resume after the control plane restarted: {reason}"))
            return
        if call.attempts > service.options.retries.max_retries:
            name = f"{service.class_def.name}.{call.method}"
            message = (f"the control plane restarted while {name} ran (attempt {call.attempts}); "
                       "its retry policy allows no other attempt")
            core.inputs.finish(inp, failure(S.RESULT_STATUS_INTERNAL_ERROR, message))
            return
        core.nodes.rejoin_until = max(core.nodes.rejoin_until, core.now + NODE_REJOIN_GRACE_S)
        service.queue.append(inp)
        core.dispatch.dispatch(service)


def recovery_events(core: PlaneCore, call: StoredCall) -> list[Event]:
    """The events that bring a stored call back: its service bound again (when it has no result
    yet and its app is still there), then `CallRecovered`."""
    if call.result is not None:
        return [CallRecovered(call, "")]
    try:
        binding = core.registry.binding(call.app_id, call.class_name, call.parameters, call.override)
    except ApiError as err:
        return [CallRecovered(call, "", err.message)]
    bind = [] if binding.exists else [binding.event]
    return [*bind, CallRecovered(call, binding.service_id)]


def apply_call_changes(calls: dict[str, StoredCall], changes: list[Any]) -> None:
    """What a store does with a batch of durable-call changes, in memory (the test harness's store)."""
    for change in changes:
        if isinstance(change, PersistInput):
            calls[change.call.call_id] = change.call
        elif isinstance(change, PersistAttempt) and change.call_id in calls:
            calls[change.call_id] = dataclasses.replace(calls[change.call_id], attempts=change.attempts)
        elif isinstance(change, PersistResult) and change.call_id in calls:
            calls[change.call_id] = dataclasses.replace(calls[change.call_id], result=change.result, finished_at=change.finished_at)
        elif isinstance(change, ForgetInput):
            calls.pop(change.call_id, None)
