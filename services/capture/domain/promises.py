"""Capture's domain, delivery promises: the day each delivery group and the whole order are
promised to arrive (as the lifecycle reports them), and the day late orders are counted at
(which orders are late is the store's filter, so that one index serves the list, its count and
the gauge)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class DeliveryPromise:
    """The day a delivery group is promised to arrive (None: no promise)."""

    delivery_group_id: str
    promised_delivery_date: date | None


def late_as_of(as_of: date | None, today: date) -> date:
    """The day late orders are counted at: `as_of` when given, otherwise `today` (UTC)."""
    return as_of or today
