"""Capture's domain, delivery promises: the day each delivery group and the whole order are
promised to arrive (as the lifecycle reports them), and which orders are late."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from oms_platform.errors import FieldViolation, InvalidArgument
from services.capture.domain.order import CANCELED, FULFILLED

# Statuses in which an order can no longer be late: every unit delivered, or canceled.
NEVER_LATE = (FULFILLED, CANCELED)


@dataclass(frozen=True)
class DeliveryPromise:
    """The day a delivery group is promised to arrive (None: no promise)."""

    delivery_group_id: str
    promised_delivery_date: date | None


def parse_day(value: str, field: str) -> date:
    """A "YYYY-MM-DD" day; InvalidArgument naming `field` otherwise."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must be a date, YYYY-MM-DD")]) from None


def late_as_of(as_of: str, today: date) -> date:
    """The day late orders are counted at: `as_of` when given, otherwise `today` (UTC)."""
    return parse_day(as_of, "as_of") if as_of else today


def order_promise(groups: Mapping[str, date | None]) -> date | None:
    """The order's promise: the latest of its groups' (None when no group has one)."""
    return max((day for day in groups.values() if day is not None), default=None)


def is_late(status: str, promised_delivery_date: date | None, as_of: date) -> bool:
    """An order is late while it is neither fulfilled nor canceled and its promise is before
    `as_of`."""
    return (
        status not in NEVER_LATE
        and promised_delivery_date is not None
        and promised_delivery_date < as_of
    )
