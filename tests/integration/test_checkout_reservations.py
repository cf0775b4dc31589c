"""Checkout reservations over real gRPC on a real Postgres: a cart's units held where routing
would ship them, invisible to everyone else until released or expired, swept when they expire,
and consumed once by the order placed with them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import cast

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.samples import sample_order
from tests.conftest import System
from tests.integration.fulfillment_server import Stub, fulfillment_database, start_fulfillment
from tests.integration.test_fulfillment_service import (
    NEW_YORK,
    create_request,
    level,
    new_sku,
    stock,
)

SWEEPER = "oms.reservations.sweeper"


def reserve_request(
    *lines: tuple[str, int],
    ttl: int = 600,
    group: str = "",
    key: str | None = None,
) -> pb.ReserveInventoryRequest:
    return pb.ReserveInventoryRequest(
        lines=[pb.CartLine(sku=sku, quantity=q) for sku, q in lines],
        location_group_id=group,
        address=None if group else NEW_YORK,
        ttl_seconds=ttl,
        idempotency_key=key or str(uuid.uuid4()),
    )


async def total_available(stub: Stub, sku: str) -> int:
    response = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
    return int(response.total_available[sku])


async def stored_reserved(sql: asyncpg.Connection, sku: str) -> int:
    """The `reserved` column of the SKU's wh-east level as stored (expired holds not yet
    released still in it)."""
    reserved: int = await sql.fetchval(
        "SELECT reserved FROM fulfillment.inventory_levels WHERE sku = $1 AND location_id = $2",
        sku,
        "wh-east",
    )
    return reserved


def order_with(
    reservation_id: str, sku: str, quantity: int, order_id: str = ""
) -> pb.CreateFulfillmentOrdersRequest:
    """An order of `quantity` of `sku` to New York (nearer wh-east) naming the reservation."""
    request = create_request(order_id or str(uuid.uuid4()), (sku, quantity), address=NEW_YORK)
    request.reservation_id = reservation_id
    return request


async def west_only_group(stub: Stub) -> str:
    group_id = f"west-{uuid.uuid4().hex[:8]}"
    await stub.UpsertLocationGroup(
        pb.UpsertLocationGroupRequest(
            location_group=pb.LocationGroup(
                location_group_id=group_id, name="West only", location_ids=["wh-west"]
            )
        )
    )
    return group_id


# ---- holding ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres)


async def test_two_checkouts_racing_for_the_last_unit_one_holds_it_the_other_is_refused(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=1)

    outcomes = await asyncio.gather(
        stub.ReserveInventory(reserve_request((sku, 1))),
        stub.ReserveInventory(reserve_request((sku, 1))),
        return_exceptions=True,
    )

    held = [o for o in outcomes if isinstance(o, pb.ReserveInventoryResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(held) == 1 and len(refused) == 1, outcomes
    [line] = held[0].reservation.lines
    assert [(h.location_id, h.quantity) for h in line.held] == [("wh-east", 1)]
    assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert sku in (refused[0].details() or "")
    assert "1 wanted, 0 available" in (refused[0].details() or "")
    assert await total_available(stub, sku) == 0


async def test_a_cart_that_cannot_be_held_whole_holds_nothing(stub: Stub) -> None:
    sku, other = new_sku(), new_sku()
    await stock(stub, sku, wh_east=5)
    await stock(stub, other, wh_east=1)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReserveInventory(reserve_request((sku, 2), (other, 3)))

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{other!r} (lines[1]): 3 wanted, 1 available" in (refused.value.details() or "")
    assert await total_available(stub, sku) == 5
    assert await total_available(stub, other) == 1


async def test_a_bad_request_names_every_field_and_rule(stub: Stub) -> None:
    request = reserve_request(("", 0), ttl=0, group="us-warehouses")
    request.address.CopyFrom(NEW_YORK)
    request.idempotency_key = ""

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReserveInventory(request)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    for expected in (
        "idempotency_key",
        "lines[0].sku",
        "lines[0].quantity",
        "give location_group_id or address, not both",
        "ttl_seconds: must be 1 to 3600 seconds",
    ):
        assert expected in details


async def test_held_units_are_invisible_to_availability_and_other_orders_until_released(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=5)
    key = str(uuid.uuid4())

    held = await stub.ReserveInventory(reserve_request((sku, 3), key=key))

    reservation = held.reservation
    assert reservation.status == pb.RESERVATION_STATUS_HELD
    assert await total_available(stub, sku) == 2
    assert (await level(stub, sku, "wh-east")).reserved == 3
    # The same key answers the same reservation and holds nothing more.
    again = await stub.ReserveInventory(reserve_request((sku, 3), key=key))
    assert again.reservation.reservation_id == reservation.reservation_id
    assert await total_available(stub, sku) == 2
    # Another order gets only what is not held.
    order_id = str(uuid.uuid4())
    routed = await stub.CreateFulfillmentOrders(create_request(order_id, (sku, 3)))
    assert sum(ln.quantity for fo in routed.fulfillment_orders for ln in fo.lines) == 2
    assert [ln.quantity for ln in routed.unallocated_lines] == [1]

    released = await stub.ReleaseReservation(
        pb.ReleaseReservationRequest(reservation_id=reservation.reservation_id)
    )

    assert released.reservation.status == pb.RESERVATION_STATUS_RELEASED
    assert await total_available(stub, sku) == 3
    # Releasing again changes nothing.
    twice = await stub.ReleaseReservation(
        pb.ReleaseReservationRequest(reservation_id=reservation.reservation_id)
    )
    assert twice.reservation.status == pb.RESERVATION_STATUS_RELEASED
    assert await total_available(stub, sku) == 3
    assert await stored_reserved(sql, sku) == 2  # the other order's units only


async def test_an_expired_hold_is_available_again_before_any_sweeper_runs(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=2)
    held = await stub.ReserveInventory(reserve_request((sku, 2), ttl=1))
    assert await total_available(stub, sku) == 0

    await asyncio.sleep(1.2)

    assert await total_available(stub, sku) == 2
    found = await stub.GetReservation(
        pb.GetReservationRequest(reservation_id=held.reservation.reservation_id)
    )
    assert found.reservation.status == pb.RESERVATION_STATUS_EXPIRED
    # Another shopper can hold the units at once; their first write releases the expired hold.
    other = await stub.ReserveInventory(reserve_request((sku, 2)))
    assert other.reservation.status == pb.RESERVATION_STATUS_HELD
    assert await stored_reserved(sql, sku) == 2


async def test_the_sweeper_releases_expired_reservations(
    dsn: str, stub: Stub, sql: asyncpg.Connection
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=4)
    held = await stub.ReserveInventory(reserve_request((sku, 3), ttl=1))
    sweeping = await start_fulfillment(dsn, keep=SWEEPER, reservation_sweep_seconds=0.1)
    try:
        deadline = time.monotonic() + 10
        while True:
            row = await sql.fetchrow(
                "SELECT r.status, il.reserved FROM fulfillment.checkout_reservations r,"
                " fulfillment.inventory_levels il"
                " WHERE r.id = $1 AND il.sku = $2 AND il.location_id = 'wh-east'",
                held.reservation.reservation_id,
                sku,
            )
            if row["status"] == "expired":
                break
            assert time.monotonic() < deadline, "the sweeper never released it"
            await asyncio.sleep(0.1)
    finally:
        await sweeping.stop(0.5)

    assert row["reserved"] == 0
    assert await total_available(stub, sku) == 4


# ---- consuming -------------------------------------------------------------------------------


async def test_an_order_with_a_reservation_ships_from_where_it_is_held_and_consumes_it_once(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=5, wh_west=5)
    group = await west_only_group(stub)
    held = await stub.ReserveInventory(reserve_request((sku, 2), group=group))
    reservation_id = held.reservation.reservation_id
    order_id = str(uuid.uuid4())

    routed = await stub.CreateFulfillmentOrders(order_with(reservation_id, sku, 2, order_id))

    [fo] = routed.fulfillment_orders
    assert fo.location_id == "wh-west"
    west = await level(stub, sku, "wh-west")
    assert (west.reserved, west.available_to_fulfill) == (2, 3)  # counted once
    found = await stub.GetReservation(pb.GetReservationRequest(reservation_id=reservation_id))
    assert found.reservation.status == pb.RESERVATION_STATUS_CONSUMED
    assert found.reservation.order_id == order_id
    # A second order naming the same reservation routes as usual, and says why.
    other = await stub.CreateFulfillmentOrders(order_with(reservation_id, sku, 2))
    [other_fo] = other.fulfillment_orders
    assert other_fo.location_id == "wh-east"
    assert any(f"already consumed by order {order_id}" in d for d in other.decisions)
    assert (await level(stub, sku, "wh-west")).reserved == 2
    # A consumed reservation cannot be released: its units are the order's.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=reservation_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def order_naming_a_reservation_it_may_not_use(
    stub: Stub, sku: str, reservation_id: str, status: pb.ReservationStatus.ValueType
) -> None:
    """An order of 2 naming a reservation of 2 at wh-west that is no longer held: it routes
    on current availability (to wh-east, nearer), says why, and leaves the reservation as
    it was, holding nothing."""
    order_id = str(uuid.uuid4())

    routed = await stub.CreateFulfillmentOrders(order_with(reservation_id, sku, 2, order_id))

    assert [fo.location_id for fo in routed.fulfillment_orders] == ["wh-east"]
    name = pb.ReservationStatus.Name(status).removeprefix("RESERVATION_STATUS_").lower()
    assert any(f"not used: it is {name}" in d for d in routed.decisions), routed.decisions
    found = await stub.GetReservation(pb.GetReservationRequest(reservation_id=reservation_id))
    assert (found.reservation.status, found.reservation.order_id) == (status, "")
    west = await level(stub, sku, "wh-west")
    assert (west.reserved, west.available_to_fulfill) == (0, 5)
    assert (await level(stub, sku, "wh-east")).reserved == 2


async def test_an_order_naming_an_expired_reservation_does_not_take_its_units(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=5, wh_west=5)
    held = await stub.ReserveInventory(
        reserve_request((sku, 2), ttl=1, group=await west_only_group(stub))
    )
    await asyncio.sleep(1.2)

    await order_naming_a_reservation_it_may_not_use(
        stub, sku, held.reservation.reservation_id, pb.RESERVATION_STATUS_EXPIRED
    )


async def test_an_order_naming_a_released_reservation_does_not_take_its_units(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=5, wh_west=5)
    held = await stub.ReserveInventory(reserve_request((sku, 2), group=await west_only_group(stub)))
    reservation_id = held.reservation.reservation_id
    await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=reservation_id))

    await order_naming_a_reservation_it_may_not_use(
        stub, sku, reservation_id, pb.RESERVATION_STATUS_RELEASED
    )


async def test_an_order_larger_than_its_reservation_routes_the_rest_and_frees_nothing_twice(
    stub: Stub,
) -> None:
    sku = new_sku()
    await stock(stub, sku, wh_east=1, wh_west=1)
    group = await west_only_group(stub)
    held = await stub.ReserveInventory(reserve_request((sku, 1), group=group))

    routed = await stub.CreateFulfillmentOrders(order_with(held.reservation.reservation_id, sku, 2))

    placed = {
        fo.location_id: sum(ln.quantity for ln in fo.lines) for fo in routed.fulfillment_orders
    }
    assert placed == {"wh-west": 1, "wh-east": 1}
    assert not routed.unallocated_lines
    assert await total_available(stub, sku) == 0


# ---- through capture and the lifecycle --------------------------------------------------------


async def test_an_order_submitted_with_a_reservation_is_allocated_where_it_was_held(
    system: System,
) -> None:
    fulfillment = cast(
        "Stub", fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    )
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    tee, mug = new_sku(), new_sku()
    await stock(fulfillment, tee, wh_east=10, wh_west=10)
    await stock(fulfillment, mug, wh_east=10, wh_west=10)
    group = await west_only_group(fulfillment)
    held = await fulfillment.ReserveInventory(reserve_request((tee, 2), (mug, 1), group=group))
    reservation_id = held.reservation.reservation_id
    order = sample_order()  # ships to Philadelphia, nearer wh-east
    order.lines[0].sku, order.lines[1].sku = tee, mug
    order.reservation_id = reservation_id

    submitted = await capture.SubmitOrder(order, timeout=10)

    order_id = submitted.order.order_id
    deadline = time.monotonic() + 60
    while True:
        view = await capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        if view.order.status == capture_pb2.ORDER_STATUS_ALLOCATED and view.fulfillment_orders:
            break
        assert time.monotonic() < deadline, f"order stuck in {view.order.status}"
        await asyncio.sleep(0.1)
    assert [fo.location_id for fo in view.fulfillment_orders] == ["wh-west"]
    found = await fulfillment.GetReservation(
        pb.GetReservationRequest(reservation_id=reservation_id)
    )
    assert found.reservation.status == pb.RESERVATION_STATUS_CONSUMED
    assert found.reservation.order_id == order_id
    west = await level(fulfillment, tee, "wh-west")
    assert (west.reserved, west.available_to_fulfill) == (2, 8)
    assert (await level(fulfillment, tee, "wh-east")).reserved == 0
