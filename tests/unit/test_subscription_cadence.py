"""A subscription's cycle dates: month ends, weeks, minutes, DST and the spread."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflows.cadence import local_to_utc, next_cycle_date, parse_local_time, spread_offset
from workflows.subscription_types import MINUTES, MONTHLY, WEEKLY, CadenceData

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def monthly_dates(day: int, start: datetime, count: int, tz: str = "UTC") -> list[str]:
    cadence = CadenceData(MONTHLY, day, "00:00")
    dates = [next_cycle_date(cadence, tz, start, inclusive=True)]
    while len(dates) < count:
        dates.append(next_cycle_date(cadence, tz, dates[-1]))
    return [d.date().isoformat() for d in dates]


def test_day_31_is_every_months_last_day() -> None:
    assert monthly_dates(31, utc(2027, 1, 1), 4) == [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
    ]


def test_a_leap_february_ends_on_the_29th() -> None:
    assert monthly_dates(31, utc(2028, 2, 1), 2) == ["2028-02-29", "2028-03-31"]


def test_a_day_past_a_short_months_end_is_its_last_day_and_comes_back_after() -> None:
    cadence = CadenceData(MONTHLY, 30, "00:00")
    feb = next_cycle_date(cadence, "UTC", utc(2027, 2, 1), inclusive=True)
    assert feb == utc(2027, 2, 28)
    assert next_cycle_date(cadence, "UTC", feb) == utc(2027, 3, 30)


def test_the_first_cycle_is_on_or_after_the_start() -> None:
    cadence = CadenceData(MONTHLY, 1, "09:00")
    assert next_cycle_date(cadence, "UTC", utc(2027, 3, 1, 9), inclusive=True) == utc(2027, 3, 1, 9)
    assert next_cycle_date(cadence, "UTC", utc(2027, 3, 1, 9, 1), inclusive=True) == utc(
        2027, 4, 1, 9
    )


def test_a_cycle_day_overrides_the_plans() -> None:
    cadence = CadenceData(MONTHLY, 1, "00:00")
    assert next_cycle_date(cadence, "UTC", utc(2027, 1, 1), day=15) == utc(2027, 1, 15)


def test_local_wall_time_holds_across_dst() -> None:
    cadence = CadenceData(MONTHLY, 1, "09:00")
    march = next_cycle_date(cadence, BERLIN, utc(2027, 3, 1), inclusive=True)
    april = next_cycle_date(cadence, BERLIN, march)
    assert march == utc(2027, 3, 1, 8)  # CET, UTC+1
    assert april == utc(2027, 4, 1, 7)  # CEST, UTC+2


def test_a_wall_time_in_the_spring_gap_lands_after_it() -> None:
    # 02:30 does not exist in Berlin on 2027-03-28 (clocks go 02:00 -> 03:00): it is 03:30 CEST.
    assert local_to_utc(datetime(2027, 3, 28).date(), parse_local_time("02:30"), BERLIN) == utc(
        2027, 3, 28, 1, 30
    )


def test_a_wall_time_that_happens_twice_is_its_first() -> None:
    # 01:30 happens twice in New York on 2027-11-07: first in EDT (UTC-4).
    at = local_to_utc(datetime(2027, 11, 7).date(), parse_local_time("01:30"), NEW_YORK)
    assert at == utc(2027, 11, 7, 5, 30)


def test_every_n_weeks_keeps_the_weekday_and_wall_time_across_dst() -> None:
    cadence = CadenceData(WEEKLY, 2, "08:00")
    first = next_cycle_date(cadence, NEW_YORK, utc(2027, 3, 3, 20), inclusive=True)
    second = next_cycle_date(cadence, NEW_YORK, first)
    assert first == utc(2027, 3, 4, 13)  # Thursday 08:00 EST: the start's 08:00 had passed
    assert second == utc(2027, 3, 18, 12)  # two weeks on, 08:00 EDT
    assert first.weekday() == second.weekday()


def test_every_n_minutes_starts_at_the_start() -> None:
    cadence = CadenceData(MINUTES, 5)
    first = next_cycle_date(cadence, BERLIN, utc(2027, 1, 1, 12, 3), inclusive=True)
    assert first == utc(2027, 1, 1, 12, 3)
    assert next_cycle_date(cadence, BERLIN, first) == utc(2027, 1, 1, 12, 8)


def test_the_spread_is_fixed_per_subscription_and_within_the_window() -> None:
    offsets = [spread_offset(f"sub-{n}", 3600) for n in range(2000)]
    assert offsets == [spread_offset(f"sub-{n}", 3600) for n in range(2000)]
    assert all(timedelta(0) <= o < timedelta(hours=1) for o in offsets)
    # Spread over the window, not bunched: every quarter of the hour gets its share.
    quarters = [
        sum(1 for o in offsets if q * 900 <= o.total_seconds() < (q + 1) * 900) for q in range(4)
    ]
    assert min(quarters) > 400
    assert spread_offset("sub-1", 0) == timedelta(0)


@pytest.mark.parametrize("text", ["9:00", "0900", "ab:cd", "25:00"])
def test_a_malformed_local_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_local_time(text)
