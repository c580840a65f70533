"""Schedules: next-run arithmetic (Period, Cron in a time zone), the book's reconciliation with
deployed apps, and no double-firing across a restart (the store is real SQLite in a temp dir)."""

from __future__ import annotations

import datetime

from corral_protocol.v1 import common_pb2
from corral_scheduler.schedules import ScheduleBook, ScheduleStore, next_run, schedule_problem, spec_key
from corral_scheduler.state_url import StateLocation

S = common_pb2
T0 = datetime.datetime(2026, 3, 1, 12, 30, tzinfo=datetime.timezone.utc).timestamp()


def period(seconds: float) -> S.Schedule:
    return S.Schedule(period_s=seconds)


def cron(expression: str, timezone: str = "") -> S.Schedule:
    return S.Schedule(cron=S.CronSchedule(expression=expression, timezone=timezone))


def fn(name: str, schedule: S.Schedule | None) -> S.ClassDef:
    definition = S.ClassDef(name=name, is_function=True)
    if schedule is not None:
        definition.schedule.CopyFrom(schedule)
    return definition


def test_next_run_for_periods_and_cron_in_a_time_zone() -> None:
    assert next_run(period(300), T0) == T0 + 300
    assert next_run(cron("0 * * * *"), T0) == T0 + 30 * 60  # 13:00 UTC
    # 09:00 in Paris on 1 March 2026 is 08:00 UTC (winter time); the next is the next day.
    paris = next_run(cron("0 9 * * *", "Europe/Paris"), T0)
    assert datetime.datetime.fromtimestamp(paris, datetime.timezone.utc) == datetime.datetime(2026, 3, 2, 8, 0, tzinfo=datetime.timezone.utc)


def test_bad_schedules_are_named() -> None:
    assert schedule_problem(cron("61 * * * *")) == "invalid cron expression '61 * * * *'"
    assert "unknown time zone" in (schedule_problem(cron("0 * * * *", "Mars/Olympus")) or "")
    assert schedule_problem(period(0)) is not None
    assert schedule_problem(cron("*/5 * * * *", "America/New_York")) is None


def test_a_due_entry_fires_once_and_moves_past_now_even_after_a_long_gap() -> None:
    book = ScheduleBook()
    book.reconcile([("app", "ap-1", {"tick": fn("tick", period(60)), "plain": fn("plain", None)})], T0, {})
    assert list(book.entries) == [("app", "tick")]
    assert book.due(T0 + 59) == []
    assert [key for key, _ in book.due(T0 + 60)] == [("app", "tick")]
    assert book.due(T0 + 60) == []
    # Down for ten periods: one run now, not ten.
    fired = book.due(T0 + 60 + 600)
    assert len(fired) == 1 and fired[0][1].next_run_at == T0 + 60 + 600 + 60
    (run,) = book.next_runs("ap-1")
    assert (run.function, run.schedule) == ("tick", "every 60s")


def test_a_redeploy_keeps_the_next_run_unless_the_schedule_changed_and_a_stop_removes_it() -> None:
    book = ScheduleBook()
    book.reconcile([("app", "ap-1", {"tick": fn("tick", period(60))})], T0, {})
    changed, _ = book.reconcile([("app", "ap-1", {"tick": fn("tick", period(60))})], T0 + 30, {})
    assert changed == [] and book.entries[("app", "tick")].next_run_at == T0 + 60
    changed, _ = book.reconcile([("app", "ap-1", {"tick": fn("tick", period(10))})], T0 + 30, {})
    assert changed == [("app", "tick")] and book.entries[("app", "tick")].next_run_at == T0 + 40
    _, removed = book.reconcile([], T0 + 31, {})
    assert removed == [("app", "tick")] and not book.entries


def test_a_restart_does_not_fire_a_run_that_already_fired(state_location: StateLocation) -> None:
    store = ScheduleStore(state_location)
    book = ScheduleBook()
    deployed = [("app", "ap-1", {"tick": fn("tick", period(60))})]
    for key in book.reconcile(deployed, T0, store.load())[0]:
        store.save(key, spec_key(book.entries[key].schedule), book.entries[key].next_run_at)
    for key, entry in book.due(T0 + 60):  # fired, and persisted before the call, as the driver does
        store.save(key, spec_key(entry.schedule), entry.next_run_at)
    store.close()

    restarted_store = ScheduleStore(state_location)
    restarted = ScheduleBook()
    restarted.reconcile(deployed, T0 + 61, restarted_store.load())
    assert restarted.due(T0 + 61) == []  # the 60 s run fired before the restart
    assert [key for key, _ in restarted.due(T0 + 120)] == [("app", "tick")]
    restarted_store.close()
