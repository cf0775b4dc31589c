"""Payments domain: authorizations, invoices, captures, credit memos, refunds and the
payment summary and reconciliation.

Pure: standard library, oms_platform.money and oms_platform.errors only. Money is integer
minor units with its ISO 4217 currency; the clock and ids are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from oms_platform import limits, money
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.money import Money as Money  # re-exported: part of this domain's vocabulary

# Authorization statuses, as stored.
APPROVED = "approved"
DECLINED = "declined"
VOIDED = "voided"
# The hold lapsed and was replaced by a re-authorization.
EXPIRED = "expired"

# Capture statuses, as stored.
SUCCEEDED = "succeeded"
FAILED = "failed"

# Payment method types, as stored (the proto enum maps onto these).
CARD = "card"
GIFT_CARD = "gift_card"
INVOICE_TERMS = "invoice_terms"
UNSPECIFIED = "unspecified"

# Why a capture failed before it reached the gateway.
INSUFFICIENT_AUTHORIZATION = "insufficient_authorization"
# Why a split authorization is declined when no gateway gave a reason.
INSUFFICIENT_FUNDS = "insufficient_funds"

# Credit memo kinds, as stored (the proto enum maps onto these; UNSPECIFIED is shared).
CANCEL = "cancel"
RETURN = "return"
APPEASEMENT = "appeasement"

# How far giving a credit memo's money back got.
SETTLED = "settled"
LIMITED = "limited"

# Basis points in 100%.
FULL_PERCENT_BASIS_POINTS = 10_000


def gateway_key(order_id: str, request_key: str, step: str, amount_minor: int) -> str:
    """The idempotency key of one gateway call: the order, the RPC's key, the step, the amount.

    Deterministic, so an RPC retried with its key asks the gateway with the same keys and the
    gateway's own dedupe keeps every effect single.
    """
    return f"{order_id}:{request_key}:{step}:{amount_minor}"


def require(**fields: str) -> None:
    """Raise InvalidArgument naming every one of `fields` (name=value) that is empty."""
    violations = [
        FieldViolation(name, f"{name} is required") for name, value in fields.items() if not value
    ]
    if violations:
        raise InvalidArgument(violations)


# ---- authorizations ------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentMethod:
    """An instrument as the storefront tokenized it."""

    type: str
    token: str


@dataclass(frozen=True)
class AuthorizationRequest:
    """A request to hold an amount on the order's payment methods, applied in sequence."""

    order_id: str
    idempotency_key: str
    payment_method_type: str
    token: str
    amount: Money
    additional_payment_methods: tuple[PaymentMethod, ...] = ()

    @property
    def payment_methods(self) -> list[PaymentMethod]:
        """Every method, in the order they are asked."""
        return [
            PaymentMethod(self.payment_method_type, self.token),
            *self.additional_payment_methods,
        ]


@dataclass(frozen=True)
class Authorization:
    """Funds held (or refused) on a payment method for an order."""

    authorization_id: str
    order_id: str
    payment_method_type: str
    token: str
    amount_minor: int
    currency: str
    captured_minor: int
    status: str
    gateway_reference: str
    decline_reason: str
    expires_at: datetime
    created_at: datetime
    # Released from the hold before capture (partial reversals for credit memos).
    reversed_minor: int = 0
    # The expired authorization this one holds anew, if it is a re-authorization.
    replaces_authorization_id: str = ""

    @property
    def remaining_minor(self) -> int:
        """What can still be captured: nothing unless approved."""
        if self.status != APPROVED:
            return 0
        return self.amount_minor - self.captured_minor - self.reversed_minor

    @property
    def held_minor(self) -> int:
        """What this authorization holds or took: its amount less reversals, if approved."""
        return self.amount_minor - self.reversed_minor if self.status == APPROVED else 0

    def is_expired(self, now: datetime) -> bool:
        """True once the hold has lapsed."""
        return self.expires_at <= now


def validate_authorization(request: AuthorizationRequest) -> None:
    """Raise InvalidArgument listing every bad field of an authorization request."""
    violations: list[FieldViolation] = []
    if not request.order_id:
        violations.append(FieldViolation("order_id", "order_id is required"))
    if not request.idempotency_key:
        violations.append(FieldViolation("idempotency_key", "idempotency_key is required"))
    if not request.token:
        violations.append(
            FieldViolation("payment_method.token", "payment_method.token is required")
        )
    for i, method in enumerate(request.additional_payment_methods):
        if not method.token:
            path = f"additional_payment_methods[{i}].token"
            violations.append(FieldViolation(path, f"{path} is required"))
    if request.amount.amount_minor <= 0:
        violations.append(FieldViolation("amount.amount_minor", "amount.amount_minor must be > 0"))
    if not money.is_known_currency(request.amount.currency):
        violations.append(
            FieldViolation(
                "amount.currency",
                f"amount.currency must be a known ISO 4217 code, got "
                f"{limits.echo(request.amount.currency)}",
            )
        )
    if violations:
        raise InvalidArgument(violations)


