"""PaymentsService over gRPC: converts wire types to domain types and back, and delegates.

Each mutating RPC runs in one `db.idempotent` transaction: load (locking) the records, let
the domain decide, ask the gateway (outcome resolved by key), store, answer. If the gateway's
outcome stays unknown the transaction rolls back and the RPC answers UNAVAILABLE; the caller
retries with the same key and the gateway's own key dedupe keeps it to one effect.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import asyncpg
import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import db
from oms_platform.errors import FailedPrecondition, NotFound
from services.payments import domain, store
from services.payments.gateway import GatewayError, PaymentGateway, call_resolved

M = TypeVar("M", bound=Message)

# ---- enum tables ---------------------------------------------------------------------------

PAYMENT_METHOD_TYPE_FROM_PB: dict[int, str] = {
    payments_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED: domain.UNSPECIFIED,
    payments_pb2.PAYMENT_METHOD_TYPE_CARD: domain.CARD,
    payments_pb2.PAYMENT_METHOD_TYPE_GIFT_CARD: domain.GIFT_CARD,
    payments_pb2.PAYMENT_METHOD_TYPE_INVOICE_TERMS: domain.INVOICE_TERMS,
}
AUTHORIZATION_STATUS_TO_PB: dict[str, payments_pb2.AuthorizationStatus.ValueType] = {
    domain.APPROVED: payments_pb2.AUTHORIZATION_STATUS_APPROVED,
    domain.DECLINED: payments_pb2.AUTHORIZATION_STATUS_DECLINED,
    domain.VOIDED: payments_pb2.AUTHORIZATION_STATUS_VOIDED,
}
CAPTURE_STATUS_TO_PB: dict[str, payments_pb2.CaptureStatus.ValueType] = {
    domain.SUCCEEDED: payments_pb2.CAPTURE_STATUS_SUCCEEDED,
    domain.FAILED: payments_pb2.CAPTURE_STATUS_FAILED,
}

# ---- wire -> domain ------------------------------------------------------------------------


def money_from_pb(m: common_pb2.Money) -> domain.Money:
    return domain.Money(amount_minor=m.amount_minor, currency=m.currency)


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
    )


# ---- domain -> wire ------------------------------------------------------------------------


def timestamp_pb(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def money_pb(amount_minor: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=currency)


def authorization_pb(a: domain.Authorization) -> payments_pb2.Authorization:
    return payments_pb2.Authorization(
        authorization_id=a.authorization_id,
        order_id=a.order_id,
        status=AUTHORIZATION_STATUS_TO_PB[a.status],
        amount=money_pb(a.amount_minor, a.currency),
        captured=money_pb(a.captured_minor, a.currency),
        gateway_reference=a.gateway_reference,
        decline_reason=a.decline_reason,
        expires_at=timestamp_pb(a.expires_at),
    )


def capture_pb(c: domain.Capture) -> payments_pb2.Capture:
    return payments_pb2.Capture(
        capture_id=c.capture_id,
        invoice_id=c.invoice_id,
        authorization_id=c.authorization_id,
        status=CAPTURE_STATUS_TO_PB[c.status],
        amount=money_pb(c.amount_minor, c.currency),
        gateway_reference=c.gateway_reference,
        failure_reason=c.failure_reason,
        created_at=timestamp_pb(c.created_at),
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
                gross=money_pb(line.gross_minor, i.currency),
                discount=money_pb(line.discount_minor, i.currency),
                tax=money_pb(line.tax_minor, i.currency),
                total=money_pb(line.total_minor, i.currency),
            )
            for line in i.lines
        ],
        shipping=money_pb(i.shipping_minor, i.currency),
        total=money_pb(i.total_minor, i.currency),
        captured=money_pb(i.captured_minor, i.currency),
        created_at=timestamp_pb(i.created_at),
    )


def summary_pb(s: domain.PaymentSummary) -> payments_pb2.PaymentSummary:
    return payments_pb2.PaymentSummary(
        order_id=s.order_id,
        authorized=money_pb(s.authorized_minor, s.currency),
        captured=money_pb(s.captured_minor, s.currency),
        refunded=money_pb(s.refunded_minor, s.currency),
        invoiced=money_pb(s.invoiced_minor, s.currency),
        balance_due=money_pb(s.balance_due_minor, s.currency),
    )


# ---- gateway keys: derived from the request's key, one per gateway operation ------------


def authorize_key(key: str) -> str:
    return f"{key}:authorize"


def capture_key(key: str) -> str:
    return f"{key}:capture"


def void_key(key: str, authorization_id: str) -> str:
    return f"{key}:void:{authorization_id}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    """The PaymentsService RPCs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateway: PaymentGateway,
        *,
        hold_hours: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.pool = pool
        self.gateway = gateway
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
            response, _ = await db.idempotent(self.pool, key, request, response_type, action)
        except GatewayError as error:
            # Not a refusal: the outcome is unknown, so the caller retries with the same key.
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"payment gateway: {error}")
        return response

    async def AuthorizePayment(
        self, request: payments_pb2.AuthorizePaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.AuthorizePaymentResponse:
        wanted = authorization_request_from_pb(request)
        domain.validate_authorization(wanted)
        key = authorize_key(request.idempotency_key)

        async def action(conn: asyncpg.Connection) -> payments_pb2.AuthorizePaymentResponse:
            result = await call_resolved(
                self.gateway,
                key,
                lambda: self.gateway.authorize(
                    key, wanted.token, wanted.amount.amount_minor, wanted.amount.currency
                ),
            )
            authorization = domain.record_authorization(
                wanted,
                authorization_id=new_id(),
                approved=result.approved,
                gateway_reference=result.reference,
                decline_reason=result.reason,
                now=self.clock(),
                hold_hours=self.hold_hours,
            )
            await store.insert_authorization(conn, authorization)
            return payments_pb2.AuthorizePaymentResponse(
                authorization=authorization_pb(authorization)
            )

        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.AuthorizePaymentResponse,
            action,
        )

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
        key = capture_key(request.idempotency_key)

        async def action(conn: asyncpg.Connection) -> payments_pb2.CaptureInvoiceResponse:
            found = await store.lock_invoice(conn, request.invoice_id)
            if found is None:
                raise NotFound(f"invoice {request.invoice_id} not found")
            invoice, captures = found
            authorizations = await store.authorizations_of_order(conn, invoice.order_id, lock=True)
            now = self.clock()
            plan = domain.plan_capture(invoice, captures, authorizations, now)
            succeeded, reference, reason = not plan.failure_reason, "", plan.failure_reason
            if plan.authorization is not None:
                authorization = plan.authorization
                result = await call_resolved(
                    self.gateway,
                    key,
                    lambda: self.gateway.capture(
                        key, authorization.gateway_reference, plan.amount_minor, invoice.currency
                    ),
                )
                succeeded, reference, reason = result.succeeded, result.reference, result.reason
                if succeeded:
                    await store.update_authorization(
                        conn, domain.captured_from(authorization, plan.amount_minor)
                    )
            capture = domain.record_capture(
                invoice,
                plan,
                capture_id=new_id(),
                succeeded=succeeded,
                gateway_reference=reference,
                failure_reason=reason,
                now=now,
            )
            await store.insert_capture(conn, capture)
            return payments_pb2.CaptureInvoiceResponse(capture=capture_pb(capture))

        return await self._idempotent(
            context, request.idempotency_key, request, payments_pb2.CaptureInvoiceResponse, action
        )

    async def VoidAuthorization(
        self, request: payments_pb2.VoidAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.VoidAuthorizationResponse:
        domain.require(order_id=request.order_id, idempotency_key=request.idempotency_key)

        async def action(conn: asyncpg.Connection) -> payments_pb2.VoidAuthorizationResponse:
            authorizations = await store.authorizations_of_order(conn, request.order_id, lock=True)
            for authorization in domain.authorizations_to_void(authorizations):
                key = void_key(request.idempotency_key, authorization.authorization_id)
                void = partial(self.gateway.void, key, authorization.gateway_reference)
                result = await call_resolved(self.gateway, key, void)
                if not result.succeeded:
                    raise FailedPrecondition(
                        f"the gateway refused to void authorization "
                        f"{authorization.authorization_id}: {result.reason}"
                    )
                await store.update_authorization(conn, domain.voided(authorization))
            after = await store.authorizations_of_order(conn, request.order_id)
            return payments_pb2.VoidAuthorizationResponse(
                authorizations=[authorization_pb(a) for a in after]
            )

        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.VoidAuthorizationResponse,
            action,
        )

    async def GetPaymentSummary(
        self, request: payments_pb2.GetPaymentSummaryRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetPaymentSummaryResponse:
        domain.require(order_id=request.order_id)
        authorizations, captures, invoices = await store.records_of_order(
            self.pool, request.order_id
        )
        summary = domain.summarize(request.order_id, authorizations, captures, invoices)
        return payments_pb2.GetPaymentSummaryResponse(
            summary=summary_pb(summary),
            authorizations=[authorization_pb(a) for a in authorizations],
            captures=[capture_pb(c) for c in captures],
            invoices=[invoice_pb(i) for i in invoices],
        )
