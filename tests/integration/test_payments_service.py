"""PaymentsService over real gRPC and real Postgres, with the simulated gateway it builds."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import auth, db, grpcutil
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from services.payments import bootstrap, domain
from services.payments.gateway import Gateways
from services.payments.sim_store import read_operations
from services.payments.simulated import SimulatedGateway, SimulatedGiftCardGateway
from tests.callers import channel_as

pb = payments_pb2
LIMIT_MINOR = 1_000_000


@dataclass
class Payments:
    """The running service's stub and the simulated gateways bootstrap built for it."""

    stub: payments_pb2_grpc.PaymentsServiceStub  # the worker's identity: the lifecycle's steps
    gateways: Gateways
    agent: payments_pb2_grpc.PaymentsServiceStub  # an agent's: summaries and reconciliation

    @property
    def gateway(self) -> SimulatedGateway:
        """The card gateway."""
        card = self.gateways.for_method("card")
        assert isinstance(card, SimulatedGateway)
        return card

    @property
    def gift_cards(self) -> SimulatedGiftCardGateway:
        """The gift card gateway."""
        gift = self.gateways.for_method("gift_card")
        assert isinstance(gift, SimulatedGiftCardGateway)
        return gift


async def migrated_settings(postgres: EmbeddedPostgres, **overrides: Any) -> Settings:
    """Settings for the payments service alone (migrates only its schema)."""
    await db.ensure_database(postgres.dsn)
    await db.migrate(postgres.dsn, bootstrap.SCHEMA, bootstrap.MIGRATIONS)
    return Settings.from_env(
        env={},
        database_url=postgres.dsn,
        db_pool_min=1,
        db_pool_max=5,
        log_format="console",
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_payments(settings: Settings) -> AsyncIterator[Payments]:
    """The service started the normal way; the test keeps the gateways bootstrap built."""
    built: list[Gateways] = []
    make_gateways = bootstrap.make_gateways

    def recording(settings: Settings) -> Gateways:
        gateways = make_gateways(settings)
        built.append(gateways)
        return gateways

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bootstrap, "make_gateways", recording)
        running = await start_service("payments", settings, port=0)
    (gateways,) = built
    try:
        address = f"127.0.0.1:{running.port}"
        async with (
            channel_as(settings, address, auth.WORKFLOW) as channel,
            channel_as(settings, address, auth.AGENT) as agent,
        ):
            yield Payments(
                payments_pb2_grpc.PaymentsServiceStub(channel),
                gateways,
                payments_pb2_grpc.PaymentsServiceStub(agent),
            )
    finally:
        await running.stop(0.5)


@pytest.fixture(scope="module")
async def payments(postgres: EmbeddedPostgres) -> AsyncIterator[Payments]:
    """The payments service with a 24 h hold and a gateway limit."""
    settings = await migrated_settings(
        postgres, authorization_hold_hours=24, gateway_decline_above_minor=LIMIT_MINOR
    )
    async with running_payments(settings) as running:
        yield running


def usd(amount_minor: int, currency: str = "USD") -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=currency)


def new_order() -> str:
    return f"order-{uuid.uuid4()}"


async def authorize(
    payments: Payments,
    order_id: str,
    amount_minor: int,
    *,
    token: str = "tok_visa",
    key: str | None = None,
    currency: str = "USD",
) -> pb.Authorization:
    response = await payments.stub.AuthorizePayment(
        pb.AuthorizePaymentRequest(
            order_id=order_id,
            idempotency_key=key or f"{order_id}:authorize",
            payment_method=pb.PaymentMethod(type=pb.PAYMENT_METHOD_TYPE_CARD, token=token),
            amount=usd(amount_minor, currency),
        )
    )
    return response.authorization


def chargeable(
    order_line_id: str,
    ordered: int,
    to_invoice: int,
    before: int,
    gross: int,
    discount: int = 0,
    tax: int = 0,
    currency: str = "USD",
) -> pb.ChargeableLine:
    return pb.ChargeableLine(
        order_line_id=order_line_id,
        sku=f"SKU-{order_line_id}",
        quantity_ordered=ordered,
        gross=usd(gross, currency),
        discount=usd(discount, currency),
        tax=usd(tax, currency),
        quantity_to_invoice=to_invoice,
        quantity_invoiced_before=before,
    )


