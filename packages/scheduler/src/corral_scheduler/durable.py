"""Durable calls: spawned inputs and their uncollected results survive a restart of the control plane.

The core stays pure: it emits `PersistInput`, `PersistAttempt`, `PersistResult` and `ForgetInput`
(`corral_scheduler.effects`) and the driver writes each handled event's batch of them in one
transaction. At start the driver reads the store back and hands the core one `CallRecovered` per
call; what happens to it is decided here:

- a call with a stored result is done again, and `FunctionCall.from_id(...).get()` finds it;
- a call that never ran is queued again;
- a call that was running in a container waits for that container: a node that reconnects reports
  the containers it still runs (`node_reported`), and the worker, which finished the input, delivers
  its result (`OutputsDelivered`, authenticated by the container token whose digest the store kept).
  When the container's node reports it gone, or no node reports it within the rejoin grace, the
  call counts as a failed attempt, as a container death does. It waits at most its class timeout
  (the default method timeout when none is set), counted from the restart: past that it counts as a
  timed-out attempt and its node is told to stop the container;
- a call that had run and waits for no container (waiting for a retry when the plane stopped)
  counts as a failed attempt: it runs again if its retry policy allows another attempt, and
  otherwise fails with a clear error;
- a call whose app is gone (an ephemeral app does not survive a restart) fails with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from corral_protocol.options import effective_timeout_s
from corral_protocol.v1 import common_pb2
from corral_scheduler.effects import ForgetInput, PersistAttempt, PersistInput, PersistResult, StopContainer
from corral_scheduler.errors import ApiError
from corral_scheduler.events import CallRecovered, Event, OutputsDelivered
from corral_scheduler.lifecycle import InputState, NodeState
from corral_scheduler.model import Input, Service, StoredCall, failure
from corral_scheduler.nodes import NODE_REJOIN_GRACE_S

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

S = common_pb2
log = logging.getLogger("corral.scheduler")


def token_digest(token: str) -> str:
    """What the store keeps of a container token: enough to check it, not to use it."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass
class Awaited:
    """A recovered call whose container may still run it and deliver its result."""

    call_id: str
    container_id: str
    token_digest: str
    node_name: str
    since: float  # monotonic
    timeout_s: float  # its class timeout: how long after the restart it may still run
    seen: bool = False  # its node has reported the container since the restart


