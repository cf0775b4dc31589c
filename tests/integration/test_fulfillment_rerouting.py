"""Fulfillment over real gRPC on a real Postgres: rejections routed again, line cancels and
moves, inventory adjustments, daily capacity, location groups, recorded routing decisions and
the simulator's rejections.

The module has its own database, so the locations, capacities and simulator here touch no
other test's fulfillment orders."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as pb

from oms_platform import grpcutil
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.simulator import REJECT_REASON, Simulator
from services.fulfillment.calendars import PublicHolidays
from services.fulfillment.domain import BusinessCalendar
from tests.integration.fulfillment_server import Stub, fulfillment_database

# Postal prefix 100 is seeded at New York's coordinates.
NEW_YORK = common_pb2.PostalAddress(
    line1="350 5th Ave", city="New York", region="NY", postal_code="10001", country_code="US"
)
NEWARK = (40.7357, -74.1724)
CHICAGO = (41.8818, -87.6470)
RENO = (39.5296, -119.8138)


@dataclass
class World:
    """Three locations of a test's own, nearest to New York first, and two SKUs."""

    near: str
    mid: str
    far: str
    a: str
    b: str


async def add_location(
    stub: Stub,
    location_id: str,
    where: tuple[float, float],
    capacity: int | None = None,
    kind: pb.LocationType.ValueType = pb.LOCATION_TYPE_WAREHOUSE,
) -> pb.Location:
    location = pb.Location(
        location_id=location_id,
        name=location_id,
        type=kind,
        latitude=where[0],
        longitude=where[1],
        priority=1,
        enabled=True,
    )
    if capacity is not None:
        location.daily_capacity = capacity
    response = await stub.UpsertLocation(pb.UpsertLocationRequest(location=location))
    return response.location


@pytest.fixture
async def world(stub: Stub) -> World:
    tag = uuid.uuid4().hex[:8]
    w = World(f"near-{tag}", f"mid-{tag}", f"far-{tag}", f"SKU-A-{tag}", f"SKU-B-{tag}")
    for location_id, where in ((w.near, NEWARK), (w.mid, CHICAGO), (w.far, RENO)):
        await add_location(stub, location_id, where)
    return w


async def stock(stub: Stub, sku: str, levels: dict[str, int]) -> None:
    await stub.SetInventoryLevels(
        pb.SetInventoryLevelsRequest(
            levels=[
                pb.InventoryLevel(location_id=loc, sku=sku, on_hand=q) for loc, q in levels.items()
            ]
        )
    )


async def reserved(stub: Stub, sku: str) -> dict[str, int]:
    response = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
    return {lv.location_id: lv.reserved for lv in response.levels}


async def create(
    stub: Stub, *lines: tuple[str, int], delivery_method: str = "", pickup_location_id: str = ""
) -> tuple[str, pb.FulfillmentOrder]:
    """Route a one-group order to New York (or for pickup at `pickup_location_id`); returns the
    order id and its only FO. Without a delivery method (no transit times) nothing is
    promised."""
    order_id = str(uuid.uuid4())
    response = await stub.CreateFulfillmentOrders(
        pb.CreateFulfillmentOrdersRequest(
            order_id=order_id,
            idempotency_key="route",
            delivery_groups=[
                pb.RoutingDeliveryGroup(
                    delivery_group_id=f"{order_id}-dg",
                    address=NEW_YORK,
                    delivery_method=delivery_method,
                    pickup_location_id=pickup_location_id,
                    lines=[
                        pb.RoutingLine(order_line_id=f"{order_id}-l{i}", sku=sku, quantity=q)
                        for i, (sku, q) in enumerate(lines)
                    ],
                )
            ],
        )
    )
    [fo] = response.fulfillment_orders
    return order_id, fo


def lines_of(fo: pb.FulfillmentOrder) -> list[tuple[str, int, int, int, int]]:
    """(sku, quantity, rejected, canceled, moved) per line."""
    return [
        (ln.sku, ln.quantity, ln.quantity_rejected, ln.quantity_canceled, ln.quantity_moved)
        for ln in fo.lines
    ]


async def events(sql: asyncpg.Connection, fulfillment_order_id: str) -> list[dict[str, Any]]:
    rows = await sql.fetch(
        "SELECT workflow_id, name, payload FROM fulfillment.outbox"
        " WHERE payload->>'fulfillment_order_id' = $1 ORDER BY id",
        fulfillment_order_id,
    )
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


async def reservations(sql: asyncpg.Connection, sku: str) -> list[tuple[str, str, int, str]]:
    """(location, status, quantity, idempotency key) of a SKU's reservations."""
    rows = await sql.fetch(
        "SELECT location_id, status, quantity, idempotency_key FROM fulfillment.reservations"
        " WHERE sku = $1 ORDER BY location_id, status, id",
        sku,
    )
    return [(r["location_id"], r["status"], r["quantity"], r["idempotency_key"]) for r in rows]


