"""Schedules for deployed functions: `Period` and `Cron`.

The SDK only records them; the control plane computes next runs (with croniter) and fires them,
for deployed apps only, as in Modal.
"""

from __future__ import annotations

from typing import Any

from corral.exception import InvalidError
from corral_protocol.v1 import common_pb2


class Period:
    """Run every fixed period; the first run is one period after the deploy.

    Example:
        @app.function(schedule=corral.Period(minutes=5))
        def refresh(): ...
    """

    def __init__(self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> None:
        self.seconds = days * 86400 + hours * 3600 + minutes * 60 + seconds
        if not self.seconds > 0:
            raise InvalidError("corral.Period needs a positive length, e.g. Period(minutes=5)")

    def __repr__(self) -> str:
        return f"corral.Period(seconds={self.seconds:g})"


class Cron:
    """Run on a cron schedule (minute hour day-of-month month day-of-week), in `timezone` (UTC by default).

    Example:
        @app.function(schedule=corral.Cron("0 * * * *", timezone="Europe/Paris"))
        def hourly(): ...
    """

    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        if len(cron_string.split()) != 5:
            raise InvalidError(f"corral.Cron takes five fields (minute hour day month weekday), got {cron_string!r}")
        self.cron_string = cron_string
        self.timezone = timezone

    def __repr__(self) -> str:
        return f"corral.Cron({self.cron_string!r}, timezone={self.timezone!r})"


def to_proto(schedule: Any) -> common_pb2.Schedule | None:
    """The wire form of a `schedule=` argument; InvalidError for anything else."""
    if schedule is None:
        return None
    if isinstance(schedule, Period):
        return common_pb2.Schedule(period_s=schedule.seconds)
    if isinstance(schedule, Cron):
        return common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=schedule.cron_string, timezone=schedule.timezone))
    raise InvalidError(f"schedule= takes corral.Period(...) or corral.Cron(...), got {schedule!r}")
