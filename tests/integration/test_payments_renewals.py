"""RenewAuthorizations over real gRPC and Postgres: an order waiting on goods promised for a
distant day gets its holds renewed shortly before they lapse, and is captured against the
renewed hold. The simulated processor says how long its holds last (as a real processor's
capture window does), so each test sets the hold it needs instead of waiting for one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from oms_platform.grpcutil import field_violations
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

IN_THREE_WEEKS = (datetime.now(UTC) + timedelta(days=21)).date().isoformat()
HOUR = 3600
MONTH = 31 * 24 * HOUR


@pytest.fixture(scope="module")
async def payments(postgres: EmbeddedPostgres) -> AsyncIterator[Payments]:
    """Payments with a 24 h hold when the processor says nothing, renewing 12 h ahead."""
    settings = await migrated_settings(
        postgres,
        authorization_hold_hours=24,
        authorization_renewal_lead_seconds=12 * HOUR,
        authorization_renewal_margin_hours=48,
    )
    async with running_payments(settings) as running:
        yield running


@pytest.fixture
def holds(payments: Payments) -> Iterator[Payments]:
    """Each test sets the processor's hold and limit; both go back to saying nothing."""
    yield payments
    payments.gateway.hold_seconds = 0
    payments.gateway.decline_above_minor = 0


async def renew(payments: Payments, order_id: str, key: str) -> pb.RenewAuthorizationsResponse:
    return await payments.stub.RenewAuthorizations(
        pb.RenewAuthorizationsRequest(
            order_id=order_id, idempotency_key=key, promise_date=IN_THREE_WEEKS
        )
    )


