"""The input lifecycle: queued -> running -> done, with retry-wait between attempts.

An input is one call. It may run several times (retries, on other containers); its caller is
answered once (`ResolveCall`). Its timers (the running attempt's timeout, or the retry delay) share
one key, since an input is never in both states at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral_protocol.arguments import refusal as argument_refusal
from corral_protocol.v1 import common_pb2
from corral_scheduler.autoscaler import retry_delay_s
from corral_scheduler.effects import ArmTimer, CancelInput, CancelTimer, DropCall, ResolveCall
from corral_scheduler.errors import NotFound, QueueFull
from corral_scheduler.events import CallForgotten, CancelRequested, InputTimedOut, InvokeRequested, RetryDue
from corral_scheduler.lifecycle import InputState
from corral_scheduler.model import Input, Service, failure

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")

S = common_pb2
RETRYABLE = (S.RESULT_STATUS_USER_ERROR, S.RESULT_STATUS_TIMEOUT, S.RESULT_STATUS_INTERNAL_ERROR)


def timer_key(call_id: str) -> str:
    return f"input:{call_id}"


class Inputs:
    """Every input by call id, until its result is read or expires."""

    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self.inputs: dict[str, Input] = {}
        self._last_sweep = 0.0

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {
            InvokeRequested: self._invoke, CancelRequested: self._cancel, CallForgotten: self._forget,
            InputTimedOut: self._timed_out, RetryDue: self._retry_due,
        }

    def _invoke(self, event: InvokeRequested) -> None:
        service = self.core.registry.live_service(event.service_id)
        if not any(m.name == event.method for m in service.class_def.methods):
            names = ", ".join(m.name for m in service.class_def.methods)
            raise NotFound(f"class {service.class_def.name} has no method {event.method!r} (methods: {names})")
        if len(service.queue) >= self.core.max_queue:
            raise QueueFull(
                f"the queue of {service.class_def.name} is full ({self.core.max_queue} inputs waiting); "
                "retry later, or raise max_containers so that it drains faster"
            )
        inp = Input(call_id=event.call_id, service_id=service.service_id, method=event.method, args=event.args,
                    http_request=event.http_request, durable=event.durable and event.http_request is None,
                    queued_at=self.core.now)
        inp.history.record(self.core.now, None, InputState.QUEUED, "invoked")
        self.inputs[inp.call_id] = inp
        refused = None if event.http_request is not None else argument_refusal(service.class_def, event.method, event.args)
        if refused is not None:  # JSON arguments that do not fit the method's signature: no container starts
            self.finish(inp, refused)
            return
        if inp.durable:
            self.core.durable.accepted(inp, service)
        service.queue.append(inp)
        self.core.dispatch.dispatch(service)

    def _cancel(self, event: CancelRequested) -> None:
        inp = self.inputs.get(event.call_id)
        if inp is None or inp.done:
            return
        service = self.core.registry.services.get(inp.service_id)
        if inp.state == InputState.RUNNING and inp.container_id is not None:
            container = self.core.containers.containers.get(inp.container_id)
            if container is not None and container.running.pop(inp.call_id, None) is not None:
                self.core.emit(CancelInput(container.container_id, inp.call_id))
                self.core.containers.mark_idle(container)
        elif inp.state == InputState.QUEUED and service is not None:
            with contextlib.suppress(ValueError):
                service.queue.remove(inp)
        self.finish(inp, failure(S.RESULT_STATUS_CANCELLED, event.reason))
        if service is not None:
            self.core.dispatch.dispatch(service)

    def _forget(self, event: CallForgotten) -> None:
        inp = self.inputs.pop(event.call_id, None)
        if inp is not None:
            self.core.durable.forgotten(inp)

    def _timed_out(self, event: InputTimedOut) -> None:
        inp = self.inputs.get(event.call_id)
        container = self.core.containers.containers.get(event.container_id)
        if inp is None or inp.state != InputState.RUNNING or inp.container_id != event.container_id or inp.attempts != event.attempt:
            return
        if container is None:
            return
        container.running.pop(inp.call_id, None)
        service = self.core.registry.services[inp.service_id]
        timeout = service.options.timeout_s
        result = failure(S.RESULT_STATUS_TIMEOUT, f"{service.class_def.name}.{inp.method} timed out after {timeout:g} s")
        self.core.containers.kill(container, f"input {inp.call_id} timed out")
        self.fail_or_retry(inp, result, service)

    def _retry_due(self, event: RetryDue) -> None:
        inp = self.inputs.get(event.call_id)
        if inp is None or inp.state != InputState.RETRY_WAIT:
            return
        service = self.core.registry.services.get(inp.service_id)
        if service is None or service.retired:
            self.finish(inp, failure(S.RESULT_STATUS_CANCELLED, "the app was stopped before the retry ran"))
            return
        self.core.move_input(inp, InputState.QUEUED, f"retry {inp.attempts + 1}")
        inp.queued_at = self.core.now
        service.queue.appendleft(inp)
        self.core.dispatch.dispatch(service)

    # Transitions shared with other jobs ---------------------------------------------------------

    def finish(self, inp: Input, result: common_pb2.Result, persist: bool = True) -> None:
        """Answer the caller; nothing more happens to this input. `persist`: a durable input's
        result goes to the store (False: it came from there)."""
        if inp.done:
            return
        if inp.state in (InputState.RUNNING, InputState.RETRY_WAIT):
            self.core.emit(CancelTimer(timer_key(inp.call_id)))
        self.core.move_input(inp, InputState.DONE, S.ResultStatus.Name(result.status))
        inp.container_id = None
        inp.result = result
        inp.done_at = self.core.now
        if persist:
            self.core.durable.finished(inp, result)
        self.core.emit(ResolveCall(inp.call_id, result))

    def fail_or_retry(self, inp: Input, result: common_pb2.Result, service: Service) -> None:
        """A failed attempt: another one after the policy's delay, or the caller gets the failure."""
        policy = service.options.retries
        if result.status in RETRYABLE and inp.attempts <= policy.max_retries and not service.retired and not inp.done:
            self.core.move_input(inp, InputState.RETRY_WAIT, result.message or S.ResultStatus.Name(result.status))
            inp.container_id = None
            delay = retry_delay_s(inp.attempts, policy.initial_delay_s, policy.backoff_coefficient or 1.0, policy.max_delay_s or 60.0)
            log.info("retrying %s (attempt %d of %d) in %.1f s: %s", inp.call_id, inp.attempts + 1, policy.max_retries + 1, delay, result.message)
            self.core.emit(ArmTimer(timer_key(inp.call_id), delay, RetryDue(inp.call_id)))
            return
        self.finish(inp, result)

    def fail_queue(self, service: Service, result: common_pb2.Result) -> None:
        while service.queue:
            self.finish(service.queue.popleft(), result)

    def tick(self) -> None:
        """Results nobody read go after RESULT_TTL_S."""
        now = self.core.now
        if now - self._last_sweep <= self.core.RESULT_SWEEP_S:
            return
        self._last_sweep = now
        expired = [k for k, i in self.inputs.items() if i.done_at is not None and now - i.done_at > self.core.RESULT_TTL_S]
        for key in expired:
            self.core.durable.forgotten(self.inputs.pop(key))
            self.core.emit(DropCall(key))
