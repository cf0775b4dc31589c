"""Capture's domain: what a valid order is, what it costs, and how its lines' buckets move.

Pure: standard library, oms_platform.money and oms_platform.errors only. The servicer converts
wire types into these dataclasses; the store persists what these functions return.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from oms_platform import limits, money
from oms_platform.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from oms_platform.money import Money as Money  # re-exported: part of this domain's vocabulary
from oms_platform.postal import PostalAddress as PostalAddress  # re-exported: domain vocabulary

# Channels and statuses as stored (lower case); the proto enums map onto these.
CHANNELS = ("web", "marketplace", "store", "b2b", "agent")
PAYMENT_METHOD_TYPES = ("card", "gift_card", "invoice_terms")
SHOPPER_KINDS = ("person", "business")
PENDING = "pending"
FULFILLED = "fulfilled"
CANCELED = "canceled"
# An order in one of these has nothing more to happen at capture's front door: watchers stop.
SETTLED = (FULFILLED, CANCELED)
# What a historical import may store an order as.
HISTORICAL_STATUSES = (FULFILLED, CANCELED)

MAX_LINES = limits.MAX_LINES
MAX_KEY_LENGTH = 128
MAX_REF_LENGTH = 128
MAX_NAME_LENGTH = 256
MAX_PHONE_LENGTH = 64
MAX_TEXT_LENGTH = 2048
MAX_ADDITIONAL_PAYMENT_METHODS = 10

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


# ---- what a channel submits ----------------------------------------------------------------


@dataclass(frozen=True)
class ShopperDetails:
    """Who ordered, as the channel knows them."""

    kind: str = "person"
    channel_customer_id: str = ""
    email: str = ""
    name: str = ""
    phone: str = ""
    company: str = ""


@dataclass(frozen=True)
class AdjustmentRequest:
    """A discount as submitted; `amount` is None when the channel left it out."""

    code: str
    description: str
    amount: Money | None


@dataclass(frozen=True)
class TaxRequest:
    """A tax as submitted."""

    name: str
    amount: Money | None


@dataclass(frozen=True)
class DeliveryGroupRequest:
    """A delivery group as submitted; lines point at it by `ref`."""

    ref: str
    recipient_name: str
    address: PostalAddress | None
    delivery_method: str = ""
    shipping_charge: Money | None = None


@dataclass(frozen=True)
class LineRequest:
    """An order line as submitted."""

    delivery_group_ref: str
    sku: str
    name: str
    quantity: int
    unit_price: Money | None
    discounts: tuple[AdjustmentRequest, ...] = ()
    taxes: tuple[TaxRequest, ...] = ()


@dataclass(frozen=True)
class PaymentMethod:
    """How the order is paid: type is "card", "gift_card" or "invoice_terms"."""

    type: str
    token: str = ""
    preauthorization_ref: str = ""


@dataclass(frozen=True)
class OrderSubmission:
    """An order from a channel; `channel` is "" when the channel did not say."""

    idempotency_key: str
    channel: str
    channel_order_ref: str
    shopper: ShopperDetails | None
    currency: str
    delivery_groups: tuple[DeliveryGroupRequest, ...]
    lines: tuple[LineRequest, ...]
    discounts: tuple[AdjustmentRequest, ...]
    grand_total: Money | None
    payment_method: PaymentMethod | None
    # Applied after `payment_method`, in order (e.g. a card after a gift card).
    additional_payment_methods: tuple[PaymentMethod, ...] = ()
    billing_address: PostalAddress | None = None


# ---- the order as captured ------------------------------------------------------------------


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


@dataclass
class _Violations:
    items: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, rule: str) -> None:
        self.items.append(FieldViolation(path, rule))

    def required(self, path: str, value: str, max_length: int) -> None:
        if not value.strip():
            self.add(path, "is required")
        else:
            self.limit(path, value, max_length)

    def limit(self, path: str, value: str, max_length: int) -> None:
        if len(value) > max_length:
            self.add(path, f"must be at most {max_length} characters")

    def amount(
        self, path: str, amount: Money | None, currency: str, *, required: bool = True
    ) -> None:
        if amount is None:
            if required:
                self.add(path, "is required")
            return
        if amount.amount_minor < 0:
            self.add(f"{path}.amount_minor", "must not be negative")
        if amount.currency != currency:
            self.add(
                f"{path}.currency",
                f"must be the order currency {limits.echo(currency)}, not "
                f"{limits.echo(amount.currency)}",
            )


def validation_errors(submission: OrderSubmission) -> list[FieldViolation]:
    """Every rule `submission` breaks, each with the path of the offending field."""
    v = _Violations()
    s = submission
    v.required("idempotency_key", s.idempotency_key, MAX_KEY_LENGTH)
    if not s.channel:
        v.add("channel", "must be set")
    elif s.channel not in CHANNELS:
        v.add("channel", f"must be one of {', '.join(CHANNELS)}")
    v.required("channel_order_ref", s.channel_order_ref, MAX_REF_LENGTH)
    currency_known = money.is_known_currency(s.currency)
    if not s.currency:
        v.add("currency", "is required")
    elif not currency_known:
        v.add("currency", f"{limits.echo(s.currency)} is not a known ISO 4217 currency code")
    _check_shopper(v, s.shopper)
    if s.payment_method is None:
        v.add("payment_method", "is required")
    else:
        _check_payment_method(v, "payment_method", s.payment_method)
    if len(s.additional_payment_methods) > MAX_ADDITIONAL_PAYMENT_METHODS:
        v.add(
            "additional_payment_methods",
            f"at most {MAX_ADDITIONAL_PAYMENT_METHODS} are allowed, "
            f"got {len(s.additional_payment_methods)}",
        )
    for i, method in enumerate(s.additional_payment_methods):
        _check_payment_method(v, f"additional_payment_methods[{i}]", method)
    if s.billing_address is not None:
        _check_address(v, "billing_address", s.billing_address)

    if not s.delivery_groups:
        v.add("delivery_groups", "at least one delivery group is required")
    refs: set[str] = set()
    for i, group in enumerate(s.delivery_groups):
        _check_delivery_group(v, f"delivery_groups[{i}]", group, s.currency, refs)

    if not s.lines:
        v.add("lines", "at least one line is required")
    elif len(s.lines) > MAX_LINES:
        v.add("lines", f"at most {MAX_LINES} lines are allowed, got {len(s.lines)}")
    for i, line in enumerate(s.lines):
        _check_line(v, f"lines[{i}]", line, s.currency, refs)

    for j, discount in enumerate(s.discounts):
        _check_adjustment(v, f"discounts[{j}]", discount, s.currency)

    if s.lines:
        # Even in an unknown currency, so a bad order learns everything at once.
        _check_money_adds_up(v, s)
    return v.items


def _check_shopper(v: _Violations, shopper: ShopperDetails | None) -> None:
    if shopper is None:
        v.add("shopper", "is required")
        return
    if not shopper.email.strip() and not shopper.channel_customer_id.strip():
        v.add("shopper.email", "email or channel_customer_id is required")
    if shopper.email.strip() and not _EMAIL.match(shopper.email.strip()):
        v.add("shopper.email", "must be an email address")
    v.limit("shopper.email", shopper.email, MAX_NAME_LENGTH)
    v.limit("shopper.channel_customer_id", shopper.channel_customer_id, MAX_REF_LENGTH)
    v.limit("shopper.name", shopper.name, MAX_NAME_LENGTH)
    v.limit("shopper.phone", shopper.phone, MAX_PHONE_LENGTH)
    v.limit("shopper.company", shopper.company, MAX_NAME_LENGTH)
    if shopper.kind == "business" and not shopper.company.strip():
        v.add("shopper.company", "is required for a business shopper")


def _check_payment_method(v: _Violations, path: str, method: PaymentMethod) -> None:
    if not method.type:
        v.add(f"{path}.type", "must be set")
    elif method.type not in PAYMENT_METHOD_TYPES:
        v.add(f"{path}.type", f"must be one of {', '.join(PAYMENT_METHOD_TYPES)}")
    if not method.token.strip() and not method.preauthorization_ref.strip():
        v.add(f"{path}.token", "token or preauthorization_ref is required")
    v.limit(f"{path}.token", method.token, MAX_TEXT_LENGTH)
    v.limit(f"{path}.preauthorization_ref", method.preauthorization_ref, MAX_TEXT_LENGTH)


def _check_address(v: _Violations, path: str, address: PostalAddress) -> None:
    v.required(f"{path}.line1", address.line1, MAX_NAME_LENGTH)
    v.limit(f"{path}.line2", address.line2, MAX_NAME_LENGTH)
    v.required(f"{path}.city", address.city, MAX_NAME_LENGTH)
    v.limit(f"{path}.region", address.region, MAX_NAME_LENGTH)
    v.required(f"{path}.postal_code", address.postal_code, 32)
    if not address.country_code:
        v.add(f"{path}.country_code", "is required")
    else:
        v.items += limits.country_code_violations(f"{path}.country_code", address.country_code)


def _check_delivery_group(
    v: _Violations, path: str, group: DeliveryGroupRequest, currency: str, refs: set[str]
) -> None:
    v.required(f"{path}.ref", group.ref, MAX_REF_LENGTH)
    if group.ref in refs:
        v.add(f"{path}.ref", f"duplicate delivery group ref {limits.echo(group.ref)}")
    if group.ref:
        refs.add(group.ref)
    v.limit(f"{path}.recipient_name", group.recipient_name, MAX_NAME_LENGTH)
    v.limit(f"{path}.delivery_method", group.delivery_method, MAX_NAME_LENGTH)
    if group.address is None:
        v.add(f"{path}.address", "is required")
    else:
        _check_address(v, f"{path}.address", group.address)
    v.amount(f"{path}.shipping_charge", group.shipping_charge, currency, required=False)


def _check_line(
    v: _Violations, path: str, line: LineRequest, currency: str, refs: set[str]
) -> None:
    if not line.delivery_group_ref:
        v.add(f"{path}.delivery_group_ref", "is required")
    elif line.delivery_group_ref not in refs:
        v.add(
            f"{path}.delivery_group_ref",
            f"must name a delivery group's ref; {limits.echo(line.delivery_group_ref)} is not one",
        )
    v.required(f"{path}.sku", line.sku, MAX_REF_LENGTH)
    v.limit(f"{path}.name", line.name, MAX_NAME_LENGTH)
    if line.quantity <= 0:
        v.add(f"{path}.quantity", "must be greater than zero")
    v.amount(f"{path}.unit_price", line.unit_price, currency)
    for j, discount in enumerate(line.discounts):
        _check_adjustment(v, f"{path}.discounts[{j}]", discount, currency)
    for j, tax in enumerate(line.taxes):
        v.limit(f"{path}.taxes[{j}].name", tax.name, MAX_NAME_LENGTH)
        v.amount(f"{path}.taxes[{j}].amount", tax.amount, currency)
    if line.unit_price is not None and line.quantity > 0:
        v.items += limits.line_amount_violations(
            f"{path}.unit_price", line.quantity, line.unit_price.amount_minor
        )
        gross = line.unit_price.amount_minor * line.quantity
        own = _sum(d.amount for d in line.discounts)
        if own > gross:
            v.add(
                f"{path}.discounts",
                f"line discounts ({money.format_minor(own, currency)}) cannot exceed the "
                f"line's price ({money.format_minor(gross, currency)})",
            )


def _check_adjustment(
    v: _Violations, path: str, adjustment: AdjustmentRequest, currency: str
) -> None:
    v.limit(f"{path}.code", adjustment.code, MAX_REF_LENGTH)
    v.limit(f"{path}.description", adjustment.description, MAX_TEXT_LENGTH)
    v.amount(f"{path}.amount", adjustment.amount, currency)


def _check_money_adds_up(v: _Violations, s: OrderSubmission) -> None:
    nets = [_line_net(line) for line in s.lines]
    order_discount = _sum(d.amount for d in s.discounts)
    lines_net = sum(max(n, 0) for n in nets)
    if order_discount > lines_net:
        v.add(
            "discounts",
            f"order discounts ({money.format_minor(order_discount, s.currency)}) cannot exceed "
            f"the lines' net ({money.format_minor(lines_net, s.currency)})",
        )
    expected = _totals(s).grand_total_minor
    if s.grand_total is None:
        v.add(
            "grand_total", f"is required; it must equal {money.format_minor(expected, s.currency)}"
        )
        return
    if s.grand_total.currency != s.currency:
        v.add(
            "grand_total.currency",
            f"must be the order currency {limits.echo(s.currency)}, not "
            f"{limits.echo(s.grand_total.currency)}",
        )
    if s.grand_total.amount_minor != expected:
        v.add(
            "grand_total",
            f"must equal {money.format_minor(expected, s.currency)} "
            "(lines + shipping + tax − discounts), "  # noqa: RUF001 (the brief's wording)
            f"not {money.format_minor(s.grand_total.amount_minor, s.currency)}",
        )


def _sum(amounts: Iterable[Money | None]) -> int:
    return sum(a.amount_minor for a in amounts if a is not None)


def _line_gross(line: LineRequest) -> int:
    return (line.unit_price.amount_minor if line.unit_price else 0) * line.quantity


def _line_net(line: LineRequest) -> int:
    return _line_gross(line) - _sum(d.amount for d in line.discounts)


def allocate_order_discount(order_discount_minor: int, line_nets: Sequence[int]) -> list[int]:
    """Split order-level discounts over lines by their net after their own discounts.

    The parts sum exactly to `order_discount_minor` (largest remainder).
    """
    return money.allocate(order_discount_minor, [max(n, 0) for n in line_nets])


def _totals(s: OrderSubmission) -> Totals:
    subtotal = sum(_line_gross(line) for line in s.lines)
    line_discounts = sum(_sum(d.amount for d in line.discounts) for line in s.lines)
    order_discount = _sum(d.amount for d in s.discounts)
    tax = sum(_sum(t.amount for t in line.taxes) for line in s.lines)
    shipping = _sum(g.shipping_charge for g in s.delivery_groups)
    discounts = line_discounts + order_discount
    return Totals(
        subtotal_minor=subtotal,
        discount_minor=discounts,
        tax_minor=tax,
        shipping_minor=shipping,
        grand_total_minor=subtotal - discounts + tax + shipping,
    )


def check_submission(submission: OrderSubmission) -> None:
    """Raise InvalidArgument listing every violation, if there are any."""
    violations = validation_errors(submission)
    if violations:
        raise InvalidArgument(violations)


def capture_order(
    submission: OrderSubmission,
    new_id: Callable[[], str],
    shopper: Shopper,
    at: datetime | None = None,
    *,
    checked: bool = False,
) -> Order:
    """The order a valid submission becomes: ids assigned, money worked out, status pending.

    Order-level discounts are allocated over lines by each line's net after its own
    discounts, so the lines' totals add up exactly to the grand total minus shipping.
    `at` is when it was captured (None: the store's clock decides). `checked`: the caller
    ran check_submission on it already.
    """
    if not checked:
        check_submission(submission)
    s = submission
    assert s.payment_method is not None
    groups = tuple(
        DeliveryGroup(
            delivery_group_id=new_id(),
            ref=g.ref,
            recipient_name=g.recipient_name,
            address=_normalized_address(g.address),
            delivery_method=g.delivery_method,
            shipping_minor=g.shipping_charge.amount_minor if g.shipping_charge else 0,
        )
        for g in s.delivery_groups
    )
    group_ids = {g.ref: g.delivery_group_id for g in groups}
    order_discount = _sum(d.amount for d in s.discounts)
    shares = allocate_order_discount(order_discount, [_line_net(line) for line in s.lines])
    lines = tuple(
        _captured_line(new_id(), group_ids[line.delivery_group_ref], line, share)
        for line, share in zip(s.lines, shares, strict=True)
    )
    return Order(
        order_id=new_id(),
        channel=s.channel,
        channel_order_ref=s.channel_order_ref,
        status=PENDING,
        shopper=shopper,
        currency=s.currency,
        delivery_groups=groups,
        lines=lines,
        discounts=tuple(_adjustment(d) for d in s.discounts),
        totals=_totals(s),
        payment_method=s.payment_method,
        created_at=at,
        updated_at=at,
        additional_payment_methods=s.additional_payment_methods,
        billing_address=(
            _normalized_address(s.billing_address) if s.billing_address is not None else None
        ),
    )


def _normalized_address(address: PostalAddress | None) -> PostalAddress:
    assert address is not None
    return replace(address, country_code=address.country_code.upper())


def _adjustment(request: AdjustmentRequest) -> Adjustment:
    amount = request.amount.amount_minor if request.amount else 0
    return Adjustment(code=request.code, description=request.description, amount_minor=amount)


def _captured_line(
    order_line_id: str, delivery_group_id: str, line: LineRequest, order_discount_share: int
) -> OrderLine:
    taxes = tuple(
        TaxLine(name=t.name, amount_minor=t.amount.amount_minor if t.amount else 0)
        for t in line.taxes
    )
    tax = sum(t.amount_minor for t in taxes)
    return OrderLine(
        order_line_id=order_line_id,
        delivery_group_id=delivery_group_id,
        sku=line.sku,
        name=line.name,
        unit_price_minor=line.unit_price.amount_minor if line.unit_price else 0,
        discounts=tuple(_adjustment(d) for d in line.discounts),
        taxes=taxes,
        allocated_order_discount_minor=order_discount_share,
        total_minor=_line_net(line) - order_discount_share + tax,
        quantities=Quantities(ordered=line.quantity),
    )


def captured_event(order: Order) -> TimelineEvent:
    """The first timeline event of an order."""
    return TimelineEvent(
        kind="order.captured",
        summary=(
            f"Order {order.channel_order_ref} captured from {order.channel}: "
            f"{len(order.lines)} line(s), "
            f"{money.format_minor(order.totals.grand_total_minor, order.currency)}"
        ),
        actor=captured_actor(order.channel),
    )


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


# ---- items added before fulfillment ----------------------------------------------------------


@dataclass(frozen=True)
class LineAddition:
    """Units the order's workflow added before fulfillment: a new line (new_line, with its
    group, SKU, name and unit price) or more units of an existing line at its unit price.
    Money in minor units of `currency`."""

    order_line_id: str
    quantity: int
    tax_minor: int
    currency: str
    new_line: bool = False
    delivery_group_id: str = ""
    sku: str = ""
    name: str = ""
    unit_price_minor: int = 0


@dataclass(frozen=True)
class AddedItems:
    """An order's lines and totals after additions: existing lines with more units, new
    lines (in the order given), and the new totals."""

    changed: tuple[OrderLine, ...]
    new: tuple[OrderLine, ...]
    totals: Totals


def add_items(order: Order, additions: Sequence[LineAddition]) -> AddedItems:
    """The order with `additions` taken in: ordered units, the line's tax lines and total,
    and the order's subtotal, tax and grand total grow by the added gross and tax.

    Raises InvalidArgument for a bad addition, NotFound for more units of a line the order
    does not have, AlreadyExists for a new line whose id is taken."""
    lines = {line.order_line_id: line for line in order.lines}
    groups = {g.delivery_group_id for g in order.delivery_groups}
    changed: dict[str, OrderLine] = {}
    new: dict[str, OrderLine] = {}
    gross = tax = 0
    for i, added in enumerate(additions):
        path = f"added_lines[{i}]"
        violations = []
        if added.quantity <= 0:
            violations.append(FieldViolation(f"{path}.quantity", "must be > 0"))
        if added.tax_minor < 0:
            violations.append(FieldViolation(f"{path}.tax", "must not be negative"))
        if added.currency and added.currency != order.currency:
            violations.append(FieldViolation(path, f"money must be in {order.currency}"))
        if added.new_line:
            if not added.sku:
                violations.append(FieldViolation(f"{path}.sku", "is required"))
            if added.unit_price_minor < 0:
                violations.append(FieldViolation(f"{path}.unit_price", "must not be negative"))
            violations += limits.line_amount_violations(
                f"{path}.unit_price", added.quantity, added.unit_price_minor
            )
            if added.delivery_group_id not in groups:
                violations.append(
                    FieldViolation(f"{path}.delivery_group_id", "is not a group of this order")
                )
        if violations:
            raise InvalidArgument(violations)
        if added.new_line:
            if added.order_line_id in lines or added.order_line_id in new:
                raise AlreadyExists(
                    f"{path}.order_line_id",
                    f"order line {limits.echo(added.order_line_id)} exists already",
                )
            line_gross = added.unit_price_minor * added.quantity
            new[added.order_line_id] = OrderLine(
                order_line_id=added.order_line_id,
                delivery_group_id=added.delivery_group_id,
                sku=added.sku,
                name=added.name,
                unit_price_minor=added.unit_price_minor,
                discounts=(),
                taxes=(TaxLine("tax", added.tax_minor),) if added.tax_minor else (),
                allocated_order_discount_minor=0,
                total_minor=line_gross + added.tax_minor,
                quantities=Quantities(ordered=added.quantity),
            )
        else:
            line = changed.get(added.order_line_id) or lines.get(added.order_line_id)
            if line is None:
                raise NotFound(
                    f"order line {limits.echo(added.order_line_id)} is not on order "
                    f"{limits.echo(order.order_id)}"
                )
            line_gross = line.unit_price_minor * added.quantity
            taxes = line.taxes
            if added.tax_minor:
                taxes += (TaxLine(f"tax on {added.quantity} added unit(s)", added.tax_minor),)
            changed[added.order_line_id] = replace(
                line,
                taxes=taxes,
                total_minor=line.total_minor + line_gross + added.tax_minor,
                quantities=replace(line.quantities, ordered=line.quantity + added.quantity),
            )
        gross += line_gross
        tax += added.tax_minor
    totals = order.totals
    return AddedItems(
        changed=tuple(changed.values()),
        new=tuple(new.values()),
        totals=replace(
            totals,
            subtotal_minor=totals.subtotal_minor + gross,
            tax_minor=totals.tax_minor + tax,
            grand_total_minor=totals.grand_total_minor + gross + tax,
        ),
    )


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    """The page size to use: the default when unset, at most MAX_PAGE_SIZE."""
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def check_required(values: dict[str, str]) -> None:
    """Raise InvalidArgument naming every empty field of `values` (path -> value)."""
    missing = [FieldViolation(path, "is required") for path, value in values.items() if not value]
    if missing:
        raise InvalidArgument(missing)


# ---- fraud screening ------------------------------------------------------------------------

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


# ---- bulk import ----------------------------------------------------------------------------


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


# ---- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderFilter:
    """ListOrders' filters; empty values match everything. Created range is [from, to)."""

    statuses: tuple[str, ...] = ()
    channel: str = ""
    shopper_id: str = ""
    created_from: datetime | None = None
    created_to: datetime | None = None
    sku: str = ""