def record_authorization(
    request: AuthorizationRequest,
    *,
    authorization_id: str,
    approved: bool,
    gateway_reference: str,
    decline_reason: str,
    now: datetime,
    hold_hours: int,
) -> Authorization:
    """The authorization to store for the gateway's answer; a decline is a record too."""
    return new_authorization(
        request.order_id,
        PaymentMethod(request.payment_method_type, request.token),
        Money(request.amount.amount_minor, request.amount.currency),
        authorization_id=authorization_id,
        approved=approved,
        gateway_reference=gateway_reference,
        decline_reason=decline_reason,
        now=now,
        hold_hours=hold_hours,
    )


def new_authorization(
    order_id: str,
    method: PaymentMethod,
    amount: Money,
    *,
    authorization_id: str,
    approved: bool,
    gateway_reference: str,
    decline_reason: str,
    now: datetime,
    hold_hours: int,
    replaces_authorization_id: str = "",
) -> Authorization:
    """An authorization of `amount` (held if approved, asked if declined) on one method."""
    return Authorization(
        authorization_id=authorization_id,
        order_id=order_id,
        payment_method_type=method.type,
        token=method.token,
        amount_minor=amount.amount_minor,
        currency=amount.currency,
        captured_minor=0,
        status=APPROVED if approved else DECLINED,
        gateway_reference=gateway_reference,
        decline_reason="" if approved else (decline_reason or "declined"),
        expires_at=now + timedelta(hours=hold_hours),
        created_at=now,
        replaces_authorization_id=replaces_authorization_id,
    )


def left_to_hold(amount_minor: int, authorizations: Sequence[Authorization]) -> int:
    """What the next payment method is asked for: the amount less what is approved so far."""
    return amount_minor - sum(a.amount_minor for a in authorizations if a.status == APPROVED)


def held_amount(asked_minor: int, approved_minor: int) -> int:
    """What an approval holds: what the gateway says it held (never more than asked); a
    gateway that says nothing held all of it."""
    return asked_minor if approved_minor <= 0 else min(asked_minor, approved_minor)


@dataclass(frozen=True)
class AuthorizationOutcome:
    """The overall answer to a split authorization."""

    status: str  # APPROVED or DECLINED
    # The first approval when approved; else the decline that decided it.
    primary: Authorization
    decline_reason: str
    held_minor: int
    # Approved holds to release because the whole amount could not be held.
    to_void: tuple[Authorization, ...] = ()


def authorization_outcome(
    amount_minor: int, authorizations: Sequence[Authorization]
) -> AuthorizationOutcome:
    """Approved when the authorizations made for one request hold the whole amount."""
    if not authorizations:
        raise ValueError("an outcome needs at least one authorization")
    approved = [a for a in authorizations if a.status == APPROVED]
    held = sum(a.amount_minor for a in approved)
    if approved and held == amount_minor:
        return AuthorizationOutcome(APPROVED, approved[0], "", held)
    declined = [a for a in authorizations if a.status == DECLINED]
    primary = declined[-1] if declined else authorizations[-1]
    reason = primary.decline_reason if declined else INSUFFICIENT_FUNDS
    return AuthorizationOutcome(DECLINED, primary, reason or INSUFFICIENT_FUNDS, 0, tuple(approved))


def authorizations_to_void(authorizations: Sequence[Authorization]) -> list[Authorization]:
    """The authorizations a void releases: every approved one, oldest first (ties keep the
    given order, which is the order they were made)."""
    return sorted((a for a in authorizations if a.status == APPROVED), key=lambda a: a.created_at)


def voided(authorization: Authorization) -> Authorization:
    """The authorization after its remaining hold is released."""
    if authorization.status != APPROVED:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} is {authorization.status}, "
            "only an approved authorization can be voided"
        )
    return replace(authorization, status=VOIDED)


# ---- invoices ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChargeableLine:
    """Units of an order line with the line's full money; an invoice takes its share."""

    order_line_id: str
    sku: str
    quantity_ordered: int
    gross: Money
    discount: Money
    tax: Money
    quantity_to_invoice: int
    quantity_invoiced_before: int


@dataclass(frozen=True)
class InvoiceRequest:
    """A request to invoice one shipment."""

    order_id: str
    fulfillment_order_id: str
    idempotency_key: str
    lines: list[ChargeableLine]
    shipping: Money
    # Goodwill given before anything was charged, taken off this invoice.
    goodwill: Money = Money(0, "")


@dataclass(frozen=True)
class InvoiceLine:
    """What the shopper owes for some units of one order line."""

    order_line_id: str
    sku: str
    quantity: int
    gross_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int


@dataclass(frozen=True)
class Invoice:
    """What the shopper owes for one shipment, and what has been captured against it."""

    invoice_id: str
    order_id: str
    fulfillment_order_id: str
    currency: str
    lines: list[InvoiceLine]
    shipping_minor: int
    total_minor: int
    captured_minor: int
    created_at: datetime
    # Taken off the lines plus shipping (goodwill given before anything was charged).
    goodwill_minor: int = 0

    @property
    def outstanding_minor(self) -> int:
        """What is still to be captured."""
        return self.total_minor - self.captured_minor


