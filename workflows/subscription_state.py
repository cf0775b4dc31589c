"""The state only a subscription's workflow holds, handed whole to the next run when it
continues as new after each cycle (the input's `carried`).

Like `workflows/state.py` for the order, its JSON form is part of recorded histories: field
names, their order and their types stay as they are; a new field goes last, with a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workflows.subscription_types import (
    ACTIVE,
    CYCLE_PAST_DUE,
    CycleView,
    PlanData,
    SubscriptionChangeResult,
    SubscriptionInput,
)
from workflows.types import Address, PaymentMethodData

# How many changes' answers a subscription keeps for repeated idempotency keys: servicing
# dedupes by key too, so this covers only a retry racing servicing's own record.
KEPT_CHANGES = 100


@dataclass
class SubscriptionState:
    """Where a subscription stands between cycles."""

    subscription_id: str
    plan: PlanData
    delivery_address: Address
    delivery_method: str
    payment_method: PaymentMethodData
    spread_seconds: int = 0
    status: str = ACTIVE
    # The next cycle (from 1) and the instant its date is found after (the previous cycle's
    # date; for the first, the start, on or after it: `after_inclusive`).
    cycle: int = 1
    after: str = ""
    after_inclusive: bool = True
    # A monthly plan's day for this subscription (0: the plan's own).
    cycle_day: int = 0
    # Paused until then (ISO 8601; empty while paused: until resumed).
    paused_until: str = ""
    # Cycles still to come that will not be ordered, ascending.
    skipped: list[int] = field(default_factory=list)
    pending_plan: PlanData | None = None
    pending_plan_from_cycle: int = 0
    cancel_at_period_end: bool = False
    suspended_reason: str = ""
    # Cycles ordered whose payment has not settled (ordered or past due), oldest first: the
    # workflow stays open while one is past due, whatever else happens.
    open_cycles: list[CycleView] = field(default_factory=list)
    # Changes made, by idempotency key, oldest first (the last KEPT_CHANGES).
    changes: dict[str, SubscriptionChangeResult] = field(default_factory=dict)

    @classmethod
    def start(cls, subscription: SubscriptionInput) -> SubscriptionState:
        """A new subscription: its first cycle is due on the first cycle date on or after
        its start."""
        return cls(
            subscription_id=subscription.subscription_id,
            plan=subscription.plan,
            delivery_address=subscription.delivery_address,
            delivery_method=subscription.delivery_method,
            payment_method=subscription.payment_method,
            spread_seconds=subscription.spread_seconds,
            after=subscription.start_at,
        )

    def past_due(self) -> list[CycleView]:
        """The cycles whose payment was declined and is being retried."""
        return [c for c in self.open_cycles if c.status == CYCLE_PAST_DUE]
