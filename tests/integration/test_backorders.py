"""Backorders and pre-orders through real gRPC, Postgres and the order's workflow: lines no
stock can take wait for incoming supply with a promise date while the rest ships, and
receiving the supply releases them, oldest order first, without an agent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.events.v1 import events_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from oms_tools.samples import sample_order
from tests.conftest import System
from tests.integration.helpers import eventually, logged_types
from tests.integration.test_fulfillment_service import level, new_sku, stock

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = fulfillment_pb2_grpc.FulfillmentServiceAsyncStub

IN_A_WEEK = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
IN_TWO_WEEKS = (datetime.now(UTC) + timedelta(days=14)).date().isoformat()


def stubs(
    system: System,
) -> tuple[Stub, capture_pb2_grpc.CaptureServiceStub, servicing_pb2_grpc.ServicingServiceStub]:
    fulfillment = cast(
        "Stub", fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    )
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    servicing = servicing_pb2_grpc.ServicingServiceStub(system.channel("servicing"))
    return fulfillment, capture, servicing


def order_of(tee: str, mug: str) -> capture_pb2.SubmitOrderRequest:
    """The sample order (2 tees, 1 mug, to Philadelphia) with these SKUs."""
    order = sample_order()
    order.lines[0].sku, order.lines[1].sku = tee, mug
    return order


async def supply(
    fulfillment: Stub,
    sku: str,
    quantity: int,
    expected: str = IN_A_WEEK,
    kind: pb.SupplyKind.ValueType = pb.SUPPLY_KIND_PURCHASE_ORDER,
) -> pb.Supply:
    created = await fulfillment.CreateSupply(
        pb.CreateSupplyRequest(
            idempotency_key=f"po-{sku}-{quantity}-{expected}",
            kind=kind,
            reference=f"PO-{sku[-4:]}",
            location_id="wh-east",
            sku=sku,
            quantity=quantity,
            expected_date=expected,
        )
    )
    return created.supply


async def receive(fulfillment: Stub, supply_id: str, quantity: int) -> pb.ReceiveSupplyResponse:
    return await fulfillment.ReceiveSupply(
        pb.ReceiveSupplyRequest(
            idempotency_key=f"receipt-{supply_id}-{quantity}",
            supply_id=supply_id,
            quantity=quantity,
        )
    )


async def view(
    capture: capture_pb2_grpc.CaptureServiceStub, order_id: str
) -> capture_pb2.GetOrderResponse:
    found: capture_pb2.GetOrderResponse = await capture.GetOrder(
        capture_pb2.GetOrderRequest(order_id=order_id), timeout=10
    )
    return found


def by_status(response: capture_pb2.GetOrderResponse) -> dict[int, list[pb.FulfillmentOrder]]:
    out: dict[int, list[pb.FulfillmentOrder]] = {}
    for fo in response.fulfillment_orders:
        out.setdefault(fo.status, []).append(fo)
    return out


async def until(
    capture: capture_pb2_grpc.CaptureServiceStub, order_id: str, *statuses: int
) -> capture_pb2.GetOrderResponse:
    found: capture_pb2.GetOrderResponse = await eventually(
        lambda: view(capture, order_id),
        lambda v: v.order.status in statuses,
        f"order {order_id} reaching {statuses}",
        seconds=60,
    )
    return found


async def test_the_in_stock_line_ships_now_and_the_backordered_one_ships_when_supply_arrives(
    system: System,
) -> None:
    fulfillment, capture, _ = stubs(system)
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10)
    po = await supply(fulfillment, mug, 5)
    async with system.simulator():
        submitted = await capture.SubmitOrder(order_of(tee, mug), timeout=10)
        order_id = submitted.order.order_id

        partly = await until(capture, order_id, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)
        # Give the simulator time to touch anything it might (it must not touch a backorder).
        await asyncio.sleep(0.5)
        partly = await view(capture, order_id)
        [waiting] = by_status(partly)[pb.FULFILLMENT_ORDER_STATUS_BACKORDERED]
        assert (waiting.supply_id, waiting.promise_date) == (po.supply_id, IN_A_WEEK)
        assert [(ln.sku, ln.quantity) for ln in waiting.lines] == [(mug, 1)]
        [shipped] = by_status(partly)[pb.FULFILLMENT_ORDER_STATUS_SHIPPED]
        assert [(ln.sku, ln.quantity) for ln in shipped.lines] == [(tee, 2)]
        assert partly.payment_summary.captured.amount_minor == sum(
            i.total.amount_minor for i in partly.invoices
        )
        assert len(partly.invoices) == 1
        listed = await fulfillment.ListSupply(pb.ListSupplyRequest(sku=mug))
        assert [(s.quantity_promised, s.status) for s in listed.supply] == [
            (1, pb.SUPPLY_STATUS_OPEN)
        ]

        received = await receive(fulfillment, po.supply_id, 5)
        assert [fo.fulfillment_order_id for fo in received.released] == [
            waiting.fulfillment_order_id
        ]
        assert received.supply.status == pb.SUPPLY_STATUS_RECEIVED
        done = await until(capture, order_id, capture_pb2.ORDER_STATUS_FULFILLED)

    total = done.order.totals.grand_total.amount_minor
    assert done.payment_summary.captured.amount_minor == total
    assert sum(i.total.amount_minor for i in done.invoices) == total
    assert len(done.invoices) == 2
    assert {fo.status for fo in done.fulfillment_orders} == {pb.FULFILLMENT_ORDER_STATUS_SHIPPED}
    mug_level = await level(fulfillment, mug, "wh-east")
    assert (mug_level.on_hand, mug_level.reserved) == (4, 0)  # 5 received, 1 shipped
    # The log tells integrators the line waited on supply and when it was released.
    await released_after_backordered_in_the_log(system, order_id)


async def test_arriving_supply_goes_to_the_older_backorder_first(system: System) -> None:
    fulfillment, capture, _ = stubs(system)
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10)
    po = await supply(fulfillment, mug, 2)
    async with system.simulator():
        older = (await capture.SubmitOrder(order_of(tee, mug), timeout=10)).order.order_id
        await until(capture, older, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)
        younger = (await capture.SubmitOrder(order_of(tee, mug), timeout=10)).order.order_id
        await until(capture, younger, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)

        received = await receive(fulfillment, po.supply_id, 1)

        assert [fo.order_id for fo in received.released] == [older]
        assert received.supply.status == pb.SUPPLY_STATUS_OPEN
        await until(capture, older, capture_pb2.ORDER_STATUS_FULFILLED)
        still = await view(capture, younger)
        assert still.order.status == capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED
        assert pb.FULFILLMENT_ORDER_STATUS_BACKORDERED in by_status(still)


async def test_a_pre_order_is_authorized_now_and_captured_when_the_release_ships(
    system: System,
) -> None:
    fulfillment, capture, _ = stubs(system)
    tee, game = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10)
    release = await supply(fulfillment, game, 100, IN_TWO_WEEKS, pb.SUPPLY_KIND_PRE_ORDER)
    async with system.simulator():
        order_id = (await capture.SubmitOrder(order_of(tee, game), timeout=10)).order.order_id
        waiting = await until(capture, order_id, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)
        total = waiting.order.totals.grand_total.amount_minor
        assert waiting.payment_summary.authorized.amount_minor == total
        [pre_ordered] = by_status(waiting)[pb.FULFILLMENT_ORDER_STATUS_BACKORDERED]
        assert pre_ordered.promise_date == IN_TWO_WEEKS
        captured_before = waiting.payment_summary.captured.amount_minor
        assert captured_before < total

        await receive(fulfillment, release.supply_id, 100)
        done = await until(capture, order_id, capture_pb2.ORDER_STATUS_FULFILLED)

    assert done.payment_summary.captured.amount_minor == total
    # The release was invoiced and captured on its own shipment, after the receipt.
    assert len(done.invoices) == 2
    assert sum(i.total.amount_minor for i in done.invoices) == total


async def test_a_second_pre_order_of_the_same_sku_is_refused_naming_the_first(
    system: System,
) -> None:
    fulfillment, _, _ = stubs(system)
    game = new_sku()
    first = await supply(fulfillment, game, 10, IN_TWO_WEEKS, pb.SUPPLY_KIND_PRE_ORDER)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await supply(fulfillment, game, 20, IN_TWO_WEEKS, pb.SUPPLY_KIND_PRE_ORDER)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert first.supply_id in (refused.value.details() or "")


async def test_a_bad_supply_names_every_field_and_rule(system: System) -> None:
    fulfillment, _, _ = stubs(system)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fulfillment.CreateSupply(
            pb.CreateSupplyRequest(idempotency_key="bad-supply", location_id="nowhere", quantity=0)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(refused.value)] == [
        "kind",
        "location_id",
        "sku",
        "quantity",
        "expected_date",
    ]


async def test_without_stock_or_supply_the_order_holds_for_an_agent_as_before(
    system: System,
) -> None:
    fulfillment, capture, servicing = stubs(system)
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10)
    order_id = (await capture.SubmitOrder(order_of(tee, mug), timeout=10)).order.order_id

    held = await until(capture, order_id, capture_pb2.ORDER_STATUS_ON_HOLD)

    assert pb.FULFILLMENT_ORDER_STATUS_BACKORDERED not in by_status(held)
    found = await eventually(
        lambda: servicing.ListProcessExceptions(
            servicing_pb2.ListProcessExceptionsRequest(order_id=order_id)
        ),
        lambda r: len(r.process_exceptions) > 0,
        "the process exception",
    )
    [exception] = found.process_exceptions
    assert f"1 x {mug}" in exception.message


async def test_canceling_the_only_supply_sends_the_backorder_to_an_agent(system: System) -> None:
    fulfillment, capture, servicing = stubs(system)
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10)
    po = await supply(fulfillment, mug, 3)
    order_id = (await capture.SubmitOrder(order_of(tee, mug), timeout=10)).order.order_id
    # The order is promised for when the backordered mug arrives (its latest).
    waiting = await eventually(
        lambda: view(capture, order_id),
        lambda v: any(
            fo.promised_delivery_date == v.order.promised_delivery_date != ""
            for fo in by_status(v).get(pb.FULFILLMENT_ORDER_STATUS_BACKORDERED, [])
        ),
        "the backorder and the order's promise",
    )
    [backorder] = by_status(waiting)[pb.FULFILLMENT_ORDER_STATUS_BACKORDERED]
    promised_before = backorder.promised_delivery_date

    moved = await fulfillment.UpdateSupply(
        pb.UpdateSupplyRequest(supply_id=po.supply_id, expected_date=IN_TWO_WEEKS)
    )
    assert moved.supply.expected_date == IN_TWO_WEEKS
    repromised = await eventually(
        lambda: view(capture, order_id),
        lambda v: any(
            fo.promise_date == IN_TWO_WEEKS
            for fo in by_status(v).get(pb.FULFILLMENT_ORDER_STATUS_BACKORDERED, [])
        ),
        "the new promise date",
    )
    assert repromised.order.status != capture_pb2.ORDER_STATUS_ON_HOLD
    # Supply a week later: the delivery promise moves later with it, on the fulfillment order
    # and then on the order.
    [later] = by_status(repromised)[pb.FULFILLMENT_ORDER_STATUS_BACKORDERED]
    assert later.promised_delivery_date > promised_before
    await eventually(
        lambda: view(capture, order_id),
        lambda v: v.order.promised_delivery_date == later.promised_delivery_date,
        "the order's later promise",
    )

    await fulfillment.CancelSupply(pb.CancelSupplyRequest(supply_id=po.supply_id, reason="gone"))

    await until(capture, order_id, capture_pb2.ORDER_STATUS_ON_HOLD)
    found = await servicing.ListProcessExceptions(
        servicing_pb2.ListProcessExceptionsRequest(order_id=order_id)
    )
    assert any(f"1 x {mug}" in e.message for e in found.process_exceptions)


# ---- stock that arrives by adjustment ------------------------------------------------------


async def add_stock(fulfillment: Stub, sku: str, quantity: int) -> pb.AdjustInventoryResponse:
    """Units found at wh-east (received without a supply's receipt), by AdjustInventory."""
    return await fulfillment.AdjustInventory(
        pb.AdjustInventoryRequest(
            idempotency_key=f"found-{sku}-{uuid.uuid4()}",
            adjustments=[
                pb.InventoryAdjustment(
                    location_id="wh-east",
                    sku=sku,
                    kind=pb.INVENTORY_ADJUSTMENT_KIND_RECEIVED,
                    quantity=quantity,
                    reason="found in returns bay",
                )
            ],
        )
    )


def order_with_mugs(tee: str, mug: str, mugs: int) -> capture_pb2.SubmitOrderRequest:
    """The sample order with `mugs` mugs (each 12.00 plus 0.90 tax)."""
    order = order_of(tee, mug)
    line = order.lines[1]
    line.quantity = mugs
    line.taxes[0].amount.amount_minor = 90 * mugs
    order.grand_total.amount_minor += 1290 * (mugs - 1)
    return order


async def two_backordered_orders(
    fulfillment: Stub, capture: capture_pb2_grpc.CaptureServiceStub, tee: str, mug: str
) -> tuple[capture_pb2.Order, capture_pb2.Order]:
    """With tees in stock and mugs only on a purchase order, an older order of two mugs and
    a younger one of one, each partly shipped (its tees) and its mugs backordered."""
    await stock(fulfillment, tee, wh_east=10)
    await supply(fulfillment, mug, 5)
    older = (await capture.SubmitOrder(order_with_mugs(tee, mug, 2), timeout=10)).order
    await until(capture, older.order_id, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)
    younger = (await capture.SubmitOrder(order_of(tee, mug), timeout=10)).order
    await until(capture, younger.order_id, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)
    return older, younger


async def both_still_backordered(
    fulfillment: Stub,
    capture: capture_pb2_grpc.CaptureServiceStub,
    mug: str,
    older: capture_pb2.Order,
    younger: capture_pb2.Order,
) -> None:
    """One mug on hand: too few for the older order, and the younger not served before it."""
    for order_id in (older.order_id, younger.order_id):
        still = await view(capture, order_id)
        assert pb.FULFILLMENT_ORDER_STATUS_BACKORDERED in by_status(still)
    one = await level(fulfillment, mug, "wh-east")
    assert (one.on_hand, one.reserved) == (1, 0)


async def older_fulfilled_younger_waiting(
    capture: capture_pb2_grpc.CaptureServiceStub,
    older: capture_pb2.Order,
    younger: capture_pb2.Order,
) -> None:
    await until(capture, older.order_id, capture_pb2.ORDER_STATUS_FULFILLED)
    waiting = await view(capture, younger.order_id)
    assert waiting.order.status == capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED
    assert pb.FULFILLMENT_ORDER_STATUS_BACKORDERED in by_status(waiting)


async def shipped_whole_and_the_last_mug_gone(
    fulfillment: Stub, done: capture_pb2.GetOrderResponse, mug: str
) -> None:
    """The order captured in full and every fulfillment order shipped, no mug left at
    wh-east and none promised from the purchase order any more."""
    total = done.order.totals.grand_total.amount_minor
    assert done.payment_summary.captured.amount_minor == total
    assert {fo.status for fo in done.fulfillment_orders} == {pb.FULFILLMENT_ORDER_STATUS_SHIPPED}
    mug_level = await level(fulfillment, mug, "wh-east")
    assert (mug_level.on_hand, mug_level.reserved) == (0, 0)
    listed = await fulfillment.ListSupply(pb.ListSupplyRequest(sku=mug))
    assert [s.quantity_promised for s in listed.supply] == [0]  # nothing waits on it now


async def released_after_backordered_in_the_log(system: System, order_id: str) -> None:
    """The event log tells integrators the line waited on supply, then was released."""
    events = events_pb2_grpc.EventsServiceStub(system.channel("capture", auth.ADMIN))
    logged = await eventually(
        lambda: logged_types(events, order_id),
        lambda types: "fulfillment.released" in types,
        "the release in the log",
    )
    assert "fulfillment.backordered" in logged
    assert logged.index("fulfillment.released") > logged.index("fulfillment.backordered")


async def test_stock_added_by_an_adjustment_releases_the_backorder_and_it_ships(
    system: System,
) -> None:
    fulfillment, capture, _ = stubs(system)
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10)
    await supply(fulfillment, mug, 5)
    async with system.simulator():
        order_id = (await capture.SubmitOrder(order_of(tee, mug), timeout=10)).order.order_id
        partly = await until(capture, order_id, capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED)
        assert pb.FULFILLMENT_ORDER_STATUS_BACKORDERED in by_status(partly)

        await add_stock(fulfillment, mug, 1)
        done = await until(capture, order_id, capture_pb2.ORDER_STATUS_FULFILLED)

    await shipped_whole_and_the_last_mug_gone(fulfillment, done, mug)  # 1 found, 1 shipped
    await released_after_backordered_in_the_log(system, order_id)


