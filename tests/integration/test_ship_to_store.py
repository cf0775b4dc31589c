"""Ship-to-store through capture, fulfillment, payments and the real order workflow: a pickup
order whose store has not got the units, at a store that accepts ship-to-store, is allocated
at the warehouse nearest the store (not the one nearest the shopper), shipped to the store (a
transfer: nothing invoiced or captured, the units leaving the warehouse), received there (the
units on the store's shelf, reserved for the order), collected, and the order fulfilled with
its money captured; not collected, the units stay on the store's shelf, available. A store that
does not accept ship-to-store holds the order for an agent as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.events.v1 import events_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform import auth
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.samples import sample_order
from tests.conftest import System, running_system, wait_for
from tests.integration.helpers import eventually, logged_types
from tests.integration.test_fulfillment_service import SEATTLE, level, new_sku, stock
from tests.integration.test_store_pickup import (
    COLLECT_WITHIN_SECONDS,
    SETTLED,
    STORE,
    fulfillment,
    staff,
)

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = fulfillment_pb2_grpc.FulfillmentServiceAsyncStub


@pytest.fixture(scope="module")
async def system(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[System]:
    async with running_system(
        settings_with_temporal,
        postgres,
        "oms_ship_to_store",
        pickup_collect_within_seconds=COLLECT_WITHIN_SECONDS,
        pickup_sweep_seconds=0.2,
    ) as running:
        await accept_ship_to_store(running, STORE)
        yield running


async def accept_ship_to_store(
    system: System, store_id: str, accepted: bool = True, *from_ids: str
) -> pb.Location:
    """Set a store's ship-to-store setting as a merchandiser would, keeping the rest of it."""
    listed = await fulfillment(system).ListLocations(pb.ListLocationsRequest())
    [location] = [loc for loc in listed.locations if loc.location_id == store_id]
    location.ship_to_store.CopyFrom(
        pb.ShipToStoreSetting(accepted=accepted, from_location_ids=from_ids)
    )
    merchandiser = fulfillment(system, auth.MERCHANDISER)
    stored = await merchandiser.UpsertLocation(pb.UpsertLocationRequest(location=location))
    return stored.location


def pickup_order(store_id: str, tee: str, mug: str) -> capture_pb2.SubmitOrderRequest:
    """The sample order, its shopper in Seattle (nearer wh-west), collected at `store_id`
    (nearer wh-east): 2 of `tee`, 1 of `mug`."""
    order = sample_order(email=f"sts-{new_sku().lower()}@example.com")
    group = order.delivery_groups[0]
    group.address.CopyFrom(SEATTLE)
    group.delivery_method = "pickup"
    group.pickup_location_id = store_id
    order.lines[0].sku, order.lines[1].sku = tee, mug
    return order


async def submitted(system: System, order: capture_pb2.SubmitOrderRequest) -> str:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    return (await capture.SubmitOrder(order, timeout=10)).order.order_id


async def allocated_to_store(system: System, tee: str, mug: str) -> tuple[str, pb.FulfillmentOrder]:
    order_id = await submitted(system, pickup_order(STORE, tee, mug))
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    view = await wait_for(capture, order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})
    [fo] = view.fulfillment_orders
    found = await fulfillment(system).GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    return order_id, found.fulfillment_order


async def captured(system: System, order_id: str) -> int:
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    summary = await payments.GetPaymentSummary(
        payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
    )
    return summary.summary.captured.amount_minor


async def test_the_setting_is_shown_and_kept_when_an_upsert_leaves_it_out(system: System) -> None:
    listed = await fulfillment(system).ListLocations(pb.ListLocationsRequest())
    [store] = [loc for loc in listed.locations if loc.location_id == STORE]
    assert store.ship_to_store.accepted
    store.ClearField("ship_to_store")
    store.name = "Chicago Store"
    kept = await fulfillment(system, auth.MERCHANDISER).UpsertLocation(
        pb.UpsertLocationRequest(location=store)
    )
    assert kept.location.ship_to_store.accepted
    assert list(kept.location.ship_to_store.from_location_ids) == []
    # A warehouse cannot accept ship-to-store, nor a store take it from another store.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await accept_ship_to_store(system, STORE, True, "wh-east", "store-chicago")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "store-chicago is a store, not a warehouse" in str(refused.value.details())


