"""Capture's domain, the order as captured: its statuses, lines, buckets, money and timeline,
and how a lifecycle step moves its lines' buckets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, NotFound
from oms_platform.money import Money as Money  # re-exported: part of this domain's vocabulary
from oms_platform.postal import PostalAddress as PostalAddress  # re-exported: domain vocabulary

# Statuses as stored (lower case); the proto enums map onto these.
PENDING = "pending"
FULFILLED = "fulfilled"
CANCELED = "canceled"
# An order in one of these has nothing more to happen at capture's front door: watchers stop.
SETTLED = (FULFILLED, CANCELED)
# What a historical import may store an order as.
HISTORICAL_STATUSES = (FULFILLED, CANCELED)


# ---- the order as captured ------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentMethod:
    """How the order is paid: type is "card", "gift_card" or "invoice_terms"."""

    type: str
    token: str = ""
    preauthorization_ref: str = ""


@dataclass(frozen=True)
class Adjustment:
    """A discount in the order's currency."""

    code: str
    description: str
    amount_minor: int


@dataclass(frozen=True)
class TaxLine:
    """A tax in the order's currency."""

    name: str
    amount_minor: int


@dataclass(frozen=True)
class Quantities:
    """The buckets an order line is tracked by."""

    ordered: int
    canceled: int = 0
    allocated: int = 0
    fulfilled: int = 0
    return_initiated: int = 0
    returned: int = 0

    def plus(self, delta: Quantities) -> Quantities:
        """These buckets with `delta` added to each."""
        return Quantities(
            ordered=self.ordered + delta.ordered,
            canceled=self.canceled + delta.canceled,
            allocated=self.allocated + delta.allocated,
            fulfilled=self.fulfilled + delta.fulfilled,
            return_initiated=self.return_initiated + delta.return_initiated,
            returned=self.returned + delta.returned,
        )

    def negative_buckets(self) -> list[str]:
        """Names of buckets below zero."""
        return [name for name, value in self.as_dict().items() if value < 0]

    def as_dict(self) -> dict[str, int]:
        """Bucket name -> units."""
        return {
            "ordered": self.ordered,
            "canceled": self.canceled,
            "allocated": self.allocated,
            "fulfilled": self.fulfilled,
            "return_initiated": self.return_initiated,
            "returned": self.returned,
        }


@dataclass(frozen=True)
class DeliveryGroup:
    """A delivery group with its oms id."""

    delivery_group_id: str
    ref: str
    recipient_name: str
    address: PostalAddress
    delivery_method: str
    shipping_minor: int
    # With delivery method "pickup": the store the shopper collects at.
    pickup_location_id: str = ""
    # The day its units are promised to arrive (None until routed, or when none was made).
    promised_delivery_date: date | None = None


@dataclass(frozen=True)
class OrderLine:
    """An order line with its money worked out and its buckets."""

    order_line_id: str
    delivery_group_id: str
    sku: str
    name: str
    unit_price_minor: int
    discounts: tuple[Adjustment, ...]
    taxes: tuple[TaxLine, ...]
    allocated_order_discount_minor: int
    total_minor: int
    quantities: Quantities

    @property
    def quantity(self) -> int:
        """Units ordered."""
        return self.quantities.ordered

    @property
    def gross_minor(self) -> int:
        """Unit price times units ordered."""
        return self.unit_price_minor * self.quantities.ordered

    @property
    def line_discount_minor(self) -> int:
        """The line's own discounts."""
        return sum(d.amount_minor for d in self.discounts)

    @property
    def discount_minor(self) -> int:
        """The line's own discounts plus its share of order-level discounts."""
        return self.line_discount_minor + self.allocated_order_discount_minor

    @property
    def tax_minor(self) -> int:
        """The line's taxes."""
        return sum(t.amount_minor for t in self.taxes)


@dataclass(frozen=True)
class Totals:
    """The money of an order; grand_total = subtotal - discounts + tax + shipping."""

    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    shipping_minor: int
    grand_total_minor: int


@dataclass(frozen=True)
class Shopper:
    """A shopper as oms knows them; email is normalized."""

    shopper_id: str
    kind: str
    email: str
    name: str
    phone: str
    company: str
    channel_customer_id: str = ""


@dataclass(frozen=True)
class Order:
    """An order as captured, with its current status and buckets."""

    order_id: str
    channel: str
    channel_order_ref: str
    status: str
    shopper: Shopper
    currency: str
    delivery_groups: tuple[DeliveryGroup, ...]
    lines: tuple[OrderLine, ...]
    discounts: tuple[Adjustment, ...]
    totals: Totals
    payment_method: PaymentMethod
    created_at: datetime | None = None
    updated_at: datetime | None = None
    additional_payment_methods: tuple[PaymentMethod, ...] = ()
    billing_address: PostalAddress | None = None
    # Why fraud screening wants a person to look first; empty when it passed.
    fraud_reasons: tuple[str, ...] = ()
    # A subscription's cycle order: its subscription and cycle ("" and 0 for any other).
    subscription_id: str = ""
    subscription_cycle: int = 0
    # The checkout reservation the order was submitted with (passed to the lifecycle, which
    # hands it to routing; not stored with the order).
    reservation_id: str = ""
    # The day the whole order is promised to arrive: the latest of its groups' promises.
    promised_delivery_date: date | None = None


@dataclass(frozen=True)
class TimelineEvent:
    """One thing that happened to an order; `at` None means "now" when recorded."""

    kind: str
    summary: str
    actor: str
    at: datetime | None = None


@dataclass(frozen=True)
class LineQuantityChange:
    """Units added to (negative: taken from) an order line's buckets."""

    order_line_id: str
    delta: Quantities


# ---- rules ----------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """The form emails are matched in: trimmed and lower case."""
    return email.strip().lower()


def captured_actor(channel: str) -> str:
    """Who caused the capture: an agent for agent orders, else the shopper."""
    return "agent" if channel == "agent" else "shopper"


def apply_line_changes(
    order_id: str, current: dict[str, Quantities], changes: Sequence[LineQuantityChange]
) -> dict[str, Quantities]:
    """The lines' buckets after `changes`; refuses any bucket that would drop below zero."""
    after = dict(current)
    for change in changes:
        if change.order_line_id not in after:
            raise NotFound(
                f"order line {limits.echo(change.order_line_id)} is not on order "
                f"{limits.echo(order_id)}"
            )
        after[change.order_line_id] = after[change.order_line_id].plus(change.delta)
    for line_id, quantities in after.items():
        negative = quantities.negative_buckets()
        if negative:
            raise FailedPrecondition(
                f"order line {limits.echo(line_id)} would have {', '.join(negative)} below zero"
            )
    return {line_id: after[line_id] for line_id in after if after[line_id] != current[line_id]}


def is_settled(status: str) -> bool:
    """Whether nothing more happens to an order with this status (watchers stop)."""
    return status in SETTLED
