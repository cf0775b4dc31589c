"""Payments' wire types to domain types and back: enum tables, requests into the domain's
requests, and every domain record and use-case outcome into its protobuf message.

Pure functions; the servicer decodes with the `*_from_pb` functions and encodes with the
`*_pb` ones (the idempotent RPCs' encoders are what `db.idempotent` stores as the key's
answer, so they must stay deterministic).
"""

from __future__ import annotations

from datetime import date
from typing import TypeVar

from oms.payments.v1 import payments_pb2

from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.wire import date_from_pb, money_from_pb, money_to_pb, timestamp_from_datetime
from services.payments import domain, store
from services.payments.handlers import Authorized, Captured, CreditMemoView, Refunded, Renewed

# An invoice's line or a credit memo's: the same fields in two messages.
PricedLinePb = TypeVar("PricedLinePb", payments_pb2.InvoiceLine, payments_pb2.CreditMemoLine)

# ---- enum tables ---------------------------------------------------------------------------

PAYMENT_METHOD_TYPE_FROM_PB: dict[int, str] = {
    payments_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED: domain.UNSPECIFIED,
    payments_pb2.PAYMENT_METHOD_TYPE_CARD: domain.CARD,
    payments_pb2.PAYMENT_METHOD_TYPE_GIFT_CARD: domain.GIFT_CARD,
    payments_pb2.PAYMENT_METHOD_TYPE_INVOICE_TERMS: domain.INVOICE_TERMS,
}
PAYMENT_METHOD_TYPE_TO_PB: dict[str, payments_pb2.PaymentMethodType.ValueType] = {
    domain.UNSPECIFIED: payments_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED,
    domain.CARD: payments_pb2.PAYMENT_METHOD_TYPE_CARD,
    domain.GIFT_CARD: payments_pb2.PAYMENT_METHOD_TYPE_GIFT_CARD,
    domain.INVOICE_TERMS: payments_pb2.PAYMENT_METHOD_TYPE_INVOICE_TERMS,
}
AUTHORIZATION_STATUS_TO_PB: dict[str, payments_pb2.AuthorizationStatus.ValueType] = {
    domain.APPROVED: payments_pb2.AUTHORIZATION_STATUS_APPROVED,
    domain.DECLINED: payments_pb2.AUTHORIZATION_STATUS_DECLINED,
    domain.VOIDED: payments_pb2.AUTHORIZATION_STATUS_VOIDED,
    domain.EXPIRED: payments_pb2.AUTHORIZATION_STATUS_EXPIRED,
}
CAPTURE_STATUS_TO_PB: dict[str, payments_pb2.CaptureStatus.ValueType] = {
    domain.SUCCEEDED: payments_pb2.CAPTURE_STATUS_SUCCEEDED,
    domain.FAILED: payments_pb2.CAPTURE_STATUS_FAILED,
}
CREDIT_MEMO_KIND_FROM_PB: dict[int, str] = {
    payments_pb2.CREDIT_MEMO_KIND_UNSPECIFIED: domain.UNSPECIFIED,
    payments_pb2.CREDIT_MEMO_KIND_CANCEL: domain.CANCEL,
    payments_pb2.CREDIT_MEMO_KIND_RETURN: domain.RETURN,
    payments_pb2.CREDIT_MEMO_KIND_APPEASEMENT: domain.APPEASEMENT,
}
CREDIT_MEMO_KIND_TO_PB: dict[str, payments_pb2.CreditMemoKind.ValueType] = {
    domain.UNSPECIFIED: payments_pb2.CREDIT_MEMO_KIND_UNSPECIFIED,
    domain.CANCEL: payments_pb2.CREDIT_MEMO_KIND_CANCEL,
    domain.RETURN: payments_pb2.CREDIT_MEMO_KIND_RETURN,
    domain.APPEASEMENT: payments_pb2.CREDIT_MEMO_KIND_APPEASEMENT,
}
REFUND_STATUS_TO_PB: dict[str, payments_pb2.RefundStatus.ValueType] = {
    domain.SUCCEEDED: payments_pb2.REFUND_STATUS_SUCCEEDED,
    domain.FAILED: payments_pb2.REFUND_STATUS_FAILED,
}
REVERSAL_STATUS_TO_PB: dict[str, payments_pb2.ReversalStatus.ValueType] = {
    domain.SUCCEEDED: payments_pb2.REVERSAL_STATUS_SUCCEEDED,
    domain.FAILED: payments_pb2.REVERSAL_STATUS_FAILED,
}
REFUND_OUTCOME_TO_PB: dict[str, payments_pb2.RefundOutcome.ValueType] = {
    domain.SETTLED: payments_pb2.REFUND_OUTCOME_SETTLED,
    domain.LIMITED: payments_pb2.REFUND_OUTCOME_LIMITED,
    domain.FAILED: payments_pb2.REFUND_OUTCOME_FAILED,
}