async def test_a_stock_feed_that_raises_on_hand_releases_backorders_oldest_first(
    system: System,
) -> None:
    fulfillment, capture, _ = stubs(system)
    tee, mug = new_sku(), new_sku()
    async with system.simulator():
        older, younger = await two_backordered_orders(fulfillment, capture, tee, mug)

        # The feed says one mug: the older order needs two, and the younger may not go first.
        await stock(fulfillment, mug, wh_east=1)
        await both_still_backordered(fulfillment, capture, mug, older, younger)

        # Two: the older order is released with both and ships; the younger still waits.
        await stock(fulfillment, mug, wh_east=2)
        await older_fulfilled_younger_waiting(capture, older, younger)

        # The next feed's unit is the younger order's.
        await stock(fulfillment, mug, wh_east=1)
        done = await until(capture, younger.order_id, capture_pb2.ORDER_STATUS_FULFILLED)

    await shipped_whole_and_the_last_mug_gone(fulfillment, done, mug)  # set to 1, 1 shipped
    [released] = [e for e in done.timeline if e.kind == "fulfillment.released"]
    assert f"(stock of {mug} set at wh-east)" in released.summary
    await released_after_backordered_in_the_log(system, younger.order_id)


async def test_an_adjustment_too_small_for_the_oldest_backorder_releases_no_younger_one(
    system: System,
) -> None:
    fulfillment, capture, _ = stubs(system)
    tee, mug = new_sku(), new_sku()
    async with system.simulator():
        older, younger = await two_backordered_orders(fulfillment, capture, tee, mug)

        # One unit: the older order needs two, and the younger may not go ahead of it.
        await add_stock(fulfillment, mug, 1)
        await both_still_backordered(fulfillment, capture, mug, older, younger)

        # A second unit: the older order is released with both; the younger still waits.
        await add_stock(fulfillment, mug, 1)
        await older_fulfilled_younger_waiting(capture, older, younger)