async def raises(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


# ---- the simulator (first: one pass moves every open fulfillment order here) -------------------


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres, "fulfillment_rerouting")


def warehouse(fulfillment: RunningService, **settings: Any) -> Simulator:
    """The warehouse simulator, stepping without pauses, against this file's fulfillment."""
    return Simulator(
        Settings.from_env(
            env={},
            fulfillment_address=f"127.0.0.1:{fulfillment.port}",
            simulator_step_seconds=0.0,
            **settings,
        )
    )


async def test_the_simulator_asked_to_reject_rejects_and_the_lines_are_routed_again(
    stub: Stub, world: World, fulfillment: RunningService
) -> None:
    w = world
    await stock(stub, w.a, {w.near: 5, w.mid: 5})
    order_id, fo = await create(stub, (w.a, 1))
    simulator = warehouse(fulfillment, simulator_reject_rate=1.0)
    try:
        await simulator.tick()
    finally:
        await simulator.close()

    after = await stub.GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    assert after.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_REJECTED
    listed = await stub.ListFulfillmentOrders(pb.ListFulfillmentOrdersRequest(order_id=order_id))
    assert [(f.location_id, f.status) for f in listed.fulfillment_orders] == [
        (w.near, pb.FULFILLMENT_ORDER_STATUS_REJECTED),
        (w.mid, pb.FULFILLMENT_ORDER_STATUS_ALLOCATED),
    ]
    decisions = await stub.GetRoutingDecisions(pb.GetRoutingDecisionsRequest(order_id=order_id))
    assert REJECT_REASON in decisions.decisions[-1].excluded[0].reason


class LossyNetwork:
    """The simulator's way to fulfillment, losing, once, what it is told to for one fulfillment
    order: the answer of its shipment report after fulfillment recorded it
    (`"shipment's answer"`), or its delivery report before it arrives (`"delivery call"`)."""

    def __init__(self, stub: Any, fulfillment_order_id: str, lose: str) -> None:
        self._stub = stub
        self._fo_id = fulfillment_order_id
        self._shipments: set[str] = set()
        self.pending = {lose}

    def __getattr__(self, rpc: str) -> Any:
        call = getattr(self._stub, rpc)

        async def through(request: Any, **kwargs: Any) -> Any:
            mine = getattr(request, "fulfillment_order_id", None) == self._fo_id
            ours = rpc == "ConfirmDelivery" and request.shipment_id in self._shipments
            if ours and "delivery call" in self.pending:
                self.pending.discard("delivery call")
                raise lost(grpc.StatusCode.DEADLINE_EXCEEDED)
            answer = await call(request, **kwargs)
            if rpc == "ConfirmShipment" and mine:
                self._shipments.add(answer.shipment.shipment_id)
                if "shipment's answer" in self.pending:
                    self.pending.discard("shipment's answer")
                    raise lost(grpc.StatusCode.UNAVAILABLE)
            return answer

        return through


def lost(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "lost")


async def delivered(stub: Stub, fulfillment_order_id: str) -> list[bool]:
    found = await stub.GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fulfillment_order_id)
    )
    return [s.HasField("delivered_at") for s in found.fulfillment_order.shipments]


@pytest.mark.parametrize("lose", ["shipment's answer", "delivery call"])
async def test_the_simulator_still_delivers_a_parcel_when_a_call_or_its_answer_is_lost(
    stub: Stub, world: World, fulfillment: RunningService, lose: str
) -> None:
    """A replica dying or a deadline passing mid-call: the parcel is delivered all the same
    (no order left shipped and never delivered)."""
    w = world
    await stock(stub, w.a, {w.near: 5})
    _, fo = await create(stub, (w.a, 1))
    simulator = warehouse(fulfillment)
    network = LossyNetwork(simulator._stub, fo.fulfillment_order_id, lose)
    simulator._stub = network  # type: ignore[assignment]
    try:
        await simulator.tick()
        assert not network.pending  # the loss happened
        await simulator.tick()
    finally:
        await simulator.close()
    assert await delivered(stub, fo.fulfillment_order_id) == [True]


# ---- rejections --------------------------------------------------------------------------------


