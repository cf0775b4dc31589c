"""FulfillmentService over real gRPC on a real Postgres: routing and reserving, the warehouse
path to delivery, idempotent reports, the outbox, and no overselling under concurrency."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as pb

from oms_platform import grpcutil
from oms_tools.devstack.postgres import EmbeddedPostgres
from tests.integration.fulfillment_server import Stub, fulfillment_database

SEATTLE = common_pb2.PostalAddress(
    line1="400 Pine St", city="Seattle", region="WA", postal_code="98101", country_code="US"
)
NEW_YORK = common_pb2.PostalAddress(
    line1="350 5th Ave", city="New York", region="NY", postal_code="10118", country_code="US"
)


def new_sku() -> str:
    return f"SKU-TEST-{uuid.uuid4().hex[:10].upper()}"


async def stock(stub: Stub, sku: str, **on_hand: int) -> None:
    levels = [
        pb.InventoryLevel(location_id=loc.replace("_", "-"), sku=sku, on_hand=q)
        for loc, q in on_hand.items()
    ]
    await stub.SetInventoryLevels(pb.SetInventoryLevelsRequest(levels=levels))


async def level(stub: Stub, sku: str, location_id: str) -> pb.InventoryLevel:
    response = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
    found: pb.InventoryLevel = next(lv for lv in response.levels if lv.location_id == location_id)
    return found


def create_request(
    order_id: str, *lines: tuple[str, int], address: common_pb2.PostalAddress = SEATTLE
) -> pb.CreateFulfillmentOrdersRequest:
    return pb.CreateFulfillmentOrdersRequest(
        order_id=order_id,
        idempotency_key="route",
        delivery_groups=[
            pb.RoutingDeliveryGroup(
                delivery_group_id=f"{order_id}-dg",
                address=address,
                lines=[
                    pb.RoutingLine(order_line_id=f"{order_id}-l{i}", sku=sku, quantity=q)
                    for i, (sku, q) in enumerate(lines)
                ],
            )
        ],
    )


async def outbox_events(sql: asyncpg.Connection, fulfillment_order_id: str) -> list[dict[str, Any]]:
    rows = await sql.fetch(
        "SELECT workflow_id, name, payload FROM fulfillment.outbox"
        " WHERE payload->>'fulfillment_order_id' = $1 ORDER BY id",
        fulfillment_order_id,
    )
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


# ---- routing and reserving -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres)


async def test_creating_fulfillment_orders_reserves_stock_at_the_nearest_location(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=10, wh_west=10)
    order_id = str(uuid.uuid4())

    response = await stub.CreateFulfillmentOrders(create_request(order_id, (sku, 3)))

    [fo] = response.fulfillment_orders
    assert fo.location_id == "wh-west"
    assert fo.status == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert [(ln.sku, ln.quantity, ln.quantity_shipped) for ln in fo.lines] == [(sku, 3, 0)]
    assert list(response.unallocated_lines) == []
    assert response.decisions[0].startswith("wh-west ships its only line: fewest shipments (1)")
    west = await level(stub, sku, "wh-west")
    assert (west.on_hand, west.reserved, west.available_to_fulfill) == (10, 3, 7)
    availability = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
    assert availability.total_available[sku] == 17


async def test_a_repeated_create_returns_the_same_orders_and_reserves_once(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=10)
    request = create_request(str(uuid.uuid4()), (sku, 4), address=NEW_YORK)

    first = await stub.CreateFulfillmentOrders(request)
    again = await stub.CreateFulfillmentOrders(request)

    assert again == first
    assert (await level(stub, sku, "wh-east")).reserved == 4
    other = pb.CreateFulfillmentOrdersRequest()
    other.CopyFrom(request)
    other.delivery_groups[0].lines[0].quantity = 5
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateFulfillmentOrders(other)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_lines_no_location_stocks_come_back_unallocated(
    stub: Stub,
) -> None:
    sku, missing = new_sku(), new_sku()
    await stock(stub, sku, wh_east=5)
    order_id = str(uuid.uuid4())

    response = await stub.CreateFulfillmentOrders(create_request(order_id, (sku, 1), (missing, 2)))

    assert [fo.location_id for fo in response.fulfillment_orders] == ["wh-east"]
    assert [(ln.order_line_id, ln.sku, ln.quantity) for ln in response.unallocated_lines] == [
        (f"{order_id}-l1", missing, 2)
    ]


async def test_a_create_without_lines_or_key_names_the_fields(
    stub: Stub,
) -> None:
    request = pb.CreateFulfillmentOrdersRequest(
        order_id="o",
        delivery_groups=[pb.RoutingDeliveryGroup(delivery_group_id="g", address=SEATTLE)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateFulfillmentOrders(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in grpcutil.field_violations(raised.value)} == {
        "idempotency_key",
        "delivery_groups[0].lines",
    }


# ---- the warehouse path ------------------------------------------------------------------------


async def test_accept_pick_pack_ship_and_deliver_with_a_duplicate_shipment_report(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=10)
    order_id = str(uuid.uuid4())
    created = await stub.CreateFulfillmentOrders(
        create_request(order_id, (sku, 3), address=NEW_YORK)
    )
    fo_id = created.fulfillment_orders[0].fulfillment_order_id
    line_id = f"{order_id}-l0"

    accepted = await stub.AcceptFulfillmentOrder(
        pb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id)
    )
    picked = await stub.MarkFulfillmentOrderPicked(
        pb.MarkFulfillmentOrderPickedRequest(fulfillment_order_id=fo_id)
    )
    packed = await stub.MarkFulfillmentOrderPacked(
        pb.MarkFulfillmentOrderPackedRequest(fulfillment_order_id=fo_id)
    )
    assert accepted.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_ACCEPTED
    assert picked.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_PICKED
    assert packed.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_PACKED

    partial = pb.ConfirmShipmentRequest(
        fulfillment_order_id=fo_id,
        idempotency_key="parcel-1",
        carrier="UPS",
        service="ground",
        tracking_number="1Z001",
        items=[pb.ShipmentItem(order_line_id=line_id, quantity=1)],
    )
    first = await stub.ConfirmShipment(partial)
    duplicate = await stub.ConfirmShipment(partial)

    assert duplicate == first
    assert first.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_PACKED
    assert first.fulfillment_order.lines[0].quantity_shipped == 1
    east = await level(stub, sku, "wh-east")
    assert (east.on_hand, east.reserved) == (9, 2)
    events = await outbox_events(sql, fo_id)
    assert len(events) == 1
    assert events[0]["workflow_id"] == f"order:{order_id}"
    assert events[0]["name"] == "fulfillment_event"
    assert events[0]["payload"] == {
        "event_id": f"shipped:{first.shipment.shipment_id}",
        "kind": "shipped",
        "fulfillment_order_id": fo_id,
        "shipment_id": first.shipment.shipment_id,
        "items": [{"order_line_id": line_id, "quantity": 1}],
        "carrier": "UPS",
        "tracking_number": "1Z001",
        "reason": "",
        "replacements": [],
        "unallocated": [],
        # Promised again from the ship day: the fulfillment order's now.
        "promised_delivery_date": first.fulfillment_order.promised_delivery_date,
    }

    rest = await stub.ConfirmShipment(
        pb.ConfirmShipmentRequest(
            fulfillment_order_id=fo_id, idempotency_key="parcel-2", carrier="UPS"
        )
    )
    assert [(i.order_line_id, i.quantity) for i in rest.shipment.items] == [(line_id, 2)]
    assert rest.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_SHIPPED
    assert len(rest.fulfillment_order.shipments) == 2
    east = await level(stub, sku, "wh-east")
    assert (east.on_hand, east.reserved) == (7, 0)
    reservations = await sql.fetch(
        "SELECT status, sum(quantity) AS q FROM fulfillment.reservations"
        " WHERE fulfillment_order_id = $1 GROUP BY status",
        fo_id,
    )
    assert {r["status"]: r["q"] for r in reservations} == {"fulfilled": 3}

    delivered = await stub.ConfirmDelivery(
        pb.ConfirmDeliveryRequest(shipment_id=rest.shipment.shipment_id)
    )
    again = await stub.ConfirmDelivery(
        pb.ConfirmDeliveryRequest(shipment_id=rest.shipment.shipment_id)
    )
    assert delivered.shipment.HasField("delivered_at")
    assert again.shipment.delivered_at == delivered.shipment.delivered_at
    kinds = [e["payload"]["event_id"] for e in await outbox_events(sql, fo_id)]
    assert kinds == [
        f"shipped:{first.shipment.shipment_id}",
        f"shipped:{rest.shipment.shipment_id}",
        f"delivered:{rest.shipment.shipment_id}",
    ]

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.MarkFulfillmentOrderPicked(
            pb.MarkFulfillmentOrderPickedRequest(fulfillment_order_id=fo_id)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == (
        f"fulfillment order {fo_id} is shipped; cannot mark it picked"
    )


async def test_an_allocated_order_cannot_be_packed_and_the_error_names_its_status(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=1)
    created = await stub.CreateFulfillmentOrders(create_request(str(uuid.uuid4()), (sku, 1)))
    fo_id = created.fulfillment_orders[0].fulfillment_order_id

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.MarkFulfillmentOrderPacked(
            pb.MarkFulfillmentOrderPackedRequest(fulfillment_order_id=fo_id)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is allocated; cannot mark it packed" in (raised.value.details() or "")


async def test_unknown_fulfillment_orders_and_shipments_are_not_found(
    stub: Stub,
) -> None:
    for call in (
        stub.AcceptFulfillmentOrder(pb.AcceptFulfillmentOrderRequest(fulfillment_order_id="nope")),
        stub.GetFulfillmentOrder(pb.GetFulfillmentOrderRequest(fulfillment_order_id="nope")),
        stub.ConfirmDelivery(pb.ConfirmDeliveryRequest(shipment_id="nope")),
        stub.ConfirmShipment(
            pb.ConfirmShipmentRequest(fulfillment_order_id="nope", idempotency_key="k")
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_shipment_larger_than_what_remains_or_of_an_unknown_line_is_refused(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=5)
    order_id = str(uuid.uuid4())
    created = await stub.CreateFulfillmentOrders(create_request(order_id, (sku, 2)))
    fo_id = created.fulfillment_orders[0].fulfillment_order_id
    await stub.AcceptFulfillmentOrder(pb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ConfirmShipment(
            pb.ConfirmShipmentRequest(
                fulfillment_order_id=fo_id,
                idempotency_key="too-many",
                items=[
                    pb.ShipmentItem(order_line_id=f"{order_id}-l0", quantity=3),
                    pb.ShipmentItem(order_line_id="someone-else", quantity=1),
                ],
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in grpcutil.field_violations(raised.value)] == [
        "items[0].quantity",
        "items[1].order_line_id",
    ]
    assert (await level(stub, sku, "wh-east")).on_hand == 5


async def test_canceling_releases_the_reservation_once_and_is_refused_after_shipping(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=5)
    created = await stub.CreateFulfillmentOrders(
        create_request(str(uuid.uuid4()), (sku, 2), address=NEW_YORK)
    )
    fo_id = created.fulfillment_orders[0].fulfillment_order_id
    assert (await level(stub, sku, "wh-east")).reserved == 2

    cancel = pb.CancelFulfillmentOrderRequest(
        fulfillment_order_id=fo_id, idempotency_key="c1", reason="shopper canceled"
    )
    canceled = await stub.CancelFulfillmentOrder(cancel)
    again = await stub.CancelFulfillmentOrder(
        pb.CancelFulfillmentOrderRequest(fulfillment_order_id=fo_id, idempotency_key="c2")
    )

    assert canceled.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_CANCELED
    assert again.fulfillment_order == canceled.fulfillment_order
    east = await level(stub, sku, "wh-east")
    assert (east.on_hand, east.reserved, east.available_to_fulfill) == (5, 0, 5)

    other = await stub.CreateFulfillmentOrders(
        create_request(str(uuid.uuid4()), (sku, 1), address=NEW_YORK)
    )
    shipped_id = other.fulfillment_orders[0].fulfillment_order_id
    await stub.AcceptFulfillmentOrder(
        pb.AcceptFulfillmentOrderRequest(fulfillment_order_id=shipped_id)
    )
    await stub.ConfirmShipment(
        pb.ConfirmShipmentRequest(fulfillment_order_id=shipped_id, idempotency_key="p")
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelFulfillmentOrder(
            pb.CancelFulfillmentOrderRequest(fulfillment_order_id=shipped_id, idempotency_key="c")
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is shipped; cannot cancel it" in (raised.value.details() or "")


async def test_canceling_an_orders_fulfillment_orders_releases_what_has_not_shipped_once(
    stub: Stub,
) -> None:
    sku, shipped_sku = new_sku(), new_sku()
    await stock(stub, sku, wh_east=5)
    await stock(stub, shipped_sku, wh_east=5)
    order_id = str(uuid.uuid4())
    routed = await stub.CreateFulfillmentOrders(
        create_request(order_id, (sku, 2), address=NEW_YORK)
    )
    shipped_request = create_request(order_id, (shipped_sku, 1), address=NEW_YORK)
    shipped_request.idempotency_key = "route-again"
    shipped = (await stub.CreateFulfillmentOrders(shipped_request)).fulfillment_orders[0]
    shipped_id = shipped.fulfillment_order_id
    await stub.AcceptFulfillmentOrder(
        pb.AcceptFulfillmentOrderRequest(fulfillment_order_id=shipped_id)
    )
    await stub.ConfirmShipment(
        pb.ConfirmShipmentRequest(fulfillment_order_id=shipped_id, idempotency_key="p")
    )
    assert (await level(stub, sku, "wh-east")).reserved == 2

    cancel = pb.CancelOrderFulfillmentOrdersRequest(
        order_id=order_id, idempotency_key="before-start", reason="order canceled"
    )
    canceled = await stub.CancelOrderFulfillmentOrders(cancel)
    again = await stub.CancelOrderFulfillmentOrders(cancel)
    none = await stub.CancelOrderFulfillmentOrders(
        pb.CancelOrderFulfillmentOrdersRequest(order_id=str(uuid.uuid4()), idempotency_key="k")
    )

    [fo] = canceled.fulfillment_orders
    assert fo.fulfillment_order_id == routed.fulfillment_orders[0].fulfillment_order_id
    assert fo.status == pb.FULFILLMENT_ORDER_STATUS_CANCELED
    assert again == canceled
    east = await level(stub, sku, "wh-east")
    assert (east.on_hand, east.reserved, east.available_to_fulfill) == (5, 0, 5)
    left = await stub.GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=shipped_id)
    )
    assert left.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_SHIPPED
    assert list(none.fulfillment_orders) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelOrderFulfillmentOrders(
            pb.CancelOrderFulfillmentOrdersRequest(order_id=order_id)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key" in (raised.value.details() or "")


# ---- listing, locations and stock --------------------------------------------------------------


async def test_fulfillment_orders_list_in_pages_filtered_by_order_and_status(
    stub: Stub,
) -> None:
    skus = [new_sku() for _ in range(3)]
    await stub.SetInventoryLevels(
        pb.SetInventoryLevelsRequest(
            levels=[
                pb.InventoryLevel(location_id=loc, sku=sku, on_hand=5)
                for loc, sku in zip(["wh-east", "wh-west", "store-chicago"], skus, strict=True)
            ]
        )
    )
    order_id = str(uuid.uuid4())
    created = await stub.CreateFulfillmentOrders(
        create_request(order_id, *((sku, 1) for sku in skus))
    )
    ids = sorted(fo.fulfillment_order_id for fo in created.fulfillment_orders)
    assert len(ids) == 3
    await stub.AcceptFulfillmentOrder(pb.AcceptFulfillmentOrderRequest(fulfillment_order_id=ids[0]))

    first = await stub.ListFulfillmentOrders(
        pb.ListFulfillmentOrdersRequest(order_id=order_id, page_size=2)
    )
    second = await stub.ListFulfillmentOrders(
        pb.ListFulfillmentOrdersRequest(
            order_id=order_id, page_size=2, page_token=first.next_page_token
        )
    )
    accepted = await stub.ListFulfillmentOrders(
        pb.ListFulfillmentOrdersRequest(
            order_id=order_id, statuses=[pb.FULFILLMENT_ORDER_STATUS_ACCEPTED]
        )
    )

    listed = [
        fo.fulfillment_order_id for fo in [*first.fulfillment_orders, *second.fulfillment_orders]
    ]
    assert len(first.fulfillment_orders) == 2 and first.next_page_token
    assert sorted(listed) == ids and second.next_page_token == ""
    assert all(len(fo.lines) == 1 for fo in first.fulfillment_orders)
    assert [fo.fulfillment_order_id for fo in accepted.fulfillment_orders] == [ids[0]]


async def test_locations_include_the_seeded_warehouses_and_store(
    stub: Stub,
) -> None:
    response = await stub.ListLocations(pb.ListLocationsRequest())
    by_id = {loc.location_id: loc for loc in response.locations}
    assert by_id["wh-east"].type == pb.LOCATION_TYPE_WAREHOUSE
    assert by_id["wh-east"].address.postal_code == "07102"
    assert by_id["wh-west"].address.city == "Reno"
    assert by_id["store-chicago"].type == pb.LOCATION_TYPE_STORE
    assert by_id["store-chicago"].priority == 2


async def test_a_stock_feed_for_an_unknown_location_or_negative_stock_is_refused(
    stub: Stub,
) -> None:
    sku = new_sku()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SetInventoryLevels(
            pb.SetInventoryLevelsRequest(
                levels=[
                    pb.InventoryLevel(location_id="wh-mars", sku=sku, on_hand=1),
                    pb.InventoryLevel(location_id="wh-east", sku=sku, on_hand=-1),
                ]
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in grpcutil.field_violations(raised.value)] == [
        "levels[0].location_id",
        "levels[1].on_hand",
    ]
    availability = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
    assert list(availability.levels) == [] and availability.total_available[sku] == 0


# ---- concurrency -------------------------------------------------------------------------------


async def test_sixty_concurrent_orders_for_twenty_units_never_oversell(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=20)
    order_ids = [str(uuid.uuid4()) for _ in range(60)]

    responses = await asyncio.gather(
        *(
            stub.CreateFulfillmentOrders(create_request(oid, (sku, 3), address=NEW_YORK))
            for oid in order_ids
        )
    )

    reserved = sum(ln.quantity for r in responses for fo in r.fulfillment_orders for ln in fo.lines)
    unallocated = sum(ln.quantity for r in responses for ln in r.unallocated_lines)
    assert reserved == 20
    assert unallocated == 60 * 3 - 20
    east = await level(stub, sku, "wh-east")
    assert (east.on_hand, east.reserved, east.available_to_fulfill) == (20, 20, 0)
    held = await sql.fetchval(
        "SELECT sum(quantity) FROM fulfillment.reservations WHERE sku = $1 AND status = 'reserved'",
        sku,
    )
    assert held == 20
    negative = await sql.fetchval(
        "SELECT count(*) FROM fulfillment.inventory_levels"
        " WHERE sku = $1 AND (on_hand < 0 OR reserved < 0 OR reserved > on_hand)",
        sku,
    )
    assert negative == 0


async def test_concurrent_checkout_reservations_and_orders_never_oversell(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=20)

    def reserve(quantity: int) -> pb.ReserveInventoryRequest:
        return pb.ReserveInventoryRequest(
            lines=[pb.CartLine(sku=sku, quantity=quantity)],
            address=NEW_YORK,
            ttl_seconds=600,
            idempotency_key=str(uuid.uuid4()),
        )

    calls = [stub.ReserveInventory(reserve(2)) for _ in range(20)] + [
        stub.CreateFulfillmentOrders(create_request(str(uuid.uuid4()), (sku, 3), address=NEW_YORK))
        for _ in range(20)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    held = sum(
        h.quantity
        for o in outcomes
        if isinstance(o, pb.ReserveInventoryResponse)
        for line in o.reservation.lines
        for h in line.held
    )
    allocated = sum(
        ln.quantity
        for o in outcomes
        if isinstance(o, pb.CreateFulfillmentOrdersResponse)
        for fo in o.fulfillment_orders
        for ln in fo.lines
    )
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION for r in refused)
    assert held + allocated <= 20
    # Whatever is left is less than any refused cart wanted.
    assert not refused or 20 - held - allocated < 2
    east = await level(stub, sku, "wh-east")
    assert (east.reserved, east.available_to_fulfill) == (held + allocated, 20 - held - allocated)
    counted = await sql.fetchval(
        "SELECT (SELECT coalesce(sum(quantity), 0) FROM fulfillment.reservations"
        "        WHERE sku = $1 AND status = 'reserved')"
        "     + (SELECT coalesce(sum(quantity), 0) FROM fulfillment.checkout_holds"
        "        WHERE sku = $1 AND held)",
        sku,
    )
    assert counted == held + allocated
