"""Cron expressions, read as crontab(5) reads them, turned into APScheduler triggers.

Five fields (minute hour day-of-month month day-of-week), or six with a
leading seconds field. Day-of-week numbers follow crontab (0 and 7 are
Sunday); APScheduler 3.x counts from Monday, so numeric days are rewritten
as names before they reach it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.errors import BadInput

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMERIC = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")
TINY = timedelta(microseconds=1)


def _day_of_week(field: str) -> str:
    """Rewrite crontab day-of-week numbers as names; names pass through unchanged."""
    if field in ("*", "?"):
        return "*"
    days: list[int] = []
    for item in field.split(","):
        m = _NUMERIC.match(item)
        if not m:
            return field  # names (mon-fri) mean the same to APScheduler as to cron
        start_s, end_s, step_s = m.groups()
        step = int(step_s or 1)
        if start_s == "*":
            start, end = 0, 6
        else:
            start = int(start_s)
            end = int(end_s) if end_s is not None else (6 if step_s else start)
        if not (0 <= start <= 7 and 0 <= end <= 7 and start <= end and step >= 1):
            raise BadInput(f"day-of-week {item!r} is out of range (0-7, 0 and 7 are Sunday)")
        days.extend(d % 7 for d in range(start, end + 1, step))
    order = sorted(set(days))
    return ",".join(DAY_NAMES[d] for d in order)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadInput(f"unknown time zone {name!r}; use a name like UTC or Europe/Berlin") from exc


def parse_cron(expr: str, timezone: str = "UTC") -> CronTrigger:
    """A trigger for ``expr``; ``BadInput`` naming the problem when it is not valid cron."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise BadInput(
            f"cron expression {expr!r} has {len(expr.split())} fields; expected 5 "
            "(minute hour day month weekday) or 6 (second first)"
        )
    second, minute, hour, day, month, dow = fields
    # apscheduler: imported here, so listing no schedules or jobs does not load it
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month,
            day_of_week=_day_of_week(dow), timezone=zone(timezone),
        )
    except ValueError as exc:
        raise BadInput(f"cron expression {expr!r} is not valid: {exc}") from exc


def next_after(trigger: CronTrigger, moment: datetime) -> datetime | None:
    """The first fire time strictly after ``moment``."""
    fire: datetime | None = trigger.get_next_fire_time(None, moment + TINY)
    return fire
