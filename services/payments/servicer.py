"""PaymentsService over gRPC: decode the request, call the use case in `handlers`, encode.

Mutating RPCs run their use case inside `db.idempotent`, which stores the encoded answer in
the same transaction; a gateway whose outcome stays unknown (GatewayError) rolls it back and
the RPC answers UNAVAILABLE, so the caller retries with the same key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.message import Message
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import db, grpcutil
from oms_platform.errors import DomainError, Unavailable
from services.payments import convert, domain, handlers
from services.payments.gateway import GatewayError, Gateways

M = TypeVar("M", bound=Message)
T = TypeVar("T")


def _settled_alone(work: asyncio.Future[Any]) -> None:
    """Take the outcome of a call its caller left: the caller retries and is answered from the
    record, so a failure here is only read (an unread one would be logged as never retrieved)."""
    if not work.cancelled():
        work.exception()


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    """The PaymentsService RPCs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateways: Gateways,
        *,
        hold_hours: int,
        renewal: domain.RenewalRule,
        clock: Callable[[], datetime] = handlers.utc_now,
    ) -> None:
        self.pool = pool
        self.payments = handlers.Payments(gateways, hold_hours, renewal, clock)
        # Calls running to their commit (see `_idempotent`), their callers gone or not.
        self._in_flight: set[asyncio.Future[Any]] = set()

    async def cut_off(self) -> None:
        """At shutdown, once the grace is over: cancel the calls still running, as a server
        cuts off every call past its grace (nothing of theirs commits; callers retry with the
        same key)."""
        running = list(self._in_flight)
        for work in running:
            work.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _idempotent(
        self,
        context: grpc.aio.ServicerContext,
        key: str,
        request: Message,
        response_type: type[M],
        use_case: Callable[[Any], Awaitable[T]],
        encode: Callable[[T], M],
    ) -> M:
        # Run to its commit even when the caller goes away (its worker killed, its deadline
        # passed): what the gateway already did (a hold on a card) is recorded, and the caller's
        # retry with the same key is answered from that record. Cancelled with the call, the
        # transaction would roll back and leave the gateway's effect unknown to payments.
        async def call() -> M:
            answer, _ = await db.idempotent(
                self.pool, key, request, response_type, use_case, encode
            )
            return answer

        work = asyncio.ensure_future(call())
        self._in_flight.add(work)
        work.add_done_callback(self._in_flight.discard)
        work.add_done_callback(_settled_alone)
        try:
            response = await asyncio.shield(work)
        except GatewayError as error:
            # Not a refusal: the outcome is unknown, so the caller retries with the same key.
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"payment gateway: {error}")
        return response

    async def AuthorizePayment(
        self, request: payments_pb2.AuthorizePaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.AuthorizePaymentResponse:
        wanted = convert.authorization_request_from_pb(request)
        domain.validate_authorization(wanted)
        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.AuthorizePaymentResponse,
            lambda conn: handlers.authorize(conn, self.payments, wanted),
            convert.authorized_pb,
        )

    async def CreateInvoice(
        self, request: payments_pb2.CreateInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CreateInvoiceResponse:
        invoice = handlers.draft_invoice(self.payments, convert.invoice_request_from_pb(request))
        # The invoice's record is the invoice alone: asked again with or without a capture,
        # the same invoice request replays the same invoice.
        invoice_part = payments_pb2.CreateInvoiceRequest()
        invoice_part.CopyFrom(request)
        invoice_part.ClearField("capture_idempotency_key")
        created = await self._idempotent(
            context,
            request.idempotency_key,
            invoice_part,
            payments_pb2.CreateInvoiceResponse,
            lambda conn: handlers.create_invoice(conn, invoice),
            convert.invoice_created_pb,
        )
        if not request.capture_idempotency_key:
            return created
        # The capture keeps an idempotency record of its own (as CaptureInvoice's), so a retry
        # of this call replays the invoice and then the capture. A refusal is part of the
        # answer, not an error: the invoice stands either way. An outage (or an unknown
        # gateway outcome) is an error, and the caller retries the whole call with its keys.
        capture = payments_pb2.CaptureInvoiceRequest(
            invoice_id=created.invoice.invoice_id, idempotency_key=request.capture_idempotency_key
        )
        captured, refused = await _refused_in_answer(self.CaptureInvoice(capture, context))
        if captured is None:
            return payments_pb2.CreateInvoiceResponse(
                invoice=created.invoice, capture_refused=refused
            )
        return payments_pb2.CreateInvoiceResponse(invoice=created.invoice, capture=captured)

    async def CaptureInvoice(
        self, request: payments_pb2.CaptureInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CaptureInvoiceResponse:
        domain.require(invoice_id=request.invoice_id, idempotency_key=request.idempotency_key)
        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.CaptureInvoiceResponse,
            lambda conn: handlers.capture_invoice(
                conn, self.payments, request.invoice_id, request.idempotency_key
            ),
            convert.captured_pb,
        )

    async def VoidAuthorization(
        self, request: payments_pb2.VoidAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.VoidAuthorizationResponse:
        domain.require(order_id=request.order_id, idempotency_key=request.idempotency_key)
        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.VoidAuthorizationResponse,
            lambda conn: handlers.void_authorizations(
                conn, self.payments, request.order_id, request.idempotency_key
            ),
            convert.voided_pb,
        )

    async def RenewAuthorizations(
        self, request: payments_pb2.RenewAuthorizationsRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.RenewAuthorizationsResponse:
        promised = convert.promised_day_from_pb(request)
        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.RenewAuthorizationsResponse,
            lambda conn: handlers.renew_authorizations(
                conn, self.payments, request.order_id, request.idempotency_key, promised
            ),
            convert.renewed_pb,
        )

    async def CreateCreditMemo(
        self, request: payments_pb2.CreateCreditMemoRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.CreateCreditMemoResponse:
        wanted = convert.credit_memo_request_from_pb(request)
        domain.require(order_id=wanted.order_id, idempotency_key=wanted.idempotency_key)
        refund_key = request.refund_idempotency_key
        void_key = request.void_remaining_idempotency_key
        domain.check_give_back_keys(request.idempotency_key, refund_key, void_key)
        # The memo's record is the memo alone: asked again with or without its refund (and
        # void), the same memo request replays the same memo.
        memo_part = payments_pb2.CreateCreditMemoRequest()
        memo_part.CopyFrom(request)
        memo_part.ClearField("refund_idempotency_key")
        memo_part.ClearField("void_remaining_idempotency_key")
        created = await self._idempotent(
            context,
            request.idempotency_key,
            memo_part,
            payments_pb2.CreateCreditMemoResponse,
            lambda conn: handlers.create_credit_memo(conn, self.payments, wanted),
            convert.credit_memo_created_pb,
        )
        if not refund_key:
            return created
        # The refund and the void keep idempotency records of their own (as RefundCreditMemo's
        # and VoidAuthorization's), so a retry of this call replays the memo, then the refund,
        # then the void. A refusal is part of the answer, not an error: what was made before it
        # stands. An outage (or an unknown gateway outcome) is an error, and the caller retries
        # the whole call with its keys.
        answer = payments_pb2.CreateCreditMemoResponse(credit_memo=created.credit_memo)
        refund = payments_pb2.RefundCreditMemoRequest(
            credit_memo_id=created.credit_memo.credit_memo_id, idempotency_key=refund_key
        )
        refunded, answer.refund_refused = await _refused_in_answer(
            self.RefundCreditMemo(refund, context)
        )
        if refunded is None:
            return answer
        answer.refund.CopyFrom(refunded)
        # A failed refund leaves money the caller has still to give back (its hold-and-retry
        # decides how); voiding now would release the holds that money is to come from.
        if not void_key or refunded.outcome == payments_pb2.REFUND_OUTCOME_FAILED:
            return answer
        void = payments_pb2.VoidAuthorizationRequest(
            order_id=request.order_id, idempotency_key=void_key, reason=request.reason
        )
        voided, answer.void_refused = await _refused_in_answer(
            self.VoidAuthorization(void, context)
        )
        if voided is not None:
            answer.void_remaining.CopyFrom(voided)
        return answer

    async def RefundCreditMemo(
        self, request: payments_pb2.RefundCreditMemoRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.RefundCreditMemoResponse:
        domain.require(
            credit_memo_id=request.credit_memo_id, idempotency_key=request.idempotency_key
        )
        return await self._idempotent(
            context,
            request.idempotency_key,
            request,
            payments_pb2.RefundCreditMemoResponse,
            lambda conn: handlers.refund_credit_memo(
                conn, self.payments, request.credit_memo_id, request.idempotency_key
            ),
            convert.refunded_pb,
        )

    async def GetPaymentSummary(
        self, request: payments_pb2.GetPaymentSummaryRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetPaymentSummaryResponse:
        domain.require(order_id=request.order_id)
        summary, records = await handlers.payment_summary(self.pool, request.order_id)
        return convert.payment_summary_pb(summary, records)

    async def ErasePersonalData(
        self, request: payments_pb2.ErasePersonalDataRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ErasePersonalDataResponse:
        changed = await handlers.erase_personal_data(
            self.pool, request.order_ids, request.identifying_text
        )
        return payments_pb2.ErasePersonalDataResponse(records_erased=changed)

    async def GetReconciliation(
        self, request: payments_pb2.GetReconciliationRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetReconciliationResponse:
        domain.require(order_id=request.order_id)
        reconciliation = await handlers.reconciliation(self.pool, request.order_id)
        return payments_pb2.GetReconciliationResponse(
            reconciliation=convert.reconciliation_pb(reconciliation)
        )


async def _refused_in_answer(call: Awaitable[M]) -> tuple[M | None, str]:
    """A follow-up call's answer, or None and its refusal as "CODE: message" (what the call
    alone would have answered as an error). An outage stays an error, to be retried."""
    try:
        return await call, ""
    except Unavailable:
        raise
    except DomainError as refused:
        code, _ = grpcutil.status_for(refused)
        return None, f"{code.name}: {refused.message}"
