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
        """Start the containers the service is missing, unless an init failure's backoff holds it."""
        if self.core.shutting_down:
            return
        missing = self.desired(service) - len(service.live_containers)
        if missing <= 0 or self.core.now < service.next_start_at:
            return
        for _ in range(missing):
            if not self.core.containers.start(service):
                break

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