# ---- wire -> domain ------------------------------------------------------------------------


def payment_method_from_pb(m: payments_pb2.PaymentMethod) -> domain.PaymentMethod:
    """A payment method as the domain sees it."""
    return domain.PaymentMethod(
        type=PAYMENT_METHOD_TYPE_FROM_PB.get(m.type, domain.UNSPECIFIED), token=m.token
    )


def authorization_request_from_pb(
    r: payments_pb2.AuthorizePaymentRequest,
) -> domain.AuthorizationRequest:
    """The domain's view of an AuthorizePaymentRequest."""
    return domain.AuthorizationRequest(
        order_id=r.order_id,
        idempotency_key=r.idempotency_key,
        payment_method_type=PAYMENT_METHOD_TYPE_FROM_PB.get(
            r.payment_method.type, domain.UNSPECIFIED
        ),
        token=r.payment_method.token,
        amount=money_from_pb(r.amount),
        additional_payment_methods=tuple(
            payment_method_from_pb(m) for m in r.additional_payment_methods
        ),
    )


def promised_day_from_pb(r: payments_pb2.RenewAuthorizationsRequest) -> date:
    """The promised day a renewal request keeps the holds for; InvalidArgument naming every
    bad field."""
    violations: list[FieldViolation] = []
    try:
        domain.require(order_id=r.order_id, idempotency_key=r.idempotency_key)
    except InvalidArgument as missing:
        violations += missing.violations
    day: date | None = None
    try:
        day = date_from_pb(r.promise_date, "promise_date")
    except InvalidArgument as bad:
        violations += bad.violations
    else:
        if day is None:
            violations.append(FieldViolation("promise_date", "promise_date is required"))
    if violations or day is None:
        raise InvalidArgument(violations)
    return day


def chargeable_line_from_pb(line: payments_pb2.ChargeableLine) -> domain.ChargeableLine:
    """An invoice request's line."""
    return domain.ChargeableLine(
        order_line_id=line.order_line_id,
        sku=line.sku,
        quantity_ordered=line.quantity_ordered,
        gross=money_from_pb(line.gross),
        discount=money_from_pb(line.discount),
        tax=money_from_pb(line.tax),
        quantity_to_invoice=line.quantity_to_invoice,
        quantity_invoiced_before=line.quantity_invoiced_before,
    )


def invoice_request_from_pb(r: payments_pb2.CreateInvoiceRequest) -> domain.InvoiceRequest:
    """The domain's view of a CreateInvoiceRequest."""
    return domain.InvoiceRequest(
        order_id=r.order_id,
        fulfillment_order_id=r.fulfillment_order_id,
        idempotency_key=r.idempotency_key,
        lines=[chargeable_line_from_pb(line) for line in r.lines],
        shipping=money_from_pb(r.shipping),
        goodwill=money_from_pb(r.goodwill),
    )


def creditable_line_from_pb(line: payments_pb2.CreditableLine) -> domain.CreditableLine:
    """A credit memo request's line."""
    return domain.CreditableLine(
        order_line_id=line.order_line_id,
        sku=line.sku,
        quantity_ordered=line.quantity_ordered,
        gross=money_from_pb(line.gross),
        discount=money_from_pb(line.discount),
        tax=money_from_pb(line.tax),
        quantity_to_credit=line.quantity_to_credit,
        first_unit=line.first_unit,
    )