def invoice_line(line: ChargeableLine) -> InvoiceLine:
    """The exact share of a line's money for the units this invoice charges.

    Each component is split evenly over the units ordered (largest remainder), so invoicing a
    line over several shipments adds up to the line's money to the minor unit.
    """

    def part(component: Money) -> int:
        return money.share(
            component.amount_minor,
            line.quantity_ordered,
            line.quantity_invoiced_before,
            line.quantity_to_invoice,
        )

    gross, discount, tax = part(line.gross), part(line.discount), part(line.tax)
    return InvoiceLine(
        order_line_id=line.order_line_id,
        sku=line.sku,
        quantity=line.quantity_to_invoice,
        gross_minor=gross,
        discount_minor=discount,
        tax_minor=tax,
        total_minor=gross - discount + tax,
    )


def _invoice_currency(request: InvoiceRequest) -> str:
    """The first currency any amount of the request names ("" when none does)."""
    for line in request.lines:
        for component in (line.gross, line.discount, line.tax):
            if component.currency:
                return component.currency
    return request.shipping.currency


def _check_amount(
    violations: list[FieldViolation], path: str, amount: Money, currency: str
) -> None:
    if amount.amount_minor < 0:
        violations.append(FieldViolation(f"{path}.amount_minor", "must be >= 0"))
    # An unset zero amount (no currency) is fine; any other must be in the invoice's currency.
    if (amount.currency or amount.amount_minor) and amount.currency != currency:
        violations.append(
            FieldViolation(
                f"{path}.currency",
                f"must be the invoice currency {limits.echo(currency)}, got "
                f"{limits.echo(amount.currency)}",
            )
        )


def validate_invoice(request: InvoiceRequest) -> str:
    """Raise InvalidArgument listing every bad field; returns the invoice's currency."""
    violations: list[FieldViolation] = []
    if not request.order_id:
        violations.append(FieldViolation("order_id", "order_id is required"))
    if not request.fulfillment_order_id:
        violations.append(
            FieldViolation("fulfillment_order_id", "fulfillment_order_id is required")
        )
    if not request.idempotency_key:
        violations.append(FieldViolation("idempotency_key", "idempotency_key is required"))
    if not request.lines:
        violations.append(FieldViolation("lines", "an invoice needs at least one line"))
    currency = _invoice_currency(request)
    if not money.is_known_currency(currency):
        field = "lines[0].gross.currency" if request.lines else "shipping.currency"
        violations.append(
            FieldViolation(field, f"must be a known ISO 4217 code, got {limits.echo(currency)}")
        )
    for i, line in enumerate(request.lines):
        path = f"lines[{i}]"
        if not line.order_line_id:
            violations.append(FieldViolation(f"{path}.order_line_id", "is required"))
        if line.quantity_ordered <= 0:
            violations.append(FieldViolation(f"{path}.quantity_ordered", "must be > 0"))
        if line.quantity_to_invoice <= 0:
            violations.append(FieldViolation(f"{path}.quantity_to_invoice", "must be > 0"))
        if line.quantity_invoiced_before < 0:
            violations.append(FieldViolation(f"{path}.quantity_invoiced_before", "must be >= 0"))
        if (
            line.quantity_ordered > 0
            and line.quantity_invoiced_before + line.quantity_to_invoice > line.quantity_ordered
        ):
            violations.append(
                FieldViolation(
                    f"{path}.quantity_to_invoice",
                    f"quantity_invoiced_before ({line.quantity_invoiced_before}) + "
                    f"quantity_to_invoice ({line.quantity_to_invoice}) exceeds "
                    f"quantity_ordered ({line.quantity_ordered})",
                )
            )
        for name, component in (
            ("gross", line.gross),
            ("discount", line.discount),
            ("tax", line.tax),
        ):
            _check_amount(violations, f"{path}.{name}", component, currency)
    _check_amount(violations, "shipping", request.shipping, currency)
    _check_amount(violations, "goodwill", request.goodwill, currency)
    if not violations:
        charged = sum(invoice_line(line).total_minor for line in request.lines)
        charged += request.shipping.amount_minor
        if request.goodwill.amount_minor > charged:
            violations.append(
                FieldViolation(
                    "goodwill.amount_minor",
                    f"goodwill {request.goodwill.amount_minor} exceeds the lines plus shipping "
                    f"({charged})",
                )
            )
    if violations:
        raise InvalidArgument(violations)
    return currency


def build_invoice(request: InvoiceRequest, *, invoice_id: str, now: datetime) -> Invoice:
    """Validate the request and compute the invoice: exact line shares plus shipping, less
    goodwill."""
    currency = validate_invoice(request)
    lines = [invoice_line(line) for line in request.lines]
    shipping = request.shipping.amount_minor
    goodwill = request.goodwill.amount_minor
    return Invoice(
        invoice_id=invoice_id,
        order_id=request.order_id,
        fulfillment_order_id=request.fulfillment_order_id,
        currency=currency,
        lines=lines,
        shipping_minor=shipping,
        total_minor=sum(line.total_minor for line in lines) + shipping - goodwill,
        captured_minor=0,
        created_at=now,
        goodwill_minor=goodwill,
    )


# ---- captures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    """Money taken (or refused) from an authorization for an invoice."""

    capture_id: str
    invoice_id: str
    authorization_id: str
    status: str
    amount_minor: int
    currency: str
    gateway_reference: str
    failure_reason: str
    created_at: datetime


