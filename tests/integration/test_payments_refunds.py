"""PaymentsService over real gRPC: credit memos, refunds and releases, and reconciliation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from oms_platform import grpcutil
from oms_tools.devstack.postgres import EmbeddedPostgres
from services.payments import domain
from tests.integration.test_payments_service import (
    Payments,
    authorize,
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


def creditable(
    order_line_id: str,
    ordered: int,
    quantity: int,
    first_unit: int,
    gross: int,
    discount: int = 0,
    tax: int = 0,
    currency: str = "USD",
) -> pb.CreditableLine:
    return pb.CreditableLine(
        order_line_id=order_line_id,
        sku=f"SKU-{order_line_id}",
        quantity_ordered=ordered,
        gross=usd(gross, currency),
        discount=usd(discount, currency),
        tax=usd(tax, currency),
        quantity_to_credit=quantity,
        first_unit=first_unit,
    )


async def credit_memo(
    payments: Payments,
    order_id: str,
    *,
    kind: pb.CreditMemoKind.ValueType = pb.CREDIT_MEMO_KIND_RETURN,
    lines: list[pb.CreditableLine] | None = None,
    appeasements: list[pb.Appeasement] | None = None,
    shipping: int = 0,
    fee: int = 0,
    key: str | None = None,
) -> pb.CreditMemo:
    response = await payments.stub.CreateCreditMemo(
        pb.CreateCreditMemoRequest(
            order_id=order_id,
            idempotency_key=key or f"{order_id}:memo:{uuid.uuid4()}",
            kind=kind,
            reason="test",
            lines=lines or [],
            appeasements=appeasements or [],
            shipping=usd(shipping) if shipping else None,
            fee=usd(fee) if fee else None,
        )
    )
    return response.credit_memo


async def refund(
    payments: Payments, credit_memo_id: str, key: str | None = None
) -> pb.RefundCreditMemoResponse:
    return await payments.stub.RefundCreditMemo(
        pb.RefundCreditMemoRequest(
            credit_memo_id=credit_memo_id, idempotency_key=key or f"{credit_memo_id}:refund"
        )
    )


async def reconciliation_of(payments: Payments, order_id: str) -> pb.Reconciliation:
    response = await payments.agent.GetReconciliation(
        pb.GetReconciliationRequest(order_id=order_id)
    )
    return response.reconciliation


async def shipped_and_captured(
    payments: Payments, order_id: str, lines: list[pb.ChargeableLine], shipping: int = 0
) -> tuple[pb.Invoice, pb.Capture]:
    shipment = f"fo-{uuid.uuid4().hex[:8]}"
    inv = await invoice(payments, order_id, lines, shipping, shipment=shipment)
    cap = await capture(payments, inv.invoice_id)
    assert cap.status == pb.CAPTURE_STATUS_SUCCEEDED
    return inv, cap


def refund_ops(payments: Payments, order_id: str) -> list[int]:
    return [
        op.amount_minor
        for op in payments.gateway.operations_of("refund", succeeded=True)
        if op.key.startswith(order_id)
    ]


# ---- refunds -------------------------------------------------------------------------------


async def test_a_return_is_refunded_from_the_newest_capture_first(payments: Payments) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 10_000)
    _, first = await shipped_and_captured(payments, order_id, [chargeable("ol-1", 2, 2, 0, 4_000)])
    _, second = await shipped_and_captured(payments, order_id, [chargeable("ol-2", 1, 1, 0, 3_000)])

    memo = await credit_memo(
        payments,
        order_id,
        lines=[creditable("ol-2", 1, 1, 0, 3_000), creditable("ol-1", 2, 1, 0, 4_000)],
    )
    assert memo.total == usd(5_000)
    assert memo.not_refunded == usd(5_000)
    response = await refund(payments, memo.credit_memo_id)
    assert response.outcome == pb.REFUND_OUTCOME_SETTLED
    assert [(r.capture_id, r.amount.amount_minor, r.status) for r in response.refunds] == [
        (second.capture_id, 3_000, pb.REFUND_STATUS_SUCCEEDED),
        (first.capture_id, 2_000, pb.REFUND_STATUS_SUCCEEDED),
    ]
    assert (response.refunded, response.released, response.not_refunded) == (
        usd(5_000),
        usd(0),
        usd(0),
    )
    assert response.credit_memo.refunded == usd(5_000)
    assert refund_ops(payments, order_id) == [3_000, 2_000]

    found = await summary_of(payments, order_id)
    assert found.summary.refunded == found.summary.credited == usd(5_000)
    assert [m.credit_memo_id for m in found.credit_memos] == [memo.credit_memo_id]
    assert [r.refund_id for r in found.refunds] == [r.refund_id for r in response.refunds]
    reconciliation = await reconciliation_of(payments, order_id)
    assert reconciliation.agrees
    assert (reconciliation.captured, reconciliation.refunded) == (usd(7_000), usd(5_000))
    assert (reconciliation.invoiced, reconciliation.credited) == (usd(7_000), usd(5_000))


async def test_refunding_a_settled_memo_again_gives_nothing_more(payments: Payments) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 1, 1, 0, 5_000)])
    memo = await credit_memo(payments, order_id, lines=[creditable("ol-1", 1, 1, 0, 5_000)])
    first = await refund(payments, memo.credit_memo_id, key=f"{order_id}:refund:0")
    again = await refund(payments, memo.credit_memo_id, key=f"{order_id}:refund:1")
    assert first.refunded == usd(5_000)
    assert again.outcome == pb.REFUND_OUTCOME_SETTLED
    assert (list(again.refunds), again.refunded) == ([], usd(0))
    assert refund_ops(payments, order_id) == [5_000]


async def test_a_memo_beyond_what_was_captured_refunds_what_it_can_and_reports_the_rest(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 2, 1, 0, 4_000)])
    memo = await credit_memo(
        payments,
        order_id,
        lines=[creditable("ol-1", 2, 1, 0, 4_000)],
        appeasements=[pb.Appeasement(amount=usd(1_000))],
    )
    response = await refund(payments, memo.credit_memo_id)
    assert response.outcome == pb.REFUND_OUTCOME_LIMITED
    assert (response.refunded, response.not_refunded) == (usd(2_000), usd(1_000))
    reconciliation = await reconciliation_of(payments, order_id)
    assert not reconciliation.agrees
    # Taken net of refunds exceeds what is owed net of credits: the shopper is owed 1000.
    assert reconciliation.difference == usd(1_000)
    assert reconciliation.not_refunded == usd(1_000)


async def test_a_refund_the_gateway_refuses_is_a_failed_outcome_with_its_reason(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 3_000, token="tok_fail_refund")
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 1, 1, 0, 3_000)])
    memo = await credit_memo(payments, order_id, lines=[creditable("ol-1", 1, 1, 0, 3_000)])
    response = await refund(payments, memo.credit_memo_id)
    assert response.outcome == pb.REFUND_OUTCOME_FAILED
    assert response.failure_reason == "refund_rejected"
    assert [(r.status, r.failure_reason) for r in response.refunds] == [
        (pb.REFUND_STATUS_FAILED, "refund_rejected")
    ]
    assert (response.refunded, response.not_refunded) == (usd(0), usd(3_000))
    assert (await summary_of(payments, order_id)).summary.refunded == usd(0)


async def test_a_gateway_timeout_after_refunding_is_found_on_lookup_and_refunded_once(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 6_000)
    _, cap = await shipped_and_captured(payments, order_id, [chargeable("ol-1", 3, 3, 0, 6_000)])
    memo = await credit_memo(payments, order_id, lines=[creditable("ol-1", 3, 1, 0, 6_000)])
    key = f"{order_id}:refund"
    payments.gateway.timeout_after_charge = True
    try:
        response = await refund(payments, memo.credit_memo_id, key=key)
    finally:
        payments.gateway.timeout_after_charge = False
    assert response.outcome == pb.REFUND_OUTCOME_SETTLED
    (made,) = response.refunds
    assert made.amount == usd(2_000)
    gateway_key = domain.gateway_key(order_id, key, f"refund:{cap.capture_id}", 2_000)
    refunds = [op for op in payments.gateway.operations_of("refund") if op.key.startswith(order_id)]
    assert [(op.key, op.amount_minor) for op in refunds] == [(gateway_key, 2_000)]
    assert refunds[0].reference == made.gateway_reference
    assert ("lookup", gateway_key) in payments.gateway.calls

    replay = await refund(payments, memo.credit_memo_id, key=key)
    assert replay == response
    found = await summary_of(payments, order_id)
    assert [r.refund_id for r in found.refunds] == [made.refund_id]
    assert found.summary.refunded == usd(2_000)


async def test_a_gateway_outage_on_refund_answers_unavailable_and_the_retry_refunds_once(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 2_000)
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 1, 1, 0, 2_000)])
    memo = await credit_memo(payments, order_id, lines=[creditable("ol-1", 1, 1, 0, 2_000)])
    payments.gateway.transient_failure_rate = 1.0
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await refund(payments, memo.credit_memo_id)
    finally:
        payments.gateway.transient_failure_rate = 0.0
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await summary_of(payments, order_id)).refunds == []
    response = await refund(payments, memo.credit_memo_id)
    assert response.refunded == usd(2_000)
    assert refund_ops(payments, order_id) == [2_000]


async def test_a_gift_card_and_card_order_is_refunded_to_the_card_first(
    payments: Payments,
) -> None:
    order_id = new_order()
    gift = f"gc_3000_{uuid.uuid4().hex[:8]}"
    await payments.stub.AuthorizePayment(
        pb.AuthorizePaymentRequest(
            order_id=order_id,
            idempotency_key=f"{order_id}:authorize",
            payment_method=pb.PaymentMethod(type=pb.PAYMENT_METHOD_TYPE_GIFT_CARD, token=gift),
            additional_payment_methods=[
                pb.PaymentMethod(type=pb.PAYMENT_METHOD_TYPE_CARD, token="tok_visa")
            ],
            amount=usd(8_000),
        )
    )
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 2, 2, 0, 8_000)])
    memo = await credit_memo(payments, order_id, lines=[creditable("ol-1", 2, 2, 0, 8_000)])
    response = await refund(payments, memo.credit_memo_id)
    assert [r.amount.amount_minor for r in response.refunds] == [5_000, 3_000]
    assert refund_ops(payments, order_id) == [5_000]
    assert await payments.gift_cards.balance_of(gift) == 3_000
    assert (await reconciliation_of(payments, order_id)).agrees


# ---- releases before capture ---------------------------------------------------------------


async def test_a_partial_cancel_before_capture_releases_exactly_that_share(
    payments: Payments,
) -> None:
    order_id = new_order()
    # One line of 3 units: 10001 gross, 1000 discount, 801 tax; plus 599 shipping.
    line_total = 10_001 - 1_000 + 801
    auth = await authorize(payments, order_id, line_total + 599)
    # The last unit is canceled: units are taken from the back, 3333 - 333 + 267 = 3267.
    memo = await credit_memo(
        payments,
        order_id,
        kind=pb.CREDIT_MEMO_KIND_CANCEL,
        lines=[creditable("ol-1", 3, 1, 2, 10_001, 1_000, 801)],
    )
    assert memo.total == usd(3_267)
    response = await refund(payments, memo.credit_memo_id)
    assert response.outcome == pb.REFUND_OUTCOME_SETTLED
    assert list(response.refunds) == []
    (released,) = response.reversals
    assert (released.authorization_id, released.amount, released.voided) == (
        auth.authorization_id,
        usd(3_267),
        False,
    )
    assert (response.released, response.not_refunded) == (usd(3_267), usd(0))
    reversals = [
        op for op in payments.gateway.operations_of("reverse") if op.key.startswith(order_id)
    ]
    assert [(op.reference, op.amount_minor) for op in reversals] == [
        (auth.gateway_reference, 3_267)
    ]
    found = await summary_of(payments, order_id)
    (held,) = found.authorizations
    assert held.reversed == usd(3_267)
    assert found.summary.authorized == usd(line_total + 599 - 3_267)

    # The other two units ship: their invoice takes the front units and exactly the rest.
    inv, cap = await shipped_and_captured(
        payments, order_id, [chargeable("ol-1", 3, 2, 0, 10_001, 1_000, 801)], 599
    )
    assert inv.total == usd(line_total + 599 - 3_267)
    assert cap.amount == inv.total
    after = (await summary_of(payments, order_id)).authorizations[0]
    assert after.captured.amount_minor + after.reversed.amount_minor == after.amount.amount_minor
    reconciliation = await reconciliation_of(payments, order_id)
    assert reconciliation.agrees
    assert reconciliation.credited == usd(0)
    assert reconciliation.released == usd(3_267)


async def test_a_cancel_after_another_shipment_was_captured_releases_and_refunds_nothing(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 9_000)
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    memo = await credit_memo(
        payments,
        order_id,
        kind=pb.CREDIT_MEMO_KIND_CANCEL,
        lines=[creditable("ol-2", 1, 1, 0, 5_000)],
    )
    response = await refund(payments, memo.credit_memo_id)
    assert list(response.refunds) == []
    assert [(r.amount.amount_minor, r.voided) for r in response.reversals] == [(5_000, True)]
    assert refund_ops(payments, order_id) == []
    found = await summary_of(payments, order_id)
    assert found.authorizations[0].status == pb.AUTHORIZATION_STATUS_VOIDED
    assert (await reconciliation_of(payments, order_id)).agrees


async def test_a_memo_with_nothing_captured_yet_releases_the_authorization(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    memo = await credit_memo(
        payments,
        order_id,
        kind=pb.CREDIT_MEMO_KIND_UNSPECIFIED,
        appeasements=[pb.Appeasement(amount=usd(700))],
    )
    response = await refund(payments, memo.credit_memo_id)
    assert response.outcome == pb.REFUND_OUTCOME_SETTLED
    assert (response.refunded, response.released) == (usd(0), usd(700))
    assert (await summary_of(payments, order_id)).summary.authorized == usd(4_300)


# ---- a credit memo with its refund (and void) in one call -----------------------------------


async def memo_and_refund(
    payments: Payments,
    order_id: str,
    lines: list[pb.CreditableLine],
    *,
    kind: pb.CreditMemoKind.ValueType = pb.CREDIT_MEMO_KIND_CANCEL,
    shipping: int = 0,
    refund_key: str = "",
    void_key: str = "",
) -> pb.CreateCreditMemoResponse:
    return await payments.stub.CreateCreditMemo(
        pb.CreateCreditMemoRequest(
            order_id=order_id,
            idempotency_key=f"{order_id}:memo:cancel",
            kind=kind,
            reason="shopper changed their mind",
            lines=lines,
            shipping=usd(shipping) if shipping else None,
            refund_idempotency_key=refund_key or f"{order_id}:refund:cancel:1",
            void_remaining_idempotency_key=void_key,
        )
    )


def gateway_ops(payments: Payments, order_id: str) -> list[tuple[str, int]]:
    return [
        (op.kind, op.amount_minor)
        for op in payments.gateway.operations
        if op.key.startswith(order_id) and op.kind in ("reverse", "void", "refund")
    ]


async def test_canceling_everything_unshipped_credits_releases_and_voids_in_one_call(
    payments: Payments,
) -> None:
    order_id = new_order()
    # The hold is more than the memo gives back (the shopper's bank rounded it up, say): the
    # memo releases its share and the void releases what is left, all in this one call.
    auth = await authorize(payments, order_id, 6_000)
    answer = await memo_and_refund(
        payments,
        order_id,
        [creditable("ol-1", 2, 2, 0, 5_000, 500, 400)],
        shipping=599,
        void_key=f"{order_id}:void",
    )
    assert answer.credit_memo.total == usd(5_000 - 500 + 400 + 599)
    assert answer.refund.outcome == pb.REFUND_OUTCOME_SETTLED and answer.refund_refused == ""
    assert (answer.refund.refunded, answer.refund.released) == (usd(0), usd(5_499))
    assert answer.refund.credit_memo.not_refunded == usd(0)
    assert [a.status for a in answer.void_remaining.authorizations] == [
        pb.AUTHORIZATION_STATUS_VOIDED
    ]
    assert answer.void_refused == ""
    assert gateway_ops(payments, order_id) == [("reverse", 5_499), ("void", 501)]
    found = await summary_of(payments, order_id)
    assert (found.summary.authorized, found.summary.captured) == (usd(0), usd(0))
    assert (found.summary.refunded, found.summary.released) == (usd(0), usd(5_499))
    [held] = found.authorizations
    assert (held.authorization_id, held.status) == (
        auth.authorization_id,
        pb.AUTHORIZATION_STATUS_VOIDED,
    )
    assert (await reconciliation_of(payments, order_id)).agrees


async def test_a_memo_that_releases_the_whole_hold_leaves_the_void_nothing_to_do(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 3_000)
    answer = await memo_and_refund(
        payments, order_id, [creditable("ol-1", 1, 1, 0, 3_000)], void_key=f"{order_id}:void"
    )
    [reversal] = answer.refund.reversals
    assert (reversal.amount, reversal.voided) == (usd(3_000), True)
    assert [a.status for a in answer.void_remaining.authorizations] == [
        pb.AUTHORIZATION_STATUS_VOIDED
    ]
    # The release voided the hold at the gateway; the void found nothing approved to void.
    assert gateway_ops(payments, order_id) == [("void", 3_000)]


async def test_a_memo_asked_again_with_its_keys_answers_the_same_and_moves_money_once(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 4_000)
    lines = [creditable("ol-1", 2, 2, 0, 3_500)]
    void_key = f"{order_id}:void"
    answer = await memo_and_refund(payments, order_id, lines, void_key=void_key)
    # Retried (the worker died before recording the answer): the same memo, refund and void.
    again = await memo_and_refund(payments, order_id, lines, void_key=void_key)
    assert again == answer
    # The separate calls with the same keys answer the same refund and void.
    alone = await refund(
        payments, answer.credit_memo.credit_memo_id, key=f"{order_id}:refund:cancel:1"
    )
    assert alone == answer.refund
    voided = await payments.stub.VoidAuthorization(
        pb.VoidAuthorizationRequest(
            order_id=order_id, idempotency_key=void_key, reason="shopper changed their mind"
        )
    )
    assert voided == answer.void_remaining
    found = await summary_of(payments, order_id)
    assert len(found.credit_memos) == 1 and len(found.reversals) == 1
    assert gateway_ops(payments, order_id) == [("reverse", 3_500), ("void", 500)]


async def test_a_memo_refunded_before_by_the_separate_calls_replays_that_memo_and_refund(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 2_000)
    asked = pb.CreateCreditMemoRequest(
        order_id=order_id,
        idempotency_key=f"{order_id}:memo:cancel",
        kind=pb.CREDIT_MEMO_KIND_CANCEL,
        reason="shopper changed their mind",
        lines=[creditable("ol-1", 1, 1, 0, 2_000)],
    )
    # The two-call path made the memo and its refund; the one call with the same keys answers
    # both as they were, and gives nothing back twice.
    first = await payments.stub.CreateCreditMemo(asked)
    made = await refund(payments, first.credit_memo.credit_memo_id, key=f"{order_id}:refund:1")
    asked.refund_idempotency_key = f"{order_id}:refund:1"
    answer = await payments.stub.CreateCreditMemo(asked)
    assert answer.credit_memo == first.credit_memo
    assert answer.refund == made
    assert not answer.HasField("void_remaining") and answer.void_refused == ""
    assert gateway_ops(payments, order_id) == [("void", 2_000)]


async def test_a_refund_the_gateway_refuses_is_in_the_answer_and_nothing_is_voided(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000, token="tok_fail_refund")
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 2, 1, 0, 6_000)])
    answer = await memo_and_refund(
        payments,
        order_id,
        [creditable("ol-1", 2, 1, 0, 6_000)],
        kind=pb.CREDIT_MEMO_KIND_RETURN,
        void_key=f"{order_id}:void",
    )
    # The memo stands; the refund failed with the gateway's reason; the void was not tried,
    # so the holds the retried refund may need are still there.
    assert answer.credit_memo.total == usd(3_000)
    assert answer.refund.outcome == pb.REFUND_OUTCOME_FAILED
    assert answer.refund.failure_reason == "refund_rejected"
    assert answer.refund.not_refunded == usd(3_000)
    assert not answer.HasField("void_remaining") and answer.void_refused == ""
    found = await summary_of(payments, order_id)
    assert [m.credit_memo_id for m in found.credit_memos] == [answer.credit_memo.credit_memo_id]
    assert [a.status for a in found.authorizations] == [pb.AUTHORIZATION_STATUS_APPROVED]
    assert found.summary.refunded == usd(0)
    assert ("void", 2_000) not in gateway_ops(payments, order_id)


async def test_a_refused_refund_or_void_is_in_the_answer_and_what_was_made_stands(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    # Its refund key was used for another memo's refund: the refund is refused, not the call.
    other = await credit_memo(payments, order_id, appeasements=[pb.Appeasement(amount=usd(100))])
    await refund(payments, other.credit_memo_id, key=f"{order_id}:refund:taken")
    refused = await memo_and_refund(
        payments,
        order_id,
        [creditable("ol-1", 1, 1, 0, 1_000)],
        refund_key=f"{order_id}:refund:taken",
        void_key=f"{order_id}:void",
    )
    assert refused.credit_memo.total == usd(1_000)
    assert not refused.HasField("refund") and not refused.HasField("void_remaining")
    assert refused.refund_refused.startswith("ALREADY_EXISTS: idempotency key")
    assert len((await summary_of(payments, order_id)).credit_memos) == 2

    # Its void key was used for another void request: the memo and refund stand.
    second = new_order()
    await authorize(payments, second, 5_000)
    await payments.stub.VoidAuthorization(
        pb.VoidAuthorizationRequest(
            order_id=second, idempotency_key=f"{second}:void", reason="another reason"
        )
    )
    void_refused = await memo_and_refund(
        payments, second, [creditable("ol-1", 1, 1, 0, 1_000)], void_key=f"{second}:void"
    )
    assert void_refused.refund.outcome == pb.REFUND_OUTCOME_SETTLED
    assert not void_refused.HasField("void_remaining")
    assert void_refused.void_refused == (
        f"ALREADY_EXISTS: idempotency key '{second}:void' was already used with a different request"
    )


async def test_a_gateway_outage_in_the_one_call_is_retried_with_its_keys_and_moves_money_once(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 3_000)
    lines = [creditable("ol-1", 1, 1, 0, 2_000)]
    payments.gateway.transient_failure_rate = 1.0
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await memo_and_refund(payments, order_id, lines, void_key=f"{order_id}:void")
    finally:
        payments.gateway.transient_failure_rate = 0.0
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # The memo was made before the outage; the retry replays it and gives the money back once.
    answer = await memo_and_refund(payments, order_id, lines, void_key=f"{order_id}:void")
    found = await summary_of(payments, order_id)
    assert [m.credit_memo_id for m in found.credit_memos] == [answer.credit_memo.credit_memo_id]
    assert answer.refund.released == usd(2_000)
    assert gateway_ops(payments, order_id) == [("reverse", 2_000), ("void", 1_000)]


async def test_follow_up_keys_a_memo_cannot_use_are_refused_naming_the_field(
    payments: Payments,
) -> None:
    order_id = new_order()
    cases = {
        ("", "v"): {"void_remaining_idempotency_key"},
        ("k", ""): {"refund_idempotency_key"},
        ("r", "r"): {"void_remaining_idempotency_key"},
        ("k", "k"): {"refund_idempotency_key", "void_remaining_idempotency_key"},
    }
    for (refund_key, void_key), fields in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await payments.stub.CreateCreditMemo(
                pb.CreateCreditMemoRequest(
                    order_id=order_id,
                    idempotency_key="k",
                    kind=pb.CREDIT_MEMO_KIND_CANCEL,
                    lines=[creditable("ol-1", 1, 1, 0, 1_000)],
                    refund_idempotency_key=refund_key,
                    void_remaining_idempotency_key=void_key,
                )
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {f for f, _ in grpcutil.field_violations(raised.value)} == fields
    # Nothing was written.
    assert (await summary_of(payments, order_id)).credit_memos == []


# ---- appeasements --------------------------------------------------------------------------


async def test_a_ten_percent_appeasement_refunds_a_tenth_of_what_the_line_captured(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 20_000)
    await shipped_and_captured(
        payments,
        order_id,
        [chargeable("ol-1", 1, 1, 0, 5_000, 500, 495), chargeable("ol-2", 1, 1, 0, 7_000)],
        900,
    )
    memo = await credit_memo(
        payments,
        order_id,
        kind=pb.CREDIT_MEMO_KIND_APPEASEMENT,
        appeasements=[pb.Appeasement(order_line_id="ol-1", percent_basis_points=1_000)],
    )
    # ol-1 captured 5000 - 500 + 495 = 4995; 10% rounds half up to 500.
    (given,) = memo.appeasements
    assert (given.order_line_id, given.percent_basis_points, given.amount) == (
        "ol-1",
        1_000,
        usd(500),
    )
    assert memo.total == usd(500)
    response = await refund(payments, memo.credit_memo_id)
    assert response.refunded == usd(500)
    assert refund_ops(payments, order_id) == [500]


async def test_repeated_appeasements_never_refund_more_than_was_captured(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    await shipped_and_captured(payments, order_id, [chargeable("ol-1", 1, 1, 0, 4_995)])
    outcomes = []
    for _ in range(11):
        memo = await credit_memo(
            payments,
            order_id,
            kind=pb.CREDIT_MEMO_KIND_APPEASEMENT,
            appeasements=[pb.Appeasement(order_line_id="ol-1", percent_basis_points=1_000)],
        )
        response = await refund(payments, memo.credit_memo_id)
        outcomes.append((response.refunded.amount_minor, response.outcome))
    assert outcomes[:9] == [(500, pb.REFUND_OUTCOME_SETTLED)] * 9
    assert outcomes[9:] == [(495, pb.REFUND_OUTCOME_LIMITED), (0, pb.REFUND_OUTCOME_LIMITED)]
    assert sum(refund_ops(payments, order_id)) == 4_995
    found = await summary_of(payments, order_id)
    assert found.summary.refunded == found.summary.captured == usd(4_995)
    reconciliation = await reconciliation_of(payments, order_id)
    assert reconciliation.not_refunded == usd(505)


# ---- idempotency and errors ----------------------------------------------------------------


async def test_one_key_is_one_memo_and_a_different_memo_with_it_is_refused(
    payments: Payments,
) -> None:
    order_id = new_order()
    key = f"{order_id}:memo"
    lines = [creditable("ol-1", 2, 1, 0, 3_000)]
    first = await credit_memo(payments, order_id, lines=lines, key=key)
    again = await credit_memo(payments, order_id, lines=lines, key=key)
    assert again.credit_memo_id == first.credit_memo_id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await credit_memo(payments, order_id, lines=lines, fee=100, key=key)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert key in (raised.value.details() or "")
    assert len((await summary_of(payments, order_id)).credit_memos) == 1


async def test_one_refund_key_for_another_memo_is_refused_naming_the_key(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    one = await credit_memo(payments, order_id, appeasements=[pb.Appeasement(amount=usd(100))])
    other = await credit_memo(payments, order_id, appeasements=[pb.Appeasement(amount=usd(200))])
    key = f"{order_id}:refund"
    await refund(payments, one.credit_memo_id, key=key)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await refund(payments, other.credit_memo_id, key=key)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert key in (raised.value.details() or "")


async def test_a_malformed_memo_names_every_bad_field(payments: Payments) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payments.stub.CreateCreditMemo(
            pb.CreateCreditMemoRequest(
                order_id=new_order(),
                idempotency_key=f"bad-{uuid.uuid4()}",
                lines=[creditable("ol-1", 2, 2, 1, 100)],
                fee=usd(50, "EUR"),
                appeasements=[pb.Appeasement(percent_basis_points=20_000)],
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in grpcutil.field_violations(raised.value)} == {
        "lines[0].quantity_to_credit",
        "fee.currency",
        "appeasements[0].percent_basis_points",
    }


async def test_a_percentage_of_nothing_captured_is_a_failed_precondition(
    payments: Payments,
) -> None:
    order_id = new_order()
    await authorize(payments, order_id, 5_000)
    await invoice(payments, order_id, [chargeable("ol-1", 1, 1, 0, 5_000)])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await credit_memo(
            payments,
            order_id,
            appeasements=[pb.Appeasement(order_line_id="ol-1", percent_basis_points=1_000)],
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing was captured for line ol-1" in (raised.value.details() or "")


async def test_refunding_an_unknown_memo_is_not_found(payments: Payments) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await refund(payments, f"missing-{uuid.uuid4()}")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_reconciliation_of_an_unknown_order_agrees_on_nothing(
    payments: Payments,
) -> None:
    reconciliation = await reconciliation_of(payments, new_order())
    assert reconciliation.agrees
    assert reconciliation.captured.amount_minor == reconciliation.invoiced.amount_minor == 0