async def invoice(
    payments: Payments,
    order_id: str,
    lines: list[pb.ChargeableLine],
    shipping: int = 0,
    *,
    shipment: str = "fo-1",
    currency: str = "USD",
) -> pb.Invoice:
    response = await payments.stub.CreateInvoice(
        pb.CreateInvoiceRequest(
            order_id=order_id,
            fulfillment_order_id=f"{order_id}:{shipment}",
            idempotency_key=f"{order_id}:invoice:{shipment}",
            lines=lines,
            shipping=usd(shipping, currency),
        )
    )
    return response.invoice


async def capture(payments: Payments, invoice_id: str, key: str | None = None) -> pb.Capture:
    response = await payments.stub.CaptureInvoice(
        pb.CaptureInvoiceRequest(
            invoice_id=invoice_id, idempotency_key=key or f"{invoice_id}:capture"
        )
    )
    return response.capture


async def summary_of(payments: Payments, order_id: str) -> pb.GetPaymentSummaryResponse:
    return await payments.agent.GetPaymentSummary(pb.GetPaymentSummaryRequest(order_id=order_id))


# ---- authorize -----------------------------------------------------------------------------


async def test_an_approved_authorization_holds_the_amount_until_it_expires(
    payments: Payments,
) -> None:
    order_id = new_order()
    before = datetime.now(UTC)
    auth = await authorize(payments, order_id, 12_345)
    assert auth.status == pb.AUTHORIZATION_STATUS_APPROVED
    assert (auth.amount.amount_minor, auth.amount.currency) == (12_345, "USD")
    assert auth.captured.amount_minor == 0
    assert auth.gateway_reference.startswith("sim_auth_")
    expires = auth.expires_at.ToDatetime(tzinfo=UTC)
    assert before + timedelta(hours=24) <= expires <= datetime.now(UTC) + timedelta(hours=24)

    found = await summary_of(payments, order_id)
    assert found.summary.authorized == usd(12_345)
    assert [a.authorization_id for a in found.authorizations] == [auth.authorization_id]


async def test_a_declined_card_is_an_answer_and_is_recorded(payments: Payments) -> None:
    order_id = new_order()
    auth = await authorize(payments, order_id, 5_000, token="tok_decline")
    assert auth.status == pb.AUTHORIZATION_STATUS_DECLINED
    assert auth.decline_reason == "card_declined"

    found = await summary_of(payments, order_id)
    assert found.summary.authorized == usd(0)
    assert [a.status for a in found.authorizations] == [pb.AUTHORIZATION_STATUS_DECLINED]


async def test_an_amount_above_the_gateway_limit_from_settings_is_declined(
    payments: Payments,
) -> None:
    auth = await authorize(payments, new_order(), LIMIT_MINOR + 1)
    assert auth.status == pb.AUTHORIZATION_STATUS_DECLINED
    assert auth.decline_reason == "amount_exceeds_limit"


async def test_authorizing_twice_with_one_key_is_one_authorization_and_one_charge(
    payments: Payments,
) -> None:
    order_id = new_order()
    first = await authorize(payments, order_id, 7_000)
    second = await authorize(payments, order_id, 7_000)
    assert second.authorization_id == first.authorization_id
    assert second.gateway_reference == first.gateway_reference
    ops = [op for op in payments.gateway.operations_of("authorize") if op.key.startswith(order_id)]
    assert len(ops) == 1
    assert len((await summary_of(payments, order_id)).authorizations) == 1


async def test_one_key_with_a_different_amount_is_refused_naming_the_key(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 7_000)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await authorize(payments, order_id, 7_001)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"{order_id}:authorize" in (raised.value.details() or "")


