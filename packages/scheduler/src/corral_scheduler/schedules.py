"""Schedules of deployed functions (`corral.Period`, `corral.Cron`): when each runs next, kept in
the store so that a restart neither loses nor repeats a run.

Three parts, so the rules are tested without a clock or a network:
- `next_run(schedule, after)`: the arithmetic (croniter for cron, in the schedule's time zone).
- `ScheduleBook`: pure state: which functions are scheduled and when each is due; `due(now)`
  advances every due entry past `now` and returns it. A run missed while the plane was down runs
  once at start, not once per missed slot.
- `ScheduleStore` + `Schedules` (the driver's part): the next runs persisted in their own SQLite
  file beside the store's (or the `next_runs` table of PostgreSQL state); each due entry's new next
  run is written *before* the call is made, so a crash between the two skips that run rather than
  repeating it (at most once per slot).
"""

from __future__ import annotations

import datetime
import logging
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from croniter import croniter  # type: ignore[import-untyped]  # no stubs shipped

from corral_protocol.v1 import common_pb2, control_pb2
from corral_scheduler.state_db import open_database
from corral_scheduler.state_url import SqliteState, StateLocation

if TYPE_CHECKING:
    from corral_scheduler.control_plane import ControlPlane

log = logging.getLogger("corral.scheduler")

Key = tuple[str, str]  # (app name, function name): a redeploy keeps its function's next run
_NO_ARGUMENTS = common_pb2.Payload(format=common_pb2.PAYLOAD_FORMAT_JSON, data=b'{"args": [], "kwargs": {}}')


def schedule_problem(schedule: common_pb2.Schedule) -> str | None:
    """Why a schedule cannot run (a bad cron expression or time zone), or None."""
    kind = schedule.WhichOneof("kind")
    if kind == "period_s":
        return None if schedule.period_s > 0 else f"a Period must be positive, got {schedule.period_s:g} s"
    if kind == "cron":
        if not croniter.is_valid(schedule.cron.expression):
            return f"invalid cron expression {schedule.cron.expression!r}"
        try:
            _zone(schedule.cron.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f"unknown time zone {schedule.cron.timezone!r}"
        return None
    return "an empty schedule"


def _zone(name: str) -> datetime.tzinfo:
    return zoneinfo.ZoneInfo(name) if name and name != "UTC" else datetime.timezone.utc


def next_run(schedule: common_pb2.Schedule, after: float) -> float:
    """The first run strictly after `after` (Unix seconds)."""
    if schedule.WhichOneof("kind") == "period_s":
        return after + schedule.period_s
    start = datetime.datetime.fromtimestamp(after, _zone(schedule.cron.timezone))
    return float(croniter(schedule.cron.expression, start).get_next(float))


def describe(schedule: common_pb2.Schedule) -> str:
    if schedule.WhichOneof("kind") == "period_s":
        return f"every {schedule.period_s:g}s"
    return f"cron {schedule.cron.expression} ({schedule.cron.timezone or 'UTC'})"


def spec_key(schedule: common_pb2.Schedule) -> str:
    """What identifies a schedule's timing: a redeploy with another schedule starts it afresh."""
    return schedule.SerializeToString(deterministic=True).hex()


@dataclass
class Entry:
    app_id: str
    function: str
    schedule: common_pb2.Schedule
    next_run_at: float


class ScheduleBook:
    """Which deployed functions run on a schedule, and when next. No clock, no IO."""

    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}

    def reconcile(self, deployed: Iterable[tuple[str, str, Mapping[str, common_pb2.ClassDef]]], now: float,
                  stored: Mapping[Key, tuple[str, float]]) -> tuple[list[Key], list[Key]]:
        """Match the book to the deployed apps ((name, app id, class defs) each). A new entry takes
        its stored next run when its schedule is unchanged, else its first run after `now`.
        Returns (added or changed keys, removed keys)."""
        wanted: dict[Key, Entry] = {}
        for app_name, app_id, class_defs in deployed:
            for name, class_def in class_defs.items():
                if class_def.HasField("schedule"):
                    wanted[(app_name, name)] = Entry(app_id, name, class_def.schedule, 0.0)
        removed = [key for key in self.entries if key not in wanted]
        for key in removed:
            del self.entries[key]
        changed = []
        for key, entry in wanted.items():
            current = self.entries.get(key)
            if current is not None and spec_key(current.schedule) == spec_key(entry.schedule):
                current.app_id = entry.app_id
                continue
            saved = stored.get(key)
            if saved is not None and saved[0] == spec_key(entry.schedule):
                entry.next_run_at = saved[1]
            else:
                entry.next_run_at = next_run(entry.schedule, now)
            self.entries[key] = entry
            changed.append(key)
        return changed, removed

    def due(self, now: float) -> list[tuple[Key, Entry]]:
        """Entries whose run is due; each is advanced to its first run after `now` first."""
        fired = []
        for key, entry in self.entries.items():
            if entry.next_run_at <= now:
                entry.next_run_at = next_run(entry.schedule, max(now, entry.next_run_at))
                fired.append((key, entry))
        return fired

    def next_runs(self, app_id: str) -> list[control_pb2.ScheduledRun]:
        return [
            control_pb2.ScheduledRun(function=e.function, next_run_at=e.next_run_at, schedule=describe(e.schedule))
            for e in self.entries.values() if e.app_id == app_id
        ]


