"""Calendar periods of budgets and usage, in UTC: a day, an ISO week (Monday first), a month."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, date, datetime, timedelta

from edgeproxy.snapshot.limits import Period

DAY = 86_400


def period_bounds(period: Period, epoch: float) -> tuple[float, float, str]:
    """(start, end, id) of the ``period`` holding ``epoch``: epoch seconds, and a name such as
    ``2025-06-14``, ``2025-W24`` or ``2025-06``."""
    day = datetime.fromtimestamp(epoch, UTC).date()
    if period == "day":
        start = day
        end = start + timedelta(days=1)
        name = start.isoformat()
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
        year, week, _ = start.isocalendar()
        name = f"{year}-W{week:02d}"
    else:
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + timedelta(days=days)
        name = f"{start.year}-{start.month:02d}"
    return _epoch(start), _epoch(end), name


def _epoch(day: date) -> float:
    return float(calendar.timegm(day.timetuple()))


def day_name(epoch: float) -> str:
    """``2025-06-14``: the UTC day usage rows are kept by."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def days_between(start: float, end: float) -> list[str]:
    """The day names from ``start`` (inclusive) to ``end`` (exclusive)."""
    out = []
    at = start
    while at < end:
        out.append(day_name(at))
        at += DAY
    return out
