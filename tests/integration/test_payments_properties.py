"""The payments properties again, over real gRPC and Postgres with the simulated gateways:
random orders (exponent 0, 2, 3; discounts, taxes, shipping; gift card then card) go through
partial invoices and captures, cancels, returns and appeasements with refunds now or later,
then finish; the service's own reconciliation must hold. Few examples: each is ~30 RPCs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from oms.common.v1 import common_pb2

from oms_tools.devstack.postgres import EmbeddedPostgres
from services.payments.domain import ChargeableLine, CreditableLine
from services.payments.simulated import SimulatedGateway
from tests.integration.test_payments_service import (
    Payments,
    migrated_settings,
    pb,
    running_payments,
    usd,
)
from tests.unit.test_payments_properties import OrderCase, OrderLedger, orders


@pytest.fixture(scope="module")
async def payments(postgres: EmbeddedPostgres) -> AsyncIterator[Payments]:
    """The payments service with a 24 h hold and no gateway limit."""
    settings = await migrated_settings(postgres, authorization_hold_hours=24)
    async with running_payments(settings) as running:
        yield running


class GrpcOrder:
    """One random order driven through the service as a workflow would."""

    def __init__(self, payments: Payments, case: OrderCase) -> None:
        self.payments, self.case = payments, case
        self.order_id = f"order-{uuid.uuid4()}"
        self.invoice_ids: list[str] = []
        self.pending: list[str] = []
        self.steps = 0
        self.over_asked = False

    def key(self, step: str) -> str:
        self.steps += 1
        return f"{self.order_id}:{step}:{self.steps}"

    def money(self, amount: int) -> common_pb2.Money:
        return usd(amount, self.case.currency)

    async def authorize(self) -> None:
        card = pb.PaymentMethod(type=pb.PAYMENT_METHOD_TYPE_CARD, token="tok_visa")
        methods = [card]
        if self.case.gift_card_balance:
            token = f"gc_{self.case.gift_card_balance}_{uuid.uuid4().hex[:8]}"
            methods.insert(0, pb.PaymentMethod(type=pb.PAYMENT_METHOD_TYPE_GIFT_CARD, token=token))
        response = await self.payments.stub.AuthorizePayment(
            pb.AuthorizePaymentRequest(
                order_id=self.order_id,
                idempotency_key=self.key("authorize"),
                payment_method=methods[0],
                additional_payment_methods=methods[1:],
                amount=self.money(self.case.total),
            )
        )
        assert response.status == pb.AUTHORIZATION_STATUS_APPROVED
        assert response.authorized == self.money(self.case.total)

    async def invoice(self, lines: list[ChargeableLine], shipping: int) -> int:
        c = self.case.currency
        response = await self.payments.stub.CreateInvoice(
            pb.CreateInvoiceRequest(
                order_id=self.order_id,
                fulfillment_order_id=f"fo-{len(self.invoice_ids)}",
                idempotency_key=self.key("invoice"),
                lines=[
                    pb.ChargeableLine(
                        order_line_id=x.order_line_id,
                        sku=x.sku,
                        quantity_ordered=x.quantity_ordered,
                        gross=usd(x.gross.amount_minor, c),
                        discount=usd(x.discount.amount_minor, c),
                        tax=usd(x.tax.amount_minor, c),
                        quantity_to_invoice=x.quantity_to_invoice,
                        quantity_invoiced_before=x.quantity_invoiced_before,
                    )
                    for x in lines
                ],
                shipping=self.money(shipping),
            )
        )
        self.invoice_ids.append(response.invoice.invoice_id)
        return len(self.invoice_ids) - 1

    async def capture(self, index: int) -> bool:
        """Capture what the invoice still owes; True once it is captured in full."""
        summary = await self.summary()
        invoice = next(i for i in summary.invoices if i.invoice_id == self.invoice_ids[index])
        done = [c for c in summary.captures if c.invoice_id == invoice.invoice_id]
        if invoice.captured == invoice.total and (invoice.total.amount_minor or done):
            return False
        response = await self.payments.stub.CaptureInvoice(
            pb.CaptureInvoiceRequest(
                invoice_id=invoice.invoice_id, idempotency_key=self.key("capture")
            )
        )
        assert response.status == pb.CAPTURE_STATUS_SUCCEEDED, response.failure_reason
        assert response.captured.amount_minor == (
            invoice.total.amount_minor - invoice.captured.amount_minor
        )
        return True

    async def credit_memo(
        self,
        kind: pb.CreditMemoKind.ValueType,
        lines: list[CreditableLine],
        *,
        shipping: int = 0,
        appeasement: pb.Appeasement | None = None,
    ) -> str:
        c = self.case.currency
        response = await self.payments.stub.CreateCreditMemo(
            pb.CreateCreditMemoRequest(
                order_id=self.order_id,
                idempotency_key=self.key("memo"),
                kind=kind,
                currency=c,
                lines=[
                    pb.CreditableLine(
                        order_line_id=x.order_line_id,
                        sku=x.sku,
                        quantity_ordered=x.quantity_ordered,
                        gross=usd(x.gross.amount_minor, c),
                        discount=usd(x.discount.amount_minor, c),
                        tax=usd(x.tax.amount_minor, c),
                        quantity_to_credit=x.quantity_to_credit,
                        first_unit=x.first_unit,
                    )
                    for x in lines
                ],
                shipping=self.money(shipping),
                appeasements=[appeasement] if appeasement else [],
            )
        )
        self.pending.append(response.credit_memo.credit_memo_id)
        return response.credit_memo.credit_memo_id

    async def give_back(self, credit_memo_id: str) -> None:
        response = await self.payments.stub.RefundCreditMemo(
            pb.RefundCreditMemoRequest(
                credit_memo_id=credit_memo_id, idempotency_key=self.key("refund")
            )
        )
        assert response.outcome != pb.REFUND_OUTCOME_FAILED, response.failure_reason
        self.over_asked |= response.outcome == pb.REFUND_OUTCOME_LIMITED
        self.pending.remove(credit_memo_id)

    async def summary(self) -> pb.GetPaymentSummaryResponse:
        return await self.payments.agent.GetPaymentSummary(
            pb.GetPaymentSummaryRequest(order_id=self.order_id)
        )


async def play(payments: Payments, case: OrderCase) -> GrpcOrder:
    ledger, order = OrderLedger(case), GrpcOrder(payments, case)
    await order.authorize()
    for kind, raw_line, amount, now in case.ops:
        if kind == "ship":
            shipped = ledger.ship(raw_line, amount % 5 + 1)
            if shipped:
                index = await order.invoice(*shipped)
                if now and await order.capture(index):
                    ledger.captured(index)
        elif kind == "capture" and order.invoice_ids:
            index = amount % len(order.invoice_ids)
            if await order.capture(index):
                ledger.captured(index)
        elif kind == "cancel":
            canceled = ledger.cancel(raw_line, amount % 5 + 1)
            if canceled:
                memo = await order.credit_memo(
                    pb.CREDIT_MEMO_KIND_CANCEL, canceled[0], shipping=canceled[1]
                )
                if now:
                    await order.give_back(memo)
        elif kind == "return":
            returned = ledger.return_units(raw_line, amount % 5 + 1)
            if returned:
                memo = await order.credit_memo(pb.CREDIT_MEMO_KIND_RETURN, returned)
                if now:
                    await order.give_back(memo)
        elif kind == "appease":
            line_id = "" if raw_line < 0 else case.lines[ledger.line_index(raw_line)].order_line_id
            try:
                memo = await order.credit_memo(
                    pb.CREDIT_MEMO_KIND_APPEASEMENT,
                    [],
                    appeasement=pb.Appeasement(order_line_id=line_id, percent_basis_points=amount),
                )
            except grpc.aio.AioRpcError as error:
                # Nothing captured for it yet: the service refuses, and nothing changed.
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
                continue
            if now:
                await order.give_back(memo)
        elif kind == "settle":
            for memo in list(order.pending):
                await order.give_back(memo)
    rest = ledger.ship_everything()
    if rest:
        await order.invoice(*rest)
    for index in range(len(order.invoice_ids)):
        if await order.capture(index):
            ledger.captured(index)
    for memo in list(order.pending):
        await order.give_back(memo)
    await payments.stub.VoidAuthorization(
        pb.VoidAuthorizationRequest(
            order_id=order.order_id, idempotency_key=order.key("void"), reason="order closed"
        )
    )
    return order


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=orders(max_lines=3, max_ops=12))
async def test_random_orders_reconcile_over_grpc(payments: Payments, case: OrderCase) -> None:
    order = await play(payments, case)
    found = await order.summary()
    reconciliation = (
        await payments.agent.GetReconciliation(pb.GetReconciliationRequest(order_id=order.order_id))
    ).reconciliation

    # Allocation: every unit was invoiced or canceled, to the minor unit.
    invoiced = sum(i.total.amount_minor for i in found.invoices)
    canceled = sum(
        m.total.amount_minor for m in found.credit_memos if m.kind == pb.CREDIT_MEMO_KIND_CANCEL
    )
    assert invoiced + canceled == case.total

    # Refunds never exceed captures, per capture and in total; the gateways agree.
    for capture in found.captures:
        given_back = sum(
            r.amount.amount_minor
            for r in found.refunds
            if r.capture_id == capture.capture_id and r.status == pb.REFUND_STATUS_SUCCEEDED
        )
        assert given_back <= capture.amount.amount_minor
    assert reconciliation.refunded.amount_minor <= reconciliation.captured.amount_minor
    gateway_refunds = sum(
        op.amount_minor
        for gateway in payments.gateways.adapters()
        if isinstance(gateway, SimulatedGateway)
        for op in gateway.operations_of("refund", succeeded=True)
        if op.key.startswith(order.order_id)
    )
    assert gateway_refunds == reconciliation.refunded.amount_minor

    # The identity: everything captured, nothing held, and the books agree unless an
    # appeasement asked for more than could be refunded (then exactly that is the difference).
    assert reconciliation.captured == reconciliation.invoiced
    assert reconciliation.authorized.amount_minor == 0
    assert reconciliation.difference == reconciliation.not_refunded
    assert reconciliation.agrees == (not order.over_asked)