@dataclass(frozen=True)
class CaptureDraw:
    """Part of a capture: an amount taken from one authorization, held anew first when the
    authorization has expired."""

    authorization: Authorization
    amount_minor: int
    reauthorize: bool = False


@dataclass(frozen=True)
class CapturePlan:
    """What a capture will do: the amount and the authorizations it draws on, in order.

    No draws when there is nothing to ask the gateway: either the capture fails at once
    (`failure_reason` set) or the invoice owes nothing (amount 0, succeeds at once).
    """

    amount_minor: int
    draws: tuple[CaptureDraw, ...] = ()
    failure_reason: str = ""

    @property
    def authorization(self) -> Authorization | None:
        """The first authorization drawn on, if any."""
        return self.draws[0].authorization if self.draws else None


def _made_order(authorizations: Sequence[Authorization]) -> list[Authorization]:
    """Oldest first; authorizations made at the same instant keep the given (made) order."""
    return sorted(authorizations, key=lambda a: a.created_at)


def plan_capture(
    invoice: Invoice,
    captures: Sequence[Capture],
    authorizations: Sequence[Authorization],
    now: datetime,
) -> CapturePlan:
    """Choose how to capture an invoice's outstanding amount.

    Draws on the approved authorizations in the invoice's currency oldest first (so a gift card
    authorized before a card is used first), each for what it still holds, until the
    outstanding amount is covered; an expired one is held anew before it is drawn on. Fails
    at once, asking no gateway, when together they do not hold enough.
    """
    outstanding = invoice.outstanding_minor
    succeeded = [c for c in captures if c.status == SUCCEEDED]
    if outstanding <= 0 and (invoice.total_minor > 0 or succeeded):
        raise FailedPrecondition(f"invoice {invoice.invoice_id} is already captured")
    if outstanding == 0:
        return CapturePlan(amount_minor=0)
    draws: list[CaptureDraw] = []
    left = outstanding
    for authorization in _made_order(authorizations):
        if left == 0:
            break
        if authorization.currency != invoice.currency or authorization.remaining_minor <= 0:
            continue
        take = min(left, authorization.remaining_minor)
        draws.append(CaptureDraw(authorization, take, authorization.is_expired(now)))
        left -= take
    if left > 0:
        return CapturePlan(amount_minor=outstanding, failure_reason=INSUFFICIENT_AUTHORIZATION)
    return CapturePlan(amount_minor=outstanding, draws=tuple(draws))


def reauthorization(
    expired_authorization: Authorization,
    *,
    authorization_id: str,
    approved: bool,
    held_minor: int,
    gateway_reference: str,
    decline_reason: str,
    now: datetime,
    hold_hours: int,
) -> Authorization:
    """The new authorization holding anew what an expired one still held."""
    return new_authorization(
        expired_authorization.order_id,
        PaymentMethod(expired_authorization.payment_method_type, expired_authorization.token),
        Money(held_minor, expired_authorization.currency),
        authorization_id=authorization_id,
        approved=approved,
        gateway_reference=gateway_reference,
        decline_reason=decline_reason,
        now=now,
        hold_hours=hold_hours,
        replaces_authorization_id=expired_authorization.authorization_id,
    )


def expired(authorization: Authorization) -> Authorization:
    """The authorization once a re-authorization replaced its lapsed hold."""
    if authorization.status != APPROVED:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} is {authorization.status}, "
            "only an approved authorization can expire"
        )
    return replace(authorization, status=EXPIRED)


def record_capture(
    invoice: Invoice,
    *,
    capture_id: str,
    authorization_id: str,
    amount_minor: int,
    succeeded: bool,
    gateway_reference: str,
    failure_reason: str,
    now: datetime,
) -> Capture:
    """The capture to store for one draw (or a failure before any) and the gateway's answer."""
    return Capture(
        capture_id=capture_id,
        invoice_id=invoice.invoice_id,
        authorization_id=authorization_id,
        status=SUCCEEDED if succeeded else FAILED,
        amount_minor=amount_minor,
        currency=invoice.currency,
        gateway_reference=gateway_reference,
        failure_reason="" if succeeded else (failure_reason or "capture_failed"),
        created_at=now,
    )


def captured_from(authorization: Authorization, amount_minor: int) -> Authorization:
    """The authorization after `amount_minor` is captured from it; never beyond its hold."""
    if amount_minor > authorization.remaining_minor:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} has "
            f"{authorization.remaining_minor} left, cannot capture {amount_minor}"
        )
    return replace(authorization, captured_minor=authorization.captured_minor + amount_minor)


@dataclass(frozen=True)
class CaptureOutcome:
    """The overall answer to a capture of several draws."""

    status: str  # SUCCEEDED or FAILED
    # The capture that decides the outcome: the one that failed, else the first.
    deciding: Capture
    failure_reason: str
    captured_minor: int