async def test_rejecting_every_line_routes_them_to_the_next_best_location_once(
    stub: Stub, world: World, sql: asyncpg.Connection
) -> None:
    w = world
    for sku in (w.a, w.b):
        await stock(stub, sku, {w.near: 5, w.mid: 5, w.far: 5})
    order_id, fo = await create(stub, (w.a, 2), (w.b, 1), delivery_method="standard")
    assert fo.location_id == w.near
    request = pb.RejectFulfillmentOrderRequest(
        fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="r1", reason="flooded"
    )

    first, second = await asyncio.gather(
        stub.RejectFulfillmentOrder(request), stub.RejectFulfillmentOrder(request)
    )
    again = await stub.RejectFulfillmentOrder(request)

    assert first == second == again
    assert first.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_REJECTED
    assert lines_of(first.fulfillment_order) == [(w.a, 0, 2, 0, 0), (w.b, 0, 1, 0, 0)]
    [replacement] = first.replacements
    assert replacement.location_id == w.mid
    assert replacement.status == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert [(ln.order_line_id, ln.sku, ln.quantity) for ln in replacement.lines] == [
        (f"{order_id}-l0", w.a, 2),
        (f"{order_id}-l1", w.b, 1),
    ]
    assert list(first.unallocated_lines) == []
    assert first.decisions[-1] == (
        f"not considered: {w.near} (rejected fulfillment order {fo.fulfillment_order_id}: flooded)"
    )
    # Reservations moved from the rejecting location to the replacement's, once.
    assert await reserved(stub, w.a) == {w.near: 0, w.mid: 2, w.far: 0}
    assert await reserved(stub, w.b) == {w.near: 0, w.mid: 1, w.far: 0}
    assert await reservations(sql, w.a) == [
        (w.mid, "reserved", 2, f"reject:{fo.fulfillment_order_id}:r1"),
        (w.near, "released", 2, f"create:{order_id}:route"),
    ]
    [event] = await events(sql, fo.fulfillment_order_id)
    assert event["workflow_id"] == f"order:{order_id}"
    assert event["name"] == "fulfillment_event"
    assert event["payload"] == {
        "event_id": f"rejected:{fo.fulfillment_order_id}:r1",
        "kind": "rejected",
        "fulfillment_order_id": fo.fulfillment_order_id,
        "shipment_id": "",
        "items": [
            {"order_line_id": f"{order_id}-l0", "quantity": 2},
            {"order_line_id": f"{order_id}-l1", "quantity": 1},
        ],
        "carrier": "",
        "tracking_number": "",
        "reason": "flooded",
        "replacements": [
            {
                "fulfillment_order_id": replacement.fulfillment_order_id,
                "location_id": w.mid,
                "delivery_group_id": f"{order_id}-dg",
                "lines": [
                    {"order_line_id": f"{order_id}-l0", "sku": w.a, "quantity": 2},
                    {"order_line_id": f"{order_id}-l1", "sku": w.b, "quantity": 1},
                ],
                "promise_date": "",  # allocated from stock, not backordered
                "promised_delivery_date": replacement.promised_delivery_date,
            }
        ],
        "unallocated": [],
        "promised_delivery_date": "",  # set on "shipped" events only
    }
    other = pb.RejectFulfillmentOrderRequest()
    other.CopyFrom(request)
    other.reason = "something else"
    error = await raises(stub.RejectFulfillmentOrder(other))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS

    # The replacement is promised for the day its own route arrives: what EstimateDelivery
    # says when the units are only where it ships from, at the moment it was made. The
    # farther warehouse arrives later than the rejecting one would have.
    await stock(stub, w.a, {w.near: 0, w.far: 0})
    await stock(stub, w.b, {w.near: 0, w.far: 0})
    estimated = await stub.EstimateDelivery(
        pb.EstimateDeliveryRequest(
            items=[pb.DeliveryItem(sku=ln.sku, quantity=ln.quantity) for ln in replacement.lines],
            address=NEW_YORK,
            delivery_methods=["standard"],
            ordered_at=replacement.created_at,
        )
    )
    [parcel] = estimated.estimates[0].shipments
    assert parcel.location_id == w.mid
    assert replacement.promised_delivery_date == parcel.delivery_date
    assert fo.promised_delivery_date
    assert replacement.promised_delivery_date > fo.promised_delivery_date


async def test_rejecting_some_units_reduces_the_line_and_reroutes_only_those(
    stub: Stub, world: World, sql: asyncpg.Connection
) -> None:
    w = world
    for sku in (w.a, w.b):
        await stock(stub, sku, {w.near: 5, w.mid: 5})
    order_id, fo = await create(stub, (w.a, 3), (w.b, 1))

    response = await stub.RejectFulfillmentOrder(
        pb.RejectFulfillmentOrderRequest(
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key="r1",
            lines=[pb.LineQuantity(order_line_id=f"{order_id}-l0", quantity=2)],
            reason="two are dented",
        )
    )

    assert response.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert lines_of(response.fulfillment_order) == [(w.a, 1, 2, 0, 0), (w.b, 1, 0, 0, 0)]
    [replacement] = response.replacements
    assert (replacement.location_id, lines_of(replacement)) == (w.mid, [(w.a, 2, 0, 0, 0)])
    assert await reserved(stub, w.a) == {w.near: 1, w.mid: 2}
    assert await reserved(stub, w.b) == {w.near: 1, w.mid: 0}
    [event] = await events(sql, fo.fulfillment_order_id)
    assert event["payload"]["items"] == [{"order_line_id": f"{order_id}-l0", "quantity": 2}]


