"""Payments domain: authorizations, invoices, captures and the payment summary.

Pure: standard library, oms_platform.money and oms_platform.errors only. Money is integer
minor units with its ISO 4217 currency; the clock and ids are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from oms_platform import money
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument

# Authorization statuses, as stored.
APPROVED = "approved"
DECLINED = "declined"
VOIDED = "voided"

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


@dataclass(frozen=True)
class Money:
    """An amount in minor units of `currency`."""

    amount_minor: int
    currency: str


def require(**fields: str) -> None:
    """Raise InvalidArgument naming every one of `fields` (name=value) that is empty."""
    violations = [
        FieldViolation(name, f"{name} is required") for name, value in fields.items() if not value
    ]
    if violations:
        raise InvalidArgument(violations)


# ---- authorizations ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizationRequest:
    """A request to hold an amount on the order's payment method."""

    order_id: str
    idempotency_key: str
    payment_method_type: str
    token: str
    amount: Money


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

    @property
    def remaining_minor(self) -> int:
        """What can still be captured: nothing unless approved."""
        if self.status != APPROVED:
            return 0
        return self.amount_minor - self.captured_minor


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
    if request.amount.amount_minor <= 0:
        violations.append(FieldViolation("amount.amount_minor", "amount.amount_minor must be > 0"))
    if not money.is_known_currency(request.amount.currency):
        violations.append(
            FieldViolation(
                "amount.currency",
                f"amount.currency must be a known ISO 4217 code, got {request.amount.currency!r}",
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
    return Authorization(
        authorization_id=authorization_id,
        order_id=request.order_id,
        payment_method_type=request.payment_method_type,
        token=request.token,
        amount_minor=request.amount.amount_minor,
        currency=request.amount.currency,
        captured_minor=0,
        status=APPROVED if approved else DECLINED,
        gateway_reference=gateway_reference,
        decline_reason="" if approved else (decline_reason or "declined"),
        expires_at=now + timedelta(hours=hold_hours),
        created_at=now,
    )


def authorizations_to_void(authorizations: Sequence[Authorization]) -> list[Authorization]:
    """The authorizations a void releases: every approved one, oldest first."""
    return sorted(
        (a for a in authorizations if a.status == APPROVED),
        key=lambda a: (a.created_at, a.authorization_id),
    )


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
                f"must be the invoice currency {currency!r}, got {amount.currency!r}",
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
        violations.append(FieldViolation(field, f"must be a known ISO 4217 code, got {currency!r}"))
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
    if violations:
        raise InvalidArgument(violations)
    return currency


def build_invoice(request: InvoiceRequest, *, invoice_id: str, now: datetime) -> Invoice:
    """Validate the request and compute the invoice: exact line shares plus shipping."""
    currency = validate_invoice(request)
    lines = [invoice_line(line) for line in request.lines]
    shipping = request.shipping.amount_minor
    return Invoice(
        invoice_id=invoice_id,
        order_id=request.order_id,
        fulfillment_order_id=request.fulfillment_order_id,
        currency=currency,
        lines=lines,
        shipping_minor=shipping,
        total_minor=sum(line.total_minor for line in lines) + shipping,
        captured_minor=0,
        created_at=now,
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
class CapturePlan:
    """What a capture will do: the amount and the authorization it draws on.

    `authorization` is None when there is nothing to ask the gateway: either the capture fails
    at once (`failure_reason` set) or the invoice owes nothing (amount 0, succeeds at once).
    """

    amount_minor: int
    authorization: Authorization | None
    failure_reason: str = ""


def plan_capture(
    invoice: Invoice,
    captures: Sequence[Capture],
    authorizations: Sequence[Authorization],
    now: datetime,
) -> CapturePlan:
    """Choose how to capture an invoice's outstanding amount.

    The whole outstanding amount comes from the oldest approved, unexpired authorization in
    the invoice's currency whose remaining hold covers it; never more than is outstanding.
    """
    outstanding = invoice.outstanding_minor
    succeeded = [c for c in captures if c.status == SUCCEEDED]
    if outstanding <= 0 and (invoice.total_minor > 0 or succeeded):
        raise FailedPrecondition(f"invoice {invoice.invoice_id} is already captured")
    if outstanding == 0:
        return CapturePlan(amount_minor=0, authorization=None)
    for authorization in sorted(authorizations, key=lambda a: (a.created_at, a.authorization_id)):
        if (
            authorization.status == APPROVED
            and authorization.currency == invoice.currency
            and authorization.expires_at > now
            and authorization.remaining_minor >= outstanding
        ):
            return CapturePlan(amount_minor=outstanding, authorization=authorization)
    return CapturePlan(
        amount_minor=outstanding, authorization=None, failure_reason=INSUFFICIENT_AUTHORIZATION
    )


def record_capture(
    invoice: Invoice,
    plan: CapturePlan,
    *,
    capture_id: str,
    succeeded: bool,
    gateway_reference: str,
    failure_reason: str,
    now: datetime,
) -> Capture:
    """The capture to store for a plan and the gateway's answer."""
    return Capture(
        capture_id=capture_id,
        invoice_id=invoice.invoice_id,
        authorization_id=plan.authorization.authorization_id if plan.authorization else "",
        status=SUCCEEDED if succeeded else FAILED,
        amount_minor=plan.amount_minor,
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


# ---- summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentSummary:
    """An order's money at a glance, in its currency ("" when nothing is known)."""

    order_id: str
    currency: str
    authorized_minor: int
    captured_minor: int
    refunded_minor: int
    invoiced_minor: int

    @property
    def balance_due_minor(self) -> int:
        """What is still owed on invoices."""
        return self.invoiced_minor - self.captured_minor


def summarize(
    order_id: str,
    authorizations: Sequence[Authorization],
    captures: Sequence[Capture],
    invoices: Sequence[Invoice],
) -> PaymentSummary:
    """Totals of an order's records: held, captured, refunded (none yet), invoiced."""
    currencies = [a.currency for a in authorizations] + [i.currency for i in invoices]
    return PaymentSummary(
        order_id=order_id,
        currency=currencies[0] if currencies else "",
        authorized_minor=sum(a.amount_minor for a in authorizations if a.status == APPROVED),
        captured_minor=sum(c.amount_minor for c in captures if c.status == SUCCEEDED),
        refunded_minor=0,
        invoiced_minor=sum(i.total_minor for i in invoices),
    )
