"""Dispatch and scaling: queued inputs go into free slots of READY containers at once (push), and
each service gets the containers its autoscaler asks for, fairly across services."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from corral_protocol.options import effective_timeout_s
from corral_protocol.v1 import worker_pb2
from corral_scheduler.autoscaler import desired_containers
from corral_scheduler.effects import ArmTimer, PushInput
from corral_scheduler.events import InputTimedOut
from corral_scheduler.inputs import timer_key
from corral_scheduler.lifecycle import ContainerState, InputState
from corral_scheduler.model import Container, Input, Service

if TYPE_CHECKING:
    from corral_scheduler.core import PlaneCore

log = logging.getLogger("corral.scheduler")


class Dispatch:
    def __init__(self, core: PlaneCore) -> None:
        self.core = core
        self._starts_left: int | None = None  # None: a new tick's budget, computed when first needed

    def dispatch(self, service: Service) -> None:
        """Fill the free slots of the service's READY containers from its queue, then scale."""
        if service.queue:
            ready = [c for c in service.containers.values() if c.free_slots > 0]
            while service.queue and ready:
                container = min(ready, key=lambda c: c.load)
                inp = service.queue.popleft()
                if inp.done:
                    continue
                self._assign(inp, container, service)
                if container.free_slots <= 0:
                    ready.remove(container)
        self.scale(service)

    def _assign(self, inp: Input, container: Container, service: Service) -> None:
        inp.attempts += 1
        self.core.move_input(inp, InputState.RUNNING, f"attempt {inp.attempts} on {container.container_id}")
        inp.container_id = container.container_id
        container.running[inp.call_id] = inp
        self.core.durable.attempted(inp)
        self.core.emit(PushInput(container.container_id, worker_pb2.Input(
            input_id=inp.call_id, method=inp.method, args=inp.args, http_request=inp.http_request,
        )))
        timeout = effective_timeout_s(service.options)
        self.core.emit(ArmTimer(timer_key(inp.call_id), timeout, InputTimedOut(inp.call_id, container.container_id, inp.attempts)))

    def scale(self, service: Service) -> None:
        """Start the containers the service is missing, unless an init failure's backoff holds it.

        While a container of the service is READY, growth (past `min_containers`) waits for a
        sustained backlog: inputs have waited `SCALE_UP_WAIT_S` (see `backlog_sustained`), so a burst
        that the serving containers clear sooner starts nothing. While none is READY every queued
        input waits at least a cold start anyway, so the missing containers start at once. Starts are
        bounded per tick by the cluster's cores (see `starts_left`)."""
        if self.core.shutting_down:
            return
        self._note_overload(service)
        live = len(service.live_containers)
        missing = self.desired(service) - live
        cap = service.autoscaler.max_containers
        if cap is not None:  # containers retiring with a draining node still count against the user's cap
            missing = min(missing, cap - live - sum(c.retiring and c.state.is_live for c in service.containers.values()))
        if missing <= 0 or self.core.now < service.next_start_at:
            return
        serving = any(c.state == ContainerState.READY and not c.retiring for c in service.containers.values())
        if serving and live >= service.autoscaler.min_containers and not self.backlog_sustained(service):
            return
        for started in range(missing):
            if self.starts_left <= 0 and (live or started):
                break  # the first container of a service is never held back: its caller waits on it
            if not self.core.containers.start(service):
                break
            self.starts_left -= 1

    def backlog_sustained(self, service: Service) -> bool:
        """Inputs have waited long enough that more containers are worth their start: the oldest
        queued one, or those waiting inside overloaded containers."""
        now, wait = self.core.now, self.core.SCALE_UP_WAIT_S
        if service.queue and now - service.queue[0].queued_at >= wait:
            return True
        return service.overloaded_since is not None and now - service.overloaded_since >= wait

    def _note_overload(self, service: Service) -> None:
        overloaded = any(c.load > c.slots for c in service.containers.values() if c.state == ContainerState.READY)
        if not overloaded:
            service.overloaded_since = None
        elif service.overloaded_since is None:
            service.overloaded_since = self.core.now

    @property
    def starts_left(self) -> int:
        """Container starts still allowed this tick: one per core of the connected nodes, less one
        core left to the control plane, and at least one."""
        if self._starts_left is None:
            cores = sum(int(node.inventory.cpu) for node in self.core.nodes.connected_nodes())
            self._starts_left = max(1, cores - self.core.PLANE_RESERVED_CORES)
        return self._starts_left

    @starts_left.setter
    def starts_left(self, value: int) -> None:
        self._starts_left = value

    def fair_order(self) -> list[Service]:
        """Services ordered so that those holding the fewest containers get capacity first: a hot
        service cannot keep every free slot of the cluster while another waits with none."""
        return sorted(self.core.registry.services.values(), key=lambda s: len(s.containers))

    def scale_fairly(self) -> None:
        for service in self.fair_order():
            if service.queue or service.autoscaler.min_containers:
                self.scale(service)

    @staticmethod
    def desired(service: Service) -> int:
        if service.retired:
            return 0
        return desired_containers(service.autoscaler, len(service.queue), service.running_count)

    def tick(self) -> None:
        """Scale-down of containers idle past the scaledown window; retired services without
        containers are forgotten; blocked scale-ups are tried again."""
        now = self.core.now
        self._starts_left = None
        for service in self.fair_order():
            if service.retired and not service.containers:
                del self.core.registry.services[service.service_id]
                continue
            live = service.live_containers
            excess = len(live) - self.desired(service)
            if excess > 0:
                window = service.autoscaler.scaledown_window_s
                idle = sorted(
                    (c for c in live if c.state == ContainerState.READY and not c.load and now - c.idle_since >= window),
                    key=lambda c: c.idle_since,
                )
                for container in idle[:excess]:
                    log.info("scaling down idle container %s", container.container_id)
                    self.core.containers.stop(container, "scaled down: idle past its scaledown window")
            self.dispatch(service)
        self.rebalance()

    def rebalance(self) -> None:
        """A service whose inputs have waited a while with no container at all, because the cluster
        is full, gets one: the service holding the most containers (at least two) drains its least
        loaded one, and the freed capacity goes to the service with the fewest (`scale_fairly`). One
        drain at a time: while a container drains, capacity is already on its way."""
        services = list(self.core.registry.services.values())
        if any(c.state == ContainerState.DRAINING for c in self.core.containers.containers.values()):
            return
        now = self.core.now
        for starved in services:
            if starved.retired or starved.containers or not starved.queue or now < starved.next_start_at:
                continue
            if now - starved.queue[0].queued_at < self.core.SCALE_UP_WAIT_S:
                continue
            donors = [s for s in services if s is not starved and len(s.live_containers) >= 2]
            if not donors:
                return
            donor = max(donors, key=lambda s: len(s.live_containers))
            ready = [c for c in donor.live_containers if c.state == ContainerState.READY]
            if not ready:
                continue
            victim = min(ready, key=lambda c: c.load)
            log.info("draining container %s of %s: %s has none and the cluster is full", victim.container_id,
                     donor.class_def.name, starved.class_def.name)
            self.core.containers.stop(victim, f"its capacity goes to {starved.class_def.name}, which has none (fairness)")
            return
