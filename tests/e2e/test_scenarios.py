"""The merchant scenarios of shared/scenarios.md (5 to 18), end to end over gRPC.

The system is assembled in this process (the `system` fixture: the four services on real
ports, the order worker, real Postgres and a real Temporal dev server) so each test can play
the warehouse itself or switch the simulator on, and set up stock of its own SKUs. Every call
goes over gRPC; every test checks the order's final state, its money and its timeline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from oms.capture.v1 import capture_pb2 as cpb
from oms.capture.v1 import capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.fulfillment.v1 import fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2 as ppb
from oms.payments.v1 import payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2 as spb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform.money import share
from tests.conftest import System

pytestmark = pytest.mark.e2e

SETTLED = {cpb.ORDER_STATUS_FULFILLED, cpb.ORDER_STATUS_CANCELED}


class Client:
    """Stubs for every service, and the steps a scenario repeats."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
        self.fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(
            system.channel("fulfillment")
        )
        self.payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
        self.servicing = servicing_pb2_grpc.ServicingServiceStub(system.channel("servicing"))

    async def stock(self, sku: str, **levels: int) -> None:
        await self.fulfillment.SetInventoryLevels(
            fpb.SetInventoryLevelsRequest(
                levels=[
                    fpb.InventoryLevel(location_id=loc.replace("_", "-"), sku=sku, on_hand=qty)
                    for loc, qty in levels.items()
                ]
            ),
            timeout=10,
        )

    async def submit(self, request: cpb.SubmitOrderRequest) -> cpb.Order:
        return (await self.capture.SubmitOrder(request, timeout=10)).order

    async def view(self, order_id: str) -> cpb.GetOrderResponse:
        return await self.capture.GetOrder(cpb.GetOrderRequest(order_id=order_id), timeout=10)

    async def wait(
        self, order_id: str, statuses: set[int], within: float = 60
    ) -> cpb.GetOrderResponse:
        deadline = time.monotonic() + within
        while True:
            view = await self.view(order_id)
            if view.order.status in statuses and not view.missing_sections:
                return view
            assert time.monotonic() < deadline, f"order {order_id} stuck in {view.order.status}"
            await asyncio.sleep(0.1)

    async def exception_of(self, order_id: str) -> spb.ProcessException:
        deadline = time.monotonic() + 30
        while True:
            found = await self.servicing.ListProcessExceptions(
                spb.ListProcessExceptionsRequest(order_id=order_id), timeout=10
            )
            open_ones = [
                e for e in found.process_exceptions
                if e.status == spb.PROCESS_EXCEPTION_STATUS_NEW
            ]  # fmt: skip
            if open_ones:
                return open_ones[0]
            assert time.monotonic() < deadline, "no process exception raised"
            await asyncio.sleep(0.1)

    async def resolve(self, exception_id: str, action: int) -> None:
        await self.servicing.ResolveProcessException(
            spb.ResolveProcessExceptionRequest(
                process_exception_id=exception_id, action=action, note="checked"
            ),
            timeout=30,
        )

    async def summary(self, order_id: str) -> ppb.PaymentSummary:
        response = await self.payments.GetPaymentSummary(
            ppb.GetPaymentSummaryRequest(order_id=order_id), timeout=10
        )
        return response.summary

    async def reservations_of(self, sku: str) -> int:
        availability = await self.fulfillment.GetAvailability(
            fpb.GetAvailabilityRequest(skus=[sku]), timeout=10
        )
        return sum(level.reserved for level in availability.levels)


@pytest.fixture
async def oms(system: System) -> AsyncIterator[Client]:
    yield Client(system)


def usd(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="USD")


def an_order(
    lines: list[tuple[str, int, int]],
    *,
    token: str = "tok_visa",
    channel: int = cpb.CHANNEL_WEB,
    shipping: int = 500,
    email: str = "grace@example.com",
) -> cpb.SubmitOrderRequest:
    """Lines of (sku, quantity, unit price) shipping to Philadelphia, no tax or discounts."""
    key = str(uuid.uuid4())
    return cpb.SubmitOrderRequest(
        idempotency_key=key,
        channel=channel,
        channel_order_ref=f"SCN-{key[:12]}",
        shopper=cpb.Shopper(kind=cpb.SHOPPER_KIND_PERSON, email=email, name="Grace Hopper"),
        currency="USD",
        delivery_groups=[
            cpb.DeliveryGroup(
                ref="home",
                recipient_name="Grace Hopper",
                address=common_pb2.PostalAddress(
                    line1="1 Market St",
                    city="Philadelphia",
                    region="PA",
                    postal_code="19106",
                    country_code="US",
                ),
                delivery_method="standard",
                shipping_charge=usd(shipping),
            )
        ],
        lines=[
            cpb.OrderLine(delivery_group_ref="home", sku=sku, quantity=qty, unit_price=usd(price))
            for sku, qty, price in lines
        ],
        grand_total=usd(sum(q * p for _, q, p in lines) + shipping),
        payment_method=ppb.PaymentMethod(type=ppb.PAYMENT_METHOD_TYPE_CARD, token=token),
    )


