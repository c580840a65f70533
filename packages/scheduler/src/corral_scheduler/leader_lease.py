"""The leader lease: which of the control planes sharing one database may act on it.

One row per lease name: the holder's id, the lease's epoch and when it expires. A plane acquires
the lease when it is free or expired (the epoch goes up: a fencing token that tells a write of the
new leader from one of a deposed leader), renews it every few seconds with a conditional UPDATE
that only its own unexpired lease matches, and releases it on a clean stop. A standby polls
`acquire` until the leader's lease runs out. Every statement is one atomic conditional write, so
two planes racing for a free lease cannot both win. Expiry is judged by the callers' clocks
(`now`): planes that share a lease need clocks synchronized (NTP) to well within its time to live.
See docs/architecture.md, "Two control planes, one PostgreSQL".

Example:
    lease = LeaderLease(db)
    held = lease.acquire("plane-a", now=time.time(), ttl_s=15)      # None: another plane leads
    if held and not lease.renew(held, now=time.time() + 5, ttl_s=15):
        ...  # deposed: stop acting on the state
"""

from __future__ import annotations

from dataclasses import dataclass

from corral_scheduler.state_db import Database

CONTROL_PLANE = "control-plane"


@dataclass(frozen=True)
class Lease:
    """A lease as its holder knows it: `epoch` is the fencing token of this tenure."""

    name: str
    holder: str
    epoch: int
    expires_at: float


class LeaderLease:
    SCHEMA = [
        """CREATE TABLE IF NOT EXISTS leader_lease (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            expires_at {real} NOT NULL
        )""",
    ]

    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(self, holder: str, now: float, ttl_s: float, name: str = CONTROL_PLANE) -> Lease | None:
        """The lease, when it is free, expired, or already `holder`'s (then renewed in the same
        tenure); None while another holder's lease runs."""
        if not holder:
            raise ValueError("a lease holder needs a non-empty id")
        if ttl_s <= 0:
            raise ValueError(f"a lease's time to live must be positive, got {ttl_s}")
        with self.db.transaction():
            row = self.db.execute(
                "INSERT INTO leader_lease (name, holder, epoch, expires_at) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (name) DO UPDATE SET "
                "epoch = CASE WHEN leader_lease.holder = excluded.holder AND leader_lease.expires_at > ? "
                "THEN leader_lease.epoch ELSE leader_lease.epoch + 1 END, "
                "holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE leader_lease.expires_at <= ? OR leader_lease.holder = excluded.holder "
                "RETURNING epoch",
                (name, holder, now + ttl_s, now, now),
            ).fetchone()
        return None if row is None else Lease(name, holder, int(row[0]), now + ttl_s)

    def renew(self, lease: Lease, now: float, ttl_s: float) -> Lease | None:
        """The lease extended to `now + ttl_s`; None when it expired or passed to another holder
        (the caller was deposed and must stop acting on the state)."""
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE leader_lease SET expires_at = ? WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > ?",
                (now + ttl_s, lease.name, lease.holder, lease.epoch, now),
            ).rowcount
        return Lease(lease.name, lease.holder, lease.epoch, now + ttl_s) if changed == 1 else None

    def release(self, lease: Lease) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait for it to expire."""
        with self.db.transaction():
            self.db.execute("UPDATE leader_lease SET expires_at = 0 WHERE name = ? AND holder = ? AND epoch = ?",
                            (lease.name, lease.holder, lease.epoch))

    def current(self, name: str = CONTROL_PLANE) -> Lease | None:
        """The lease as the database has it (expired or not), None before anyone held it."""
        row = self.db.execute("SELECT holder, epoch, expires_at FROM leader_lease WHERE name = ?", (name,)).fetchone()
        return None if row is None else Lease(name, row[0], int(row[1]), float(row[2]))


__all__ = ["CONTROL_PLANE", "Lease", "LeaderLease"]