class ScheduleStore:
    """The next runs, in `schedules.db` beside the store's own database (a directory given), or the
    `next_runs` table of the PostgreSQL state database."""

    SCHEMA_VERSION = 1
    SCHEMA = [
        "CREATE TABLE IF NOT EXISTS next_runs (app_name TEXT, function TEXT, spec TEXT, next_run_at {real}, "
        "PRIMARY KEY (app_name, function))",
    ]

    def __init__(self, location: Path | StateLocation) -> None:
        self._db = open_database(SqliteState(location) if isinstance(location, Path) else location, "schedules")
        try:
            self._db.ensure_schema("schedules", self.SCHEMA_VERSION, self.SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def load(self) -> dict[Key, tuple[str, float]]:
        rows = self._db.execute("SELECT app_name, function, spec, next_run_at FROM next_runs").fetchall()
        return {(a, f): (spec, at) for a, f, spec, at in rows}

    def save(self, key: Key, spec: str, next_run_at: float) -> None:
        self._db.execute(
            "INSERT INTO next_runs (app_name, function, spec, next_run_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (app_name, function) DO UPDATE SET spec = excluded.spec, next_run_at = excluded.next_run_at",
            (*key, spec, next_run_at),
        )

    def delete(self, key: Key) -> None:
        self._db.execute("DELETE FROM next_runs WHERE app_name = ? AND function = ?", key)

    def close(self) -> None:
        self._db.close()


class Schedules:
    """The driver's schedule job: reconcile with the deployed apps, persist, fire due runs."""

    def __init__(self, plane: ControlPlane, location: Path | StateLocation) -> None:
        self.plane = plane
        self.book = ScheduleBook()
        self.store = ScheduleStore(location)
        self._seen: frozenset[tuple[str, int]] = frozenset()

    def next_runs(self, app_id: str) -> list[control_pb2.ScheduledRun]:
        return self.book.next_runs(app_id)

    def tick(self, now: float) -> None:
        apps = self.plane.core.registry.apps
        deployed = [apps[app_id] for app_id in self.plane.core.registry.deployed.values() if app_id in apps]
        seen = frozenset((record.app_id, record.version) for record in deployed if not record.stopped)
        if seen != self._seen:
            self._seen = seen
            live = [(r.name, r.app_id, r.class_defs) for r in deployed if not r.stopped]
            changed, removed = self.book.reconcile(live, now, self.store.load())
            for key in changed:
                entry = self.book.entries[key]
                self.store.save(key, spec_key(entry.schedule), entry.next_run_at)
            for key in removed:
                self.store.delete(key)
        for key, entry in self.book.due(now):
            self.store.save(key, spec_key(entry.schedule), entry.next_run_at)  # before the call: at most once
            self._fire(entry)

    def _fire(self, entry: Entry) -> None:
        try:
            service_id = self.plane.bind_service(entry.app_id, entry.function, [], common_pb2.ServiceOptions())
            call = self.plane.invoke(service_id, entry.function, _NO_ARGUMENTS)
        except Exception as err:
            log.warning("scheduled run of %s could not start: %s", entry.function, err)
            return
        log.info("scheduled run of %s: call %s", entry.function, call.call_id)
        call.future.add_done_callback(lambda _: self.plane.forget(call.call_id))


def validate_schedules(request: control_pb2.CreateAppRequest) -> str | None:
    """Why a deploy's schedules cannot run, or None (ephemeral apps never run them: not checked)."""
    for class_def in request.classes:
        if class_def.HasField("schedule"):
            problem = schedule_problem(class_def.schedule)
            if problem:
                return f"{class_def.name}: {problem}"
    return None


__all__ = ["ScheduleBook", "ScheduleStore", "Schedules", "describe", "next_run", "schedule_problem", "validate_schedules"]
