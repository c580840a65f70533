"""Recovery at start: the durable calls in the store become events (driver side)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from corral_scheduler.durable import recovery_events
from corral_scheduler.plane_calls import CallHandle

if TYPE_CHECKING:
    from corral_scheduler.control_plane import ControlPlane

log = logging.getLogger("corral.scheduler")


def recover_calls(plane: ControlPlane) -> int:
    """Give each stored call a caller's handle again and hand the core its recovery events (its
    service bound again, then `CallRecovered`). Returns how many calls came back."""
    calls = plane.store.stored_calls()
    loop = asyncio.get_running_loop()
    for call in calls:
        plane.register_call(CallHandle(call.call_id, loop.create_future()))
        for event in recovery_events(plane.core, call):
            plane.handle(event)
    if calls:
        pending = sum(1 for c in calls if c.result is None)
        log.info("recovered %d durable call(s) from the store: %d to run, %d result(s) to collect", len(calls), pending, len(calls) - pending)
    return len(calls)
