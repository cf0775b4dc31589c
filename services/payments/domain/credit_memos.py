"""Credit memos: what the order gives back (cancel, return, appeasement)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from oms_platform import limits, money
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.money import Money
from services.payments.domain.common import FULL_PERCENT_BASIS_POINTS
from services.payments.domain.invoices import (
    Invoice,
    _check_amount,
    _check_line_money,
    unit_shares,
)


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
    gross, discount, tax = unit_shares(line, line.first_unit, line.quantity_to_credit)
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
        _check_line_money(violations, path, line, currency)
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


def check_give_back_keys(memo_key: str, refund_key: str, void_key: str) -> None:
    """Raise InvalidArgument when the keys of a memo asked with its refund (and void) cannot
    each name one call of their own: the void follows a refund, and every key is distinct."""
    violations = []
    if void_key and not refund_key:
        violations.append(
            FieldViolation(
                "void_remaining_idempotency_key",
                "void_remaining_idempotency_key needs refund_idempotency_key: "
                "the void follows the memo's refund",
            )
        )
    if refund_key and refund_key == memo_key:
        violations.append(
            FieldViolation(
                "refund_idempotency_key",
                "refund_idempotency_key must differ from idempotency_key: "
                "a key belongs to one call",
            )
        )
    if void_key and void_key in (memo_key, refund_key):
        violations.append(
            FieldViolation(
                "void_remaining_idempotency_key",
                "void_remaining_idempotency_key must differ from idempotency_key and "
                "refund_idempotency_key: a key belongs to one call",
            )
        )
    if violations:
        raise InvalidArgument(violations)