async def test_a_malformed_authorization_names_every_bad_field(payments: Payments) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payments.stub.AuthorizePayment(
            pb.AuthorizePaymentRequest(amount=usd(0, "ZZZ"), payment_method=pb.PaymentMethod())
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in grpcutil.field_violations(raised.value)} == {
        "order_id",
        "idempotency_key",
        "payment_method.token",
        "amount.amount_minor",
        "amount.currency",
    }


async def test_a_gateway_outage_answers_unavailable_and_a_retry_with_the_key_charges_once(
    payments: Payments,
) -> None:
    order_id = new_order()
    payments.gateway.transient_failure_rate = 1.0
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await authorize(payments, order_id, 3_000)
    finally:
        payments.gateway.transient_failure_rate = 0.0
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await summary_of(payments, order_id)).authorizations == []

    auth = await authorize(payments, order_id, 3_000)
    assert auth.status == pb.AUTHORIZATION_STATUS_APPROVED
    ops = [op for op in payments.gateway.operations_of("authorize") if op.key.startswith(order_id)]
    assert len(ops) == 1


# ---- invoice and capture -------------------------------------------------------------------


async def test_invoicing_two_shipments_and_capturing_both_settles_the_order(
    payments: Payments,
) -> None:
    order_id = new_order()
    line_total = 10_001 - 1_000 + 801
    auth = await authorize(payments, order_id, line_total + 599)

    first = await invoice(
        payments, order_id, [chargeable("ol-1", 3, 1, 0, 10_001, 1_000, 801)], 599, shipment="fo-1"
    )
    second = await invoice(
        payments, order_id, [chargeable("ol-1", 3, 2, 1, 10_001, 1_000, 801)], shipment="fo-2"
    )
    assert [ln.total.amount_minor for ln in first.lines] == [3_334 - 334 + 267]
    assert first.lines[0].total.amount_minor + second.lines[0].total.amount_minor == line_total
    assert first.total.amount_minor == first.lines[0].total.amount_minor + 599
    assert first.total.amount_minor + second.total.amount_minor == line_total + 599

    for inv in (first, second):
        cap = await capture(payments, inv.invoice_id)
        assert cap.status == pb.CAPTURE_STATUS_SUCCEEDED
        assert cap.amount == inv.total
        assert cap.authorization_id == auth.authorization_id

    found = await summary_of(payments, order_id)
    assert found.summary.invoiced == usd(line_total + 599)
    assert found.summary.captured == found.summary.invoiced
    assert found.summary.balance_due == usd(0)
    assert found.summary.refunded == usd(0)
    assert found.authorizations[0].captured == usd(line_total + 599)
    assert [i.captured for i in found.invoices] == [first.total, second.total]


async def test_a_capture_replayed_with_its_key_is_the_same_capture(payments: Payments) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    inv = await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    first = await capture(payments, inv.invoice_id, key="k1")
    again = await capture(payments, inv.invoice_id, key="k1")
    assert again.capture_id == first.capture_id
    assert len((await summary_of(payments, order_id)).captures) == 1


async def test_capturing_a_captured_invoice_is_refused(payments: Payments) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    inv = await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    await capture(payments, inv.invoice_id, key=f"{order_id}:capture:1")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture(payments, inv.invoice_id, key=f"{order_id}:capture:2")
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == f"invoice {inv.invoice_id} is already captured"


async def test_a_capture_the_processor_refuses_is_a_failed_capture_with_its_reason(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000, token="tok_fail_capture")
    inv = await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    cap = await capture(payments, inv.invoice_id)
    assert cap.status == pb.CAPTURE_STATUS_FAILED
    assert cap.failure_reason == "processor_unavailable"
    assert cap.amount == usd(4_000)

    found = await summary_of(payments, order_id)
    assert found.summary.captured == usd(0)
    assert found.summary.balance_due == usd(4_000)
    assert found.authorizations[0].captured == usd(0)


async def test_a_capture_beyond_the_authorization_fails_as_insufficient(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 3_000)
    inv = await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 3_000)], 1)
    cap = await capture(payments, inv.invoice_id)
    assert cap.status == pb.CAPTURE_STATUS_FAILED
    assert cap.failure_reason == "insufficient_authorization"
    assert cap.authorization_id == ""
    captures = [
        op for op in payments.gateway.operations_of("capture") if op.key.startswith(order_id)
    ]
    assert captures == []