def credit_memo_request_from_pb(
    r: payments_pb2.CreateCreditMemoRequest,
) -> domain.CreditMemoRequest:
    """The domain's view of a CreateCreditMemoRequest."""
    return domain.CreditMemoRequest(
        order_id=r.order_id,
        idempotency_key=r.idempotency_key,
        kind=CREDIT_MEMO_KIND_FROM_PB.get(r.kind, domain.UNSPECIFIED),
        reason=r.reason,
        currency=r.currency,
        lines=[creditable_line_from_pb(line) for line in r.lines],
        shipping=money_from_pb(r.shipping),
        fee=money_from_pb(r.fee),
        appeasements=[
            domain.AppeasementRequest(
                order_line_id=a.order_line_id,
                amount=money_from_pb(a.amount),
                percent_basis_points=a.percent_basis_points,
            )
            for a in r.appeasements
        ],
    )


# ---- domain -> wire ------------------------------------------------------------------------


def authorization_pb(a: domain.Authorization) -> payments_pb2.Authorization:
    """An authorization on the wire."""
    return payments_pb2.Authorization(
        authorization_id=a.authorization_id,
        order_id=a.order_id,
        status=AUTHORIZATION_STATUS_TO_PB[a.status],
        amount=money_to_pb(a.amount_minor, a.currency),
        captured=money_to_pb(a.captured_minor, a.currency),
        gateway_reference=a.gateway_reference,
        decline_reason=a.decline_reason,
        expires_at=timestamp_from_datetime(a.expires_at),
        payment_method_type=PAYMENT_METHOD_TYPE_TO_PB.get(
            a.payment_method_type, payments_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED
        ),
        reversed=money_to_pb(a.reversed_minor, a.currency),
        replaces_authorization_id=a.replaces_authorization_id,
        created_at=timestamp_from_datetime(a.created_at),
    )


def capture_pb(c: domain.Capture) -> payments_pb2.Capture:
    """A capture on the wire."""
    return payments_pb2.Capture(
        capture_id=c.capture_id,
        invoice_id=c.invoice_id,
        authorization_id=c.authorization_id,
        status=CAPTURE_STATUS_TO_PB[c.status],
        amount=money_to_pb(c.amount_minor, c.currency),
        gateway_reference=c.gateway_reference,
        failure_reason=c.failure_reason,
        created_at=timestamp_from_datetime(c.created_at),
    )


def _priced_line_pb(
    message: type[PricedLinePb],
    line: domain.InvoiceLine | domain.CreditMemoLine,
    currency: str,
) -> PricedLinePb:
    """An invoice's or a credit memo's line on the wire: the two messages share their fields."""
    return message(
        order_line_id=line.order_line_id,
        sku=line.sku,
        quantity=line.quantity,
        gross=money_to_pb(line.gross_minor, currency),
        discount=money_to_pb(line.discount_minor, currency),
        tax=money_to_pb(line.tax_minor, currency),
        total=money_to_pb(line.total_minor, currency),
    )


def invoice_pb(i: domain.Invoice) -> payments_pb2.Invoice:
    """An invoice on the wire."""
    return payments_pb2.Invoice(
        invoice_id=i.invoice_id,
        order_id=i.order_id,
        fulfillment_order_id=i.fulfillment_order_id,
        lines=[_priced_line_pb(payments_pb2.InvoiceLine, line, i.currency) for line in i.lines],
        shipping=money_to_pb(i.shipping_minor, i.currency),
        total=money_to_pb(i.total_minor, i.currency),
        captured=money_to_pb(i.captured_minor, i.currency),
        created_at=timestamp_from_datetime(i.created_at),
        goodwill=money_to_pb(i.goodwill_minor, i.currency),
    )


