"""Container output: stored per app, container and input, with bounded retention, and followed.

Lines arrive from the workers (`LogBatch`, already redacted in the container) and go to their own
SQLite file beside the store (`logs.db`), never to the store's database file: logs are high-volume
and disposable, the store's rows are neither. With PostgreSQL state they are the `lines` table of
the same database, on a connection of their own. A NUL character in a line is stored as U+FFFD
(neither engine keeps NUL in text). Retention is bounded two ways: at most
`MAX_LINES_PER_APP` lines per app (the oldest go first) and nothing older than `MAX_AGE_S`.
Followers (`corral app logs --follow`, `corral run`) wait on an asyncio.Event per subscription
that each ingest sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from corral_protocol.v1 import common_pb2, worker_pb2
from corral_scheduler.state_db import open_database
from corral_scheduler.state_url import SqliteState, StateLocation

MAX_LINES_PER_APP = 50_000
MAX_AGE_S = 7 * 24 * 3600.0
_PAGE = 500
_PRUNE_EVERY = 1_000  # lines ingested between two retention passes

_COLUMNS = "seq, app_id, container_id, input_id, timestamp, stream, text"
SCHEMA_VERSION = 1
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS lines (seq {serial_key}, app_id TEXT, container_id TEXT, "
    "input_id TEXT, timestamp {real}, stream TEXT, text TEXT)",
    "CREATE INDEX IF NOT EXISTS lines_app ON lines (app_id, seq)",
    "CREATE INDEX IF NOT EXISTS lines_container ON lines (container_id, seq)",
]


def _line(row: tuple[int, str, str, str, float, str, str]) -> common_pb2.LogLine:
    seq, app_id, container_id, input_id, timestamp, stream, text = row
    return common_pb2.LogLine(seq=seq, app_id=app_id, container_id=container_id, input_id=input_id,
                              timestamp=timestamp, stream=stream, text=text)


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


class LogStore:
    """Log lines at `location` (a directory: SQLite files there)."""

    def __init__(self, location: Path | StateLocation, max_lines_per_app: int = MAX_LINES_PER_APP,
                 max_age_s: float = MAX_AGE_S) -> None:
        self._db = open_database(SqliteState(location) if isinstance(location, Path) else location, "logs")
        try:
            self._db.ensure_schema("logs", SCHEMA_VERSION, _SCHEMA)
        except BaseException:
            self._db.close()
            raise
        self.max_lines_per_app = max_lines_per_app
        self.max_age_s = max_age_s
        self._since_prune = 0
        self._waiters: set[asyncio.Event] = set()

    def ingest(self, app_id: str, container_id: str, batch: worker_pb2.LogBatch) -> None:
        rows = [(_text(app_id), _text(container_id), _text(line.input_id), line.timestamp, _text(line.stream), _text(line.text))
                for line in batch.lines]
        if batch.dropped:
            last = batch.lines[-1].timestamp if batch.lines else 0.0
            rows.append((_text(app_id), _text(container_id), "", last, "stderr", f"[corral: {batch.dropped} lines dropped in the container]"))
        if not rows:
            return
        self._db.executemany(
            "INSERT INTO lines (app_id, container_id, input_id, timestamp, stream, text) VALUES (?, ?, ?, ?, ?, ?)", rows,
        )
        self._since_prune += len(rows)
        if self._since_prune >= _PRUNE_EVERY:
            self.prune(app_id, max(line.timestamp for line in batch.lines) if batch.lines else 0.0)
        for waiter in self._waiters:
            waiter.set()

    def prune(self, app_id: str, now: float) -> None:
        """Apply retention: the app's newest `max_lines_per_app` lines, nothing older than `max_age_s`."""
        self._since_prune = 0
        self._db.execute(
            "DELETE FROM lines WHERE app_id = ? AND seq <= (SELECT seq FROM lines WHERE app_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (app_id, app_id, self.max_lines_per_app),
        )
        if now:
            self._db.execute("DELETE FROM lines WHERE timestamp < ?", (now - self.max_age_s,))

    def query(self, *, app_id: str = "", container_id: str = "", input_id: str = "", after: int = 0,
              tail: int = 0, limit: int = _PAGE) -> list[common_pb2.LogLine]:
        where: list[str] = ["seq > ?"]
        params: list[object] = [after]
        for column, value in (("app_id", app_id), ("container_id", container_id), ("input_id", input_id)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        clause = " AND ".join(where)
        if tail:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM lines WHERE {clause} ORDER BY seq DESC LIMIT ?", (*params, tail)).fetchall()
            rows.reverse()
        else:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM lines WHERE {clause} ORDER BY seq LIMIT ?", (*params, limit)).fetchall()
        return [_line(row) for row in rows]

    async def follow(self, *, app_id: str = "", container_id: str = "", input_id: str = "", tail: int = 0,
                     follow: bool = False) -> AsyncIterator[list[common_pb2.LogLine]]:
        """Pages of stored lines, then (with `follow`) new ones as they arrive, until cancelled."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            after = 0
            if tail:
                page = self.query(app_id=app_id, container_id=container_id, input_id=input_id, tail=tail)
                if page:
                    after = page[-1].seq
                    yield page
                else:
                    after = self._last_seq()
            while True:
                waiter.clear()
                page = self.query(app_id=app_id, container_id=container_id, input_id=input_id, after=after)
                if page:
                    after = page[-1].seq
                    yield page
                    continue
                if not follow:
                    return
                await waiter.wait()
        finally:
            self._waiters.discard(waiter)

    def _last_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM lines").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._db.close()
