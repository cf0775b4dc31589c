"""A pre-order's holds renewed ahead of its release, through real gRPC, Postgres, the order's
workflow and its timer: the order is captured against the renewed hold when the release ships,
and a declined renewal holds the order for an agent as a declined capture does.

The simulated processor says how long its holds last; the tests make the first one lapse an
hour after it is made and renew five seconds after that (the lead is the rest of the hour),
then let later holds outlast the release, so the workflow's own timer does the renewing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from oms.capture.v1 import capture_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.payments.v1 import payments_pb2 as pb
from oms.payments.v1 import payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2 as spb

from oms_platform import auth
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from services.payments import bootstrap
from services.payments.gateway import Gateways
from services.payments.simulated import SimulatedGateway
from tests.conftest import System, running_system
from tests.integration.helpers import eventually
from tests.integration.test_backorders import order_of, receive, stubs, supply, until
from tests.integration.test_fulfillment_service import new_sku, stock

if TYPE_CHECKING:
    from tests.integration.test_backorders import Stub

HOUR = 3600
MONTH = 31 * 24 * HOUR
RELEASE = (datetime.now(UTC) + timedelta(days=14)).date().isoformat()


@pytest.fixture(scope="module")
async def renewing(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[tuple[System, SimulatedGateway]]:
    """A system of its own renewing holds 5 s after they are made (when they last an hour),
    and its card gateway, whose holds and limit the tests set."""
    built: list[Gateways] = []
    make_gateways = bootstrap.make_gateways

    def recording(settings: Settings) -> Gateways:
        built.append(make_gateways(settings))
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bootstrap, "make_gateways", recording)
        async with running_system(
            settings_with_temporal,
            postgres,
            "oms_renewals",
            authorization_renewal_lead_seconds=HOUR - 5,
        ) as system:
            card = built[0].for_method("card")
            assert isinstance(card, SimulatedGateway)
            yield system, card


async def summary(system: System, order_id: str) -> pb.GetPaymentSummaryResponse:
    agent = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments", auth.AGENT))
    found: pb.GetPaymentSummaryResponse = await agent.GetPaymentSummary(
        pb.GetPaymentSummaryRequest(order_id=order_id), timeout=10
    )
    return found


async def first_hold(system: System, order_id: str) -> pb.Authorization:
    """The order's authorization, once it exists."""
    found = await eventually(
        lambda: summary(system, order_id), lambda s: len(s.authorizations) > 0, "authorized"
    )
    return found.authorizations[0]


def renewed_from(found: pb.GetPaymentSummaryResponse, first_id: str) -> list[pb.Authorization]:
    return [a for a in found.authorizations if a.replaces_authorization_id == first_id]


async def until_renewed(
    system: System, order_id: str, first: pb.Authorization, what: str
) -> pb.GetPaymentSummaryResponse:
    """The order's payment summary once a hold replacing `first` is approved."""
    found: pb.GetPaymentSummaryResponse = await eventually(
        lambda: summary(system, order_id),
        lambda s: any(
            a.status == pb.AUTHORIZATION_STATUS_APPROVED
            for a in renewed_from(s, first.authorization_id)
        ),
        what,
    )
    return found


async def a_tee_in_stock_and_a_game_on_pre_order(fulfillment: Stub) -> tuple[str, str, fpb.Supply]:
    """New SKUs: tees in stock at wh-east, and a game on pre-order until RELEASE."""
    tee, game = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10)
    release = await supply(fulfillment, game, 50, RELEASE, fpb.SUPPLY_KIND_PRE_ORDER)
    return tee, game, release


async def test_a_pre_order_is_renewed_before_release_and_captured_against_the_renewal(
    renewing: tuple[System, SimulatedGateway],
) -> None:
    system, card = renewing
    fulfillment, capture, _ = stubs(system)
    tee, game, release = await a_tee_in_stock_and_a_game_on_pre_order(fulfillment)
    card.hold_seconds = HOUR
    try:
        async with system.simulator():
            order_id = (await capture.SubmitOrder(order_of(tee, game), timeout=10)).order.order_id
            first = await first_hold(system, order_id)
            card.hold_seconds = MONTH  # what is held anew outlasts the release

            renewed = await until_renewed(
                system, order_id, first, "the hold renewed ahead of the release"
            )
            waiting = await until(capture, order_id, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)
            statuses = {a.authorization_id: a.status for a in renewed.authorizations}
            assert statuses[first.authorization_id] == pb.AUTHORIZATION_STATUS_EXPIRED
            assert waiting.order.status == capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED

            await receive(fulfillment, release.supply_id, 50)
            done = await until(capture, order_id, capture_pb2.ORDER_STATUS_FULFILLED)
    finally:
        card.hold_seconds = 0

    total = done.order.totals.grand_total.amount_minor
    assert done.payment_summary.captured.amount_minor == total
    assert sum(i.total.amount_minor for i in done.invoices) == total
    money = await summary(system, order_id)
    by_id = {a.authorization_id: a for a in money.authorizations}
    # The release's invoice (the last) was captured from a renewed hold, not the first one.
    release_invoice = max(done.invoices, key=lambda i: i.created_at.ToDatetime())
    [taken] = [c for c in money.captures if c.invoice_id == release_invoice.invoice_id]
    assert taken.status == pb.CAPTURE_STATUS_SUCCEEDED
    assert by_id[taken.authorization_id].replaces_authorization_id != ""
    assert taken.amount.amount_minor == release_invoice.total.amount_minor


async def test_a_declined_renewal_holds_the_order_for_an_agent_like_a_declined_capture(
    renewing: tuple[System, SimulatedGateway],
) -> None:
    system, card = renewing
    fulfillment, capture, servicing = stubs(system)
    tee, game, release = await a_tee_in_stock_and_a_game_on_pre_order(fulfillment)
    card.hold_seconds = HOUR
    try:
        async with system.simulator():
            order_id = (await capture.SubmitOrder(order_of(tee, game), timeout=10)).order.order_id
            first = await first_hold(system, order_id)
            card.decline_above_minor = 1  # the issuer will not hold it again

            held = await until(capture, order_id, capture_pb2.ORDER_STATUS_ON_HOLD)
            found = await servicing.ListProcessExceptions(
                spb.ListProcessExceptionsRequest(order_id=order_id)
            )
            [exception] = found.process_exceptions
            assert exception.category == spb.PROCESS_EXCEPTION_CATEGORY_PAYMENT
            assert "Re-authorization" in exception.message
            assert "amount_exceeds_limit" in exception.message
            # A card is held anew before its hold is released: the current hold stands.
            money = await summary(system, order_id)
            statuses = {a.authorization_id: a.status for a in money.authorizations}
            assert statuses[first.authorization_id] == pb.AUTHORIZATION_STATUS_APPROVED
            assert held.order.status == capture_pb2.ORDER_STATUS_ON_HOLD

            # The issuer relents; the agent retries, and the order goes on to ship the release.
            card.decline_above_minor = 0
            card.hold_seconds = MONTH
            await servicing.ResolveProcessException(
                spb.ResolveProcessExceptionRequest(
                    process_exception_id=exception.process_exception_id,
                    action=spb.RESOLUTION_ACTION_RETRY,
                )
            )
            await until_renewed(system, order_id, first, "the hold renewed on the agent's retry")
            await receive(fulfillment, release.supply_id, 50)
            done = await until(capture, order_id, capture_pb2.ORDER_STATUS_FULFILLED)
    finally:
        card.hold_seconds = 0
        card.decline_above_minor = 0

    total = done.order.totals.grand_total.amount_minor
    assert done.payment_summary.captured.amount_minor == total