def credit_memo_pb(
    m: domain.CreditMemo, balance: domain.CreditMemoBalance
) -> payments_pb2.CreditMemo:
    """A credit memo and what became of it, on the wire."""
    return payments_pb2.CreditMemo(
        credit_memo_id=m.credit_memo_id,
        order_id=m.order_id,
        kind=CREDIT_MEMO_KIND_TO_PB[m.kind],
        reason=m.reason,
        lines=[_priced_line_pb(payments_pb2.CreditMemoLine, line, m.currency) for line in m.lines],
        shipping=money_to_pb(m.shipping_minor, m.currency),
        fee=money_to_pb(m.fee_minor, m.currency),
        appeasements=[
            payments_pb2.Appeasement(
                order_line_id=a.order_line_id,
                amount=money_to_pb(a.amount_minor, m.currency),
                percent_basis_points=a.percent_basis_points,
            )
            for a in m.appeasements
        ],
        total=money_to_pb(m.total_minor, m.currency),
        refunded=money_to_pb(balance.refunded_minor, m.currency),
        released=money_to_pb(balance.released_minor, m.currency),
        not_refunded=money_to_pb(balance.not_refunded_minor, m.currency),
        created_at=timestamp_from_datetime(m.created_at),
    )


def refund_pb(r: domain.Refund) -> payments_pb2.Refund:
    """A refund on the wire."""
    return payments_pb2.Refund(
        refund_id=r.refund_id,
        order_id=r.order_id,
        credit_memo_id=r.credit_memo_id,
        capture_id=r.capture_id,
        status=REFUND_STATUS_TO_PB[r.status],
        amount=money_to_pb(r.amount_minor, r.currency),
        gateway_reference=r.gateway_reference,
        failure_reason=r.failure_reason,
        created_at=timestamp_from_datetime(r.created_at),
    )


def reversal_pb(r: domain.Reversal) -> payments_pb2.AuthorizationReversal:
    """An authorization reversal on the wire."""
    return payments_pb2.AuthorizationReversal(
        reversal_id=r.reversal_id,
        order_id=r.order_id,
        credit_memo_id=r.credit_memo_id,
        authorization_id=r.authorization_id,
        status=REVERSAL_STATUS_TO_PB[r.status],
        amount=money_to_pb(r.amount_minor, r.currency),
        voided=r.voided,
        gateway_reference=r.gateway_reference,
        failure_reason=r.failure_reason,
        created_at=timestamp_from_datetime(r.created_at),
    )


def summary_pb(s: domain.PaymentSummary) -> payments_pb2.PaymentSummary:
    """An order's payment summary on the wire."""
    return payments_pb2.PaymentSummary(
        order_id=s.order_id,
        authorized=money_to_pb(s.authorized_minor, s.currency),
        captured=money_to_pb(s.captured_minor, s.currency),
        refunded=money_to_pb(s.refunded_minor, s.currency),
        invoiced=money_to_pb(s.invoiced_minor, s.currency),
        balance_due=money_to_pb(s.balance_due_minor, s.currency),
        credited=money_to_pb(s.credited_minor, s.currency),
        released=money_to_pb(s.released_minor, s.currency),
    )


def reconciliation_pb(r: domain.Reconciliation) -> payments_pb2.Reconciliation:
    """An order's reconciliation on the wire."""
    s = r.summary
    return payments_pb2.Reconciliation(
        order_id=s.order_id,
        authorized=money_to_pb(s.authorized_minor, s.currency),
        captured=money_to_pb(s.captured_minor, s.currency),
        refunded=money_to_pb(s.refunded_minor, s.currency),
        invoiced=money_to_pb(s.invoiced_minor, s.currency),
        credited=money_to_pb(s.credited_minor, s.currency),
        released=money_to_pb(s.released_minor, s.currency),
        not_refunded=money_to_pb(r.not_refunded_minor, s.currency),
        agrees=r.agrees,
        difference=money_to_pb(r.difference_minor, s.currency),
    )


def memos_pb(records: store.OrderRecords) -> list[payments_pb2.CreditMemo]:
    """Every credit memo of an order, each with its balance."""
    return [
        credit_memo_pb(m, domain.memo_balance(m, records.refunds, records.reversals))
        for m in records.credit_memos
    ]


