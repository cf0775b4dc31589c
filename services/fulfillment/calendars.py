"""Public holidays from the `holidays` package: the adapter behind the domain's `Holidays`
port, so business days skip each country's public holidays without a table of our own.

Country-wide holidays only (no region's own days); weekends as the package knows them per
country (Saturday and Sunday for most). A country the package does not know has no holidays
and the Saturday-Sunday weekend. Each country's holidays are worked out once per year and kept.
"""

from __future__ import annotations

import threading
from datetime import date
from functools import lru_cache

import holidays

# Most of the world rests on Saturday and Sunday (Monday is 0).
DEFAULT_WEEKEND = frozenset({5, 6})
# The package fills a country's calendar year by year as dates are looked up, and the
# calendars are shared: one lock keeps two threads from filling the same year at once.
_FILLING = threading.Lock()


@lru_cache(maxsize=512)
def _country(country_code: str) -> holidays.HolidayBase | None:
    try:
        return holidays.country_holidays(country_code)
    except NotImplementedError:  # a country the package has no calendar for
        return None


class PublicHolidays:
    """The `Holidays` port over the `holidays` package."""

    def weekend(self, country_code: str) -> frozenset[int]:
        """The country's weekend days (Monday 0 … Sunday 6)."""
        calendar = _country(country_code)
        return DEFAULT_WEEKEND if calendar is None else frozenset(calendar.weekend)

    def holiday(self, country_code: str, day: date) -> str | None:
        """The name of the country's public holiday on `day`, None on other days."""
        calendar = _country(country_code)
        if calendar is None:
            return None
        with _FILLING:
            name: str | None = calendar.get(day)
        return name