async def test_each_rejection_excludes_every_location_that_rejected_the_line_until_none_is_left(
    stub: Stub, world: World, sql: asyncpg.Connection
) -> None:
    w = world
    await stock(stub, w.a, {w.near: 5, w.mid: 5, w.far: 5})
    order_id, fo = await create(stub, (w.a, 2))
    line_id = f"{order_id}-l0"
    visited = [fo.location_id]
    current = fo.fulfillment_order_id
    for step in range(2):
        response = await stub.RejectFulfillmentOrder(
            pb.RejectFulfillmentOrderRequest(
                fulfillment_order_id=current, idempotency_key=f"r{step}", reason="no"
            )
        )
        [replacement] = response.replacements
        visited.append(replacement.location_id)
        current = replacement.fulfillment_order_id
    assert visited == [w.near, w.mid, w.far]

    last = await stub.RejectFulfillmentOrder(
        pb.RejectFulfillmentOrderRequest(fulfillment_order_id=current, idempotency_key="r-last")
    )

    assert list(last.replacements) == []
    assert [(ln.order_line_id, ln.sku, ln.quantity) for ln in last.unallocated_lines] == [
        (line_id, w.a, 2)
    ]
    assert f"2 of {w.a} for line {line_id} could not be placed" in " ".join(last.decisions)
    assert await reserved(stub, w.a) == {w.near: 0, w.mid: 0, w.far: 0}
    [event] = await events(sql, current)
    assert event["payload"]["replacements"] == []
    assert event["payload"]["unallocated"] == [
        {"order_line_id": line_id, "sku": w.a, "quantity": 2}
    ]


async def test_rejecting_when_no_other_location_has_stock_reports_the_units_unallocated(
    stub: Stub, world: World, sql: asyncpg.Connection
) -> None:
    w = world
    await stock(stub, w.a, {w.near: 5})
    order_id, fo = await create(stub, (w.a, 3))

    response = await stub.RejectFulfillmentOrder(
        pb.RejectFulfillmentOrderRequest(
            fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="r1", reason="closed"
        )
    )

    assert list(response.replacements) == []
    assert [(ln.sku, ln.quantity) for ln in response.unallocated_lines] == [(w.a, 3)]
    assert await reserved(stub, w.a) == {w.near: 0}
    [event] = await events(sql, fo.fulfillment_order_id)
    assert event["payload"]["unallocated"] == [
        {"order_line_id": f"{order_id}-l0", "sku": w.a, "quantity": 3}
    ]


