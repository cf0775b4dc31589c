"""When a subscription's cycles fall due: pure date rules, no clock and no I/O.

A plan's cadence is monthly on a day (31, or any day past a short month's end, is that month's
last day), every N weeks, or every N minutes, at a wall-clock time in an IANA timezone. Each
cycle date is computed from the one before it (or from the start, for the first), so a change
of plan or cycle day only changes how the next date is found.

The subscription workflow calls these inside its sandbox. `zoneinfo` is deterministic for a
given tz database: the worker image pins it (the system's zoneinfo), and a due time, once
computed, is carried in the workflow's state rather than recomputed by a later run, so a tz
database update between two runs moves no cycle already scheduled. That is why this runs in
the workflow rather than as a local activity: one marker per cycle in every history would buy
nothing the carried state does not already give.
"""

from __future__ import annotations

import calendar
import hashlib
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from workflows.subscription_types import MINUTES, MONTHLY, WEEKLY, CadenceData

LAST_DAY = 31
# The last day every month has.
MAX_DAY_IN_EVERY_MONTH = 28
# Far enough to cross any month with the day asked for; a guard, never reached.
_MONTHS_TO_SEARCH = 14


def parse_local_time(text: str) -> time:
    """ "HH:MM" as a time of day ("" is midnight); ValueError when it is not one."""
    if not text:
        return time(0, 0)
    hours, sep, minutes = text.partition(":")
    if not sep or len(hours) != 2 or len(minutes) != 2:
        raise ValueError(f"at_local_time {text!r} is not HH:MM")
    return time(int(hours), int(minutes))


def valid_cycle_day(day: int) -> bool:
    """Whether `day` is a monthly cycle day: 1 to 28, or 31 for each month's last."""
    return 1 <= day <= MAX_DAY_IN_EVERY_MONTH or day == LAST_DAY


def month_day(year: int, month: int, day: int) -> date:
    """Day `day` of the month, or its last day when the month is shorter."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def local_to_utc(day: date, at: time, timezone: str) -> datetime:
    """The UTC instant of wall time `at` on `day` in `timezone`.

    A wall time that does not exist (the hour skipped when clocks go forward) is read with the
    offset before the change, so it lands as far after the gap's start as it was asked for (an
    02:30 that never happens is 03:30); a wall time that happens twice (clocks going back) is
    its first occurrence."""
    local = datetime.combine(day, at, tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC)


def next_cycle_date(
    cadence: CadenceData,
    timezone: str,
    after: datetime,
    *,
    inclusive: bool = False,
    day: int = 0,
) -> datetime:
    """The first cycle date of `cadence` after `after` (UTC), or on it when `inclusive` (the
    first cycle, due on or after the start). `day` overrides a monthly plan's day."""
    if cadence.kind == MINUTES:
        return after if inclusive else after + timedelta(minutes=cadence.value)
    at = parse_local_time(cadence.at_local_time)
    local = after.astimezone(ZoneInfo(timezone))
    if cadence.kind == WEEKLY:
        if not inclusive:
            return local_to_utc(local.date() + timedelta(weeks=cadence.value), at, timezone)
        candidate = local_to_utc(local.date(), at, timezone)
        if candidate < after:
            candidate = local_to_utc(local.date() + timedelta(days=1), at, timezone)
        return candidate
    if cadence.kind == MONTHLY:
        wanted = day or cadence.value
        year, month = local.year, local.month
        for _ in range(_MONTHS_TO_SEARCH):
            candidate = local_to_utc(month_day(year, month, wanted), at, timezone)
            if candidate > after or (inclusive and candidate == after):
                return candidate
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise ValueError(f"cadence {cadence.kind!r} {cadence.value} has no next date")


def spread_offset(subscription_id: str, spread_seconds: int) -> timedelta:
    """How long after its cycle date this subscription's cycle starts: in [0, spread_seconds),
    the same for a subscription every cycle, and spread evenly over subscriptions (a hash of
    the id, not Python's `hash`, which differs between processes)."""
    if spread_seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(subscription_id.encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % spread_seconds)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant as an aware UTC datetime (naive ones are taken as UTC)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_instant(at: datetime) -> str:
    """An instant as ISO 8601 in UTC, the form the workflow's dataclasses carry."""
    return at.astimezone(UTC).isoformat()