def check_filter(f: OrderFilter) -> None:
    """Raise InvalidArgument when the filter cannot match anything sensible."""
    violations: list[FieldViolation] = []
    if f.created_from is not None and f.created_to is not None and f.created_to <= f.created_from:
        violations.append(FieldViolation("created_to", "must be after created_from"))
    if len(f.sku) > MAX_REF_LENGTH:
        violations.append(FieldViolation("sku", f"must be at most {MAX_REF_LENGTH} characters"))
    if violations:
        raise InvalidArgument(violations)


def is_settled(status: str) -> bool:
    """Whether nothing more happens to an order with this status (watchers stop)."""
    return status in SETTLED


# ---- erasure of a shopper's personal data ---------------------------------------------------


@dataclass(frozen=True)
class ErasableOrder:
    """One of the shopper's orders as erasure sees it: its status and units of returns still
    on their way back (initiated, not yet received)."""

    order_id: str
    status: str
    open_return_units: int = 0

    @property
    def in_flight(self) -> bool:
        """Still doing something: not fulfilled or canceled, or a return not yet received
        (money may still move, so its record must stay whole)."""
        return self.status not in SETTLED or self.open_return_units > 0

    @property
    def cancelable(self) -> bool:
        """A forced erasure cancels what has not shipped; open returns cannot be canceled."""
        return self.status not in SETTLED


def check_erase_request(shopper_id: str, email: str) -> None:
    """Raise InvalidArgument unless exactly one of shopper_id and email is given."""
    if bool(shopper_id.strip()) == bool(email.strip()):
        raise InvalidArgument(
            [FieldViolation("shopper_id", "exactly one of shopper_id and email is required")]
        )


def in_flight_refusal(orders: Sequence[ErasableOrder], forced: bool) -> FailedPrecondition | None:
    """The refusal naming every order still in flight, or None when all have settled."""
    busy = [o for o in orders if o.in_flight]
    if not busy:
        return None
    named = ", ".join(
        f"{o.order_id} ({o.status}"
        + (f", {o.open_return_units} returned unit(s) not received" if o.open_return_units else "")
        + ")"
        for o in busy
    )
    if forced:
        return FailedPrecondition(
            f"orders still in flight after canceling what had not shipped: {named}; erase "
            "once they are delivered and their returns received"
        )
    return FailedPrecondition(
        f"orders still in flight: {named}; erase once they are fulfilled or canceled, or "
        "with force to cancel what has not shipped first"
    )