async def test_a_shipped_order_cannot_be_rejected_and_nothing_changes(
    stub: Stub, world: World
) -> None:
    w = world
    await stock(stub, w.a, {w.near: 5, w.mid: 5})
    _, fo = await create(stub, (w.a, 1))
    fo_id = fo.fulfillment_order_id
    await stub.AcceptFulfillmentOrder(pb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id))
    await stub.ConfirmShipment(
        pb.ConfirmShipmentRequest(fulfillment_order_id=fo_id, idempotency_key="p")
    )

    error = await raises(
        stub.RejectFulfillmentOrder(
            pb.RejectFulfillmentOrderRequest(fulfillment_order_id=fo_id, idempotency_key="r")
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"fulfillment order {fo_id} is shipped; cannot reject its lines"
    assert await reserved(stub, w.a) == {w.near: 0, w.mid: 0}


async def test_routing_decisions_are_kept_with_alternatives_and_exclusions(
    stub: Stub, world: World
) -> None:
    w = world
    await stock(stub, w.a, {w.near: 5, w.mid: 5, w.far: 5})
    order_id, fo = await create(stub, (w.a, 1))
    await stub.RejectFulfillmentOrder(
        pb.RejectFulfillmentOrderRequest(
            fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="r1", reason="flooded"
        )
    )

    response = await stub.GetRoutingDecisions(pb.GetRoutingDecisionsRequest(order_id=order_id))

    routed, rerouted = response.decisions
    assert routed.trigger == pb.ROUTING_TRIGGER_ORDER
    assert list(routed.chosen_location_ids) == [w.near]
    assert [(list(a.location_ids), a.chosen) for a in routed.alternatives] == [
        ([w.near], True),
        ([w.mid], False),
        ([w.far], False),
    ]
    assert routed.alternatives[0].verdict.startswith("chosen: 1 fulfillment order, nearest")
    assert routed.alternatives[1].verdict.startswith("farther: 1,1")
    assert routed.alternatives[0].HasField("average_distance_km")
    assert rerouted.trigger == pb.ROUTING_TRIGGER_REJECTION
    assert rerouted.source_fulfillment_order_id == fo.fulfillment_order_id
    assert list(rerouted.chosen_location_ids) == [w.mid]
    assert [(e.location_id, e.reason) for e in rerouted.excluded] == [
        (w.near, f"rejected fulfillment order {fo.fulfillment_order_id}: flooded")
    ]
    assert rerouted.decided_at.ToDatetime() >= routed.decided_at.ToDatetime()


# ---- cancel and move lines -------------------------------------------------------------------


async def test_canceling_lines_releases_exactly_that_quantity(stub: Stub, world: World) -> None:
    w = world
    for sku in (w.a, w.b):
        await stock(stub, sku, {w.near: 5})
    order_id, fo = await create(stub, (w.a, 3), (w.b, 1))
    fo_id = fo.fulfillment_order_id

    def cancel(key: str, *lines: tuple[int, int]) -> pb.CancelFulfillmentOrderLinesRequest:
        return pb.CancelFulfillmentOrderLinesRequest(
            fulfillment_order_id=fo_id,
            idempotency_key=key,
            reason="shopper changed mind",
            lines=[pb.LineQuantity(order_line_id=f"{order_id}-l{i}", quantity=q) for i, q in lines],
        )

    first = await stub.CancelFulfillmentOrderLines(cancel("c1", (0, 2)))
    repeat = await stub.CancelFulfillmentOrderLines(cancel("c1", (0, 2)))

    assert repeat == first
    assert first.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert lines_of(first.fulfillment_order) == [(w.a, 1, 0, 2, 0), (w.b, 1, 0, 0, 0)]
    # The answer is the fulfillment order as it is now kept.
    assert first.fulfillment_order == await kept(stub, fo_id)
    assert await reserved(stub, w.a) == {w.near: 1}

    error = await raises(stub.CancelFulfillmentOrderLines(cancel("c2", (0, 2))))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        f"line {order_id}-l0 of fulfillment order {fo_id} has 1 unshipped unit; cannot cancel 2"
    )

    rest = await stub.CancelFulfillmentOrderLines(cancel("c3", (0, 1), (1, 1)))
    assert rest.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_CANCELED
    assert rest.fulfillment_order == await kept(stub, fo_id)
    assert rest.fulfillment_order.updated_at.ToDatetime() > fo.updated_at.ToDatetime()
    assert await reserved(stub, w.a) == {w.near: 0}
    assert await reserved(stub, w.b) == {w.near: 0}


async def kept(stub: Stub, fo_id: str) -> pb.FulfillmentOrder:
    """The fulfillment order as fulfillment keeps it (read afresh)."""
    request = pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo_id)
    return (await stub.GetFulfillmentOrder(request)).fulfillment_order


async def test_moving_lines_transfers_their_reservation_to_a_new_order_at_the_other_location(
    stub: Stub, world: World, sql: asyncpg.Connection
) -> None:
    w = world
    for sku in (w.a, w.b):
        await stock(stub, sku, {w.near: 5, w.far: 5})
    order_id, fo = await create(stub, (w.a, 2), (w.b, 1), delivery_method="standard")
    fo_id = fo.fulfillment_order_id
    request = pb.MoveFulfillmentOrderLinesRequest(
        fulfillment_order_id=fo_id,
        idempotency_key="m1",
        to_location_id=w.far,
        lines=[pb.LineQuantity(order_line_id=f"{order_id}-l0", quantity=2)],
        reason="ships faster from the west today",
    )

    moved = await stub.MoveFulfillmentOrderLines(request)
    again = await stub.MoveFulfillmentOrderLines(request)

    assert again == moved
    assert lines_of(moved.fulfillment_order) == [(w.a, 0, 0, 0, 2), (w.b, 1, 0, 0, 0)]
    assert moved.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert moved.moved_to.location_id == w.far
    assert lines_of(moved.moved_to) == [(w.a, 2, 0, 0, 0)]
    assert await reserved(stub, w.a) == {w.near: 0, w.far: 2}
    assert await reservations(sql, w.a) == [
        (w.far, "reserved", 2, f"move:{fo_id}:m1"),
        (w.near, "transferred", 2, f"create:{order_id}:route"),
    ]
    [event] = await events(sql, fo_id)
    assert event["payload"]["event_id"] == f"moved:{fo_id}:m1"
    assert event["payload"]["kind"] == "moved"
    assert event["payload"]["items"] == [{"order_line_id": f"{order_id}-l0", "quantity": 2}]
    assert [r["location_id"] for r in event["payload"]["replacements"]] == [w.far]
    # The new fulfillment order is promised from its own route (farther, so later), and the
    # order's workflow is told that promise.
    assert fo.promised_delivery_date
    assert moved.moved_to.promised_delivery_date > fo.promised_delivery_date
    assert [r["promised_delivery_date"] for r in event["payload"]["replacements"]] == [
        moved.moved_to.promised_delivery_date
    ]
    decisions = await stub.GetRoutingDecisions(pb.GetRoutingDecisionsRequest(order_id=order_id))
    assert decisions.decisions[-1].trigger == pb.ROUTING_TRIGGER_MOVE
    assert list(decisions.decisions[-1].chosen_location_ids) == [w.far]