async def test_a_pickup_its_store_lacks_is_shipped_there_from_the_nearest_warehouse_and_captured(
    system: System,
) -> None:
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment(system), tee, wh_east=5, wh_west=5)
    await stock(fulfillment(system), mug, wh_east=5, wh_west=5)

    order_id, fo = await allocated_to_store(system, tee, mug)

    # Nearest the store (Chicago), not the shopper (Seattle); the store is where it is collected.
    assert (fo.location_id, fo.pickup_location_id) == ("wh-east", STORE)
    # Promised for the day the transfer reaches the store, as a standard parcel from the
    # warehouse to the store would arrive (what EstimateDelivery says at the moment it was
    # made), not the day the warehouse ships it; capture's order follows.
    listed = await fulfillment(system).ListLocations(pb.ListLocationsRequest())
    [store] = [loc for loc in listed.locations if loc.location_id == STORE]
    estimated = await fulfillment(system).EstimateDelivery(
        pb.EstimateDeliveryRequest(
            items=[pb.DeliveryItem(sku=ln.sku, quantity=ln.quantity) for ln in fo.lines],
            address=store.address,
            delivery_methods=["standard"],
            ordered_at=fo.created_at,
        )
    )
    [parcel] = estimated.estimates[0].shipments
    assert parcel.location_id == "wh-east"
    assert fo.promised_delivery_date == parcel.delivery_date
    assert fo.promised_delivery_date > parcel.ship_date
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    await eventually(
        lambda: capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10),
        lambda v: v.order.promised_delivery_date == parcel.delivery_date,
        "the order's promise in capture",
    )
    assert (await level(fulfillment(system), tee, "wh-east")).reserved == 2
    decisions = await fulfillment(system).GetRoutingDecisions(
        pb.GetRoutingDecisionsRequest(order_id=order_id)
    )
    said = " | ".join(s for d in decisions.decisions for s in d.summary)
    assert f"store {STORE} has not got" in said and "accepts ship-to-store" in said
    # Shipping it to the store is not the shopper's shipment: refused as one, and the store
    # cannot set it aside before the transfer left.
    with pytest.raises(grpc.aio.AioRpcError) as not_a_shipment:
        await staff(system, "wh-east").ConfirmShipment(
            pb.ConfirmShipmentRequest(
                fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="s1"
            )
        )
    assert not_a_shipment.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ShipToStore" in str(not_a_shipment.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as too_soon:
        await staff(system, STORE).MarkReadyForPickup(
            pb.MarkReadyForPickupRequest(fulfillment_order_id=fo.fulfillment_order_id)
        )
    assert too_soon.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Only the warehouse ships it.
    with pytest.raises(grpc.aio.AioRpcError) as not_theirs:
        await staff(system, STORE).ShipToStore(
            pb.ShipToStoreRequest(fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="t")
        )
    assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED

    shipped = await staff(system, "wh-east").ShipToStore(
        pb.ShipToStoreRequest(
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key="t1",
            carrier="LTL",
            tracking_number="TR-1",
        )
    )

    in_transit = shipped.fulfillment_order
    assert in_transit.status == pb.FULFILLMENT_ORDER_STATUS_IN_TRANSIT_TO_STORE
    assert (in_transit.transfer_carrier, in_transit.transfer_tracking_number) == ("LTL", "TR-1")
    assert list(in_transit.shipments) == []
    warehouse = await level(fulfillment(system), tee, "wh-east")
    assert (warehouse.on_hand, warehouse.reserved) == (3, 0)
    # Nothing was invoiced or captured for the transfer; the order is not shipped.
    events = events_pb2_grpc.EventsServiceStub(system.channel("capture", auth.ADMIN))
    await eventually(
        lambda: logged_types(events, order_id),
        lambda types: "fulfillment.in_transit_to_store" in types,
        "the transfer in the order's log",
    )
    assert await captured(system, order_id) == 0
    view = await capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
    assert view.order.status == capture_pb2.ORDER_STATUS_ALLOCATED
    assert "shipment.shipped" not in await logged_types(events, order_id)

    # The store receives it (and sees it, as it is coming to it).
    seen = await staff(system, STORE).GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    assert seen.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_IN_TRANSIT_TO_STORE
    ready = await staff(system, STORE).MarkReadyForPickup(
        pb.MarkReadyForPickupRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    assert ready.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_READY_FOR_PICKUP
    assert ready.fulfillment_order.HasField("received_at_store_at")
    at_store = await level(fulfillment(system), tee, STORE)
    assert (at_store.on_hand, at_store.reserved, at_store.available_to_fulfill) == (2, 2, 0)

    picked = await staff(system, STORE).ConfirmPickup(
        pb.ConfirmPickupRequest(fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="c1")
    )

    assert picked.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_PICKED_UP
    view = await wait_for(capture, order_id, SETTLED)
    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
    assert await captured(system, order_id) == view.order.totals.grand_total.amount_minor
    after = await level(fulfillment(system), tee, STORE)
    assert (after.on_hand, after.reserved) == (0, 0)
    assert (await level(fulfillment(system), tee, "wh-east")).on_hand == 3


async def test_a_ship_to_store_pickup_not_collected_leaves_its_units_on_the_store_shelf(
    system: System,
) -> None:
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment(system), tee, wh_east=2)
    await stock(fulfillment(system), mug, wh_east=1)
    order_id, fo = await allocated_to_store(system, tee, mug)
    await staff(system, "wh-east").ShipToStore(
        pb.ShipToStoreRequest(fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="t1")
    )
    await staff(system, STORE).MarkReadyForPickup(
        pb.MarkReadyForPickupRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )

    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    view = await wait_for(capture, order_id, SETTLED)

    assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED
    assert await captured(system, order_id) == 0
    shelf = await level(fulfillment(system), tee, STORE)
    assert (shelf.on_hand, shelf.reserved, shelf.available_to_fulfill) == (2, 0, 2)
    assert (await level(fulfillment(system), tee, "wh-east")).on_hand == 0


