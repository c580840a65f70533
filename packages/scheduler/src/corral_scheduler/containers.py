"""The container lifecycle (see `lifecycle.ContainerState`) and the events of a container's worker.

A container is placed on a node, connects, runs its hooks (with the snapshot phases between them
when it takes or restores a memory snapshot), serves, and stops: gracefully (drain, exit hooks,
killed after a grace) or by a kill. Its exit decides what its callers see: inputs it was running
fail or retry; a container that dies before it was ready is an init failure (or a failed snapshot).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral_protocol.env import APP_KIND_DEPLOYED, APP_KIND_EPHEMERAL, CORRAL_APP_ID, CORRAL_APP_KIND, CORRAL_APP_NAME
from corral_protocol.options import effective_max_inputs, effective_startup_timeout_s
from corral_protocol.v1 import common_pb2, control_pb2, node_pb2, worker_pb2
from corral_scheduler.autoscaler import init_backoff_s
from corral_scheduler.container_exits import ContainerExit, RecentExits, lost_input_message
from corral_scheduler.effects import (
    ArmTimer,
    CancelTimer,
    CloseWorkerSession,
    InitWorker,
    RelayHttp,
    RelayItem,
    ShutdownWorker,
    StartContainer,
    StopContainer,
)
from corral_scheduler.events import (
    ContainerExited,
    ContainerStarted,
    InitFailed,
    LostWorkerGraceExpired,
    StartRefused,
    StartupTimedOut,
    StopGraceExpired,
    WorkerConnected,
    WorkerDisconnected,
    WorkerDraining,
    WorkerHttp,
    WorkerItem,
    WorkerLoad,
    WorkerOutput,
    WorkerReady,
)
from corral_scheduler.inputs import timer_key
from corral_scheduler.lifecycle import ContainerState, InputState
from corral_scheduler.model import Container, Service, failure
from corral_scheduler.placement import Unplaceable
from corral_scheduler.snapshot_keys import StartMode

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")

S = common_pb2
CS = ContainerState
# States in which a worker's message may legitimately cross the plane's stop: it is ignored there.
# In any other state a message the lifecycle does not allow is an invalid transition.
_STOPPING = frozenset({CS.LOST, CS.DRAINING, CS.KILLED, CS.START_TIMED_OUT, CS.FAILED})


def _stop_key(container_id: str) -> str:
    return f"stop:{container_id}"


def _start_key(container_id: str) -> str:
    return f"start:{container_id}"


def _lost_key(container_id: str) -> str:
    return f"lost:{container_id}"


class Containers:
    """Every container until it exits, and the tokens its worker may present."""

    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self.containers: dict[str, Container] = {}
        self.tokens: dict[str, str] = {}  # worker token -> container id
        self.recent_exits = RecentExits()  # why forgotten containers ended, for direct callers

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {
            WorkerConnected: self._connected, WorkerReady: self._ready, InitFailed: self._init_failed,
            WorkerOutput: self._output, WorkerHttp: self._http, WorkerItem: self._item, WorkerLoad: self._load, WorkerDraining: self._draining,
            WorkerDisconnected: self._disconnected, StartRefused: self._start_refused, ContainerStarted: self._started,
            ContainerExited: self._exited, StopGraceExpired: self._grace_expired, StartupTimedOut: self._startup_timed_out,
            LostWorkerGraceExpired: self._lost_grace_expired,
        }

    def owner_of(self, token: str) -> str | None:
        """The container a worker token belongs to."""
        return self.tokens.get(token)

    # Starting ---------------------------------------------------------------------------------

    def start(self, service: Service) -> bool:
        """Place one container of the service and ask its node to start it; False when none can start now."""
        core = self.core
        key = core.snapshots.key_for(service)
        try:
            placement = core.nodes.place(service.options.resources, key)
        except Unplaceable as err:
            if not core.nodes.connected_nodes() and core.now < core.nodes.rejoin_until:
                return False  # after a restart, recovered calls wait for the nodes to come back
            core.inputs.fail_queue(service, failure(S.RESULT_STATUS_INTERNAL_ERROR, f"cannot start {service.class_def.name}: {err}"))
            return False
        if placement is None:
            return False
        node = core.nodes.nodes[placement.node_id]
        app = core.registry.apps[service.app_id]
        resources = service.options.resources
        container = Container(
            container_id=core.new_id("ct"), token=core.new_token(), service_id=service.service_id,
            node_id=node.node_id, resources=resources, gpu_indices=placement.gpu_indices, gpu_uuids=placement.gpu_uuids,
            slots=effective_max_inputs(service.options), started_at=core.wall, idle_since=core.now,
            direct_token=core.new_token() if service.direct_enabled else "",
        )
        start = node_pb2.StartContainer(
            container_id=container.container_id, container_token=container.token, app_id=service.app_id,
            bundle_hash=app.bundle_hash, resources=resources, gpu_indices=list(placement.gpu_indices), gpu_uuids=placement.gpu_uuids,
            control_url=core.control_url, class_name=service.class_def.name,
            image=service.options.image if service.options.HasField("image") else None,
        )
        core.snapshots.plan(service, node, container, start, key)
        container.state = CS.RESTORING if container.start_mode == StartMode.RESTORE else CS.PLACED
        container.history.record(core.now, None, container.state, f"placed on node {node.name}")
        core.nodes.reserve(node, container)
        service.containers[container.container_id] = container
        self.containers[container.container_id] = container
        self.tokens[container.token] = container.container_id
        kind = APP_KIND_DEPLOYED if app.kind == control_pb2.APP_KIND_DEPLOYED else APP_KIND_EPHEMERAL
        start.env.update({CORRAL_APP_ID: app.app_id, CORRAL_APP_NAME: app.name, CORRAL_APP_KIND: kind})
        core.emit(StartContainer(node.node_id, start, tuple(service.options.secrets)))
        log.info("starting container %s for %s on node %s%s", container.container_id, service.class_def.name, node.name,
                 f" with GPU(s) {', '.join(placement.gpu_uuids)} ({placement.choice})" if placement.gpu_uuids else "")
        startup_timeout = effective_startup_timeout_s(service.options)
        core.emit(ArmTimer(_start_key(container.container_id), startup_timeout, StartupTimedOut(container.container_id, startup_timeout)))
        return True

    def _start_refused(self, event: StartRefused) -> None:
        """The driver could not start it (a named secret is gone): its service's queue fails, and
        no other start is tried until the next event that scales it."""
        container = self.containers.get(event.container_id)
        if container is None:
            return
        self._forget(container, CS.EXITED, f"its start was refused: {event.message}")
        service = self.core.registry.services[container.service_id]
        self.core.inputs.fail_queue(service, failure(S.RESULT_STATUS_INIT_ERROR, event.message))

    def _started(self, event: ContainerStarted) -> None:
        self.core.nodes.seen(event.node_id)
        container = self.containers.get(event.container_id)
        if container is None:
            return
        container.pid = event.pid
        if event.snapshot_error and container.state == CS.RESTORING:
            self.core.move_container(container, CS.PLACED, f"restore failed, started cold: {event.snapshot_error}")
            self.core.snapshots.restore_failed(container, event.snapshot_error)

    def _startup_timed_out(self, event: StartupTimedOut) -> None:
        """A start-up (import and @enter) that outlasts the startup timeout: the container is killed
        and counts as an init failure, so callers are not left waiting on a hung hook."""
        container = self.containers.get(event.container_id)
        if container is None or not container.state.is_starting:
            return
        container.exit_reason = f"it did not finish starting (import and @enter hooks) within {event.timeout_s:g} s"
        self.core.move_container(container, CS.START_TIMED_OUT, container.exit_reason)
        self.core.emit(StopContainer(container.node_id, container.container_id))

    # The worker's session -----------------------------------------------------------------------

    def _connected(self, event: WorkerConnected) -> None:
        container = self.containers[event.container_id]
        service = self.core.registry.services[container.service_id]
        take = container.state == CS.PLACED and container.start_mode == StartMode.TAKE
        options = service.options
        init = worker_pb2.ContainerInit(
            app_id=service.app_id, class_def=service.class_def, parameters=service.parameters,
            concurrency=options.concurrency, batching=options.batching, options=options,
            # Nothing a later caller could use enters an image: no direct token before the dump.
            direct_token="" if take else container.direct_token, take_snapshot=take,
        )
        self.core.emit(InitWorker(container.container_id, init))
        if take:
            self.core.move_container(container, CS.TAKING, "connected")
        elif container.state in (CS.PLACED, CS.RESTORING, CS.AT_SNAPSHOT_POINT):
            self.core.move_container(container, CS.STARTING, "connected")
        else:  # it is being stopped (or was given up on) while it was not connected
            self.core.emit(ShutdownWorker(container.container_id))

    def _ready(self, event: WorkerReady) -> None:
        container = self.containers.get(event.container_id)
        if container is None or container.state in _STOPPING:
            return  # a stop crossed the worker's ready message
        service = self.core.registry.services[container.service_id]
        self.core.move_container(container, CS.READY, "its @enter hooks ran")
        container.slots = max(1, event.slots)
        container.direct_address = event.direct_address
        container.idle_since = container.ready_at = self.core.now
        service.init_failures = 0
        self.core.emit(CancelTimer(_start_key(container.container_id)))
        log.info("container %s ready (%s)", container.container_id, service.class_def.name)
        self.core.dispatch.dispatch(service)

    def _init_failed(self, event: InitFailed) -> None:
        container = self.containers.get(event.container_id)
        if container is None or container.state in _STOPPING:
            return  # a stop crossed the worker's message; the exit tells the rest
        service = self.core.registry.services[container.service_id]
        message = f"{service.class_def.name} failed to start: its @enter hook raised {event.exception_type}: {event.message}"
        self.core.move_container(container, CS.FAILED, f"{event.exception_type}: {event.message}")
        self.core.emit(CancelTimer(_start_key(container.container_id)))
        self.init_failure(service, failure(S.RESULT_STATUS_INIT_ERROR, message, event.traceback))

    def _output(self, event: WorkerOutput) -> None:
        container = self.containers.get(event.container_id)
        inp = container.running.pop(event.input_id, None) if container is not None else None
        if container is None or inp is None:
            return
        container.inputs_served += 1
        self.mark_idle(container)
        service = self.core.registry.services[container.service_id]
        if event.result.status == S.RESULT_STATUS_SUCCESS:
            self.core.inputs.finish(inp, event.result)
        else:
            self.core.inputs.fail_or_retry(inp, event.result, service)
        self.core.dispatch.dispatch(service)

    def _http(self, event: WorkerHttp) -> None:
        container = self.containers.get(event.container_id)
        inp = container.running.get(event.message.input_id) if container is not None else None
        if inp is None or inp.http_request is None:
            return
        self.core.emit(RelayHttp(inp.call_id, event.message))
        if isinstance(event.message, worker_pb2.HttpBodyChunk) and not event.message.more_body:
            success = common_pb2.Result(status=S.RESULT_STATUS_SUCCESS)
            self._output(WorkerOutput(event.container_id, inp.call_id, success))

    def _item(self, event: WorkerItem) -> None:
        container = self.containers.get(event.container_id)
        inp = container.running.get(event.item.input_id) if container is not None else None
        if inp is not None:
            self.core.emit(RelayItem(inp.call_id, event.item.value))

    def _load(self, event: WorkerLoad) -> None:
        """The worker's count of direct inputs changed: the autoscaler and dispatch see it."""
        container = self.containers.get(event.container_id)
        if container is None:
            return
        previous = container.direct_running
        served = max(0, event.direct_served - container.direct_served)
        container.direct_running = event.direct_running
        container.direct_served = event.direct_served
        container.inputs_served += served
        if served or event.direct_running:
            container.idle_since = self.core.now  # direct activity since the last report
        if event.direct_running != previous:
            self.core.dispatch.dispatch(self.core.registry.services[container.service_id])

    def _draining(self, event: WorkerDraining) -> None:
        """The worker gives up (a direct input ran past its timeout): kill it now, as the control
        plane does when a pushed input times out."""
        container = self.containers.get(event.container_id)
        if container is not None:
            self.kill(container, event.reason or "the container asked to be stopped")

    def _disconnected(self, event: WorkerDisconnected) -> None:
        container = self.containers.get(event.container_id)
        if container is None:
            return
        if container.state.is_connected:
            self.core.move_container(container, CS.LOST, "its session ended")
        self._requeue_undelivered(container, event.undelivered)
        self.core.emit(ArmTimer(_lost_key(container.container_id), self.core.LOST_WORKER_GRACE_S,
                                LostWorkerGraceExpired(container.container_id)))

    def _requeue_undelivered(self, container: Container, call_ids: tuple[str, ...]) -> None:
        """Inputs that never left the plane never started: back to the front of the queue, the
        attempt not counted, and onto another container at once."""
        service = self.core.registry.services[container.service_id]
        for call_id in reversed(call_ids):
            inp = container.running.pop(call_id, None)
            if inp is None or inp.done:
                continue
            self.core.emit(CancelTimer(timer_key(call_id)))
            self.core.move_input(inp, InputState.QUEUED, f"never sent to {container.container_id}, whose stream ended")
            inp.attempts -= 1
            inp.container_id = None
            inp.queued_at = self.core.now
            self.core.durable.attempted(inp)
            service.queue.appendleft(inp)
        if call_ids:
            self.core.dispatch.dispatch(service)

    def _lost_grace_expired(self, event: LostWorkerGraceExpired) -> None:
        self.gone(event.container_id, None, "the control plane lost its connection to the container", "")

    def _grace_expired(self, event: StopGraceExpired) -> None:
        container = self.containers.get(event.container_id)
        if container is not None:
            self.kill(container, "it did not stop within the grace period")

    def _exited(self, event: ContainerExited) -> None:
        if event.node_id:
            self.core.nodes.seen(event.node_id)
        self.gone(event.container_id, event.exit_code, event.reason, event.stderr_tail)

    # Transitions shared with other jobs ---------------------------------------------------------

    def mark_idle(self, container: Container) -> None:
        if not container.load:
            container.idle_since = self.core.now

    def stop(self, container: Container, cause: str = "stopped", grace_s: float | None = None) -> None:
        """Graceful stop: the worker drains, runs exit hooks and exits; killed after a grace period
        (`grace_s`, else STOP_GRACE_S)."""
        if container.state in (CS.DRAINING, CS.KILLED, CS.START_TIMED_OUT, CS.FAILED, CS.EXITED):
            return
        if container.state.is_connected:
            self.core.move_container(container, CS.DRAINING, cause)
            self.core.emit(ShutdownWorker(container.container_id))
            self.core.emit(ArmTimer(_stop_key(container.container_id), self.core.STOP_GRACE_S if grace_s is None else grace_s,
                                    StopGraceExpired(container.container_id)))
        else:
            self.kill(container, "stopped before it started")

    def kill(self, container: Container, reason: str) -> None:
        if container.container_id not in self.containers:
            return
        container.exit_reason = container.exit_reason or reason
        if container.state not in (CS.KILLED, CS.START_TIMED_OUT):
            self.core.move_container(container, CS.KILLED, reason)
        self.core.emit(StopContainer(container.node_id, container.container_id))

    def init_failure(self, service: Service, result: common_pb2.Result) -> None:
        """Every queued call fails with the init error, and the next start backs off."""
        service.init_failures += 1
        backoff = init_backoff_s(service.init_failures)
        service.next_start_at = self.core.now + backoff
        service.last_init_error = result
        log.warning("%s (next start in %.0f s)", result.message, backoff)
        self.core.inputs.fail_queue(service, result)

    def _forget(self, container: Container, finish: ContainerState, cause: str) -> ContainerState:
        """Drop the container's bookkeeping; returns the state it was in."""
        previous = container.state
        del self.containers[container.container_id]
        for key in (_stop_key, _start_key, _lost_key):
            self.core.emit(CancelTimer(key(container.container_id)))
        # A worker whose container the plane forgot (its node was lost, say) must not live on outside
        # the cluster: its session ends, and a worker without a session exits.
        self.core.emit(CloseWorkerSession(container.container_id))
        self.tokens.pop(container.token, None)
        self.tokens.pop(container.pre_snapshot_token, None)
        self.core.snapshots.container_gone(container)
        self.core.nodes.release(container)
        self.core.registry.services[container.service_id].containers.pop(container.container_id, None)
        self.core.move_container(container, finish, cause)
        return previous

    def gone(self, container_id: str, exit_code: int | None, reason: str, stderr_tail: str, node_lost: bool = False) -> None:
        """The container's process is gone (exit, lost node, lost connection). `node_lost`: gone with
        its node (`Nodes.lose`), which is no init failure of its class."""
        container = self.containers.get(container_id)
        if container is None:
            return
        code = f" (exit code {exit_code})" if exit_code is not None else ""
        why = container.exit_reason or reason
        previous = self._forget(container, CS.EXITED, f"{why}{code}")
        service = self.core.registry.services[container.service_id]
        detail = f"\n\nLast lines of the container's stderr:\n{stderr_tail}" if stderr_tail else ""
        never_ready = previous.is_starting or previous == CS.START_TIMED_OUT or (previous == CS.LOST and container.ready_at is None)
        starting = never_ready and not self.core.shutting_down and not service.retired and not node_lost
        if starting and container.start_mode in (StartMode.TAKE, StartMode.RESTORE) and not container.exit_reason:
            # A dump or restore gone wrong is never a failed call: count it, start another container.
            self.core.snapshots.book.failed(
                container.snapshot_key, f"{container.start_mode.value} container exited before it was ready{code}: {reason}",
            )
        elif starting:
            message = f"{service.class_def.name}'s container exited before it was ready{code}: {why}"
            self.init_failure(service, failure(S.RESULT_STATUS_INIT_ERROR, message + detail, stderr_tail))
        name = service.class_def.name
        methods = frozenset(m.name for m in service.class_def.methods)
        self.recent_exits.add(container_id, ContainerExit(service.service_id, name, methods, why, exit_code, stderr_tail, node_lost, service.app_id))
        for inp in list(container.running.values()):
            message = lost_input_message(name, inp.method, why, exit_code, stderr_tail, node_lost)
            self.core.inputs.fail_or_retry(inp, failure(S.RESULT_STATUS_INTERNAL_ERROR, message), service)
        container.running.clear()
        if exit_code not in (None, 0) or previous not in (CS.DRAINING, CS.KILLED):
            log.info("container %s exited%s: %s", container_id, code, why)
        self.core.dispatch.scale_fairly()  # the freed capacity goes to the services with the fewest containers first
        self.core.dispatch.dispatch(service)