async def test_a_move_to_a_location_without_the_units_is_refused_and_changes_nothing(
    stub: Stub, world: World
) -> None:
    w = world
    await stock(stub, w.a, {w.near: 5, w.mid: 1})
    _, fo = await create(stub, (w.a, 2))

    error = await raises(
        stub.MoveFulfillmentOrderLines(
            pb.MoveFulfillmentOrderLinesRequest(
                fulfillment_order_id=fo.fulfillment_order_id,
                idempotency_key="m1",
                to_location_id=w.mid,
            )
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"location {w.mid} has 1 of {w.a} available; cannot move 2 there"
    assert await reserved(stub, w.a) == {w.near: 2, w.mid: 0}
    unchanged = await stub.GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    assert lines_of(unchanged.fulfillment_order) == [(w.a, 2, 0, 0, 0)]


# ---- inventory ---------------------------------------------------------------------------------


async def test_adjusting_inventory_receives_counts_and_writes_off_damage_but_never_below_reserved(
    stub: Stub, world: World
) -> None:
    w = world

    def adjust(
        key: str, *steps: tuple[pb.InventoryAdjustmentKind.ValueType, int]
    ) -> pb.AdjustInventoryRequest:
        return pb.AdjustInventoryRequest(
            idempotency_key=key,
            adjustments=[
                pb.InventoryAdjustment(
                    location_id=w.near, sku=w.a, kind=kind, quantity=q, reason="test"
                )
                for kind, q in steps
            ],
        )

    received = await stub.AdjustInventory(adjust("a1", (pb.INVENTORY_ADJUSTMENT_KIND_RECEIVED, 8)))
    await stub.AdjustInventory(adjust("a1", (pb.INVENTORY_ADJUSTMENT_KIND_RECEIVED, 8)))
    assert [(lv.on_hand, lv.available_to_fulfill) for lv in received.levels] == [(8, 8)]
    await create(stub, (w.a, 3))

    error = await raises(
        stub.AdjustInventory(
            adjust(
                "a2",
                (pb.INVENTORY_ADJUSTMENT_KIND_RECEIVED, 100),
                (pb.INVENTORY_ADJUSTMENT_KIND_DAMAGED, 106),
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        f"level of {w.a} at {w.near} has 108 on hand and 3 reserved; writing off 106 damaged "
        "would leave 2 on hand, below what is reserved"
    )

    both = await stub.AdjustInventory(
        adjust(
            "a3",
            (pb.INVENTORY_ADJUSTMENT_KIND_DAMAGED, 5),
            (pb.INVENTORY_ADJUSTMENT_KIND_COUNTED, 4),
        )
    )
    assert [(lv.on_hand, lv.reserved) for lv in both.levels] == [(3, 3), (4, 3)]

    bad = await raises(
        stub.AdjustInventory(adjust("a4", (pb.INVENTORY_ADJUSTMENT_KIND_UNSPECIFIED, 1)))
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in grpcutil.field_violations(bad)] == ["adjustments[0].kind"]
    levels = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[w.a]))
    assert [(lv.on_hand, lv.reserved) for lv in levels.levels] == [(4, 3)]


async def backordered(stub: Stub, location_id: str, sku: str, quantity: int) -> pb.FulfillmentOrder:
    """An order of `quantity` units of a SKU no location stocks, waiting at `location_id` on a
    purchase order due next week."""
    await stub.CreateSupply(
        pb.CreateSupplyRequest(
            idempotency_key=f"po-{sku}",
            kind=pb.SUPPLY_KIND_PURCHASE_ORDER,
            location_id=location_id,
            sku=sku,
            quantity=10,
            expected_date=(datetime.now(UTC) + timedelta(days=7)).date().isoformat(),
        )
    )
    _, fo = await create(stub, (sku, quantity))
    assert (fo.status, fo.location_id) == (pb.FULFILLMENT_ORDER_STATUS_BACKORDERED, location_id)
    return fo


async def status_of(stub: Stub, fo: pb.FulfillmentOrder) -> int:
    found = await stub.GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    return found.fulfillment_order.status


async def test_each_stock_feed_records_the_reservations_it_releases_as_its_own(
    stub: Stub, world: World, sql: asyncpg.Connection
) -> None:
    w = world
    waiting_a = await backordered(stub, w.near, w.a, 2)
    waiting_b = await backordered(stub, w.near, w.b, 1)

    # Two feeds, each raising one SKU at the location: each releases its backorder.
    await stock(stub, w.a, {w.near: 2})
    await stock(stub, w.b, {w.near: 1})
    assert await status_of(stub, waiting_a) == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert await status_of(stub, waiting_b) == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert (await reserved(stub, w.a), await reserved(stub, w.b)) == ({w.near: 2}, {w.near: 1})
    [(*held_a, key_a)] = await reservations(sql, w.a)
    [(*held_b, key_b)] = await reservations(sql, w.b)
    assert (held_a, held_b) == ([w.near, "reserved", 2], [w.near, "reserved", 1])
    assert key_a != key_b  # each feed's releases told apart from the other's
    assert key_a.startswith("set-inventory-levels:")
    assert key_b.startswith("set-inventory-levels:")

    # The second feed sent again raises nothing, so it releases and reserves nothing more.
    await stock(stub, w.b, {w.near: 1})
    assert await reserved(stub, w.b) == {w.near: 1}
    assert await reservations(sql, w.b) == [(w.near, "reserved", 1, key_b)]
    assert await status_of(stub, waiting_b) == pb.FULFILLMENT_ORDER_STATUS_ALLOCATED


async def test_a_ship_to_store_transfer_that_leaves_later_than_planned_is_promised_from_that_day(
    stub: Stub, world: World, sql: asyncpg.Connection
) -> None:
    w = world
    # A store beside the Chicago warehouse that takes ship-to-store; only that warehouse
    # stocks the SKU, so a pickup there is shipped to it from Chicago (0 km).
    store_id = f"store-{w.mid}"
    await stub.UpsertLocation(
        pb.UpsertLocationRequest(
            location=pb.Location(
                location_id=store_id,
                name=store_id,
                type=pb.LOCATION_TYPE_STORE,
                latitude=CHICAGO[0],
                longitude=CHICAGO[1],
                priority=1,
                enabled=True,
                ship_to_store=pb.ShipToStoreSetting(accepted=True),
            )
        )
    )
    await stock(stub, w.a, {w.mid: 5})
    _, fo = await create(stub, (w.a, 2), delivery_method="pickup", pickup_location_id=store_id)
    assert (fo.location_id, fo.pickup_location_id) == (w.mid, store_id)
    # Planned to reach the store ten days before it will: the transfer was due to leave long
    # ago and leaves only now.
    planned = date.fromisoformat(fo.promised_delivery_date) - timedelta(days=10)
    await sql.execute(
        "UPDATE fulfillment_orders SET promised_delivery_date = $2 WHERE id = $1",
        fo.fulfillment_order_id,
        planned,
    )

    shipped = await stub.ShipToStore(
        pb.ShipToStoreRequest(
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key="t1",
            carrier="LTL",
            tracking_number="TR-9",
        )
    )

    # Promised from the day it left (at the warehouse) plus the standard transit days for
    # the 0 km to the store, in the business days of the store's country.
    in_transit = shipped.fulfillment_order
    locations = await stub.ListLocations(pb.ListLocationsRequest())
    [chicago] = [loc for loc in locations.locations if loc.location_id == w.mid]
    left_on = (
        in_transit.transfer_shipped_at.ToDatetime(tzinfo=UTC)
        .astimezone(zoneinfo.ZoneInfo(chicago.timezone))
        .date()
    )
    bands = await stub.ListTransitTimes(pb.ListTransitTimesRequest())
    [days] = [
        b.transit_days
        for b in bands.transit_times
        if (b.delivery_method, b.from_km) == ("standard", 0)
    ]
    expected = BusinessCalendar("US", PublicHolidays()).add_business_days(left_on, days)
    assert expected > planned
    assert in_transit.promised_delivery_date == expected.isoformat()
    found = await stub.GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    assert found.fulfillment_order.promised_delivery_date == expected.isoformat()
    # The order's workflow is told the new promise (the order's promise follows from it).
    told = await events(sql, fo.fulfillment_order_id)
    assert [(e["payload"]["kind"], e["payload"]["promised_delivery_date"]) for e in told] == [
        ("transfer_repromised", expected.isoformat())
    ]
    # Reported again, nothing moves and the workflow is not told twice.
    again = await stub.ShipToStore(
        pb.ShipToStoreRequest(fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="t2")
    )
    assert again.fulfillment_order.promised_delivery_date == expected.isoformat()
    assert await events(sql, fo.fulfillment_order_id) == told


async def test_a_stock_feed_of_thousands_of_levels_is_one_call(stub: Stub, world: World) -> None:
    skus = [f"{world.a}-{i}" for i in range(2500)]
    levels = [
        pb.InventoryLevel(location_id=loc, sku=sku, on_hand=i % 7)
        for i, sku in enumerate(skus)
        for loc in (world.near, world.mid)
    ]

    started = time.perf_counter()
    response = await stub.SetInventoryLevels(pb.SetInventoryLevelsRequest(levels=levels))
    elapsed = time.perf_counter() - started

    assert len(response.levels) == 5000
    assert [(lv.location_id, lv.sku, lv.on_hand) for lv in response.levels[:3]] == [
        (world.near, skus[0], 0),
        (world.mid, skus[0], 0),
        (world.near, skus[1], 1),
    ]
    availability = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=skus[:10]))
    assert availability.total_available[skus[6]] == 12
    assert elapsed < 10, f"5000 levels took {elapsed:.1f}s"