def capture_outcome(captures: Sequence[Capture]) -> CaptureOutcome:
    """Succeeded when every capture made for one request succeeded."""
    if not captures:
        raise ValueError("an outcome needs at least one capture")
    failed = [c for c in captures if c.status != SUCCEEDED]
    captured = sum(c.amount_minor for c in captures if c.status == SUCCEEDED)
    if failed:
        return CaptureOutcome(FAILED, failed[0], failed[0].failure_reason, captured)
    return CaptureOutcome(SUCCEEDED, captures[0], "", captured)


# ---- credit memos --------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditableLine:
    """Units of an order line to credit, with the line's full money (exact unit shares)."""

    order_line_id: str
    sku: str
    quantity_ordered: int
    gross: Money
    discount: Money
    tax: Money
    quantity_to_credit: int
    first_unit: int


@dataclass(frozen=True)
class AppeasementRequest:
    """Goodwill on one line ("" = the order): an absolute amount or basis points of what was
    captured for it."""

    order_line_id: str
    amount: Money
    percent_basis_points: int = 0


@dataclass(frozen=True)
class CreditMemoRequest:
    """A request for a credit memo."""

    order_id: str
    idempotency_key: str
    kind: str
    reason: str
    currency: str
    lines: list[CreditableLine]
    shipping: Money
    fee: Money
    appeasements: list[AppeasementRequest]


@dataclass(frozen=True)
class CreditMemoLine:
    """The money credited for some units of one order line."""

    order_line_id: str
    sku: str
    quantity: int
    gross_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int


@dataclass(frozen=True)
class AppeasementCredit:
    """Goodwill credited, with its amount computed."""

    order_line_id: str
    percent_basis_points: int
    amount_minor: int


@dataclass(frozen=True)
class CreditMemo:
    """Exactly the money to give back: lines + shipping + appeasements - fee."""

    credit_memo_id: str
    order_id: str
    kind: str
    reason: str
    currency: str
    lines: list[CreditMemoLine]
    shipping_minor: int
    fee_minor: int
    appeasements: list[AppeasementCredit]
    total_minor: int
    created_at: datetime
    # A cancel's release is done (money never taken needs nothing more, however much the
    # open authorizations still held).
    settled: bool = False


def credit_memo_line(line: CreditableLine) -> CreditMemoLine:
    """The exact share of a line's money for units first_unit .. first_unit+quantity-1."""

    def part(component: Money) -> int:
        return money.share(
            component.amount_minor, line.quantity_ordered, line.first_unit, line.quantity_to_credit
        )

    gross, discount, tax = part(line.gross), part(line.discount), part(line.tax)
    return CreditMemoLine(
        order_line_id=line.order_line_id,
        sku=line.sku,
        quantity=line.quantity_to_credit,
        gross_minor=gross,
        discount_minor=discount,
        tax_minor=tax,
        total_minor=gross - discount + tax,
    )


def captured_for_line(order_line_id: str, invoices: Sequence[Invoice]) -> int:
    """What was captured for one order line: each invoice's captured amount allocated over its
    lines and shipping in proportion to their totals (exact; parts sum to what was captured)."""
    total = 0
    for invoice in invoices:
        if invoice.captured_minor <= 0:
            continue
        weights = [max(0, line.total_minor) for line in invoice.lines]
        parts = money.allocate(invoice.captured_minor, [*weights, max(0, invoice.shipping_minor)])
        total += sum(
            part
            for line, part in zip(invoice.lines, parts, strict=False)
            if line.order_line_id == order_line_id
        )
    return total


def percent_of(amount_minor: int, basis_points: int) -> int:
    """`basis_points` of `amount_minor`, rounded half up to the minor unit."""
    return money.percent_of(amount_minor, basis_points)


def _memo_currency(request: CreditMemoRequest) -> str:
    """The currency the request names: its own, else the first amount's ("" when none)."""
    if request.currency:
        return request.currency
    amounts = [c for line in request.lines for c in (line.gross, line.discount, line.tax)]
    amounts += [request.shipping, request.fee] + [a.amount for a in request.appeasements]
    return next((a.currency for a in amounts if a.currency), "")