def sku(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}".upper()


def kinds(view: cpb.GetOrderResponse) -> list[str]:
    return [event.kind for event in view.timeline]


def line_of(view: cpb.GetOrderResponse, sku_name: str) -> cpb.OrderLine:
    return next(line for line in view.order.lines if line.sku == sku_name)


# ---- fulfillment ------------------------------------------------------------------------------


async def test_5_split_shipment_from_the_nearest_pair_with_an_invoice_per_parcel(
    oms: Client,
) -> None:
    shirt, lamp = sku("SHIRT"), sku("LAMP")
    await oms.stock(shirt, wh_east=5, wh_west=5)
    await oms.stock(lamp, store_chicago=5)
    order = await oms.submit(an_order([(shirt, 1, 2000), (lamp, 1, 4500)]))

    async with oms.system.simulator():
        view = await oms.wait(order.order_id, SETTLED)

    assert view.order.status == cpb.ORDER_STATUS_FULFILLED
    assert sorted(fo.location_id for fo in view.fulfillment_orders) == ["store-chicago", "wh-east"]
    assert len(view.invoices) == 2
    assert sorted(c.amount.amount_minor for c in view.captures) == sorted(
        i.total.amount_minor for i in view.invoices
    )
    total = order.totals.grand_total.amount_minor
    assert (
        view.payment_summary.captured.amount_minor
        == total
        == sum(i.total.amount_minor for i in view.invoices)
    )


@pytest.mark.parametrize("agent", ["retries after stock arrives", "cancels"])
async def test_6_out_of_stock_everywhere_waits_for_the_agent(oms: Client, agent: str) -> None:
    rare = sku("RARE")
    order = await oms.submit(an_order([(rare, 2, 3000)]))
    exception = await oms.exception_of(order.order_id)
    assert exception.category == spb.PROCESS_EXCEPTION_CATEGORY_INVENTORY
    await oms.wait(order.order_id, {cpb.ORDER_STATUS_ON_HOLD})

    if agent == "cancels":
        await oms.resolve(exception.process_exception_id, spb.RESOLUTION_ACTION_CANCEL)
        view = await oms.wait(order.order_id, SETTLED)
        assert view.order.status == cpb.ORDER_STATUS_CANCELED
        assert all(a.status == ppb.AUTHORIZATION_STATUS_VOIDED for a in view.authorizations)
        assert view.payment_summary.captured.amount_minor == 0
        return

    await oms.stock(rare, wh_west=3)
    await oms.resolve(exception.process_exception_id, spb.RESOLUTION_ACTION_RETRY)
    async with oms.system.simulator():
        view = await oms.wait(order.order_id, SETTLED)
    assert view.order.status == cpb.ORDER_STATUS_FULFILLED
    assert [fo.location_id for fo in view.fulfillment_orders] == ["wh-west"]
    assert view.payment_summary.captured.amount_minor == order.totals.grand_total.amount_minor
    assert "exception.resolved" in kinds(view)


async def test_7_a_rejected_fulfillment_order_is_routed_to_the_next_location_by_itself(
    oms: Client,
) -> None:
    mug = sku("MUG")
    await oms.stock(mug, wh_east=4, wh_west=4)
    order = await oms.submit(an_order([(mug, 2, 1500)]))
    view = await oms.wait(order.order_id, {cpb.ORDER_STATUS_ALLOCATED})
    [first] = view.fulfillment_orders
    assert first.location_id == "wh-east"

    await oms.fulfillment.RejectFulfillmentOrder(
        fpb.RejectFulfillmentOrderRequest(
            fulfillment_order_id=first.fulfillment_order_id,
            idempotency_key="reject-1",
            reason="forklift down",
        ),
        timeout=10,
    )
    async with oms.system.simulator():
        view = await oms.wait(order.order_id, SETTLED)

    assert view.order.status == cpb.ORDER_STATUS_FULFILLED
    statuses = {fo.location_id: fo.status for fo in view.fulfillment_orders}
    assert statuses == {
        "wh-east": fpb.FULFILLMENT_ORDER_STATUS_REJECTED,
        "wh-west": fpb.FULFILLMENT_ORDER_STATUS_SHIPPED,
    }
    assert view.process_exceptions == []
    assert "fulfillment.rejected" in kinds(view)
    assert await oms.reservations_of(mug) == 0