# ---- capacity and groups -----------------------------------------------------------------------


async def test_daily_capacity_is_respected_under_concurrency_and_freed_by_a_rejection(
    stub: Stub, world: World
) -> None:
    w = world
    capped = f"{w.near}-capped"
    await add_location(stub, capped, NEWARK, capacity=3)
    await stock(stub, w.a, {capped: 100, w.mid: 100})

    created = await asyncio.gather(*(create(stub, (w.a, 1)) for _ in range(10)))

    at = [fo.location_id for _, fo in created]
    assert at.count(capped) == 3 and at.count(w.mid) == 7
    locations = {
        loc.location_id: loc
        for loc in (await stub.ListLocations(pb.ListLocationsRequest())).locations
    }
    assert (locations[capped].daily_capacity, locations[capped].fulfillment_orders_today) == (3, 3)

    rejected = next(fo for _, fo in created if fo.location_id == capped)
    await stub.RejectFulfillmentOrder(
        pb.RejectFulfillmentOrderRequest(
            fulfillment_order_id=rejected.fulfillment_order_id, idempotency_key="r"
        )
    )
    _, next_one = await create(stub, (w.a, 1))
    assert next_one.location_id == capped
    # Every order that went to the farther location did so because the capped one was full.
    for order_id, fo in created:
        if fo.location_id == w.mid:
            decisions = await stub.GetRoutingDecisions(
                pb.GetRoutingDecisionsRequest(order_id=order_id)
            )
            assert [(e.location_id, e.reason) for e in decisions.decisions[0].excluded] == [
                (capped, "no daily capacity left")
            ]