def validate_credit_memo(request: CreditMemoRequest, order_currency: str) -> str:
    """Raise InvalidArgument listing every bad field; returns the memo's currency.

    `order_currency` (from the order's records, "" when it has none) is the currency when the
    request names none.
    """
    violations: list[FieldViolation] = []
    if not request.order_id:
        violations.append(FieldViolation("order_id", "order_id is required"))
    if not request.idempotency_key:
        violations.append(FieldViolation("idempotency_key", "idempotency_key is required"))
    if not (request.lines or request.shipping.amount_minor or request.appeasements):
        violations.append(
            FieldViolation("lines", "a credit memo needs lines, shipping or an appeasement")
        )
    currency = _memo_currency(request) or order_currency
    if not money.is_known_currency(currency):
        violations.append(
            FieldViolation(
                "currency", f"must be a known ISO 4217 code, got {limits.echo(currency)}"
            )
        )
    for i, line in enumerate(request.lines):
        path = f"lines[{i}]"
        if not line.order_line_id:
            violations.append(FieldViolation(f"{path}.order_line_id", "is required"))
        if line.quantity_ordered <= 0:
            violations.append(FieldViolation(f"{path}.quantity_ordered", "must be > 0"))
        if line.quantity_to_credit <= 0:
            violations.append(FieldViolation(f"{path}.quantity_to_credit", "must be > 0"))
        if line.first_unit < 0:
            violations.append(FieldViolation(f"{path}.first_unit", "must be >= 0"))
        if (
            line.quantity_ordered > 0
            and line.first_unit >= 0
            and line.first_unit + line.quantity_to_credit > line.quantity_ordered
        ):
            violations.append(
                FieldViolation(
                    f"{path}.quantity_to_credit",
                    f"first_unit ({line.first_unit}) + quantity_to_credit "
                    f"({line.quantity_to_credit}) exceeds quantity_ordered "
                    f"({line.quantity_ordered})",
                )
            )
        for name, component in (
            ("gross", line.gross),
            ("discount", line.discount),
            ("tax", line.tax),
        ):
            _check_amount(violations, f"{path}.{name}", component, currency)
    _check_amount(violations, "shipping", request.shipping, currency)
    _check_amount(violations, "fee", request.fee, currency)
    for i, appeasement in enumerate(request.appeasements):
        path = f"appeasements[{i}]"
        _check_amount(violations, f"{path}.amount", appeasement.amount, currency)
        has_amount = appeasement.amount.amount_minor > 0
        bp = appeasement.percent_basis_points
        if has_amount == (bp != 0):
            violations.append(
                FieldViolation(path, "set exactly one of amount and percent_basis_points")
            )
        if bp < 0 or bp > FULL_PERCENT_BASIS_POINTS:
            violations.append(
                FieldViolation(
                    f"{path}.percent_basis_points",
                    f"must be between 1 and {FULL_PERCENT_BASIS_POINTS}",
                )
            )
    if violations:
        raise InvalidArgument(violations)
    return currency


def build_credit_memo(
    request: CreditMemoRequest,
    *,
    invoices: Sequence[Invoice],
    credit_memo_id: str,
    now: datetime,
) -> CreditMemo:
    """Validate the request and compute the memo: exact line shares, shipping, appeasements
    (percentages of what was captured for the line or the order, per `invoices`), less the fee.
    """
    order_currency = invoices[0].currency if invoices else ""
    currency = validate_credit_memo(request, order_currency)
    lines = [credit_memo_line(line) for line in request.lines]
    appeasements: list[AppeasementCredit] = []
    for i, appeasement in enumerate(request.appeasements):
        amount = appeasement.amount.amount_minor
        bp = appeasement.percent_basis_points
        if bp:
            if appeasement.order_line_id:
                base = captured_for_line(appeasement.order_line_id, invoices)
                what = f"line {appeasement.order_line_id}"
            else:
                base = sum(invoice.captured_minor for invoice in invoices)
                what = f"order {request.order_id}"
            if base <= 0:
                raise FailedPrecondition(
                    f"appeasements[{i}]: nothing was captured for {what}, "
                    "so there is nothing to take a percentage of"
                )
            amount = percent_of(base, bp)
        appeasements.append(AppeasementCredit(appeasement.order_line_id, bp, amount))
    shipping, fee = request.shipping.amount_minor, request.fee.amount_minor
    credited = sum(line.total_minor for line in lines) + shipping
    credited += sum(a.amount_minor for a in appeasements)
    if fee > credited:
        raise InvalidArgument(
            [FieldViolation("fee.amount_minor", f"fee {fee} exceeds the credit {credited}")]
        )
    return CreditMemo(
        credit_memo_id=credit_memo_id,
        order_id=request.order_id,
        kind=request.kind,
        reason=request.reason,
        currency=currency,
        lines=lines,
        shipping_minor=shipping,
        fee_minor=fee,
        appeasements=appeasements,
        total_minor=credited - fee,
        created_at=now,
    )


# ---- refunds and releases ------------------------------------------------------------------


@dataclass(frozen=True)
class Refund:
    """Money given back (or refused) from one capture for a credit memo."""

    refund_id: str
    order_id: str
    credit_memo_id: str
    capture_id: str
    status: str
    amount_minor: int
    currency: str
    gateway_reference: str
    failure_reason: str
    created_at: datetime


@dataclass(frozen=True)
class Reversal:
    """Money released (or refused) from an authorization's hold for a credit memo."""

    reversal_id: str
    order_id: str
    credit_memo_id: str
    authorization_id: str
    status: str
    amount_minor: int
    currency: str
    voided: bool
    gateway_reference: str
    failure_reason: str
    created_at: datetime


@dataclass(frozen=True)
class CreditMemoBalance:
    """What of a credit memo was given back, and what is still to be."""

    refunded_minor: int
    released_minor: int
    not_refunded_minor: int


def memo_balance(
    memo: CreditMemo, refunds: Sequence[Refund], reversals: Sequence[Reversal]
) -> CreditMemoBalance:
    """Sum the memo's succeeded refunds and releases; the rest is not refunded (nothing, once
    a cancel is settled: its money was never taken)."""
    refunded = sum(
        r.amount_minor
        for r in refunds
        if r.credit_memo_id == memo.credit_memo_id and r.status == SUCCEEDED
    )
    released = sum(
        r.amount_minor
        for r in reversals
        if r.credit_memo_id == memo.credit_memo_id and r.status == SUCCEEDED
    )
    left = 0 if memo.settled else max(0, memo.total_minor - refunded - released)
    return CreditMemoBalance(refunded, released, left)


