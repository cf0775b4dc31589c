"""PaymentsService over gRPC: converts wire types to domain types and back, and delegates.

Each mutating RPC runs in one `db.idempotent` transaction: take the order's lock, load the
records, let the domain decide, ask the gateways (outcomes resolved by key), store, answer.
If a gateway's outcome stays unknown the transaction rolls back and the RPC answers
UNAVAILABLE; the caller retries with the same key, which derives the same gateway keys, and
the gateway's own key dedupe keeps every effect single.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import asyncpg
import grpc
import structlog
from google.protobuf.message import Message
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import db, erasure
from oms_platform.errors import FailedPrecondition, NotFound
from oms_platform.wire import money_from_pb, money_to_pb, timestamp_from_datetime
from services.payments import domain, store
from services.payments.gateway import GatewayError, Gateways, call_resolved
from workflows.types import order_workflow_id

M = TypeVar("M", bound=Message)
log = structlog.get_logger("oms.payments")

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
    return domain.PaymentMethod(
        type=PAYMENT_METHOD_TYPE_FROM_PB.get(m.type, domain.UNSPECIFIED), token=m.token
    )


def authorization_request_from_pb(
    r: payments_pb2.AuthorizePaymentRequest,
) -> domain.AuthorizationRequest:
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


def chargeable_line_from_pb(line: payments_pb2.ChargeableLine) -> domain.ChargeableLine:
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
    return domain.InvoiceRequest(
        order_id=r.order_id,
        fulfillment_order_id=r.fulfillment_order_id,
        idempotency_key=r.idempotency_key,
        lines=[chargeable_line_from_pb(line) for line in r.lines],
        shipping=money_from_pb(r.shipping),
        goodwill=money_from_pb(r.goodwill),
    )


def creditable_line_from_pb(line: payments_pb2.CreditableLine) -> domain.CreditableLine:
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


def invoice_pb(i: domain.Invoice) -> payments_pb2.Invoice:
    return payments_pb2.Invoice(
        invoice_id=i.invoice_id,
        order_id=i.order_id,
        fulfillment_order_id=i.fulfillment_order_id,
        lines=[
            payments_pb2.InvoiceLine(
                order_line_id=line.order_line_id,
                sku=line.sku,
                quantity=line.quantity,
                gross=money_to_pb(line.gross_minor, i.currency),
                discount=money_to_pb(line.discount_minor, i.currency),
                tax=money_to_pb(line.tax_minor, i.currency),
                total=money_to_pb(line.total_minor, i.currency),
            )
            for line in i.lines
        ],
        shipping=money_to_pb(i.shipping_minor, i.currency),
        total=money_to_pb(i.total_minor, i.currency),
        captured=money_to_pb(i.captured_minor, i.currency),
        created_at=timestamp_from_datetime(i.created_at),
        goodwill=money_to_pb(i.goodwill_minor, i.currency),
    )


def credit_memo_pb(
    m: domain.CreditMemo, balance: domain.CreditMemoBalance
) -> payments_pb2.CreditMemo:
    return payments_pb2.CreditMemo(
        credit_memo_id=m.credit_memo_id,
        order_id=m.order_id,
        kind=CREDIT_MEMO_KIND_TO_PB[m.kind],
        reason=m.reason,
        lines=[
            payments_pb2.CreditMemoLine(
                order_line_id=line.order_line_id,
                sku=line.sku,
                quantity=line.quantity,
                gross=money_to_pb(line.gross_minor, m.currency),
                discount=money_to_pb(line.discount_minor, m.currency),
                tax=money_to_pb(line.tax_minor, m.currency),
                total=money_to_pb(line.total_minor, m.currency),
            )
            for line in m.lines
        ],
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
    return [
        credit_memo_pb(m, domain.memo_balance(m, records.refunds, records.reversals))
        for m in records.credit_memos
    ]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def _replaced(
    authorizations: Sequence[domain.Authorization], changed: domain.Authorization
) -> list[domain.Authorization]:
    return [
        changed if a.authorization_id == changed.authorization_id else a for a in authorizations
    ]


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    """The PaymentsService RPCs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateways: Gateways,
        *,
        hold_hours: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.pool = pool
        self.gateways = gateways
        self.hold_hours = hold_hours
        self.clock = clock

    async def _idempotent(
        self,
        context: grpc.aio.ServicerContext,
        key: str,
        request: Message,
        response_type: type[M],
        action: Callable[[asyncpg.Connection], Awaitable[M]],
    ) -> M:
        try:
            response, _ = await db.idempotent(
                self.pool, key, request, response_type, action, lambda r: r
            )
        except GatewayError as error:
            # Not a refusal: the outcome is unknown, so the caller retries with the same key.
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"payment gateway: {error}")
        return response

    # ---- authorize ---------------------------------------------------------------------

    async def AuthorizePayment(
        self, request: payments_pb2.AuthorizePaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.AuthorizePaymentResponse:
        wanted = authorization_request_from_pb(request)
        domain.validate_authorization(wanted)
        amount, currency = wanted.amount.amount_minor, wanted.amount.currency

        async def action(conn: asyncpg.Connection) -> payments_pb2.AuthorizePaymentResponse:
            await store.lock_order(conn, wanted.order_id)
            now = self.clock()
            made: list[domain.Authorization] = []
            methods = wanted.payment_methods
            for i, method in enumerate(methods):
                need = domain.left_to_hold(amount, made)
                if need <= 0:
                    break
                gateway = self.gateways.calling(method.type)
                key = domain.gateway_key(
                    wanted.order_id, wanted.idempotency_key, f"authorize:{i}", need
                )
                result = await call_resolved(
                    gateway,
                    key,
                    partial(
                        gateway.authorize,
                        key,
                        method.token,
                        need,
                        currency,
                        allow_partial=i < len(methods) - 1,
                    ),
                )
                held = domain.held_amount(need, result.amount_minor) if result.approved else need
                made.append(
                    domain.new_authorization(
                        wanted.order_id,
                        method,
                        domain.Money(held, currency),
                        authorization_id=new_id(),
                        approved=result.approved,
                        gateway_reference=result.reference,
                        decline_reason=result.reason,
                        now=now,
                        hold_hours=self.hold_hours,
                    )
                )
            outcome = domain.authorization_outcome(amount, made)
            for held_one in outcome.to_void:
                # The whole amount could not be held: release what was, so nothing stays held.
                # Keyed by the method's position: the id is new on every attempt.
                step = f"void-unheld:{made.index(held_one)}"
                made = _replaced(made, await self._void_one(held_one, wanted.idempotency_key, step))
            for authorization in made:
                await store.insert_authorization(conn, authorization)
            primary = next(
                a for a in made if a.authorization_id == outcome.primary.authorization_id
            )
            return payments_pb2.AuthorizePaymentResponse(
                authorization=authorization_pb(primary),
                authorizations=[authorization_pb(a) for a in made],
                status=AUTHORIZATION_STATUS_TO_PB[outcome.status],
                decline_reason=outcome.decline_reason,
                authorized=money_to_pb(outcome.held_minor, currency),
            )

        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.AuthorizePaymentResponse,
            action,
        )

    async def _void_one(
        self, authorization: domain.Authorization, request_key: str, step: str
    ) -> domain.Authorization:
        """Void one authorization at its gateway; unchanged (still held) if the gateway refuses."""
        gateway = self.gateways.calling(authorization.payment_method_type)
        key = domain.gateway_key(
            authorization.order_id, request_key, step, authorization.remaining_minor
        )
        result = await call_resolved(
            gateway, key, partial(gateway.void, key, authorization.gateway_reference)
        )
        if not result.succeeded:
            log.warning(
                "gateway refused a void",
                authorization_id=authorization.authorization_id,
                reason=result.reason,
            )
            return authorization
        return domain.voided(authorization)

    # ---- invoice and capture -----------------------------------------------------------

    async def CreateInvoice(
        self, request: payments_pb2.CreateInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CreateInvoiceResponse:
        invoice = domain.build_invoice(
            invoice_request_from_pb(request), invoice_id=new_id(), now=self.clock()
        )

        async def action(conn: asyncpg.Connection) -> payments_pb2.CreateInvoiceResponse:
            await store.insert_invoice(conn, invoice)
            return payments_pb2.CreateInvoiceResponse(invoice=invoice_pb(invoice))

        return await self._idempotent(
            context, request.idempotency_key, request, payments_pb2.CreateInvoiceResponse, action
        )

    async def CaptureInvoice(
        self, request: payments_pb2.CaptureInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CaptureInvoiceResponse:
        domain.require(invoice_id=request.invoice_id, idempotency_key=request.idempotency_key)
        request_key = request.idempotency_key

        async def action(conn: asyncpg.Connection) -> payments_pb2.CaptureInvoiceResponse:
            found = await store.lock_invoice(conn, request.invoice_id)
            if found is None:
                raise NotFound(f"invoice {request.invoice_id} not found")
            invoice, captures = found
            await store.lock_order(conn, invoice.order_id)
            authorizations = await store.authorizations_of_order(conn, invoice.order_id, lock=True)
            now = self.clock()
            plan = domain.plan_capture(invoice, captures, authorizations, now)
            made: list[domain.Capture] = []
            reauthorizations: list[domain.Authorization] = []
            if not plan.draws:
                made.append(
                    domain.record_capture(
                        invoice,
                        capture_id=new_id(),
                        authorization_id="",
                        amount_minor=plan.amount_minor,
                        succeeded=not plan.failure_reason,
                        gateway_reference="",
                        failure_reason=plan.failure_reason,
                        now=now,
                    )
                )
            for draw in plan.draws:
                authorization = draw.authorization
                if draw.reauthorize:
                    authorization = await self._reauthorize(conn, authorization, request_key, now)
                    reauthorizations.append(authorization)
                    if authorization.status != domain.APPROVED:
                        made.append(
                            domain.record_capture(
                                invoice,
                                capture_id=new_id(),
                                authorization_id=draw.authorization.authorization_id,
                                amount_minor=draw.amount_minor,
                                succeeded=False,
                                gateway_reference="",
                                failure_reason=authorization.decline_reason,
                                now=now,
                            )
                        )
                        break
                capture = await self._capture_draw(
                    conn, invoice, draw, authorization, request_key, now
                )
                made.append(capture)
                if capture.status != domain.SUCCEEDED:
                    break
            for capture in made:
                await store.insert_capture(conn, capture)
            outcome = domain.capture_outcome(made)
            return payments_pb2.CaptureInvoiceResponse(
                capture=capture_pb(outcome.deciding),
                captures=[capture_pb(c) for c in made],
                status=CAPTURE_STATUS_TO_PB[outcome.status],
                failure_reason=outcome.failure_reason,
                captured=money_to_pb(outcome.captured_minor, invoice.currency),
                reauthorizations=[authorization_pb(a) for a in reauthorizations],
            )

        return await self._idempotent(
            context, request_key, request, payments_pb2.CaptureInvoiceResponse, action
        )

    async def _capture_draw(
        self,
        conn: asyncpg.Connection,
        invoice: domain.Invoice,
        draw: domain.CaptureDraw,
        authorization: domain.Authorization,
        request_key: str,
        now: datetime,
    ) -> domain.Capture:
        """Capture one draw from `authorization` (the drawn one, or its re-authorization)."""
        gateway = self.gateways.calling(authorization.payment_method_type)
        # Keyed by the drawn authorization, which a retry of this request draws on again.
        key = domain.gateway_key(
            invoice.order_id,
            request_key,
            f"capture:{draw.authorization.authorization_id}",
            draw.amount_minor,
        )
        result = await call_resolved(
            gateway,
            key,
            partial(
                gateway.capture,
                key,
                authorization.gateway_reference,
                draw.amount_minor,
                invoice.currency,
            ),
        )
        if result.succeeded:
            await store.update_authorization(
                conn, domain.captured_from(authorization, draw.amount_minor)
            )
        return domain.record_capture(
            invoice,
            capture_id=new_id(),
            authorization_id=authorization.authorization_id,
            amount_minor=draw.amount_minor,
            succeeded=result.succeeded,
            gateway_reference=result.reference,
            failure_reason=result.reason,
            now=now,
        )

    async def _reauthorize(
        self,
        conn: asyncpg.Connection,
        lapsed: domain.Authorization,
        request_key: str,
        now: datetime,
    ) -> domain.Authorization:
        """Hold anew what an expired authorization still held; stored, approved or declined."""
        gateway = self.gateways.calling(lapsed.payment_method_type)
        amount = lapsed.remaining_minor
        # Release what may be left of the lapsed hold first (the issuer may already have, so
        # the answer does not matter): a gift card's balance must be free to be held again.
        release_key = domain.gateway_key(
            lapsed.order_id, request_key, f"release-lapsed:{lapsed.authorization_id}", amount
        )
        await call_resolved(
            gateway, release_key, partial(gateway.void, release_key, lapsed.gateway_reference)
        )
        key = domain.gateway_key(
            lapsed.order_id, request_key, f"reauthorize:{lapsed.authorization_id}", amount
        )
        result = await call_resolved(
            gateway,
            key,
            partial(gateway.authorize, key, lapsed.token, amount, lapsed.currency),
        )
        renewed = domain.reauthorization(
            lapsed,
            authorization_id=new_id(),
            approved=result.approved,
            held_minor=amount,
            gateway_reference=result.reference,
            decline_reason=result.reason,
            now=now,
            hold_hours=self.hold_hours,
        )
        await store.insert_authorization(conn, renewed)
        if result.approved:
            await store.update_authorization(conn, domain.expired(lapsed))
        return renewed

    # ---- void --------------------------------------------------------------------------

    async def VoidAuthorization(
        self, request: payments_pb2.VoidAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.VoidAuthorizationResponse:
        domain.require(order_id=request.order_id, idempotency_key=request.idempotency_key)

        async def action(conn: asyncpg.Connection) -> payments_pb2.VoidAuthorizationResponse:
            await store.lock_order(conn, request.order_id)
            authorizations = await store.authorizations_of_order(conn, request.order_id, lock=True)
            for authorization in domain.authorizations_to_void(authorizations):
                after = await self._void_one(
                    authorization,
                    request.idempotency_key,
                    f"void:{authorization.authorization_id}",
                )
                if after.status != domain.VOIDED:
                    raise FailedPrecondition(
                        f"the gateway refused to void authorization "
                        f"{authorization.authorization_id}"
                    )
                await store.update_authorization(conn, after)
            after_all = await store.authorizations_of_order(conn, request.order_id)
            return payments_pb2.VoidAuthorizationResponse(
                authorizations=[authorization_pb(a) for a in after_all]
            )

        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.VoidAuthorizationResponse,
            action,
        )

    # ---- credit memos and refunds ------------------------------------------------------

    async def CreateCreditMemo(
        self, request: payments_pb2.CreateCreditMemoRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CreateCreditMemoResponse:
        wanted = credit_memo_request_from_pb(request)
        domain.require(order_id=wanted.order_id, idempotency_key=wanted.idempotency_key)

        async def action(conn: asyncpg.Connection) -> payments_pb2.CreateCreditMemoResponse:
            await store.lock_order(conn, wanted.order_id)
            records = await store.load_order(conn, wanted.order_id)
            memo = domain.build_credit_memo(
                wanted, invoices=records.invoices, credit_memo_id=new_id(), now=self.clock()
            )
            await store.insert_credit_memo(conn, memo)
            balance = domain.memo_balance(memo, (), ())
            return payments_pb2.CreateCreditMemoResponse(credit_memo=credit_memo_pb(memo, balance))

        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.CreateCreditMemoResponse,
            action,
        )

    async def RefundCreditMemo(
        self, request: payments_pb2.RefundCreditMemoRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.RefundCreditMemoResponse:
        domain.require(
            credit_memo_id=request.credit_memo_id, idempotency_key=request.idempotency_key
        )
        request_key = request.idempotency_key

        async def action(conn: asyncpg.Connection) -> payments_pb2.RefundCreditMemoResponse:
            memo = await store.credit_memo(conn, request.credit_memo_id)
            if memo is None:
                raise NotFound(f"credit memo {request.credit_memo_id} not found")
            await store.lock_order(conn, memo.order_id)
            records = await store.load_order(conn, memo.order_id, lock=True)
            now = self.clock()
            plan = domain.plan_refund(
                memo,
                domain.memo_balance(memo, records.refunds, records.reversals),
                captures=records.captures,
                refunds=records.refunds,
                authorizations=records.authorizations,
                now=now,
            )
            refunds: list[domain.Refund] = []
            for refund_draw in plan.refunds:
                refund = await self._refund_draw(memo, refund_draw, records, request_key, now)
                await store.insert_refund(conn, refund)
                refunds.append(refund)
                if refund.status != domain.SUCCEEDED:
                    break
            reversals: list[domain.Reversal] = []
            for release_draw in plan.releases:
                reversal = await self._release_draw(conn, memo, release_draw, request_key, now)
                reversals.append(reversal)
                if reversal.status != domain.SUCCEEDED:
                    break
            outcome = domain.refund_outcome(plan, refunds, reversals)
            if plan.settles and outcome.outcome != domain.FAILED and not memo.settled:
                await store.settle_credit_memo(conn, memo.credit_memo_id)
                memo = await store.credit_memo(conn, memo.credit_memo_id) or memo
            balance = domain.memo_balance(
                memo, [*records.refunds, *refunds], [*records.reversals, *reversals]
            )
            return payments_pb2.RefundCreditMemoResponse(
                credit_memo=credit_memo_pb(memo, balance),
                outcome=REFUND_OUTCOME_TO_PB[outcome.outcome],
                failure_reason=outcome.failure_reason,
                refunds=[refund_pb(r) for r in refunds],
                reversals=[reversal_pb(r) for r in reversals],
                refunded=money_to_pb(outcome.refunded_minor, memo.currency),
                released=money_to_pb(outcome.released_minor, memo.currency),
                not_refunded=money_to_pb(balance.not_refunded_minor, memo.currency),
            )

        return await self._idempotent(
            context, request_key, request, payments_pb2.RefundCreditMemoResponse, action
        )

    async def _refund_draw(
        self,
        memo: domain.CreditMemo,
        draw: domain.RefundDraw,
        records: store.OrderRecords,
        request_key: str,
        now: datetime,
    ) -> domain.Refund:
        """Refund one draw from its capture, through the gateway that took it."""
        method_type = next(
            (
                a.payment_method_type
                for a in records.authorizations
                if a.authorization_id == draw.capture.authorization_id
            ),
            domain.UNSPECIFIED,
        )
        gateway = self.gateways.calling(method_type)
        key = domain.gateway_key(
            memo.order_id, request_key, f"refund:{draw.capture.capture_id}", draw.amount_minor
        )
        result = await call_resolved(
            gateway,
            key,
            partial(
                gateway.refund,
                key,
                draw.capture.gateway_reference,
                draw.amount_minor,
                memo.currency,
            ),
        )
        return domain.record_refund(
            memo,
            draw,
            refund_id=new_id(),
            succeeded=result.succeeded,
            gateway_reference=result.reference,
            failure_reason=result.reason,
            now=now,
        )

    async def _release_draw(
        self,
        conn: asyncpg.Connection,
        memo: domain.CreditMemo,
        draw: domain.ReleaseDraw,
        request_key: str,
        now: datetime,
    ) -> domain.Reversal:
        """Release one draw from an authorization's hold (void when it is all that remains)."""
        authorization = draw.authorization
        gateway = self.gateways.calling(authorization.payment_method_type)
        key = domain.gateway_key(
            memo.order_id,
            request_key,
            f"release:{authorization.authorization_id}",
            draw.amount_minor,
        )
        ref = authorization.gateway_reference
        operation = (
            partial(gateway.void, key, ref)
            if draw.void
            else partial(gateway.reverse, key, ref, draw.amount_minor, authorization.currency)
        )
        result = await call_resolved(gateway, key, operation)
        reversal = domain.record_reversal(
            memo,
            draw,
            reversal_id=new_id(),
            succeeded=result.succeeded,
            gateway_reference=result.reference,
            failure_reason=result.reason,
            now=now,
        )
        await store.insert_reversal(conn, reversal)
        if result.succeeded:
            await store.update_authorization(
                conn, domain.released_from(authorization, draw.amount_minor, void=draw.void)
            )
        return reversal

    # ---- queries -----------------------------------------------------------------------

    async def GetPaymentSummary(
        self, request: payments_pb2.GetPaymentSummaryRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetPaymentSummaryResponse:
        domain.require(order_id=request.order_id)
        records = await store.records_of_order(self.pool, request.order_id)
        summary = domain.summarize(
            request.order_id,
            records.authorizations,
            records.captures,
            records.invoices,
            credit_memos=records.credit_memos,
            refunds=records.refunds,
            reversals=records.reversals,
        )
        return payments_pb2.GetPaymentSummaryResponse(
            summary=summary_pb(summary),
            authorizations=[authorization_pb(a) for a in records.authorizations],
            captures=[capture_pb(c) for c in records.captures],
            invoices=[invoice_pb(i) for i in records.invoices],
            credit_memos=memos_pb(records),
            refunds=[refund_pb(r) for r in records.refunds],
            reversals=[reversal_pb(r) for r in records.reversals],
        )

    async def ErasePersonalData(
        self, request: payments_pb2.ErasePersonalDataRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ErasePersonalDataResponse:
        changed = await erasure.erase_orders(
            self.pool,
            store.PERSONAL_COLUMNS,
            request.order_ids,
            [order_workflow_id(o) for o in request.order_ids],
            request.identifying_text,
        )
        return payments_pb2.ErasePersonalDataResponse(records_erased=changed)

    async def GetReconciliation(
        self, request: payments_pb2.GetReconciliationRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetReconciliationResponse:
        domain.require(order_id=request.order_id)
        records = await store.records_of_order(self.pool, request.order_id)
        reconciliation = domain.reconcile(
            request.order_id,
            records.authorizations,
            records.captures,
            records.invoices,
            credit_memos=records.credit_memos,
            refunds=records.refunds,
            reversals=records.reversals,
        )
        return payments_pb2.GetReconciliationResponse(
            reconciliation=reconciliation_pb(reconciliation)
        )