# ---- use-case outcomes -> responses ---------------------------------------------------------


def authorized_pb(a: Authorized) -> payments_pb2.AuthorizePaymentResponse:
    """AuthorizePayment's answer."""
    return payments_pb2.AuthorizePaymentResponse(
        authorization=authorization_pb(a.primary),
        authorizations=[authorization_pb(x) for x in a.authorizations],
        status=AUTHORIZATION_STATUS_TO_PB[a.outcome.status],
        decline_reason=a.outcome.decline_reason,
        authorized=money_to_pb(a.outcome.held_minor, a.currency),
    )


def renewed_pb(r: Renewed) -> payments_pb2.RenewAuthorizationsResponse:
    """The answer to RenewAuthorizations."""
    return payments_pb2.RenewAuthorizationsResponse(
        status=payments_pb2.AUTHORIZATION_STATUS_APPROVED
        if r.approved
        else payments_pb2.AUTHORIZATION_STATUS_DECLINED,
        decline_reason=r.decline_reason,
        renewals=[authorization_pb(a) for a in r.renewals],
        renew_again=r.renew_again_in_seconds is not None,
        renew_again_in_seconds=r.renew_again_in_seconds or 0,
    )


def invoice_created_pb(invoice: domain.Invoice) -> payments_pb2.CreateInvoiceResponse:
    """CreateInvoice's answer."""
    return payments_pb2.CreateInvoiceResponse(invoice=invoice_pb(invoice))


def captured_pb(c: Captured) -> payments_pb2.CaptureInvoiceResponse:
    """CaptureInvoice's answer."""
    return payments_pb2.CaptureInvoiceResponse(
        capture=capture_pb(c.outcome.deciding),
        captures=[capture_pb(x) for x in c.captures],
        status=CAPTURE_STATUS_TO_PB[c.outcome.status],
        failure_reason=c.outcome.failure_reason,
        captured=money_to_pb(c.outcome.captured_minor, c.currency),
        reauthorizations=[authorization_pb(a) for a in c.reauthorizations],
    )


def voided_pb(
    authorizations: list[domain.Authorization],
) -> payments_pb2.VoidAuthorizationResponse:
    """VoidAuthorization's answer."""
    return payments_pb2.VoidAuthorizationResponse(
        authorizations=[authorization_pb(a) for a in authorizations]
    )


def credit_memo_created_pb(view: CreditMemoView) -> payments_pb2.CreateCreditMemoResponse:
    """CreateCreditMemo's answer."""
    return payments_pb2.CreateCreditMemoResponse(
        credit_memo=credit_memo_pb(view.memo, view.balance)
    )


def refunded_pb(r: Refunded) -> payments_pb2.RefundCreditMemoResponse:
    """RefundCreditMemo's answer."""
    memo, balance = r.credit_memo.memo, r.credit_memo.balance
    return payments_pb2.RefundCreditMemoResponse(
        credit_memo=credit_memo_pb(memo, balance),
        outcome=REFUND_OUTCOME_TO_PB[r.outcome.outcome],
        failure_reason=r.outcome.failure_reason,
        refunds=[refund_pb(x) for x in r.refunds],
        reversals=[reversal_pb(x) for x in r.reversals],
        refunded=money_to_pb(r.outcome.refunded_minor, memo.currency),
        released=money_to_pb(r.outcome.released_minor, memo.currency),
        not_refunded=money_to_pb(balance.not_refunded_minor, memo.currency),
    )


def payment_summary_pb(
    summary: domain.PaymentSummary, records: store.OrderRecords
) -> payments_pb2.GetPaymentSummaryResponse:
    """GetPaymentSummary's answer."""
    return payments_pb2.GetPaymentSummaryResponse(
        summary=summary_pb(summary),
        authorizations=[authorization_pb(a) for a in records.authorizations],
        captures=[capture_pb(c) for c in records.captures],
        invoices=[invoice_pb(i) for i in records.invoices],
        credit_memos=memos_pb(records),
        refunds=[refund_pb(r) for r in records.refunds],
        reversals=[reversal_pb(r) for r in records.reversals],
    )
