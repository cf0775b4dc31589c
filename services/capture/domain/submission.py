"""Capture's domain, what a channel submits: the submission, the rules a valid one keeps, and
the order it becomes (ids assigned, money worked out)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from oms_platform import limits, money
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.money import Money
from oms_platform.postal import PostalAddress, address_violations
from services.capture.domain.order import (
    PENDING,
    Adjustment,
    DeliveryGroup,
    Order,
    OrderLine,
    PaymentMethod,
    Quantities,
    Shopper,
    TaxLine,
    TimelineEvent,
    Totals,
    captured_actor,
)

# Channels, payment method types and shopper kinds as stored (lower case); the proto enums
# map onto these.
CHANNELS = ("web", "marketplace", "store", "b2b", "agent")
PAYMENT_METHOD_TYPES = ("card", "gift_card", "invoice_terms")
SHOPPER_KINDS = ("person", "business")
# The delivery method of a group the shopper collects at a store (it names the store).
PICKUP = "pickup"

# How much a submission may hold.
MAX_LINES = limits.MAX_LINES
MAX_KEY_LENGTH = 128
MAX_REF_LENGTH = 128
MAX_NAME_LENGTH = 256
MAX_PHONE_LENGTH = 64
MAX_TEXT_LENGTH = 2048
MAX_ADDITIONAL_PAYMENT_METHODS = 10

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# A subscription id as servicing assigns them (a uuid, or any id of letters, digits, "-" and
# "_"): it goes into workflow ids (`subscription:<id>`) and keys (`<id>:<cycle>`), so no ":".
_SUBSCRIPTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
    # With delivery method "pickup" (required then): the store the shopper collects at.
    pickup_location_id: str = ""


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
    # A subscription's cycle order (the worker alone sets these): the subscription and cycle.
    subscription_id: str = ""
    subscription_cycle: int = 0
    # A checkout reservation holding the order's units (fulfillment's), passed to routing.
    reservation_id: str = ""


# ---- rules ----------------------------------------------------------------------------------


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
    _check_subscription(v, s)

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
    v.items += address_violations(path, address)


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
    v.limit(f"{path}.pickup_location_id", group.pickup_location_id, MAX_REF_LENGTH)
    if group.delivery_method == PICKUP and not group.pickup_location_id:
        v.add(f"{path}.pickup_location_id", "is required for delivery method pickup")
    elif group.pickup_location_id and group.delivery_method != PICKUP:
        v.add(f"{path}.pickup_location_id", "is only for delivery method pickup")
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


def _check_subscription(v: _Violations, s: OrderSubmission) -> None:
    if s.subscription_id and not _SUBSCRIPTION_ID.match(s.subscription_id):
        v.add(
            "subscription_id",
            'must be 1 to 64 letters, digits, "-" or "_" (a subscription id servicing assigned)',
        )
    if s.subscription_id and s.subscription_cycle < 1:
        v.add("subscription_cycle", "must be at least 1 for a subscription's order")
    if not s.subscription_id and s.subscription_cycle:
        v.add("subscription_cycle", "must be 0 unless subscription_id is set")


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
            pickup_location_id=g.pickup_location_id,
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
        subscription_id=s.subscription_id,
        subscription_cycle=s.subscription_cycle,
        reservation_id=s.reservation_id,
    )


def _normalized_address(address: PostalAddress | None) -> PostalAddress:
    assert address is not None
    return replace(address, country_code=address.country_code.upper())


def group_address_changes(
    changes: Sequence[tuple[str, PostalAddress]],
) -> list[tuple[str, PostalAddress]]:
    """A progress report's new delivery addresses (delivery group id, address), checked as
    SubmitOrder checks one and kept as it keeps one; InvalidArgument naming every bad field."""
    violations: list[FieldViolation] = []
    for i, (delivery_group_id, address) in enumerate(changes):
        path = f"delivery_group_addresses[{i}]"
        if not delivery_group_id:
            violations.append(FieldViolation(f"{path}.delivery_group_id", "is required"))
        violations += address_violations(f"{path}.address", address)
    if violations:
        raise InvalidArgument(violations)
    return [(group_id, _normalized_address(address)) for group_id, address in changes]


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