async def test_a_hold_lapsing_before_the_promised_day_is_renewed_and_captured_from(
    holds: Payments,
) -> None:
    order_id = new_order()
    holds.gateway.hold_seconds = HOUR  # lapses within the 12 h lead: due now
    first = await authorize(holds, order_id, 5_000)
    holds.gateway.hold_seconds = MONTH  # the renewed hold outlasts the promised day

    renewed = await renew(holds, order_id, f"{order_id}:renew:1")

    assert renewed.status == pb.AUTHORIZATION_STATUS_APPROVED
    [new] = renewed.renewals
    assert (new.replaces_authorization_id, new.amount, new.status) == (
        first.authorization_id,
        usd(5_000),
        pb.AUTHORIZATION_STATUS_APPROVED,
    )
    assert not renewed.renew_again
    found = await summary_of(holds, order_id)
    assert {a.authorization_id: a.status for a in found.authorizations} == {
        first.authorization_id: pb.AUTHORIZATION_STATUS_EXPIRED,
        new.authorization_id: pb.AUTHORIZATION_STATUS_APPROVED,
    }
    assert found.summary.authorized == usd(5_000)
    # Held anew first, then the old hold released, each under a key of this request.
    key = f"{order_id}:renew:1"
    ops = [(op.kind, op.key) for op in holds.gateway.operations if op.key.startswith(order_id)]
    assert ops[1:] == [
        (
            "authorize",
            domain.gateway_key(order_id, key, f"reauthorize:{first.authorization_id}", 5_000),
        ),
        (
            "void",
            domain.gateway_key(order_id, key, f"release-renewed:{first.authorization_id}", 5_000),
        ),
    ]

    # The shipment is captured from the renewed hold, to the cent.
    inv = await invoice(holds, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    taken = await capture(holds, inv.invoice_id)
    assert (taken.status, taken.authorization_id, taken.amount) == (
        pb.CAPTURE_STATUS_SUCCEEDED,
        new.authorization_id,
        usd(4_000),
    )
    after = await summary_of(holds, order_id)
    assert after.summary.captured == usd(4_000)
    assert after.summary.balance_due == usd(0)


async def test_before_anything_is_due_nothing_is_renewed_and_the_answer_says_when(
    holds: Payments,
) -> None:
    order_id = new_order()
    await authorize(holds, order_id, 5_000)  # 24 h hold: due in 12 h

    answer = await renew(holds, order_id, f"{order_id}:renew:1")

    assert answer.status == pb.AUTHORIZATION_STATUS_APPROVED
    assert list(answer.renewals) == []
    assert answer.renew_again
    assert 12 * HOUR - 60 <= answer.renew_again_in_seconds <= 12 * HOUR
    again = await renew(holds, order_id, f"{order_id}:renew:1")
    assert again == answer  # the same key answers the same
    assert not [
        op for op in holds.gateway.operations if op.key.startswith(f"{order_id}:{order_id}:renew")
    ]


async def test_a_declined_renewal_is_an_answer_and_the_current_hold_stands(
    holds: Payments,
) -> None:
    order_id = new_order()
    holds.gateway.hold_seconds = HOUR
    first = await authorize(holds, order_id, 5_000)
    holds.gateway.decline_above_minor = 1_000

    declined = await renew(holds, order_id, f"{order_id}:renew:1")

    assert declined.status == pb.AUTHORIZATION_STATUS_DECLINED
    assert declined.decline_reason == "amount_exceeds_limit"
    assert [a.status for a in declined.renewals] == [pb.AUTHORIZATION_STATUS_DECLINED]
    found = await summary_of(holds, order_id)
    statuses = {a.authorization_id: a.status for a in found.authorizations}
    assert statuses[first.authorization_id] == pb.AUTHORIZATION_STATUS_APPROVED
    assert not [
        op for op in holds.gateway.operations_of("void") if op.reference == first.gateway_reference
    ]


async def test_a_hold_shorter_than_the_lead_is_renewed_once_however_often_it_is_asked(
    holds: Payments,
) -> None:
    order_id = new_order()
    holds.gateway.hold_seconds = HOUR  # every hold lapses well within the 12 h lead
    await authorize(holds, order_id, 5_000)

    answers = [await renew(holds, order_id, f"{order_id}:renew:{n}") for n in range(1, 6)]

    # The first ask renews; the renewed hold is not due again until half its hour is over.
    assert [len(a.renewals) for a in answers] == [1, 0, 0, 0, 0]
    for answer in answers:
        assert answer.renew_again
        assert HOUR // 2 - 60 <= answer.renew_again_in_seconds <= HOUR // 2
    authorized = [op for op in holds.gateway.operations_of("authorize") if order_id in op.key]
    assert len(authorized) == 2  # the order's hold and one renewal


async def test_after_a_declined_renewal_a_lapsed_hold_is_held_anew_at_capture(
    holds: Payments,
) -> None:
    # What an agent's skip leaves: the renewal declined, the old hold lapses before the goods
    # ship, and the shipment's capture holds the money anew first (under the capture's keys).
    order_id = new_order()
    holds.gateway.hold_seconds = 2
    first = await authorize(holds, order_id, 5_000)
    holds.gateway.decline_above_minor = 1_000
    declined = await renew(holds, order_id, f"{order_id}:renew:1")
    assert declined.status == pb.AUTHORIZATION_STATUS_DECLINED
    holds.gateway.decline_above_minor = 0
    holds.gateway.hold_seconds = MONTH
    await asyncio.sleep(2.5)  # the first hold lapses

    inv = await invoice(holds, order_id, [chargeable("ol-1", 1, 1, 0, 4_000)])
    taken = await holds.stub.CaptureInvoice(
        pb.CaptureInvoiceRequest(invoice_id=inv.invoice_id, idempotency_key=f"{inv.invoice_id}:c")
    )

    [fresh] = taken.reauthorizations
    assert (fresh.replaces_authorization_id, fresh.status) == (
        first.authorization_id,
        pb.AUTHORIZATION_STATUS_APPROVED,
    )
    assert (taken.status, taken.capture.authorization_id, taken.captured) == (
        pb.CAPTURE_STATUS_SUCCEEDED,
        fresh.authorization_id,
        usd(4_000),
    )


async def test_a_renewal_without_a_day_names_the_field(holds: Payments) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await holds.stub.RenewAuthorizations(
            pb.RenewAuthorizationsRequest(
                order_id=new_order(), idempotency_key="k", promise_date="soon"
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(refused.value)] == ["promise_date"]