async def test_availability_is_reported_per_location_group_and_in_total(
    stub: Stub, world: World
) -> None:
    w = world
    store = f"{w.near}-store"
    await add_location(stub, store, CHICAGO, kind=pb.LOCATION_TYPE_STORE)
    east = await stub.UpsertLocationGroup(
        pb.UpsertLocationGroupRequest(
            location_group=pb.LocationGroup(
                location_group_id=f"east-{w.a}", name="East", location_ids=[w.near, w.mid]
            )
        )
    )
    await stub.UpsertLocationGroup(
        pb.UpsertLocationGroupRequest(
            location_group=pb.LocationGroup(
                location_group_id=f"stores-{w.a}", name="Stores", location_ids=[store]
            )
        )
    )
    await stock(stub, w.a, {w.near: 4, w.mid: 6, w.far: 1, store: 2})
    await create(stub, (w.a, 3))

    response = await stub.GetAvailability(
        pb.GetAvailabilityRequest(
            skus=[w.a, w.b], location_group_ids=[f"east-{w.a}", f"stores-{w.a}"]
        )
    )

    assert list(east.location_group.location_ids) == sorted([w.near, w.mid])
    assert dict(response.total_available) == {w.a: 10, w.b: 0}
    assert {g.location_group_id: dict(g.available) for g in response.groups} == {
        f"east-{w.a}": {w.a: 7, w.b: 0},
        f"stores-{w.a}": {w.a: 2, w.b: 0},
    }
    groups = await stub.ListLocationGroups(pb.ListLocationGroupsRequest())
    assert f"east-{w.a}" in [g.location_group_id for g in groups.location_groups]
    locations = await stub.ListLocations(pb.ListLocationsRequest())
    [near] = [loc for loc in locations.locations if loc.location_id == w.near]
    assert list(near.location_group_ids) == [f"east-{w.a}"]

    error = await raises(
        stub.UpsertLocationGroup(
            pb.UpsertLocationGroupRequest(
                location_group=pb.LocationGroup(
                    location_group_id="g", name="G", location_ids=[w.near, "mars"]
                )
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in grpcutil.field_violations(error)] == ["location_group.location_ids[1]"]


async def test_a_disabled_location_gets_no_new_fulfillment_orders(stub: Stub, world: World) -> None:
    w = world
    await stock(stub, w.a, {w.near: 5, w.mid: 5})
    await stub.UpsertLocation(
        pb.UpsertLocationRequest(
            location=pb.Location(
                location_id=w.near,
                name=w.near,
                type=pb.LOCATION_TYPE_WAREHOUSE,
                latitude=NEWARK[0],
                longitude=NEWARK[1],
                enabled=False,
            )
        )
    )

    _, fo = await create(stub, (w.a, 1))

    assert fo.location_id == w.mid
    availability = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[w.a]))
    assert availability.total_available[w.a] == 4
