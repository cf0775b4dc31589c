"""The subscription workflow's contract with the services and with the order lifecycle: its
id and type, the Update and query servicing calls, the signals between a subscription and its
cycles' orders, and the payload dataclasses (README "Subscriptions").

A subscription is the workflow `subscription:<id>` (type SubscriptionWorkflow) on the orders'
task queue, started by servicing through its outbox. Each cycle it submits that cycle's order
to capture with the idempotency key `<subscription_id>:<cycle>`; the order's lifecycle then
tells the subscription how its payment went (SUBSCRIPTION_PAYMENT_SIGNAL), and the
subscription tells a past-due order to retry with a new payment method (RETRY_PAYMENT_SIGNAL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oms_platform.money import allocate
from workflows.types import Address, PaymentMethodData

SUBSCRIPTION_WORKFLOW = "SubscriptionWorkflow"
# Servicing's change (validated, synchronous) and its preview.
SUBSCRIPTION_CHANGE_UPDATE = "change_subscription"
SUBSCRIPTION_PREVIEW_QUERY = "preview_subscription_change"
# The subscription's state as the workflow holds it (SubscriptionView).
SUBSCRIPTION_STATE_QUERY = "subscription_state"
# From a cycle's order lifecycle to its subscription: the payment's outcome.
SUBSCRIPTION_PAYMENT_SIGNAL = "subscription_payment"
# From a subscription to its past-due cycle's order lifecycle: retry now with this method.
RETRY_PAYMENT_SIGNAL = "retry_payment"

# Subscription statuses (lower case names of oms.subscriptions.v1.SubscriptionStatus).
ACTIVE = "active"
PAUSED = "paused"
SUBSCRIPTION_PAST_DUE = "past_due"
SUBSCRIPTION_CANCELED = "canceled"

# Cycle statuses (oms.subscriptions.v1.CycleStatus).
CYCLE_SCHEDULED = "scheduled"
CYCLE_SKIPPED = "skipped"
CYCLE_ORDERED = "ordered"
CYCLE_PAST_DUE = "past_due"
CYCLE_PAID = "paid"
CYCLE_FAILED = "failed"

# The payment methods a subscription may pay with (as SubmitOrder takes them).
PAYMENT_METHOD_TYPES = ("card", "gift_card", "invoice_terms")

# Cadence kinds.
MONTHLY = "monthly"
WEEKLY = "weeks"
MINUTES = "minutes"

# Change kinds (ChangeSubscriptionRequest's oneof, and the history's records).
PAUSE = "pause"
RESUME = "resume"
SKIP = "skip"
CHANGE_PLAN = "change_plan"
CHANGE_ADDRESS = "change_address"
CHANGE_PAYMENT_METHOD = "change_payment_method"
CHANGE_CYCLE_DAY = "change_cycle_day"
CANCEL = "cancel"
CHANGE_KINDS = (
    PAUSE,
    RESUME,
    SKIP,
    CHANGE_PLAN,
    CHANGE_ADDRESS,
    CHANGE_PAYMENT_METHOD,
    CHANGE_CYCLE_DAY,
    CANCEL,
)

# Payment outcomes a cycle's order reports.
PAYMENT_PAID = "paid"
PAYMENT_PAST_DUE = "past_due"
PAYMENT_FAILED = "failed"


def subscription_workflow_id(subscription_id: str) -> str:
    """The workflow id of a subscription."""
    return f"subscription:{subscription_id}"


def cycle_order_key(subscription_id: str, cycle: int) -> str:
    """The idempotency key of a cycle's order: a retried or duplicated cycle never makes a
    second order."""
    return f"{subscription_id}:{cycle}"


@dataclass
class PlanItemData:
    """One SKU a cycle ships, at its unit price (minor units)."""

    sku: str
    name: str
    quantity: int
    unit_price_minor: int


@dataclass
class CadenceData:
    """How often cycles come: kind MONTHLY (value: day 1-28, or 31 for the month's last),
    WEEKLY (value: every N weeks) or MINUTES (every N minutes; demos and tests), due at
    `at_local_time` ("HH:MM") in the plan's timezone."""

    kind: str
    value: int
    at_local_time: str = "00:00"


@dataclass
class PlanData:
    """A plan as a subscription carries it (a snapshot: a later plan change names another)."""

    plan_id: str
    name: str
    items: list[PlanItemData]
    currency: str
    cadence: CadenceData
    timezone: str
    shipping_minor: int = 0
    tax_minor: int = 0

    def price_minor(self) -> int:
        """What one cycle costs."""
        items = sum(i.quantity * i.unit_price_minor for i in self.items)
        return items + self.shipping_minor + self.tax_minor

    def line_taxes(self) -> list[int]:
        """The cycle's tax spread over its items by their value, exactly (an order keeps tax
        per line): one amount per item, summing to `tax_minor`."""
        return allocate(self.tax_minor, [i.quantity * i.unit_price_minor for i in self.items])


@dataclass
class SubscriberData:
    """The shopper as cycle orders name them."""

    email: str
    name: str = ""
    phone: str = ""
    channel_customer_id: str = ""


@dataclass
class SubscriptionInput:
    """What a subscription's workflow starts with (servicing writes it at CreateSubscription)."""

    subscription_id: str
    plan: PlanData
    channel: str
    subscriber: SubscriberData
    delivery_address: Address
    delivery_method: str
    payment_method: PaymentMethodData
    # The earliest first cycle (ISO 8601, UTC).
    start_at: str
    # Cycles due at the same moment start within this many seconds after it, at an offset
    # fixed per subscription (deterministic from its id): the 1st of the month is not a burst.
    spread_seconds: int = 0
    # Set only when the workflow continues as new: where it had got to (its own state, as
    # JSON: opaque to everyone else).
    carried: dict[str, Any] | None = None


@dataclass
class SubscriptionChangeRequest:
    """One change, as servicing sends it to the workflow (Update, or preview query). Fields
    beyond `kind` are those the kind needs."""

    kind: str
    actor: str
    idempotency_key: str = ""
    reason: str = ""
    # PAUSE: until then (ISO 8601; empty: until resumed). SKIP: the cycle (0: the next).
    until: str = ""
    cycle: int = 0
    # CHANGE_PLAN: the new plan (servicing reads it from its table).
    plan: PlanData | None = None
    # CHANGE_ADDRESS.
    delivery_address: Address | None = None
    delivery_method: str = ""
    # CHANGE_PAYMENT_METHOD.
    payment_method: PaymentMethodData | None = None
    # CHANGE_CYCLE_DAY.
    day: int = 0
    # CANCEL.
    at_period_end: bool = False


@dataclass
class CycleView:
    """One cycle as the workflow records it."""

    number: int
    due_at: str
    status: str
    order_id: str = ""
    plan_id: str = ""
    amount_minor: int = 0
    payment_attempts: int = 0
    next_payment_retry_at: str = ""
    decline_reason: str = ""


@dataclass
class SubscriptionView:
    """The subscription as the workflow holds it now: what servicing records and answers."""

    subscription_id: str
    plan: PlanData
    status: str
    next_cycle: int
    next_cycle_at: str
    paused_until: str = ""
    skipped_cycles: list[int] = field(default_factory=list)
    pending_plan: PlanData | None = None
    pending_plan_from_cycle: int = 0
    cancel_at_period_end: bool = False
    suspended_reason: str = ""
    delivery_address: Address | None = None
    delivery_method: str = ""
    payment_method: PaymentMethodData | None = None


@dataclass
class SubscriptionChangeResult:
    """What a change did (or, previewed, would do)."""

    summary: str
    effective_cycle: int
    next_cycle_amount_minor: int
    subscription: SubscriptionView
    # True when this answers an idempotency key the workflow has seen before.
    duplicate: bool = False
    # A preview the change would be refused for says so here, with the status a refused
    # Update raises (e.g. "FAILED_PRECONDITION"), rather than failing the query: a query's
    # failure message reaches servicing encrypted by the payload codec ("Encoded failure").
    refusal_code: str = ""
    refusal: str = ""


@dataclass
class ChangeRecordData:
    """One change for the subscription's history."""

    change_id: str
    kind: str
    actor: str
    summary: str
    effective_cycle: int
    at: str
    reason: str = ""


@dataclass
class SubscriptionProgressInput:
    """What the workflow tells servicing after each step (RecordSubscriptionProgress)."""

    idempotency_key: str
    subscription: SubscriptionView
    cycles: list[CycleView] = field(default_factory=list)
    change: ChangeRecordData | None = None


@dataclass
class CycleOrderInput:
    """A cycle's order for capture (SubmitOrder with key `cycle_order_key`)."""

    subscription_id: str
    cycle: int
    channel: str
    plan: PlanData
    subscriber: SubscriberData
    delivery_address: Address
    delivery_method: str
    payment_method: PaymentMethodData


@dataclass
class CycleOrderResult:
    """The order capture accepted for a cycle (the same one for a retried cycle)."""

    order_id: str
    duplicate: bool = False


@dataclass
class SubscriptionPaymentEvent:
    """A cycle's order telling its subscription how the payment went: PAYMENT_PAID,
    PAYMENT_PAST_DUE (declined; retried at `next_retry_at`) or PAYMENT_FAILED (the last retry
    failed; the order is canceled)."""

    cycle: int
    order_id: str
    outcome: str
    attempt: int
    reason: str = ""
    next_retry_at: str = ""


@dataclass
class RetryPayment:
    """A subscription telling its past-due cycle's order to retry now with this method."""

    payment_method: PaymentMethodData
    reason: str = ""