async def invoice_and_capture(
    payments: Payments, order_id: str, amount_minor: int, capture_key: str
) -> pb.CreateInvoiceResponse:
    return await payments.stub.CreateInvoice(
        pb.CreateInvoiceRequest(
            order_id=order_id,
            fulfillment_order_id=f"{order_id}:fo-1",
            idempotency_key=f"{order_id}:invoice:fo-1",
            lines=[chargeable("ol-1", 1, 1, 0, amount_minor)],
            shipping=usd(0),
            capture_idempotency_key=capture_key,
        )
    )


async def test_an_invoice_asked_with_its_capture_is_invoiced_and_captured_in_one_call(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    answer = await invoice_and_capture(payments, order_id, 4_000, f"{order_id}:capture")
    assert answer.invoice.total == usd(4_000)
    assert answer.capture.status == pb.CAPTURE_STATUS_SUCCEEDED
    assert answer.capture.captured == usd(4_000) and answer.capture_refused == ""
    # Retried (the worker died before recording it): the same invoice and the same capture.
    again = await invoice_and_capture(payments, order_id, 4_000, f"{order_id}:capture")
    assert again.invoice.invoice_id == answer.invoice.invoice_id
    assert again.capture.capture.capture_id == answer.capture.capture.capture_id
    found = await summary_of(payments, order_id)
    assert len(found.invoices) == 1 and len(found.captures) == 1
    assert found.summary.captured == usd(4_000) and found.summary.balance_due == usd(0)
    captures = [
        op for op in payments.gateway.operations_of("capture") if op.key.startswith(order_id)
    ]
    assert len(captures) == 1


async def test_a_declined_or_refused_capture_with_the_invoice_leaves_the_invoice_standing(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000, token="tok_fail_capture")
    declined = await invoice_and_capture(payments, order_id, 4_000, f"{order_id}:capture")
    assert declined.capture.status == pb.CAPTURE_STATUS_FAILED
    assert declined.capture.failure_reason == "processor_unavailable"
    assert (await summary_of(payments, order_id)).summary.balance_due == usd(4_000)

    # Captured since by CaptureInvoice: asking again with another capture key replays the
    # invoice and answers the capture's refusal instead of failing the call.
    other = new_order()
    await authorize(payments, other, 5_000)
    inv = await invoice(payments, other, [chargeable("ol-1", 1, 1, 0, 4_000)])
    await capture(payments, inv.invoice_id, key=f"{other}:capture:1")
    refused = await invoice_and_capture(payments, other, 4_000, f"{other}:capture:2")
    assert refused.invoice.invoice_id == inv.invoice_id
    assert not refused.HasField("capture")
    assert refused.capture_refused == (
        f"FAILED_PRECONDITION: invoice {inv.invoice_id} is already captured"
    )
    assert (await summary_of(payments, other)).summary.captured == usd(4_000)


async def test_a_gateway_timeout_after_charging_records_the_capture_exactly_once(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    inv = await invoice(payments, order_id, [chargeable("ol-1", 2, 2, 0, 4_500)])
    key = f"{order_id}:capture"
    payments.gateway.timeout_after_charge = True
    try:
        cap = await capture(payments, inv.invoice_id, key=key)
    finally:
        payments.gateway.timeout_after_charge = False
    assert cap.status == pb.CAPTURE_STATUS_SUCCEEDED
    assert cap.amount == usd(4_500)

    charges = [
        op for op in payments.gateway.operations_of("capture") if op.key.startswith(order_id)
    ]
    assert len(charges) == 1
    assert charges[0].result.reference == cap.gateway_reference
    gateway_key = domain.gateway_key(order_id, key, f"capture:{cap.authorization_id}", 4_500)
    assert charges[0].key == gateway_key
    assert ("lookup", gateway_key) in payments.gateway.calls

    again = await capture(payments, inv.invoice_id, key=key)
    assert again.capture_id == cap.capture_id
    found = await summary_of(payments, order_id)
    assert [c.capture_id for c in found.captures] == [cap.capture_id]
    assert found.summary.captured == usd(4_500)


async def test_a_malformed_invoice_names_every_bad_field(payments: Payments) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payments.stub.CreateInvoice(
            pb.CreateInvoiceRequest(
                order_id="o",
                fulfillment_order_id="fo",
                idempotency_key=f"bad-{uuid.uuid4()}",
                lines=[chargeable("ol-1", 2, 2, 1, 100), chargeable("ol-2", 1, 1, 0, 100, tax=8)],
                shipping=usd(100, "EUR"),
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in grpcutil.field_violations(raised.value)} == {
        "lines[0].quantity_to_invoice",
        "shipping.currency",
    }


async def test_creating_an_invoice_twice_with_one_key_is_one_invoice(payments: Payments) -> None:
    order_id = new_order()
    lines = [chargeable("ol-1", 1, 1, 0, 1_500, currency="JPY")]
    first = await invoice(payments, order_id, lines, currency="JPY")
    again = await invoice(payments, order_id, lines, currency="JPY")
    assert again.invoice_id == first.invoice_id
    found = await summary_of(payments, order_id)
    assert len(found.invoices) == 1
    assert found.summary.invoiced == usd(1_500, "JPY")


async def test_capturing_an_unknown_invoice_is_not_found(payments: Payments) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture(payments, f"missing-{uuid.uuid4()}")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


# ---- void and summary ----------------------------------------------------------------------


async def test_a_void_releases_every_approved_authorization_of_the_order(
    payments: Payments,
) -> None:
    order_id = new_order()
    first = await authorize(payments, order_id, 2_000, key=f"{order_id}:a1")
    second = await authorize(payments, order_id, 3_000, key=f"{order_id}:a2")
    declined = await authorize(payments, order_id, 1_000, key=f"{order_id}:a3", token="tok_decline")
    request = pb.VoidAuthorizationRequest(
        order_id=order_id, idempotency_key=f"{order_id}:void", reason="order canceled"
    )
    response = await payments.stub.VoidAuthorization(request)
    statuses = {a.authorization_id: a.status for a in response.authorizations}
    assert statuses == {
        first.authorization_id: pb.AUTHORIZATION_STATUS_VOIDED,
        second.authorization_id: pb.AUTHORIZATION_STATUS_VOIDED,
        declined.authorization_id: pb.AUTHORIZATION_STATUS_DECLINED,
    }
    voids = [op for op in payments.gateway.operations_of("void") if op.key.startswith(order_id)]
    assert sorted(op.reference for op in voids) == sorted(
        [first.gateway_reference, second.gateway_reference]
    )

    replay = await payments.stub.VoidAuthorization(request)
    assert replay == response
    assert (await summary_of(payments, order_id)).summary.authorized == usd(0)

    inv = await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 1_000)])
    cap = await capture(payments, inv.invoice_id)
    assert cap.failure_reason == "insufficient_authorization"