async def test_8_a_watcher_sees_shipping_with_tracking_and_delivery_as_they_happen(
    oms: Client,
) -> None:
    order = await oms.submit(an_order([("SKU-CAP", 1, 1800)]))
    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        async for update in oms.capture.WatchOrder(cpb.WatchOrderRequest(order_id=order.order_id)):
            seen.extend((e.kind, e.summary) for e in update.events)
            if update.status in SETTLED:
                return

    watcher = asyncio.create_task(watch())
    async with oms.system.simulator(step_seconds=0.3):
        await asyncio.wait_for(watcher, 60)

    view = await oms.view(order.order_id)
    [fo] = view.fulfillment_orders
    [shipment] = fo.shipments
    shipped = [summary for kind, summary in seen if kind == "shipment.shipped"]
    assert len(shipped) == 1 and shipment.tracking_number in shipped[0]
    assert [k for k, _ in seen].index("shipment.shipped") < [k for k, _ in seen].index(
        "shipment.delivered"
    )
    assert seen[-1][0] == "order.fulfilled"


# ---- payments ---------------------------------------------------------------------------------


async def test_9_a_declined_authorization_cancels_the_order_and_leaves_nothing_reserved(
    oms: Client,
) -> None:
    mug = sku("MUG")
    await oms.stock(mug, wh_east=4)
    order = await oms.submit(an_order([(mug, 1, 1500)], token="tok_decline"))
    view = await oms.wait(order.order_id, SETTLED)

    assert view.order.status == cpb.ORDER_STATUS_CANCELED
    assert "card_declined" in view.timeline[-1].summary
    assert view.fulfillment_orders == []
    assert await oms.reservations_of(mug) == 0
    assert view.process_exceptions[0].category == spb.PROCESS_EXCEPTION_CATEGORY_PAYMENT


# ---- service ----------------------------------------------------------------------------------


async def submit_and_deliver(oms: Client, request: cpb.SubmitOrderRequest) -> cpb.GetOrderResponse:
    order = await oms.submit(request)
    async with oms.system.simulator():
        return await oms.wait(order.order_id, {cpb.ORDER_STATUS_FULFILLED})


async def test_11_cancel_before_shipping_whole_order_and_a_single_unit(oms: Client) -> None:
    mug = sku("MUG")
    await oms.stock(mug, wh_east=10)
    whole = await oms.submit(an_order([(mug, 2, 1500)]))
    part = await oms.submit(an_order([(mug, 3, 1500), ("SKU-CAP", 1, 1800)]))
    await oms.wait(whole.order_id, {cpb.ORDER_STATUS_ALLOCATED})
    await oms.wait(part.order_id, {cpb.ORDER_STATUS_ALLOCATED})

    await oms.servicing.SubmitCancel(
        spb.SubmitCancelRequest(
            order_id=whole.order_id, idempotency_key="c1", reason="changed mind"
        ),
        timeout=30,
    )
    mug_line = next(line for line in part.lines if line.sku == mug)
    one = await oms.servicing.SubmitCancel(
        spb.SubmitCancelRequest(
            order_id=part.order_id,
            idempotency_key="c2",
            reason="one too many",
            lines=[spb.ItemQuantity(order_line_id=mug_line.order_line_id, quantity=1)],
        ),
        timeout=30,
    )

    canceled = await oms.wait(whole.order_id, SETTLED)
    assert canceled.order.status == cpb.ORDER_STATUS_CANCELED
    assert all(a.status == ppb.AUTHORIZATION_STATUS_VOIDED for a in canceled.authorizations)
    assert one.change.outcome.released_minor == 1500
    [fo] = (await oms.view(part.order_id)).fulfillment_orders
    assert (
        next(line for line in fo.lines if line.order_line_id == mug_line.order_line_id).quantity
        == 2
    )
    async with oms.system.simulator():
        view = await oms.wait(part.order_id, SETTLED)
    assert view.payment_summary.captured.amount_minor == part.totals.grand_total.amount_minor - 1500
    assert line_of(view, mug).quantities.canceled == 1