class DurableCalls:
    """The core's side of durable calls: what to persist, and how a recovered call continues."""

    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self.awaited: dict[str, Awaited] = {}  # call id -> the container it waits for

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {CallRecovered: self._recovered, OutputsDelivered: self._delivered}

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
            self.core.emit(PersistAttempt(inp.call_id, inp.attempts, self._runner(inp)))

    def _runner(self, inp: Input) -> str:
        container = self.core.containers.containers.get(inp.container_id or "")
        if container is None or inp.state != InputState.RUNNING:
            return ""
        node = self.core.nodes.nodes.get(container.node_id)
        return f"{container.container_id} {token_digest(container.token)} {node.name if node is not None else ''}"

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
        core.nodes.rejoin_until = max(core.nodes.rejoin_until, core.now + NODE_REJOIN_GRACE_S)
        if call.runner:
            container_id, digest, node_name = (call.runner.split(" ", 2) + ["", ""])[:3]
            timeout = effective_timeout_s(service.options)
            self.awaited[call.call_id] = Awaited(call.call_id, container_id, digest, node_name, core.now, timeout)
            return
        self._resume(inp, service)

    def _resume(self, inp: Input, service: Service, failed: common_pb2.Result | None = None) -> None:
        """A recovered call that ran and waits for no container: another attempt if its policy allows,
        else the caller gets `failed` (by default: the restart cost it its last attempt)."""
        core = self.core
        if inp.attempts > service.options.retries.max_retries:
            if failed is None:
                name = f"{service.class_def.name}.{inp.method}"
                message = (f"the control plane restarted while {name} ran (attempt {inp.attempts}); "
                           "its retry policy allows no other attempt")
                failed = failure(S.RESULT_STATUS_INTERNAL_ERROR, message)
            core.inputs.finish(inp, failed)
            return
        inp.queued_at = core.now
        service.queue.append(inp)
        core.dispatch.dispatch(service)

    # Containers that ran recovered calls ----------------------------------------------------------

    def awaits_container(self, container_id: str) -> bool:
        """A recovered call waits for this container's result: its node must not stop it."""
        return any(a.container_id == container_id for a in self.awaited.values())

    def awaits_token(self, token: str) -> bool:
        """The token of a container that a recovered call waits for (it may deliver outputs)."""
        digest = token_digest(token)
        return any(a.token_digest == digest for a in self.awaited.values())

    def node_reported(self, node_name: str, running: Iterable[str]) -> None:
        """A node listed the containers it runs: an awaited one that is missing is gone."""
        running = set(running)
        for awaited in list(self.awaited.values()):
            if awaited.node_name != node_name:
                continue
            if awaited.container_id in running:
                awaited.seen = True
            else:
                self._give_up(awaited, f"its container {awaited.container_id} is gone from node {node_name}")

    def tick(self) -> None:
        """A container that no node reported within the rejoin grace is taken for gone; one that runs
        its call past the class timeout is stopped, and the call counts as timed out."""
        for awaited in list(self.awaited.values()):
            waited = self.core.now - awaited.since
            if waited >= awaited.timeout_s:
                self._stop(awaited)
                self._give_up(awaited, f"ran past its timeout of {awaited.timeout_s:g} s while the control plane restarted",
                              timed_out=True)
            elif not awaited.seen and waited > NODE_REJOIN_GRACE_S:
                self._give_up(awaited, f"no node reported its container {awaited.container_id} after the restart")

    def _stop(self, awaited: Awaited) -> None:
        """Tell the node that runs an overdue container to stop it (a node not back yet stops it when it
        reports it: the plane no longer knows that container)."""
        for node in self.core.nodes.nodes.values():
            if node.name == awaited.node_name and node.state is not NodeState.LOST:
                self.core.emit(StopContainer(node.node_id, awaited.container_id))

    def _give_up(self, awaited: Awaited, why: str, timed_out: bool = False) -> None:
        del self.awaited[awaited.call_id]
        inp = self.core.inputs.inputs.get(awaited.call_id)
        if inp is None or inp.done:
            return
        log.info("call %s will not be delivered by its container: %s", awaited.call_id, why)
        service = self.core.registry.services.get(inp.service_id)
        if service is None or service.retired:
            self.core.inputs.finish(inp, failure(S.RESULT_STATUS_INTERNAL_ERROR, f"call {inp.call_id} could not resume: its service is gone"))
            return
        name = f"{service.class_def.name}.{inp.method}"
        self._resume(inp, service, failure(S.RESULT_STATUS_TIMEOUT, f"{name} {why}") if timed_out else None)

    def _delivered(self, event: OutputsDelivered) -> None:
        """Results from a container that ran recovered calls: each one answers its call, once."""
        digest = token_digest(event.token)
        for output in event.outputs:
            awaited = self.awaited.get(output.input_id)
            if awaited is None or awaited.container_id != event.container_id or awaited.token_digest != digest:
                log.warning("container %s delivered a result for %s, which does not wait for it; ignored",
                            event.container_id, output.input_id)
                continue
            del self.awaited[output.input_id]
            inp = self.core.inputs.inputs.get(output.input_id)
            if inp is not None and not inp.done:
                log.info("call %s: its container %s delivered the result after the restart", inp.call_id, event.container_id)
                self.core.inputs.finish(inp, output.result)


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
            calls[change.call_id] = dataclasses.replace(calls[change.call_id], attempts=change.attempts, runner=change.runner)
        elif isinstance(change, PersistResult) and change.call_id in calls:
            calls[change.call_id] = dataclasses.replace(calls[change.call_id], result=change.result, finished_at=change.finished_at)
        elif isinstance(change, ForgetInput):
            calls.pop(change.call_id, None)