def refundable_minor(capture: Capture, refunds: Sequence[Refund]) -> int:
    """What can still be refunded from a capture: its amount less succeeded refunds of it."""
    if capture.status != SUCCEEDED:
        return 0
    given = sum(
        r.amount_minor
        for r in refunds
        if r.capture_id == capture.capture_id and r.status == SUCCEEDED
    )
    return capture.amount_minor - given


@dataclass(frozen=True)
class RefundDraw:
    """Part of giving a memo back: an amount refunded from one capture."""

    capture: Capture
    amount_minor: int


@dataclass(frozen=True)
class ReleaseDraw:
    """Part of giving a memo back: an amount released from one authorization's hold; `void`
    when it is all that remains."""

    authorization: Authorization
    amount_minor: int
    void: bool


@dataclass(frozen=True)
class RefundPlan:
    """How a credit memo's money goes back, and what cannot."""

    refunds: tuple[RefundDraw, ...]
    releases: tuple[ReleaseDraw, ...]
    # Beyond what was captured net of refunds (and beyond the open holds when nothing was).
    not_refundable_minor: int
    # True for a cancel: done once the releases are, whatever they came to.
    settles: bool = False


def _newest_first(items: Sequence[Capture]) -> list[Capture]:
    indexed = list(enumerate(items))
    indexed.sort(key=lambda pair: (pair[1].created_at, pair[0]), reverse=True)
    return [item for _, item in indexed]


def _releases(
    amount_minor: int, memo: CreditMemo, authorizations: Sequence[Authorization], now: datetime
) -> tuple[list[ReleaseDraw], int]:
    """Release up to `amount_minor` from open, unexpired holds, newest first; returns the
    draws and what could not be released."""
    draws: list[ReleaseDraw] = []
    left = amount_minor
    for authorization in reversed(_made_order(authorizations)):
        if left == 0:
            break
        open_hold = authorization.remaining_minor
        if authorization.currency != memo.currency or open_hold <= 0:
            continue
        if authorization.is_expired(now):
            continue
        take = min(left, open_hold)
        draws.append(ReleaseDraw(authorization, take, take == open_hold))
        left -= take
    return draws, left


def plan_refund(
    memo: CreditMemo,
    balance: CreditMemoBalance,
    *,
    captures: Sequence[Capture],
    refunds: Sequence[Refund],
    authorizations: Sequence[Authorization],
    now: datetime,
) -> RefundPlan:
    """Choose how to give back what a credit memo still owes ("ensure refunds").

    A cancel gives back money never taken: it is released from the open authorizations,
    newest first, and never refunded from captures. Any other memo is refunded from the
    order's captures, newest first, never more than each captured net of earlier refunds;
    only when nothing was captured yet is it released from the open authorizations instead.
    What neither covers is not refundable.
    """
    owed = balance.not_refunded_minor
    if memo.kind == CANCEL:
        if memo.settled:
            return RefundPlan((), (), 0, settles=True)
        releases, _ = _releases(owed, memo, authorizations, now)
        return RefundPlan((), tuple(releases), 0, settles=True)
    if owed == 0:
        return RefundPlan((), (), 0)
    taken = [c for c in captures if c.status == SUCCEEDED and c.currency == memo.currency]
    if not any(c.amount_minor > 0 for c in taken):
        releases, left = _releases(owed, memo, authorizations, now)
        return RefundPlan((), tuple(releases), left)
    draws: list[RefundDraw] = []
    left = owed
    for capture in _newest_first(taken):
        if left == 0:
            break
        can = refundable_minor(capture, refunds)
        if can <= 0:
            continue
        take = min(left, can)
        draws.append(RefundDraw(capture, take))
        left -= take
    return RefundPlan(tuple(draws), (), left)


def record_refund(
    memo: CreditMemo,
    draw: RefundDraw,
    *,
    refund_id: str,
    succeeded: bool,
    gateway_reference: str,
    failure_reason: str,
    now: datetime,
) -> Refund:
    """The refund to store for one draw and the gateway's answer."""
    return Refund(
        refund_id=refund_id,
        order_id=memo.order_id,
        credit_memo_id=memo.credit_memo_id,
        capture_id=draw.capture.capture_id,
        status=SUCCEEDED if succeeded else FAILED,
        amount_minor=draw.amount_minor,
        currency=memo.currency,
        gateway_reference=gateway_reference,
        failure_reason="" if succeeded else (failure_reason or "refund_failed"),
        created_at=now,
    )


def record_reversal(
    memo: CreditMemo,
    draw: ReleaseDraw,
    *,
    reversal_id: str,
    succeeded: bool,
    gateway_reference: str,
    failure_reason: str,
    now: datetime,
) -> Reversal:
    """The release to store for one draw and the gateway's answer."""
    return Reversal(
        reversal_id=reversal_id,
        order_id=memo.order_id,
        credit_memo_id=memo.credit_memo_id,
        authorization_id=draw.authorization.authorization_id,
        status=SUCCEEDED if succeeded else FAILED,
        amount_minor=draw.amount_minor,
        currency=memo.currency,
        voided=draw.void,
        gateway_reference=gateway_reference,
        failure_reason="" if succeeded else (failure_reason or "reversal_failed"),
        created_at=now,
    )


