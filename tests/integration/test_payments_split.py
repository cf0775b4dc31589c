"""PaymentsService over real gRPC: several payment methods per order, captures drawing on
several authorizations, and expired authorizations held anew at capture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from oms_tools.devstack.postgres import EmbeddedPostgres
from services.payments import domain
from tests.integration.test_payments_service import (
    Payments,
    capture,
    chargeable,
    invoice,
    migrated_settings,
    new_order,
    pb,
    running_payments,
    summary_of,
    usd,
)


@pytest.fixture(scope="module")
async def payments(postgres: EmbeddedPostgres) -> AsyncIterator[Payments]:
    """The payments service with a 24 h hold."""
    settings = await migrated_settings(postgres, authorization_hold_hours=24)
    async with running_payments(settings) as running:
        yield running


@pytest.fixture(scope="module")
async def lapsing(postgres: EmbeddedPostgres) -> AsyncIterator[Payments]:
    """A payments service whose authorizations expire as soon as they are made."""
    settings = await migrated_settings(postgres, authorization_hold_hours=0)
    async with running_payments(settings) as running:
        yield running


def gift_card(balance_minor: int) -> pb.PaymentMethod:
    """A fresh gift card token holding `balance_minor`."""
    return pb.PaymentMethod(
        type=pb.PAYMENT_METHOD_TYPE_GIFT_CARD, token=f"gc_{balance_minor}_{uuid.uuid4().hex[:8]}"
    )


def card(token: str = "tok_visa") -> pb.PaymentMethod:
    return pb.PaymentMethod(type=pb.PAYMENT_METHOD_TYPE_CARD, token=token)


async def authorize_with(
    payments: Payments,
    order_id: str,
    amount_minor: int,
    *methods: pb.PaymentMethod,
    key: str | None = None,
) -> pb.AuthorizePaymentResponse:
    first, *rest = methods
    return await payments.stub.AuthorizePayment(
        pb.AuthorizePaymentRequest(
            order_id=order_id,
            idempotency_key=key or f"{order_id}:authorize",
            payment_method=first,
            additional_payment_methods=rest,
            amount=usd(amount_minor),
        )
    )


async def capture_response(
    payments: Payments, invoice_id: str, key: str
) -> pb.CaptureInvoiceResponse:
    return await payments.stub.CaptureInvoice(
        pb.CaptureInvoiceRequest(invoice_id=invoice_id, idempotency_key=key)
    )


# ---- gift card, then card ------------------------------------------------------------------


async def test_a_gift_card_holds_its_balance_and_the_card_the_rest(payments: Payments) -> None:
    order_id = new_order()
    gift = gift_card(2_500)
    response = await authorize_with(payments, order_id, 10_000, gift, card())
    assert response.status == pb.AUTHORIZATION_STATUS_APPROVED
    assert response.authorized == usd(10_000)
    assert response.decline_reason == ""
    held = [
        (a.payment_method_type, a.amount.amount_minor, a.status) for a in response.authorizations
    ]
    assert held == [
        (pb.PAYMENT_METHOD_TYPE_GIFT_CARD, 2_500, pb.AUTHORIZATION_STATUS_APPROVED),
        (pb.PAYMENT_METHOD_TYPE_CARD, 7_500, pb.AUTHORIZATION_STATUS_APPROVED),
    ]
    assert response.authorization == response.authorizations[0]
    assert await payments.gift_cards.balance_of(gift.token) == 0

    inv = await invoice(payments, order_id, [chargeable("ol-1", 2, 2, 0, 9_000, tax=400)], 600)
    captured = await capture_response(payments, inv.invoice_id, f"{order_id}:capture")
    assert captured.status == pb.CAPTURE_STATUS_SUCCEEDED
    assert captured.captured == usd(10_000)
    assert [(c.authorization_id, c.amount.amount_minor) for c in captured.captures] == [
        (response.authorizations[0].authorization_id, 2_500),
        (response.authorizations[1].authorization_id, 7_500),
    ]
    assert captured.capture == captured.captures[0]

    found = await summary_of(payments, order_id)
    assert found.summary.captured == found.summary.invoiced == usd(10_000)
    assert [a.captured.amount_minor for a in found.authorizations] == [2_500, 7_500]


async def test_a_gift_card_that_covers_everything_leaves_the_card_unasked(
    payments: Payments,
) -> None:
    order_id = new_order()
    gift = gift_card(20_000)
    response = await authorize_with(payments, order_id, 10_000, gift, card())
    assert response.status == pb.AUTHORIZATION_STATUS_APPROVED
    assert [a.amount.amount_minor for a in response.authorizations] == [10_000]
    asked = [op for op in payments.gateway.operations_of("authorize") if order_id in op.key]
    assert asked == []
    assert await payments.gift_cards.balance_of(gift.token) == 10_000


async def test_an_empty_gift_card_is_declined_and_the_card_holds_everything(
    payments: Payments,
) -> None:
    order_id = new_order()
    response = await authorize_with(payments, order_id, 4_000, gift_card(0), card())
    assert response.status == pb.AUTHORIZATION_STATUS_APPROVED
    assert [(a.status, a.decline_reason) for a in response.authorizations] == [
        (pb.AUTHORIZATION_STATUS_DECLINED, "insufficient_funds"),
        (pb.AUTHORIZATION_STATUS_APPROVED, ""),
    ]
    # The primary is the approval, so a caller reading only `authorization` sees approved.
    assert response.authorization == response.authorizations[1]
    assert (await summary_of(payments, order_id)).summary.authorized == usd(4_000)


async def test_a_declined_card_after_a_gift_card_declines_all_and_gives_the_balance_back(
    payments: Payments,
) -> None:
    order_id = new_order()
    gift = gift_card(2_500)
    response = await authorize_with(payments, order_id, 10_000, gift, card("tok_decline"))
    assert response.status == pb.AUTHORIZATION_STATUS_DECLINED
    assert response.decline_reason == "card_declined"
    assert response.authorized == usd(0)
    assert [a.status for a in response.authorizations] == [
        pb.AUTHORIZATION_STATUS_VOIDED,
        pb.AUTHORIZATION_STATUS_DECLINED,
    ]
    assert response.authorization == response.authorizations[1]
    assert await payments.gift_cards.balance_of(gift.token) == 2_500
    assert (await summary_of(payments, order_id)).summary.authorized == usd(0)


async def test_a_gift_card_alone_short_of_the_amount_is_declined_for_funds(
    payments: Payments,
) -> None:
    gift = gift_card(1_000)
    response = await authorize_with(payments, new_order(), 5_000, gift)
    assert response.status == pb.AUTHORIZATION_STATUS_DECLINED
    assert response.decline_reason == "insufficient_funds"
    assert await payments.gift_cards.balance_of(gift.token) == 1_000


async def test_a_timeout_after_the_gift_card_held_is_resolved_by_lookup_and_held_once(
    payments: Payments,
) -> None:
    order_id = new_order()
    gift = gift_card(3_000)
    payments.gift_cards.timeout_after_charge = True
    try:
        response = await authorize_with(payments, order_id, 5_000, gift, card())
    finally:
        payments.gift_cards.timeout_after_charge = False
    assert response.status == pb.AUTHORIZATION_STATUS_APPROVED
    holds = [op for op in payments.gift_cards.operations_of("authorize") if order_id in op.key]
    assert len(holds) == 1
    assert ("lookup", holds[0].key) in payments.gift_cards.calls
    assert await payments.gift_cards.balance_of(gift.token) == 0

    replay = await authorize_with(payments, order_id, 5_000, gift, card())
    assert replay == response


async def test_one_key_with_other_payment_methods_is_refused_naming_the_key(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize_with(payments, order_id, 5_000, gift_card(1_000), card())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await authorize_with(payments, order_id, 5_000, gift_card(2_000), card())
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"{order_id}:authorize" in (raised.value.details() or "")


# ---- captures drawing on several authorizations --------------------------------------------


async def test_a_capture_stops_at_the_first_refusal_and_a_retry_captures_only_the_rest(
    payments: Payments,
) -> None:
    order_id = new_order()
    good = await authorize_with(payments, order_id, 2_000, card(), key=f"{order_id}:a1")
    flaky = await authorize_with(
        payments, order_id, 5_000, card("tok_fail_capture"), key=f"{order_id}:a2"
    )
    inv = await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    first = await capture_response(payments, inv.invoice_id, f"{order_id}:capture:0")
    assert first.status == pb.CAPTURE_STATUS_FAILED
    assert first.failure_reason == "processor_unavailable"
    assert first.captured == usd(2_000)
    assert [(c.authorization_id, c.status) for c in first.captures] == [
        (good.authorization.authorization_id, pb.CAPTURE_STATUS_SUCCEEDED),
        (flaky.authorization.authorization_id, pb.CAPTURE_STATUS_FAILED),
    ]
    # The failed one decides the outcome, so a caller reading only `capture` sees FAILED.
    assert first.capture == first.captures[1]

    retry = await capture_response(payments, inv.invoice_id, f"{order_id}:capture:1")
    assert [c.amount.amount_minor for c in retry.captures] == [2_000]
    found = await summary_of(payments, order_id)
    assert found.summary.captured == usd(2_000)
    assert found.summary.balance_due == usd(2_000)


# ---- expired authorizations ----------------------------------------------------------------


async def test_an_expired_authorization_is_held_anew_before_it_is_captured(
    lapsing: Payments,
) -> None:
    order_id = new_order()
    auth = (await authorize_with(lapsing, order_id, 5_000, card())).authorization
    inv = await invoice(lapsing, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    key = f"{order_id}:capture"
    captured = await capture_response(lapsing, inv.invoice_id, key)
    assert captured.status == pb.CAPTURE_STATUS_SUCCEEDED
    (renewed,) = captured.reauthorizations
    assert renewed.replaces_authorization_id == auth.authorization_id
    assert renewed.amount == usd(5_000)
    assert renewed.status == pb.AUTHORIZATION_STATUS_APPROVED
    assert captured.capture.authorization_id == renewed.authorization_id
    assert captured.capture.amount == usd(4_000)

    found = await summary_of(lapsing, order_id)
    assert {a.authorization_id: a.status for a in found.authorizations} == {
        auth.authorization_id: pb.AUTHORIZATION_STATUS_EXPIRED,
        renewed.authorization_id: pb.AUTHORIZATION_STATUS_APPROVED,
    }
    assert found.summary.authorized == usd(5_000)
    assert found.summary.captured == usd(4_000)
    gateway = lapsing.gateway
    released = [op for op in gateway.operations_of("void") if op.key.startswith(order_id)]
    assert [op.reference for op in released] == [auth.gateway_reference]
    held_again = domain.gateway_key(order_id, key, f"reauthorize:{auth.authorization_id}", 5_000)
    assert [op.key for op in gateway.operations_of("authorize") if op.key.startswith(order_id)] == [
        domain.gateway_key(order_id, f"{order_id}:authorize", "authorize:0", 5_000),
        held_again,
    ]


async def test_a_declined_reauthorization_is_a_failed_capture_with_the_reason(
    lapsing: Payments,
) -> None:
    order_id = new_order()
    await authorize_with(lapsing, order_id, 5_000, card())
    inv = await invoice(lapsing, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    lapsing.gateway.decline_above_minor = 1_000
    try:
        failed = await capture_response(lapsing, inv.invoice_id, f"{order_id}:capture:0")
    finally:
        lapsing.gateway.decline_above_minor = 0
    assert failed.status == pb.CAPTURE_STATUS_FAILED
    assert failed.failure_reason == "amount_exceeds_limit"
    assert failed.capture.amount == usd(4_000)
    assert [a.status for a in failed.reauthorizations] == [pb.AUTHORIZATION_STATUS_DECLINED]

    # The gateway recovered: a retry holds anew and captures, exactly once.
    retried = await capture(lapsing, inv.invoice_id, key=f"{order_id}:capture:1")
    assert retried.status == pb.CAPTURE_STATUS_SUCCEEDED
    found = await summary_of(lapsing, order_id)
    assert found.summary.captured == usd(4_000)
    charges = [
        op
        for op in lapsing.gateway.operations_of("capture", succeeded=True)
        if op.key.startswith(order_id)
    ]
    assert [op.amount_minor for op in charges] == [4_000]
