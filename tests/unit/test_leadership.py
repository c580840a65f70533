"""Leadership over shared state, on each backend: a standby waits for the leader's lease to run out,
the deposed leader learns it at its next renewal, and a clean stop hands the lease over at once.
The clock is injected: no test waits for a lease to expire."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral_scheduler.leader_lease import LeaderLease
from corral_scheduler.leadership import Leadership
from corral_scheduler.state_db import open_database
from corral_scheduler.state_url import StateLocation
from corral_scheduler.store import Store


def test_a_standby_takes_over_once_the_leaders_lease_runs_out(tmp_path: Path, state_location: StateLocation) -> None:
    Store(tmp_path / "state", location=state_location).close()  # creates the schema
    databases = [open_database(state_location, "state") for _ in range(2)]
    now = [1000.0]

    def plane(holder: str, index: int) -> Leadership:
        return Leadership(LeaderLease(databases[index]), holder, ttl_s=10, clock=lambda: now[0], renew_every_s=0.01)

    async def scenario() -> list[str]:
        leader, standby = plane("plane-a", 0), plane("plane-b", 1)
        assert (await leader.acquire()).epoch == 1
        waiting = asyncio.create_task(standby.acquire(poll_s=0.01))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # the leader's lease runs until 1010
        now[0] = 1010.0  # the leader stopped renewing (it hangs, or died)
        taken = await asyncio.wait_for(waiting, timeout=30)
        assert taken.epoch == 2
        lost: list[str] = []
        await asyncio.wait_for(leader.keep(lost.append), timeout=30)  # its next renewal is refused
        standby.release()
        assert (await asyncio.wait_for(leader.acquire(poll_s=0.01), timeout=30)).epoch == 3  # no wait for expiry
        return lost

    try:
        lost = asyncio.run(scenario())
    finally:
        for db in databases:
            db.close()
    assert lost == ["another control plane holds the leader lease now"]