async def test_the_summary_of_an_unknown_order_is_empty(payments: Payments) -> None:
    found = await summary_of(payments, new_order())
    assert found.summary.authorized == common_pb2.Money(amount_minor=0, currency="")
    assert found.summary.balance_due.amount_minor == 0
    assert list(found.authorizations) == list(found.captures) == list(found.invoices) == []


async def test_a_key_used_for_one_call_never_replays_for_another(payments: Payments) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    inv = await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 5_000)])
    key = f"{order_id}:shared-key"
    # A void naming the invoice's id as its order: the same bytes as the capture below.
    void = pb.VoidAuthorizationRequest(order_id=inv.invoice_id, idempotency_key=key)
    capture_request = pb.CaptureInvoiceRequest(invoice_id=inv.invoice_id, idempotency_key=key)
    assert void.SerializeToString() == capture_request.SerializeToString()
    await payments.stub.VoidAuthorization(void)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await payments.stub.CaptureInvoice(capture_request)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "another call" in (refused.value.details() or "")
    # Nothing was charged for it; the capture with a key of its own is performed.
    assert (await summary_of(payments, order_id)).summary.captured == usd(0)
    cap = await capture(payments, inv.invoice_id)
    assert cap.status == pb.CAPTURE_STATUS_SUCCEEDED and cap.amount == usd(5_000)
    # The void's key still replays the void.
    assert (await payments.stub.VoidAuthorization(void)).authorizations == []


