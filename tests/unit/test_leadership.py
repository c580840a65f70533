"""Leadership over shared state, on each backend: a standby waits for the leader's lease to run out,
the deposed leader learns it at its next renewal, and a clean stop hands the lease over at once.
The clock is injected: no test waits for a lease to expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from corral_protocol import env
from corral_scheduler.control_plane import ControlPlane
from corral_scheduler.leader_lease import LeaderLease
from corral_scheduler.leadership import Leadership
from corral_scheduler.server import RunningServer, serve
from corral_scheduler.state_db import open_database
from corral_scheduler.state_url import PostgresState, StateLocation
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


def _serve_on(location: PostgresState, tmp_path: Path, lost: list[str]) -> Awaitable[RunningServer]:
    return serve(tmp_path / "plane", "admin-token", state_location=location, on_lease_lost=lost.append)


def test_the_lease_is_renewed_while_the_plane_still_starts(tmp_path: Path, postgres_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    location: PostgresState = postgres_server.new_database()
    monkeypatch.setenv(env.CORRAL_LEADER_LEASE_S, "1.5")  # renewed every 0.5 s
    start = ControlPlane.start
    observer = open_database(location, "state")
    lease = LeaderLease(observer)
    renewed_during_start: list[bool] = []

    async def slow_start(plane: ControlPlane) -> None:
        """A start that lasts until the lease was renewed (bounded): longer than its TTL, if need be."""
        first = lease.current()
        assert first is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = lease.current()
            if current is not None and current.expires_at > first.expires_at:
                renewed_during_start.append(current.holder == first.holder and current.epoch == first.epoch)
                break
            await asyncio.sleep(0.05)
        await start(plane)

    monkeypatch.setattr(ControlPlane, "start", slow_start)
    lost: list[str] = []

    async def scenario() -> None:
        running = await _serve_on(location, tmp_path, lost)
        await running.stop(grace=0)

    try:
        asyncio.run(scenario())
    finally:
        observer.close()
    assert renewed_during_start == [True] and lost == []


def test_a_plane_that_fails_to_start_releases_the_lease(tmp_path: Path, postgres_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    location: PostgresState = postgres_server.new_database()
    monkeypatch.setenv(env.CORRAL_MAX_QUEUE, "0")  # refused after the lease is held
    lost: list[str] = []
    with pytest.raises(ValueError, match=env.CORRAL_MAX_QUEUE):
        asyncio.run(_serve_on(location, tmp_path, lost))
    db = open_database(location, "state")
    try:
        standby = Leadership(LeaderLease(db), "plane-b", ttl_s=600)
        held = asyncio.run(asyncio.wait_for(standby.acquire(poll_s=0.05), timeout=5))  # no wait for the TTL
        assert held.holder == "plane-b"
    finally:
        db.close()
    assert lost == []
