"""Capture's domain, bulk import: its options, and an order stored as a settled past order."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform import money
from oms_platform.errors import FieldViolation
from services.capture.domain.order import (
    CANCELED,
    FULFILLED,
    HISTORICAL_STATUSES,
    Order,
    Quantities,
    TimelineEvent,
)


@dataclass(frozen=True)
class ImportOptions:
    """How one order of a bulk import is stored.

    historical: a past order, stored settled (status `historical_status`, "" meaning
    fulfilled) at `placed_at` (None: now), without a lifecycle.
    """

    historical: bool = False
    historical_status: str = ""
    placed_at: datetime | None = None


def import_violations(options: ImportOptions, now: datetime) -> list[FieldViolation]:
    """What is wrong with an import's options (the order itself is checked as a submission)."""
    out: list[FieldViolation] = []
    if options.historical:
        if options.historical_status and options.historical_status not in HISTORICAL_STATUSES:
            out.append(
                FieldViolation("historical_status", "must be FULFILLED or CANCELED when set")
            )
        if options.placed_at is not None and options.placed_at > now:
            out.append(FieldViolation("placed_at", "must not be in the future"))
    else:
        if options.historical_status:
            out.append(FieldViolation("historical_status", "is only for historical orders"))
        if options.placed_at is not None:
            out.append(FieldViolation("placed_at", "is only for historical orders"))
    return out


def historical_order(order: Order, options: ImportOptions) -> Order:
    """A captured order as a settled past order: every unit fulfilled (or canceled)."""
    status = options.historical_status or FULFILLED
    lines = tuple(
        replace(
            line,
            quantities=Quantities(
                ordered=line.quantity,
                fulfilled=line.quantity if status == FULFILLED else 0,
                canceled=line.quantity if status == CANCELED else 0,
            ),
        )
        for line in order.lines
    )
    at = options.placed_at or order.created_at
    return replace(order, status=status, lines=lines, created_at=at, updated_at=at)


def imported_event(order: Order) -> TimelineEvent:
    """The one timeline event of a historical order."""
    return TimelineEvent(
        kind="order.imported",
        summary=(
            f"Historical order {order.channel_order_ref} from {order.channel} imported as "
            f"{order.status}: {len(order.lines)} line(s), "
            f"{money.format_minor(order.totals.grand_total_minor, order.currency)}"
        ),
        actor="import",
        at=order.created_at,
    )
