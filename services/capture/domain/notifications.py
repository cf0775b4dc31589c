"""Capture's domain, shopper notifications: which log events make a message, when a message
is skipped, and how long a failed one is retried."""

from __future__ import annotations

from datetime import datetime, timedelta

# Which event makes which message.
TEMPLATE_OF = {
    "order.captured": "order_confirmed",
    "shipment.shipped": "order_shipped",
    "fulfillment.ready_for_pickup": "ready_for_pickup",
    "shipment.delivered": "order_delivered",
    "refund.issued": "refund_issued",
    "return.received": "return_received",
}

# The carrier a store pickup's collection is recorded under: the shopper has the parcel in
# hand, so no "on its way" message goes out for it.
PICKUP_CARRIER = "pickup"

OPTED_OUT = "the shopper opted out"
NO_ADDRESS = "the shopper has no email address (erased)"


def skip_reason(opted_out: bool, email: str) -> str:
    """Why no message goes to this shopper now, or '' when one does."""
    if opted_out:
        return OPTED_OUT
    if not email:
        return NO_ADDRESS
    return ""


def retry_delay(attempts: int, first: float, cap: float) -> float:
    """The wait after the `attempts`-th failed attempt: `first`, doubling, at most `cap`."""
    return float(min(cap, first * 2 ** max(0, attempts - 1)))


def gives_up(now: datetime, created_at: datetime, delay: float, period: float) -> bool:
    """Whether a message made at `created_at` is given up rather than tried again after
    `delay`: the next attempt would fall beyond `period` seconds of trying."""
    return now + timedelta(seconds=delay) > created_at + timedelta(seconds=period)