async def test_the_simulated_processor_remembers_across_a_payments_restart(
    postgres: EmbeddedPostgres,
) -> None:
    settings = await migrated_settings(postgres)
    order_id = new_order()
    async with running_payments(settings) as before:
        auth_ = await authorize(before, order_id, 4_000)
        inv = await invoice(before, order_id, [chargeable("ol-1", 2, 1, 0, 4_000)])
    # A new process: nothing of the first one's memory survives, only what the processor kept.
    async with running_payments(settings) as after:
        cap = await capture(after, inv.invoice_id)
        assert cap.status == pb.CAPTURE_STATUS_SUCCEEDED, cap.failure_reason
        assert cap.amount == usd(2_000)
        # The same gateway key asked again (a retry after the crash) is the same effect.
        card = after.gateways.for_method("card")
        key = f"{order_id}:retried-after-restart"
        first = await card.capture(key, auth_.gateway_reference, 500, "USD")
    async with running_payments(settings) as third:
        again = await third.gateways.for_method("card").capture(
            key, auth_.gateway_reference, 500, "USD"
        )
    assert again == first and first.succeeded
    # The processor's own log, kept with its books, holds each effect once.
    captures = [
        op
        for op in await read_operations(settings.dsn)
        if op.kind == "capture" and op.key.startswith(order_id)
    ]
    assert [op.amount_minor for op in captures] == [2_000, 500]


async def test_an_authorization_whose_caller_gives_up_mid_call_is_still_recorded(
    postgres: EmbeddedPostgres,
) -> None:
    """The worker calling AuthorizePayment dies (here: its deadline passes) after the gateway
    placed the hold and before payments committed its record: the hold is recorded all the
    same, and the caller's retry is answered from that record, with no second hold."""
    settings = await migrated_settings(postgres, authorization_hold_hours=24)
    async with running_payments(settings) as running:
        order_id = new_order()
        blocker = await asyncpg.connect(postgres.dsn)
        try:
            # Inserts into the authorizations wait while this lock is held: the gateway call
            # is made, the record cannot be written yet.
            locked = blocker.transaction()
            await locked.start()
            await blocker.execute("LOCK TABLE payments.authorizations IN SHARE MODE")
            with pytest.raises(grpc.aio.AioRpcError) as gave_up:
                await running.stub.AuthorizePayment(
                    pb.AuthorizePaymentRequest(
                        order_id=order_id,
                        idempotency_key=f"{order_id}:authorize",
                        payment_method=pb.PaymentMethod(
                            type=pb.PAYMENT_METHOD_TYPE_CARD, token="tok_visa"
                        ),
                        amount=usd(4_200),
                    ),
                    timeout=1.0,
                )
            assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            holds = [
                op
                for op in running.gateway.operations_of("authorize")
                if op.key.startswith(order_id)
            ]
            assert len(holds) == 1  # the gateway holds the money
            await locked.rollback()
        finally:
            await blocker.close()
        deadline = asyncio.get_running_loop().time() + 10
        while not (await summary_of(running, order_id)).authorizations:
            assert asyncio.get_running_loop().time() < deadline, "the hold was never recorded"
            await asyncio.sleep(0.05)
        (recorded,) = (await summary_of(running, order_id)).authorizations
        assert recorded.gateway_reference == holds[0].reference
        retried = await authorize(running, order_id, 4_200)
        assert retried.authorization_id == recorded.authorization_id
        assert [
            op for op in running.gateway.operations_of("authorize") if op.key.startswith(order_id)
        ] == holds