async def test_12_partial_return_refunds_exactly_one_units_share_with_discount_and_tax(
    oms: Client,
) -> None:
    from oms_tools.samples import sample_order

    view = await submit_and_deliver(oms, sample_order())
    tshirts = line_of(view, "SKU-TSHIRT-M")
    opened = await oms.servicing.SubmitReturn(
        spb.SubmitReturnRequest(
            order_id=view.order.order_id,
            idempotency_key="r1",
            reason="too small",
            lines=[
                spb.ReturnItem(order_line_id=tshirts.order_line_id, quantity=1, reason="too small")
            ],
        ),
        timeout=30,
    )
    rma = opened.change.outcome.return_order_id
    received = await oms.servicing.ReceiveReturn(
        spb.ReceiveReturnRequest(
            order_id=view.order.order_id,
            return_order_id=rma,
            idempotency_key="rr1",
            accepted=[spb.ReceivedItem(order_line_id=tshirts.order_line_id, quantity=1)],
        ),
        timeout=30,
    )

    gross = tshirts.unit_price.amount_minor * tshirts.quantity
    discount = sum(d.amount.amount_minor for d in tshirts.discounts)
    discount += tshirts.allocated_order_discount.amount_minor
    tax = sum(t.amount.amount_minor for t in tshirts.taxes)
    first_unit = share(gross, 2, 0, 1) - share(discount, 2, 0, 1) + share(tax, 2, 0, 1)
    assert received.change.outcome.refunded_minor == first_unit
    after = await oms.view(view.order.order_id)
    assert after.payment_summary.refunded.amount_minor == first_unit
    assert line_of(after, "SKU-TSHIRT-M").quantities.returned == 1
    reconciliation = (
        await oms.payments.GetReconciliation(
            ppb.GetReconciliationRequest(order_id=view.order.order_id), timeout=10
        )
    ).reconciliation
    assert reconciliation.agrees, reconciliation
    assert reconciliation.credited.amount_minor == first_unit


async def test_13_a_late_return_is_refused_saying_when_the_window_closed(oms: Client) -> None:
    view = await submit_and_deliver(
        oms, an_order([("SKU-CAP", 1, 1800)], channel=cpb.CHANNEL_MARKETPLACE)
    )
    await asyncio.sleep(3)  # the marketplace window is 2 seconds in the system's settings
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await oms.servicing.SubmitReturn(
            spb.SubmitReturnRequest(
                order_id=view.order.order_id,
                idempotency_key="late",
                reason="late",
                lines=[spb.ReturnItem(order_line_id=view.order.lines[0].order_line_id, quantity=1)],
            ),
            timeout=30,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "closed" in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("price", "charged", "refunded"), [(1800, 0, 0), (2300, 500, 0), (1500, 0, 300)]
)
async def test_14_exchange_ships_a_replacement_and_settles_the_difference(
    oms: Client, price: int, charged: int, refunded: int
) -> None:
    view = await submit_and_deliver(oms, an_order([("SKU-TSHIRT-M", 1, 1800)]))
    line = view.order.lines[0]
    exchanged = await oms.servicing.SubmitExchange(
        spb.SubmitExchangeRequest(
            order_id=view.order.order_id,
            idempotency_key=f"x-{price}",
            reason="wrong size",
            lines=[
                spb.ExchangeItem(
                    order_line_id=line.order_line_id,
                    quantity=1,
                    replacement_sku="SKU-TSHIRT-L",
                    replacement_unit_price_minor=price,
                )
            ],
        ),
        timeout=30,
    )
    outcome = exchanged.change.outcome
    assert (outcome.charged_minor, outcome.refunded_minor) == (charged, refunded)
    assert len(outcome.fulfillment_order_ids) == 1
    async with oms.system.simulator():
        deadline = time.monotonic() + 30
        while True:
            fos = (await oms.view(view.order.order_id)).fulfillment_orders
            replacement = next(
                fo for fo in fos if fo.fulfillment_order_id == outcome.fulfillment_order_ids[0]
            )
            if replacement.status == fpb.FULFILLMENT_ORDER_STATUS_SHIPPED:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert replacement.lines[0].sku == "SKU-TSHIRT-L"
    summary = await oms.summary(view.order.order_id)
    assert summary.captured.amount_minor == view.order.totals.grand_total.amount_minor + charged
    assert summary.refunded.amount_minor == refunded


