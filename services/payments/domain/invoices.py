"""Invoices: what the shopper owes for a shipment, line by line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from oms_platform import limits, money
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.money import Money


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


class PricedRequestLine(Protocol):
    """A request's line carrying its order line's full money: an invoice's or a credit memo's."""

    @property
    def quantity_ordered(self) -> int: ...
    @property
    def gross(self) -> Money: ...
    @property
    def discount(self) -> Money: ...
    @property
    def tax(self) -> Money: ...


def unit_shares(line: PricedRequestLine, first_unit: int, quantity: int) -> tuple[int, int, int]:
    """The exact gross, discount and tax of units first_unit .. first_unit+quantity-1.

    Each component is split evenly over the units ordered (largest remainder), so invoicing or
    crediting a line over several requests adds up to the line's money to the minor unit.
    """

    def part(component: Money) -> int:
        return money.share(component.amount_minor, line.quantity_ordered, first_unit, quantity)

    return part(line.gross), part(line.discount), part(line.tax)


def invoice_line(line: ChargeableLine) -> InvoiceLine:
    """The exact share of a line's money for the units this invoice charges."""
    gross, discount, tax = unit_shares(
        line, line.quantity_invoiced_before, line.quantity_to_invoice
    )
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


def _check_line_money(
    violations: list[FieldViolation], path: str, line: PricedRequestLine, currency: str
) -> None:
    """Check a request line's gross, discount and tax against the request's currency."""
    for name, component in (
        ("gross", line.gross),
        ("discount", line.discount),
        ("tax", line.tax),
    ):
        _check_amount(violations, f"{path}.{name}", component, currency)


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
        _check_line_money(violations, path, line, currency)
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