async def test_a_store_that_does_not_accept_ship_to_store_holds_the_order_as_before(
    system: System,
) -> None:
    await fulfillment(system, auth.MERCHANDISER).UpsertLocation(
        pb.UpsertLocationRequest(
            location=pb.Location(
                location_id="store-denver",
                name="Denver Store",
                type=pb.LOCATION_TYPE_STORE,
                latitude=39.74,
                longitude=-104.99,
                priority=2,
                enabled=True,
            )
        )
    )
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment(system), tee, wh_east=5, wh_west=5, store_denver=2)
    await stock(fulfillment(system), mug, wh_east=5, wh_west=5)

    order_id = await submitted(system, pickup_order("store-denver", tee, mug))

    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    held = await wait_for(capture, order_id, {capture_pb2.ORDER_STATUS_ON_HOLD})
    assert {fo.location_id for fo in held.fulfillment_orders} == {"store-denver"}
    servicing = servicing_pb2_grpc.ServicingServiceStub(system.channel("servicing"))
    found = await eventually(
        lambda: servicing.ListProcessExceptions(
            servicing_pb2.ListProcessExceptionsRequest(order_id=order_id)
        ),
        lambda r: len(r.process_exceptions) > 0,
        "the process exception",
    )
    [exception] = found.process_exceptions
    assert f"1 x {mug}" in exception.message
    assert (await level(fulfillment(system), mug, "wh-east")).reserved == 0


async def test_a_transfer_that_leaves_on_another_day_than_planned_moves_the_order_s_promise(
    system: System,
) -> None:
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment(system), tee, wh_east=5)
    await stock(fulfillment(system), mug, wh_east=5)
    order_id, fo = await allocated_to_store(system, tee, mug)
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    await eventually(
        lambda: capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10),
        lambda v: v.order.promised_delivery_date == fo.promised_delivery_date != "",
        "the planned promise in capture",
    )

    # wh-east takes a business day to process, so it was planned to leave on a later day
    # than today's: sent now, it reaches the store (and is promised) earlier than planned.
    shipped = await staff(system, "wh-east").ShipToStore(
        pb.ShipToStoreRequest(
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key="t1",
            carrier="LTL",
            tracking_number="TR-2",
        )
    )

    now_promised = shipped.fulfillment_order.promised_delivery_date
    assert "" != now_promised < fo.promised_delivery_date
    view = await eventually(
        lambda: capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10),
        lambda v: v.order.promised_delivery_date == now_promised,
        "the new promise in capture",
    )
    assert view.order.delivery_groups[0].promised_delivery_date == now_promised
    assert [fo.promised_delivery_date for fo in view.fulfillment_orders] == [now_promised]
    assert view.order.status == capture_pb2.ORDER_STATUS_ALLOCATED  # still not shipped
    [said] = [e.summary for e in view.timeline if e.kind == "fulfillment.repromised"]
    assert said == (
        f"Shipped from wh-east to store {STORE} for pickup (LTL, TR-2); "
        f"now promised for {now_promised}"
    )


# Last in the module: the simulator moves every open fulfillment order of this database.
async def test_the_dev_simulator_ships_a_ship_to_store_pickup_to_the_store(system: System) -> None:
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment(system), tee, wh_east=5)
    await stock(fulfillment(system), mug, wh_east=5)
    _, fo = await allocated_to_store(system, tee, mug)

    async with system.simulator():
        moved = await eventually(
            lambda: fulfillment(system).GetFulfillmentOrder(
                pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
            ),
            lambda found: (
                found.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_IN_TRANSIT_TO_STORE
            ),
            "the simulator's transfer to the store",
        )

    # The warehouse's part ends with the transfer: the store, not the simulator, receives it.
    assert moved.fulfillment_order.transfer_tracking_number
    assert list(moved.fulfillment_order.shipments) == []