def released_from(authorization: Authorization, amount_minor: int, *, void: bool) -> Authorization:
    """The authorization after `amount_minor` of its hold is released (VOIDED when `void`)."""
    if amount_minor > authorization.remaining_minor:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} has "
            f"{authorization.remaining_minor} left, cannot release {amount_minor}"
        )
    return replace(
        authorization,
        reversed_minor=authorization.reversed_minor + amount_minor,
        status=VOIDED if void else authorization.status,
    )


@dataclass(frozen=True)
class RefundOutcome:
    """The answer to one RefundCreditMemo call."""

    outcome: str  # SETTLED, LIMITED or FAILED
    failure_reason: str
    refunded_minor: int
    released_minor: int


def refund_outcome(
    plan: RefundPlan, refunds: Sequence[Refund], reversals: Sequence[Reversal]
) -> RefundOutcome:
    """Failed when a gateway refused; else limited when part was not refundable; else settled."""
    failed = [r.failure_reason for r in refunds if r.status != SUCCEEDED]
    failed += [r.failure_reason for r in reversals if r.status != SUCCEEDED]
    refunded = sum(r.amount_minor for r in refunds if r.status == SUCCEEDED)
    released = sum(r.amount_minor for r in reversals if r.status == SUCCEEDED)
    if failed:
        return RefundOutcome(FAILED, failed[0], refunded, released)
    if plan.not_refundable_minor > 0:
        return RefundOutcome(LIMITED, "", refunded, released)
    return RefundOutcome(SETTLED, "", refunded, released)


# ---- summary and reconciliation ------------------------------------------------------------


@dataclass(frozen=True)
class PaymentSummary:
    """An order's money at a glance, in its currency ("" when nothing is known)."""

    order_id: str
    currency: str
    authorized_minor: int
    captured_minor: int
    refunded_minor: int
    invoiced_minor: int
    credited_minor: int = 0
    released_minor: int = 0

    @property
    def balance_due_minor(self) -> int:
        """What is still owed on invoices."""
        return self.invoiced_minor - self.captured_minor


def credited_minor(credit_memos: Sequence[CreditMemo], reversals: Sequence[Reversal]) -> int:
    """Credit memo money given against invoices: every memo but cancels (whose units were
    never invoiced), less what memos released from authorizations (money never taken)."""
    total = 0
    for memo in credit_memos:
        if memo.kind == CANCEL:
            continue
        total += memo.total_minor - memo_balance(memo, (), reversals).released_minor
    return total


def summarize(
    order_id: str,
    authorizations: Sequence[Authorization],
    captures: Sequence[Capture],
    invoices: Sequence[Invoice],
    *,
    credit_memos: Sequence[CreditMemo] = (),
    refunds: Sequence[Refund] = (),
    reversals: Sequence[Reversal] = (),
) -> PaymentSummary:
    """Totals of an order's records: held, captured, refunded, invoiced, credited, released."""
    currencies = [a.currency for a in authorizations] + [i.currency for i in invoices]
    currencies += [m.currency for m in credit_memos]
    return PaymentSummary(
        order_id=order_id,
        currency=currencies[0] if currencies else "",
        authorized_minor=sum(a.held_minor for a in authorizations),
        captured_minor=sum(c.amount_minor for c in captures if c.status == SUCCEEDED),
        refunded_minor=sum(r.amount_minor for r in refunds if r.status == SUCCEEDED),
        invoiced_minor=sum(i.total_minor for i in invoices),
        credited_minor=credited_minor(credit_memos, reversals),
        released_minor=sum(r.amount_minor for r in reversals if r.status == SUCCEEDED),
    )


@dataclass(frozen=True)
class Reconciliation:
    """Money taken net of refunds against money owed net of credits."""

    summary: PaymentSummary
    not_refunded_minor: int

    @property
    def difference_minor(self) -> int:
        """(captured - refunded) - (invoiced - credited): positive when more was taken."""
        s = self.summary
        return (s.captured_minor - s.refunded_minor) - (s.invoiced_minor - s.credited_minor)

    @property
    def agrees(self) -> bool:
        """True when captured - refunded == invoiced - credited."""
        return self.difference_minor == 0


def reconcile(
    order_id: str,
    authorizations: Sequence[Authorization],
    captures: Sequence[Capture],
    invoices: Sequence[Invoice],
    *,
    credit_memos: Sequence[CreditMemo] = (),
    refunds: Sequence[Refund] = (),
    reversals: Sequence[Reversal] = (),
) -> Reconciliation:
    """Reconcile an order's records."""
    summary = summarize(
        order_id,
        authorizations,
        captures,
        invoices,
        credit_memos=credit_memos,
        refunds=refunds,
        reversals=reversals,
    )
    not_refunded = sum(
        memo_balance(memo, refunds, reversals).not_refunded_minor for memo in credit_memos
    )
    return Reconciliation(summary, not_refunded)
