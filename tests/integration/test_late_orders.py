"""Delivery promises on the order, through real gRPC, Postgres and the order's workflow: the
promise a fulfillment order gets when it is routed is what EstimateDelivery says for its
location and method, capture's order shows it, a shipment promises it again, and an order
past its promise is late (listed and counted) until it is delivered, and the late-orders gauge
counts what ListOrders counts."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, cast

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc
from prometheus_client import REGISTRY

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from services.capture.late_orders import late_orders_gauge
from services.fulfillment.calendars import PublicHolidays
from services.fulfillment.domain import BusinessCalendar
from tests.conftest import System
from tests.integration.helpers import eventually
from tests.integration.test_backorders import order_of, until, view
from tests.integration.test_fulfillment_service import new_sku, stock

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = fulfillment_pb2_grpc.FulfillmentServiceAsyncStub

YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).date()


def stubs(system: System) -> tuple[Stub, capture_pb2_grpc.CaptureServiceStub]:
    fulfillment = cast(
        "Stub", fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    )
    return fulfillment, capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))


async def estimate_at_creation(
    fulfillment: Stub, fo: pb.FulfillmentOrder, group: capture_pb2.DeliveryGroup
) -> pb.EstimateDeliveryResponse:
    """What EstimateDelivery says of a fulfillment order's units, to its group's address by
    its method, as of the moment the fulfillment order was made."""
    estimated: pb.EstimateDeliveryResponse = await fulfillment.EstimateDelivery(
        pb.EstimateDeliveryRequest(
            items=[pb.DeliveryItem(sku=ln.sku, quantity=ln.quantity) for ln in fo.lines],
            address=group.address,
            delivery_methods=[group.delivery_method],
            ordered_at=fo.created_at,
        )
    )
    return estimated


async def allocated_order(
    system: System, **also: int
) -> tuple[str, str, capture_pb2.GetOrderResponse]:
    """The sample order (2 tees, 1 mug, standard to Philadelphia) with both SKUs at wh-east
    (and `also` elsewhere, e.g. wh_west=10), routed there and waiting for the warehouse: its
    id, tee SKU and view."""
    fulfillment, capture = stubs(system)
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10, **also)
    await stock(fulfillment, mug, wh_east=10, **also)
    submitted = await capture.SubmitOrder(order_of(tee, mug), timeout=10)
    order_id = submitted.order.order_id
    await until(capture, order_id, capture_pb2.ORDER_STATUS_ALLOCATED)
    routed = await eventually(
        lambda: view(capture, order_id),
        lambda v: bool(v.order.promised_delivery_date),
        "the order's promise in capture",
    )
    return order_id, tee, routed


async def ship(fulfillment: Stub, fo_id: str, estimate: str = "") -> pb.ConfirmShipmentResponse:
    await fulfillment.AcceptFulfillmentOrder(
        pb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id)
    )
    shipped: pb.ConfirmShipmentResponse = await fulfillment.ConfirmShipment(
        pb.ConfirmShipmentRequest(
            fulfillment_order_id=fo_id,
            idempotency_key=f"ship-{fo_id}",
            carrier="UPS",
            service="ground",
            tracking_number=f"1Z{fo_id[-8:]}",
            estimated_delivery_date=estimate,
        )
    )
    return shipped


async def late(
    capture: capture_pb2_grpc.CaptureServiceStub, sku: str, as_of: str = ""
) -> capture_pb2.ListOrdersResponse:
    found: capture_pb2.ListOrdersResponse = await capture.ListOrders(
        capture_pb2.ListOrdersRequest(late=True, as_of=as_of, sku=sku), timeout=10
    )
    return found


async def test_the_order_is_promised_what_estimate_delivery_says_and_again_when_it_ships(
    system: System,
) -> None:
    fulfillment, capture = stubs(system)
    order_id, _, routed = await allocated_order(system)
    [fo] = routed.fulfillment_orders
    [group] = routed.order.delivery_groups
    assert fo.location_id == "wh-east"
    # What checkout would have been told for this location, method and address at the moment
    # the fulfillment order was made.
    estimated = await estimate_at_creation(fulfillment, fo, group)
    [estimate] = estimated.estimates
    [parcel] = estimate.shipments
    assert parcel.location_id == "wh-east"
    assert fo.promised_delivery_date == parcel.delivery_date
    assert routed.order.promised_delivery_date == parcel.delivery_date
    assert group.promised_delivery_date == parcel.delivery_date

    shipped = await ship(fulfillment, fo.fulfillment_order_id)
    # Ship day (at wh-east) plus the method's transit days for the distance, in the address's
    # business days.
    locations = await fulfillment.ListLocations(pb.ListLocationsRequest())
    [east] = [loc for loc in locations.locations if loc.location_id == "wh-east"]
    left_on = (
        shipped.shipment.shipped_at.ToDatetime(tzinfo=UTC)
        .astimezone(zoneinfo.ZoneInfo(east.timezone))
        .date()
    )
    expected = BusinessCalendar("US", PublicHolidays()).add_business_days(
        left_on, parcel.transit_days
    )
    assert shipped.fulfillment_order.promised_delivery_date == expected.isoformat()
    after = await eventually(
        lambda: view(capture, order_id),
        lambda v: (
            v.order.status == capture_pb2.ORDER_STATUS_SHIPPED
            and v.order.promised_delivery_date == expected.isoformat()
        ),
        "the order's promise after shipping",
    )
    assert after.order.delivery_groups[0].promised_delivery_date == expected.isoformat()


async def test_a_rejection_s_replacement_is_promised_from_its_route_and_the_order_follows(
    system: System,
) -> None:
    fulfillment, capture = stubs(system)
    order_id, _, routed = await allocated_order(system, wh_west=10)
    [fo] = routed.fulfillment_orders
    [group] = routed.order.delivery_groups
    assert (fo.location_id, group.promised_delivery_date) == ("wh-east", fo.promised_delivery_date)

    rejected = await fulfillment.RejectFulfillmentOrder(
        pb.RejectFulfillmentOrderRequest(
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key=f"reject-{fo.fulfillment_order_id}",
            reason="flooded",
        )
    )

    [replacement] = rejected.replacements
    assert replacement.location_id == "wh-west"
    # What checkout would have been told with the units only at wh-west, when it was made.
    for ln in replacement.lines:
        await stock(fulfillment, ln.sku, wh_east=0)
    estimated = await estimate_at_creation(fulfillment, replacement, group)
    [parcel] = estimated.estimates[0].shipments
    assert parcel.location_id == "wh-west"
    assert replacement.promised_delivery_date == parcel.delivery_date
    # From Reno to Philadelphia takes longer than from Newark: the order's promise moves.
    assert replacement.promised_delivery_date > fo.promised_delivery_date
    after = await eventually(
        lambda: view(capture, order_id),
        lambda v: v.order.promised_delivery_date == replacement.promised_delivery_date,
        "the replacement's promise on the order",
    )
    assert after.order.delivery_groups[0].promised_delivery_date == parcel.delivery_date
    [now_at] = [f for f in after.fulfillment_orders if f.location_id == "wh-west"]
    assert now_at.promised_delivery_date == parcel.delivery_date


async def test_an_order_past_its_promise_is_late_until_it_is_delivered(system: System) -> None:
    fulfillment, capture = stubs(system)
    order_id, tee, routed = await allocated_order(system)
    promised = date.fromisoformat(routed.order.promised_delivery_date)
    # Not late today; late on the day after its promise.
    assert [o.order_id for o in (await late(capture, tee)).orders] == []
    after_promise = (promised + timedelta(days=1)).isoformat()
    listed = await late(capture, tee, after_promise)
    assert ([o.order_id for o in listed.orders], listed.late_count) == ([order_id], 1)
    assert (await late(capture, tee, promised.isoformat())).late_count == 0

    # The carrier says it should have been there yesterday: the order is late today.
    [fo] = routed.fulfillment_orders
    shipped = await ship(fulfillment, fo.fulfillment_order_id, YESTERDAY.isoformat())
    assert shipped.shipment.estimated_delivery_date == YESTERDAY.isoformat()
    assert shipped.fulfillment_order.promised_delivery_date == YESTERDAY.isoformat()
    listed = await eventually(
        lambda: late(capture, tee),
        lambda page: page.late_count == 1,
        "the shipped order listed as late",
    )
    [order] = listed.orders
    assert (order.order_id, order.promised_delivery_date) == (order_id, YESTERDAY.isoformat())
    assert order.status == capture_pb2.ORDER_STATUS_SHIPPED

    await fulfillment.ConfirmDelivery(
        pb.ConfirmDeliveryRequest(shipment_id=shipped.shipment.shipment_id)
    )
    await until(capture, order_id, capture_pb2.ORDER_STATUS_FULFILLED)
    listed = await late(capture, tee)
    assert (list(listed.orders), listed.late_count) == ([], 0)


async def test_a_bad_as_of_names_the_field(system: System) -> None:
    _, capture = stubs(system)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await late(capture, new_sku(), "next tuesday")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == [("as_of", "must be a date, YYYY-MM-DD")]


async def gauge_and_count(system: System, day: date) -> tuple[float | None, int]:
    """The late-orders gauge read as of `day`, and ListOrders' late count at `day` for an
    agent (every channel, no other filter)."""
    await late_orders_gauge(system.services["capture"].context.pool, lambda: day)()
    gauge = REGISTRY.get_sample_value("oms_late_orders")
    agent = capture_pb2_grpc.CaptureServiceStub(system.channel("capture", auth.AGENT))
    listed = await agent.ListOrders(
        capture_pb2.ListOrdersRequest(late=True, as_of=day.isoformat(), page_size=1), timeout=10
    )
    return gauge, listed.late_count


async def test_the_late_orders_gauge_counts_what_list_orders_counts(system: System) -> None:
    fulfillment, capture = stubs(system)
    _, tee, routed = await allocated_order(system)
    [fo] = routed.fulfillment_orders
    await ship(fulfillment, fo.fulfillment_order_id, YESTERDAY.isoformat())
    await eventually(
        lambda: late(capture, tee),
        lambda page: page.late_count == 1,
        "the shipped order listed as late",
    )
    today = datetime.now(UTC).date()
    # Other tests' orders move on meanwhile: both are read until they agree.
    _, count = await eventually(
        lambda: gauge_and_count(system, today),
        lambda read: read[0] == read[1],
        "the gauge and ListOrders agreeing today",
    )
    assert count >= 1
    # Far ahead, every order with a promise that is neither fulfilled nor canceled is late:
    # many orders, in every status, counted alike.
    ahead = today + timedelta(days=3650)
    _, count_ahead = await eventually(
        lambda: gauge_and_count(system, ahead),
        lambda read: read[0] == read[1],
        "the gauge and ListOrders agreeing ten years ahead",
    )
    assert count_ahead >= count
