"""Capture's domain, fraud screening at capture: the policy, why an order is flagged, and the
timeline an order starts with."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from oms_platform import money
from services.capture.domain.order import Order, TimelineEvent
from services.capture.domain.submission import captured_event

SCREENING_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class FraudPolicy:
    """When screening at capture flags an order; a limit of 0 switches its rule off."""

    amount_threshold_minor: int = 0
    max_orders_per_shopper_per_hour: int = 0
    flag_country_mismatch: bool = True

    @property
    def counts_orders(self) -> bool:
        """Whether screening needs the shopper's recent orders counted."""
        return self.max_orders_per_shopper_per_hour > 0


def fraud_reasons(order: Order, policy: FraudPolicy, shopper_orders_last_hour: int) -> list[str]:
    """Why `order` should be looked at by a person before it proceeds; empty when clear.

    `shopper_orders_last_hour` counts the shopper's orders placed in the hour before this one.
    """
    reasons: list[str] = []
    total = order.totals.grand_total_minor
    threshold = policy.amount_threshold_minor
    if threshold > 0 and total > threshold:
        reasons.append(
            f"grand total {money.format_minor(total, order.currency)} is above the screening "
            f"threshold of {money.format_minor(threshold, order.currency)}"
        )
    limit = policy.max_orders_per_shopper_per_hour
    if limit > 0 and shopper_orders_last_hour >= limit:
        reasons.append(
            f"shopper placed {shopper_orders_last_hour + 1} orders within an hour "
            f"(more than {limit})"
        )
    billing = order.billing_address
    if policy.flag_country_mismatch and billing is not None:
        shipping = sorted(
            {g.address.country_code.upper() for g in order.delivery_groups}
            - {billing.country_code.upper()}
        )
        if shipping:
            reasons.append(
                f"billing country {billing.country_code.upper()} differs from shipping "
                f"country {', '.join(shipping)}"
            )
    return reasons


def screened(order: Order, policy: FraudPolicy, shopper_orders_last_hour: int) -> Order:
    """`order` with its fraud screening reasons filled in."""
    return replace(
        order, fraud_reasons=tuple(fraud_reasons(order, policy, shopper_orders_last_hour))
    )


def fraud_flagged_event(order: Order) -> TimelineEvent:
    """The timeline event of an order screening flagged."""
    return TimelineEvent(
        kind="fraud.flagged",
        summary="Fraud screening flagged the order: " + "; ".join(order.fraud_reasons),
        actor="capture",
        at=order.created_at,
    )


def capture_events(order: Order) -> list[TimelineEvent]:
    """The timeline an order starts with: captured, and flagged when screening says so."""
    events = [replace(captured_event(order), at=order.created_at)]
    if order.fraud_reasons:
        events.append(fraud_flagged_event(order))
    return events
