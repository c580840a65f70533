"""A control plane on shared (PostgreSQL) state acts on it only while it holds the leader lease.

`acquire` waits, as a standby, until the lease is free (a plane that stopped cleanly released it;
one that died lets it expire after `ttl_s`); `keep` renews it every `ttl_s / 3` and calls `on_lost`
when it can no longer be sure it leads: renewal refused (another plane took over) or the lease ran
out while the database could not be reached. The driver stops at once then, touching nothing: a
deposed plane that went on writing would fight the new leader. See docs/architecture.md,
"Two control planes, one PostgreSQL".
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from corral_scheduler.leader_lease import LeaderLease, Lease

log = logging.getLogger("corral.scheduler")

DEFAULT_TTL_S = 10.0


def new_holder_id() -> str:
    """`host:pid:random`: unique per plane process, and says where it runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leadership:
    def __init__(self, lease: LeaderLease, holder: str, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.time, renew_every_s: float | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError(f"the leader lease's time to live must be positive, got {ttl_s}")
        self.lease = lease
        self.holder = holder
        self.ttl_s = ttl_s
        self.clock = clock
        self.renew_every_s = renew_every_s if renew_every_s is not None else ttl_s / 3
        self.held: Lease | None = None

    async def acquire(self, poll_s: float | None = None) -> Lease:
        """The lease, once this plane holds it; until then this plane is a standby and polls."""
        poll_s = poll_s if poll_s is not None else self.ttl_s / 5
        announced = False
        while True:
            held = self.lease.acquire(self.holder, self.clock(), self.ttl_s)
            if held is not None:
                log.info("control plane %s holds the leader lease (epoch %d)", self.holder, held.epoch)
                self.held = held
                return held
            if not announced:
                current = self.lease.current()
                if current is not None:
                    log.warning("standby: control plane %s holds the leader lease for up to %.1f s more; waiting",
                                current.holder, max(0.0, current.expires_at - self.clock()))
                announced = True
            await asyncio.sleep(poll_s)

    async def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew the lease until cancelled; `on_lost(reason)` once it is lost, then return."""
        while True:
            await asyncio.sleep(self.renew_every_s)
            held = self.held
            assert held is not None, "keep() runs after acquire()"
            try:
                renewed = self.lease.renew(held, self.clock(), self.ttl_s)
            except Exception as err:  # the database is unreachable: still the leader until the lease runs out
                if self.clock() < held.expires_at:
                    log.warning("could not renew the leader lease (%s); retrying", err)
                    continue
                on_lost(f"the leader lease expired while the state database could not be reached ({err})")
                return
            if renewed is None:
                on_lost("another control plane holds the leader lease now")
                return
            self.held = renewed

    def release(self) -> None:
        """Give the lease up (a clean stop): a standby takes over at once."""
        if self.held is not None:
            try:
                self.lease.release(self.held)
            except Exception as err:
                log.warning("could not release the leader lease (%s); it expires by itself", err)
            self.held = None


__all__ = ["DEFAULT_TTL_S", "Leadership", "new_holder_id"]