async def test_15_a_lost_parcel_is_reshipped_at_no_charge(oms: Client) -> None:
    view = await submit_and_deliver(oms, an_order([("SKU-MUG", 2, 1200)]))
    reshipped = await oms.servicing.SubmitReship(
        spb.SubmitReshipRequest(
            order_id=view.order.order_id,
            idempotency_key="lost",
            reason=spb.RESHIP_REASON_LOST,
            lines=[spb.ItemQuantity(order_line_id=view.order.lines[0].order_line_id, quantity=2)],
        ),
        timeout=30,
    )
    assert len(reshipped.change.outcome.fulfillment_order_ids) == 1
    async with oms.system.simulator():
        await asyncio.sleep(2)
    after = await oms.view(view.order.order_id)
    assert len(after.fulfillment_orders) == 2
    assert all(fo.status == fpb.FULFILLMENT_ORDER_STATUS_SHIPPED for fo in after.fulfillment_orders)
    assert len(after.invoices) == 1
    assert after.payment_summary.captured.amount_minor == view.order.totals.grand_total.amount_minor


async def test_16_appeasement_refunds_ten_percent_and_never_more_than_captured(oms: Client) -> None:
    view = await submit_and_deliver(
        oms, an_order([("SKU-HOODIE-M", 1, 5000), ("SKU-CAP", 1, 1800)])
    )
    hoodie = line_of(view, "SKU-HOODIE-M")
    ten = await oms.servicing.SubmitAppeasement(
        spb.SubmitAppeasementRequest(
            order_id=view.order.order_id,
            idempotency_key="a1",
            reason="late delivery",
            order_line_id=hoodie.order_line_id,
            percent_basis_points=1000,
        ),
        timeout=30,
    )
    assert ten.change.outcome.refunded_minor == 500
    refused = 0
    for i in range(3):
        try:
            await oms.servicing.SubmitAppeasement(
                spb.SubmitAppeasementRequest(
                    order_id=view.order.order_id,
                    idempotency_key=f"a-more-{i}",
                    reason="more",
                    order_line_id=hoodie.order_line_id,
                    percent_basis_points=5000,
                ),
                timeout=30,
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            refused += 1
    assert refused >= 2
    summary = await oms.summary(view.order.order_id)
    assert summary.refunded.amount_minor <= 5000
    assert summary.refunded.amount_minor <= summary.captured.amount_minor


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_17_a_fraud_hold_waits_for_the_agent(oms: Client, decision: str) -> None:
    order = await oms.submit(an_order([("SKU-HOODIE-M", 30, 5000)]))  # above the fraud threshold
    exception = await oms.exception_of(order.order_id)
    assert exception.category == spb.PROCESS_EXCEPTION_CATEGORY_FRAUD
    assert (await oms.view(order.order_id)).authorizations == []
    action = spb.RESOLUTION_ACTION_RETRY if decision == "approve" else spb.RESOLUTION_ACTION_CANCEL
    await oms.resolve(exception.process_exception_id, action)
    async with oms.system.simulator():
        view = await oms.wait(order.order_id, SETTLED)
    if decision == "approve":
        assert view.order.status == cpb.ORDER_STATUS_FULFILLED
        assert view.payment_summary.captured.amount_minor == order.totals.grand_total.amount_minor
    else:
        assert view.order.status == cpb.ORDER_STATUS_CANCELED
        assert view.payment_summary.captured.amount_minor == 0
        assert view.fulfillment_orders == []


async def test_10_a_failed_capture_waits_for_the_agent_and_is_captured_exactly_once(
    oms: Client,
) -> None:
    order = await oms.submit(an_order([("SKU-MUG", 1, 1200)], token="tok_fail_first_capture"))
    async with oms.system.simulator():
        exception = await oms.exception_of(order.order_id)
        assert exception.category == spb.PROCESS_EXCEPTION_CATEGORY_PAYMENT
        assert "processor_unavailable" in exception.message
        held = await oms.wait(order.order_id, {cpb.ORDER_STATUS_ON_HOLD})
        assert held.payment_summary.captured.amount_minor == 0
        await oms.resolve(exception.process_exception_id, spb.RESOLUTION_ACTION_RETRY)
        view = await oms.wait(order.order_id, SETTLED)

    total = order.totals.grand_total.amount_minor
    assert view.order.status == cpb.ORDER_STATUS_FULFILLED
    succeeded = [c for c in view.captures if c.status == ppb.CAPTURE_STATUS_SUCCEEDED]
    assert len(succeeded) == 1 and succeeded[0].amount.amount_minor == total
    assert view.payment_summary.captured.amount_minor == total
