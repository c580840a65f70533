"""The control plane's asyncio driver: the one owner of the event loop, the clock, the streams'
outboxes, the timers, the callers' futures and the store.

Every change of live state goes through `PlaneCore.handle` (`corral_scheduler.core`), which returns
effects; `_perform` carries them out. The gRPC servicers and the web gateway call the public methods
here, never the core or the store. Those methods are grouped by job in the classes `ControlPlane`
is made of: `Apps` (plane_apps.py), `Calls` (plane_calls.py), `Sessions` (sessions.py) and
`StoreAccess` (plane_store.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import types
from collections.abc import Mapping

from corral_protocol.v1 import control_pb2, node_pb2, worker_pb2
from corral_scheduler import effects as fx
from corral_scheduler import events as ev
from corral_scheduler.blobs import BlobStore, referenced_blobs
from corral_scheduler.core import APP_HEARTBEAT_TIMEOUT_S, PlaneCore
from corral_scheduler.errors import NotFound
from corral_scheduler.image_builds import ImageBuilds
from corral_scheduler.lifecycle import Step
from corral_scheduler.logs import LogStore
from corral_scheduler.model import AppRecord, Container, Node, Service
from corral_scheduler.nodes import NODE_TIMEOUT_S
from corral_scheduler.plane_apps import Apps
from corral_scheduler.plane_calls import CallHandle, Calls
from corral_scheduler.plane_store import StoreAccess
from corral_scheduler.recovery import recover_calls
from corral_scheduler.schedules import Schedules
from corral_scheduler.secret_env import Secrets
from corral_scheduler.sessions import Sessions
from corral_scheduler.snapshot_keys import SnapshotBook
from corral_scheduler.store import Store

log = logging.getLogger("corral.scheduler")


class ControlPlane(StoreAccess, Sessions, Apps, Calls):
    TICK_S = 0.2
    STOP_GRACE_S = PlaneCore.STOP_GRACE_S

    def __init__(self, store: Store, admin_token: str, max_queue_per_service: int | None = None,
                 node_timeout_s: float = NODE_TIMEOUT_S, app_heartbeat_timeout_s: float = APP_HEARTBEAT_TIMEOUT_S) -> None:
        self.core = PlaneCore(max_queue_per_service, node_timeout_s=node_timeout_s, app_heartbeat_timeout_s=app_heartbeat_timeout_s)
        self.store = store
        self.secrets = Secrets(store)
        self.admin_token = admin_token
        self.http_url = ""  # the web gateway's base URL, when it runs
        self._calls: dict[str, CallHandle] = {}
        self._node_outboxes: dict[str, asyncio.Queue[node_pb2.NodeSessionResponse | None]] = {}
        self._worker_outboxes: dict[str, asyncio.Queue[worker_pb2.WorkerSessionResponse | None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pending: collections.deque[ev.Event] = collections.deque()
        self._handling = False
        self._writes: list[fx.CallChange] = []  # durable-call changes of the event being handled
        self._ticker: asyncio.Task[None] | None = None
        self.image_builds = ImageBuilds(lambda: list(self._node_outboxes), self._to_node)
        self.schedules = Schedules(self, store.location)
        self.logs = LogStore(store.location)
        self.blobs = BlobStore(store.directory / "blobs")

    @property
    def control_url(self) -> str:
        return self.core.control_url

    @control_url.setter
    def control_url(self, url: str) -> None:
        self.core.control_url = url

    # Read-only state, for `views` -----------------------------------------------------------

    @property
    def apps(self) -> Mapping[str, AppRecord]:
        return types.MappingProxyType(self.core.registry.apps)

    @property
    def services(self) -> Mapping[str, Service]:
        return types.MappingProxyType(self.core.registry.services)

    @property
    def containers(self) -> Mapping[str, Container]:
        return types.MappingProxyType(self.core.containers.containers)

    @property
    def nodes(self) -> Mapping[str, Node]:
        return types.MappingProxyType(self.core.nodes.nodes)

    @property
    def snapshots(self) -> SnapshotBook:
        return self.core.snapshots.book

    @property
    def node_heartbeat_interval_s(self) -> float:
        """What registering nodes are told: well under the node timeout."""
        return self.core.nodes.heartbeat_interval_s

    def operate_node(self, event: ev.NodeCordonRequested | ev.NodeDrainRequested) -> control_pb2.NodeInfo:
        """Cordon, uncordon or drain a node (by name or id); returns its state after the request."""
        self.handle(event)
        return self.core.nodes.find(event.node).info()

    def container_history(self, container_id: str) -> list[Step]:
        """The container's recent transitions, oldest first."""
        container = self.core.containers.containers.get(container_id)
        if container is None:
            raise NotFound(f"container {container_id!r} not found")
        return container.history.steps

    # The engine -------------------------------------------------------------------------------

    def handle(self, event: ev.Event) -> None:
        """Apply an event and perform its effects. Events that effects raise (a refused start)
        run after the current one, in order."""
        if self._handling:
            self._pending.append(event)
            return
        self._handling = True
        try:
            self._perform_all(self.core.handle(event, time.monotonic(), time.time()))
            while self._pending:
                self._perform_all(self.core.handle(self._pending.popleft(), time.monotonic(), time.time()))
        finally:
            self._handling = False
            self._pending.clear()
            self._write_calls()

    def _write_calls(self) -> None:
        """One transaction for every durable-call change of the event (and those it raised): a
        spawn is in the store before its caller gets the call id, a result before anyone reads it."""
        writes, self._writes = self._writes, []
        if writes:
            try:
                self.store.write_calls(writes)
            except Exception:
                log.exception("could not write %d durable-call change(s) to the store", len(writes))

    def _perform_all(self, effects: list[fx.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, fx.DURABLE_EFFECTS):
                self._writes.append(effect)
                continue
            try:
                self._perform(effect)
            except Exception:
                log.exception("control plane effect %r failed", effect)

    def _perform(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.PushInput):
            self.blobs.grant(effect.container_id, [effect.input.args])
            self._to_worker(effect.container_id, worker_pb2.WorkerSessionResponse(input=effect.input))
        elif isinstance(effect, fx.ResolveCall):
            call = self._calls.get(effect.call_id)
            if call is not None and not call.future.done():
                call.future.set_result(effect.result)
        elif isinstance(effect, fx.RelayItem):
            call = self._calls.get(effect.call_id)
            if call is not None and call.items is not None:
                call.items.put_nowait(effect.value)
        elif isinstance(effect, fx.RelayHttp):
            call = self._calls.get(effect.call_id)
            if call is not None and call.http_events is not None:
                call.http_events.put_nowait(effect.message)
        elif isinstance(effect, fx.ArmTimer):
            self._cancel_timer(effect.key)
            self._timers[effect.key] = asyncio.get_running_loop().call_later(effect.delay_s, self._fire, effect.key, effect.event)
        elif isinstance(effect, fx.CancelTimer):
            self._cancel_timer(effect.key)
        elif isinstance(effect, fx.StartContainer):
            self._start_container(effect)
        elif isinstance(effect, fx.StopContainer):
            stop = node_pb2.StopContainer(container_id=effect.container_id, grace_s=0)
            self._to_node(effect.node_id, node_pb2.NodeSessionResponse(stop_container=stop))
        elif isinstance(effect, fx.CloseNodeSession):
            self.end_node_session(effect.node_id)
        elif isinstance(effect, fx.DeleteSnapshots):
            self._to_node(effect.node_id, node_pb2.NodeSessionResponse(delete_snapshots=effect.delete))
        elif isinstance(effect, fx.InitWorker):
            self._to_worker(effect.container_id, worker_pb2.WorkerSessionResponse(init=effect.init))
        elif isinstance(effect, fx.CancelInput):
            cancel = worker_pb2.CancelInput(input_id=effect.call_id)
            self._to_worker(effect.container_id, worker_pb2.WorkerSessionResponse(cancel=cancel))
        elif isinstance(effect, fx.ShutdownWorker):
            self._to_worker(effect.container_id, worker_pb2.WorkerSessionResponse(shutdown=worker_pb2.Shutdown()))
        elif isinstance(effect, fx.CloseWorkerSession):
            outbox = self._worker_outboxes.pop(effect.container_id, None)
            if outbox is not None:
                outbox.put_nowait(None)
        elif isinstance(effect, fx.DropCall):
            self._calls.pop(effect.call_id, None)
        elif isinstance(effect, fx.MarkAppStopped):
            self.store.mark_stopped(effect.app_id)
        else:
            raise TypeError(f"unknown effect {effect!r}")

    def _start_container(self, effect: fx.StartContainer) -> None:
        try:
            env = self.secrets.env(effect.secrets)
        except NotFound as err:
            self.handle(ev.StartRefused(effect.start.container_id, err.message))
            return
        start = node_pb2.StartContainer()
        start.CopyFrom(effect.start)
        start.env.clear()
        start.env.update(env)
        start.env.update(effect.start.env)  # the app's own CORRAL_APP_* variables win
        self._to_node(effect.node_id, node_pb2.NodeSessionResponse(start_container=start))

    def _to_node(self, node_id: str, message: node_pb2.NodeSessionResponse) -> None:
        outbox = self._node_outboxes.get(node_id)
        if outbox is not None:
            outbox.put_nowait(message)

    def _to_worker(self, container_id: str, message: worker_pb2.WorkerSessionResponse) -> None:
        outbox = self._worker_outboxes.get(container_id)
        if outbox is not None:
            outbox.put_nowait(message)

    def _fire(self, key: str, event: ev.TimerFired) -> None:
        self._timers.pop(key, None)
        self.handle(event)

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    # Life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        for deployed in self.store.deployed_apps():
            self.handle(ev.AppInstalled(deployed.app_id, deployed.version, deployed.definition, deployed.created_at))
        for app_id, name, version, created_at in self.store.stopped_apps():  # history for `corral app list --all`
            self.handle(ev.AppForgotten(app_id, name, version, created_at))
        recover_calls(self)
        self._ticker = asyncio.create_task(self._tick_forever(), name="corral-control-plane-tick")

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.TICK_S)
            try:
                self.handle(ev.Tick())
                self.schedules.tick(time.time())
                self.blobs.sweep(referenced_blobs(self.core.inputs.inputs.values()), self.core.containers.containers)
            except Exception:
                log.exception("control plane tick failed")

    async def stop_all_containers(self, timeout: float = 60.0) -> None:
        """Stop every container gracefully (exit hooks run) and wait for them to exit."""
        self.handle(ev.ShutdownRequested())
        deadline = time.monotonic() + timeout
        while self.core.containers.containers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for key in list(self._timers):
            self._cancel_timer(key)
        for outbox in self._node_outboxes.values():
            outbox.put_nowait(None)
        for worker_outbox in self._worker_outboxes.values():
            worker_outbox.put_nowait(None)
        self.schedules.store.close()
        self.logs.close()

    def is_container_token(self, token: str) -> bool:
        return self.core.containers.owner_of(token) is not None or self.core.durable.awaits_token(token)

    # Snapshots, secrets, bundles, proxy tokens ------------------------------------------------

    def delete_snapshots(self, request: control_pb2.DeleteSnapshotsRequest) -> int:
        """Delete images by key (or unique key prefix), by app, or all; returns how many."""
        keys = self.core.snapshots.select(request)
        self.handle(ev.SnapshotsDeleted(tuple(keys)))
        return len(keys)
