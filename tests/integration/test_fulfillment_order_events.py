"""Fulfillment-order steps the order's workflow is not told of (a warehouse accepting, picking,
packing; an admin's cancel) reach capture's event log through fulfillment's outbox.

Real Postgres (a database of this module's own), capture and fulfillment over real gRPC with
their relays running, every call with a token. No Temporal: the events go to capture alone
(the lifecycle starts capture records wait in its outbox, which these tests leave alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth, db, outbox
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from oms_tools.registry import start_service
from oms_tools.samples import SPLIT_SKUS, sample_order, split_order
from services.fulfillment import events as fulfillment_events
from tests.callers import channel_as
from tests.conftest import System, migrated_database, wait_for
from tests.integration.helpers import eventually

LOCATION = "wh-east"


@dataclass
class Stack:
    """Capture and fulfillment on a database of their own, and what the tests call them as."""

    settings: Settings
    running: dict[str, RunningService]
    sql: asyncpg.Connection
    channels: list[grpc.aio.Channel]

    def stub(self, service: str, role: str, **identity: object) -> Any:
        channel = channel_as(self.settings, self.settings.address_of(service), role, **identity)
        self.channels.append(channel)
        if service == "capture":
            return capture_pb2_grpc.CaptureServiceStub(channel)
        return fulfillment_pb2_grpc.FulfillmentServiceStub(channel)

    async def new_fulfillment_order(self) -> tuple[capture_pb2.Order, fpb.FulfillmentOrder]:
        """A captured order, and the fulfillment order routing made for it at LOCATION."""
        captured = await self.stub("capture", auth.STOREFRONT).SubmitOrder(sample_order())
        order = captured.order
        (group,) = order.delivery_groups  # the sample order has one
        routing = fpb.CreateFulfillmentOrdersRequest(
            order_id=order.order_id,
            idempotency_key="route",
            delivery_groups=[
                fpb.RoutingDeliveryGroup(
                    delivery_group_id=group.delivery_group_id,
                    address=group.address,
                    lines=[
                        fpb.RoutingLine(
                            order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantity
                        )
                        for line in order.lines
                    ],
                )
            ],
        )
        created = await self.stub("fulfillment", auth.WORKFLOW).CreateFulfillmentOrders(routing)
        (fo,) = created.fulfillment_orders
        assert fo.location_id == LOCATION
        return order, fo

    async def logged(self, order_id: str) -> list[events_pb2.Event]:
        """The order's fulfillment-order events in capture's log, in the order they were
        written."""
        rows = await self.sql.fetch(
            "SELECT body FROM capture.order_events"
            " WHERE order_id = $1 AND type LIKE 'fulfillment.%' ORDER BY id",
            order_id,
        )
        return [events_pb2.Event.FromString(r["body"]) for r in rows]

    async def event_rows(self) -> list[asyncpg.Record]:
        """Event rows still in fulfillment's outbox."""
        return await self.sql.fetch(
            "SELECT * FROM fulfillment.outbox WHERE kind = 'event' ORDER BY id"
        )


@pytest.fixture
async def stack(settings: Settings, postgres: EmbeddedPostgres) -> AsyncIterator[Stack]:
    own = replace(
        settings,
        database_url=await migrated_database(postgres, "oms_fo_events"),
        capture_port=free_port(),
        fulfillment_port=free_port(),
        outbox_poll_seconds=0.05,
        outbox_dead_letter_after=2,
        # No lifecycle here logs the fulfillment orders' allocation: the warehouse's steps
        # wait for it (parked) only this long.
        events_park_max_seconds=0.1,
    )
    sql = await asyncpg.connect(own.dsn)
    running = {name: await start_service(name, own) for name in ("capture", "fulfillment")}
    merchandiser = channel_as(own, own.address_of("fulfillment"), auth.MERCHANDISER)
    await fulfillment_pb2_grpc.FulfillmentServiceStub(merchandiser).SetInventoryLevels(
        fpb.SetInventoryLevelsRequest(
            levels=[
                fpb.InventoryLevel(location_id=LOCATION, sku=sku, on_hand=1000)
                for sku in ("SKU-TSHIRT-M", "SKU-MUG")
            ]
        )
    )
    await merchandiser.close()
    stack = Stack(own, running, sql, [])
    try:
        yield stack
    finally:
        for channel in stack.channels:
            await channel.close()
        await asyncio.gather(*(svc.stop(0.5) for svc in stack.running.values()))
        await sql.close()


def fulfillment_event(
    order: capture_pb2.Order, fo: fpb.FulfillmentOrder, status: str, actor: str
) -> events_pb2.Event:
    """What the log should hold for `fo` reaching `status` (occurred_at aside)."""
    return events_pb2.Event(
        event_id=fulfillment_events.log_event_id(fo.fulfillment_order_id, status),
        type=f"fulfillment.{status}",
        order_id=order.order_id,
        channel="web",
        actor=actor,
        fulfillment_order_changed=events_pb2.FulfillmentOrderChanged(
            fulfillment_order_id=fo.fulfillment_order_id,
            location_id=LOCATION,
            status=status,
            lines=[
                events_pb2.LineQuantity(
                    order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantity
                )
                for line in fo.lines
            ],
        ),
    )


def without_time(event: events_pb2.Event) -> events_pb2.Event:
    out = events_pb2.Event()
    out.CopyFrom(event)
    out.ClearField("occurred_at")
    return out


async def test_accepting_picking_and_packing_reach_the_log_once_each_even_when_retried(
    stack: Stack,
) -> None:
    order, fo = await stack.new_fulfillment_order()
    warehouse = stack.stub("fulfillment", auth.WAREHOUSE, locations=[LOCATION])
    fo_id = fo.fulfillment_order_id

    # Each report twice, as a warehouse system retrying after a lost answer would.
    for _ in range(2):
        await warehouse.AcceptFulfillmentOrder(
            fpb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id)
        )
    for _ in range(2):
        await warehouse.MarkFulfillmentOrderPicked(
            fpb.MarkFulfillmentOrderPickedRequest(fulfillment_order_id=fo_id)
        )
    for _ in range(2):
        packed = await warehouse.MarkFulfillmentOrderPacked(
            fpb.MarkFulfillmentOrderPackedRequest(fulfillment_order_id=fo_id)
        )
    assert packed.fulfillment_order.status == fpb.FULFILLMENT_ORDER_STATUS_PACKED

    logged = await eventually(
        lambda: stack.logged(order.order_id),
        lambda events: len(events) >= 3,
        "the three warehouse steps in the log",
    )
    actor = f"warehouse:{LOCATION}"
    assert [without_time(e) for e in logged] == [
        fulfillment_event(order, fo, status, actor) for status in ("accepted", "picked", "packed")
    ]
    # Each step happened when fulfillment committed it, in that order.
    times = [e.occurred_at.ToDatetime() for e in logged]
    assert times == sorted(times)
    await eventually(stack.event_rows, lambda rows: rows == [], "the outbox emptied")
    # Sequenced like every other event of the log (subscribers see them).
    await eventually(
        lambda: stack.sql.fetchval(
            "SELECT count(*) FROM capture.order_events WHERE order_id = $1 AND seq IS NULL",
            order.order_id,
        ),
        lambda unsequenced: unsequenced == 0,
        "the events sequenced",
    )

    # The relay delivering the same events again (it died before deleting its rows) changes
    # nothing: the log keeps each event id once.
    service = stack.stub("capture", auth.SERVICE)
    await service.RecordOrderEvents(capture_pb2.RecordOrderEventsRequest(events=logged))
    assert await stack.logged(order.order_id) == logged


async def test_a_warehouse_of_another_location_cannot_accept_pick_or_pack(stack: Stack) -> None:
    order, fo = await stack.new_fulfillment_order()
    fo_id = fo.fulfillment_order_id
    elsewhere = stack.stub("fulfillment", auth.WAREHOUSE, locations=["wh-west"])
    steps = [
        (elsewhere.AcceptFulfillmentOrder, fpb.AcceptFulfillmentOrderRequest),
        (elsewhere.MarkFulfillmentOrderPicked, fpb.MarkFulfillmentOrderPickedRequest),
        (elsewhere.MarkFulfillmentOrderPacked, fpb.MarkFulfillmentOrderPackedRequest),
    ]
    for call, request in steps:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call(request(fulfillment_order_id=fo_id))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"fulfillment order {fo_id} belongs to location {LOCATION}" in (
            denied.value.details() or ""
        )
    # Nothing changed: still allocated, no warehouse step waiting in the outbox or logged.
    unchanged = await stack.stub("fulfillment", auth.ADMIN).GetFulfillmentOrder(
        fpb.GetFulfillmentOrderRequest(fulfillment_order_id=fo_id)
    )
    assert unchanged.fulfillment_order.status == fpb.FULFILLMENT_ORDER_STATUS_ALLOCATED
    assert [r for r in await stack.event_rows() if order.order_id in r["workflow_id"]] == []
    assert await stack.logged(order.order_id) == []
    # Its own location's warehouse may.
    mine = stack.stub("fulfillment", auth.WAREHOUSE, locations=[LOCATION])
    accepted = await mine.AcceptFulfillmentOrder(
        fpb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id)
    )
    assert accepted.fulfillment_order.status == fpb.FULFILLMENT_ORDER_STATUS_ACCEPTED


async def test_with_capture_down_the_events_wait_and_arrive_in_order_when_it_is_back(
    stack: Stack,
) -> None:
    first_order, first = await stack.new_fulfillment_order()
    second_order, second = await stack.new_fulfillment_order()
    await stack.running.pop("capture").stop(0.5)
    warehouse = stack.stub("fulfillment", auth.WAREHOUSE, locations=[LOCATION])

    for fo in (first, second):
        await warehouse.AcceptFulfillmentOrder(
            fpb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
        )
    await warehouse.MarkFulfillmentOrderPicked(
        fpb.MarkFulfillmentOrderPickedRequest(fulfillment_order_id=first.fulfillment_order_id)
    )

    # Tried, refused by no one (capture is unreachable): the rows wait, counted as attempts,
    # never as refusals, however long it lasts (dead_letter_after is 2 here).
    waiting = await eventually(
        stack.event_rows,
        lambda rows: len(rows) == 3 and all(r["attempts"] >= 3 for r in rows[:2]),
        "the rows retried while capture is away",
    )
    assert [r["name"] for r in waiting] == [
        "fulfillment.accepted",
        "fulfillment.accepted",
        "fulfillment.picked",
    ]
    assert all(r["refusals"] == 0 for r in waiting)
    assert "UNAVAILABLE" in waiting[0]["last_error"]
    assert await stack.sql.fetchval("SELECT count(*) FROM fulfillment.outbox_dead_letters") == 0

    stack.running["capture"] = await start_service("capture", stack.settings)

    def steps(events: list[events_pb2.Event]) -> list[str]:
        return [e.type for e in events]

    await eventually(
        lambda: stack.logged(first_order.order_id),
        lambda events: steps(events) == ["fulfillment.accepted", "fulfillment.picked"],
        "the first order's steps, in order",
    )
    await eventually(
        lambda: stack.logged(second_order.order_id),
        lambda events: steps(events) == ["fulfillment.accepted"],
        "the second order's step",
    )
    await eventually(stack.event_rows, lambda rows: rows == [], "the outbox emptied")


async def test_an_admins_cancel_is_logged_and_the_workflows_is_left_to_the_workflow(
    stack: Stack,
) -> None:
    order, fo = await stack.new_fulfillment_order()
    other_order, other = await stack.new_fulfillment_order()
    admin = stack.stub("fulfillment", auth.ADMIN, subject="admin:grace")
    workflow = stack.stub("fulfillment", auth.WORKFLOW)

    await admin.CancelFulfillmentOrder(
        fpb.CancelFulfillmentOrderRequest(
            fulfillment_order_id=fo.fulfillment_order_id, reason="address embargoed"
        )
    )
    await workflow.CancelFulfillmentOrder(
        fpb.CancelFulfillmentOrderRequest(
            fulfillment_order_id=other.fulfillment_order_id, idempotency_key="saga"
        )
    )

    logged = await eventually(
        lambda: stack.logged(order.order_id),
        lambda events: any(e.type == "fulfillment.canceled" for e in events),
        "the admin's cancel in the log",
    )
    # The units it gave up: every one it had (nothing had shipped).
    expected = fulfillment_event(order, fo, "canceled", "admin:grace")
    expected.fulfillment_order_changed.reason = "address embargoed"
    assert [without_time(e) for e in logged] == [expected]
    # The workflow reports the cancels it asks for itself: nothing was recorded for it here.
    await eventually(stack.event_rows, lambda rows: rows == [], "the outbox emptied")
    assert await stack.logged(other_order.order_id) == []


async def test_an_event_of_an_order_capture_does_not_know_is_dead_lettered_after_its_refusals(
    stack: Stack,
) -> None:
    order, fo = await stack.new_fulfillment_order()
    stray = fulfillment_event(order, fo, "accepted", "warehouse:wh-east")
    stray.order_id = "no-such-order"
    stray.event_id = "evt_stray"
    stray.occurred_at.GetCurrentTime()
    async with stack.running["fulfillment"].context.pool.acquire() as conn:
        await outbox.enqueue(
            conn,
            "fulfillment",
            outbox.EVENT,
            "order:no-such-order",
            stray.type,
            outbox.event_payload(stray),
        )

    letters = await eventually(
        lambda: stack.sql.fetch("SELECT * FROM fulfillment.outbox_dead_letters"),
        lambda rows: len(rows) == 1,
        "the stray event dead-lettered",
    )
    assert letters[0]["error_kind"] == outbox.NOT_FOUND
    assert letters[0]["kind"] == outbox.EVENT
    assert letters[0]["error"] == "NOT_FOUND: order 'no-such-order' not found"
    assert letters[0]["attempts"] == 2


async def test_record_order_events_is_for_oms_services_and_names_what_is_wrong(
    stack: Stack,
) -> None:
    order, fo = await stack.new_fulfillment_order()
    good = fulfillment_event(order, fo, "accepted", "warehouse:wh-east")
    good.occurred_at.GetCurrentTime()

    agent = stack.stub("capture", auth.AGENT)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await agent.RecordOrderEvents(capture_pb2.RecordOrderEventsRequest(events=[good]))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    service = stack.stub("capture", auth.SERVICE)
    bare = events_pb2.Event(order_id=order.order_id, type="Fulfillment accepted!")
    misfit = events_pb2.Event()
    misfit.CopyFrom(good)
    misfit.type, misfit.event_id = "shipment.shipped", "evt_misfit"
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await service.RecordOrderEvents(
            capture_pb2.RecordOrderEventsRequest(events=[good, bare, misfit])
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = invalid.value.details() or ""
    for field in ("event_id", "type", "occurred_at", "payload"):
        assert f"events[1].{field}" in details
    assert "unknown event type 'Fulfillment accepted!'" in details
    assert "events[2].type" in details and "shipment_changed" in details

    unknown = events_pb2.Event()
    unknown.CopyFrom(good)
    unknown.order_id, unknown.event_id = "no-such-order", "evt_unknown"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await service.RecordOrderEvents(
            capture_pb2.RecordOrderEventsRequest(events=[good, unknown])
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-order" in (missing.value.details() or "")
    # All or nothing: the good event of the refused call was not written either.
    assert await stack.logged(order.order_id) == []


async def test_an_outbox_made_before_event_rows_takes_them_after_migrating(
    postgres: EmbeddedPostgres, tmp_path: Any
) -> None:
    dsn = postgres.dsn.rpartition("/")[0] + "/oms_outbox_kinds"
    await db.ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS old_service CASCADE")
        await conn.execute("CREATE SCHEMA old_service")
        # The outbox as the first releases made it.
        await conn.execute(
            "CREATE TABLE old_service.outbox (id bigserial PRIMARY KEY, kind text NOT NULL"
            " CHECK (kind IN ('start', 'signal')), workflow_id text NOT NULL, name text NOT NULL,"
            " payload jsonb NOT NULL, attempts int NOT NULL DEFAULT 0, last_error text,"
            " available_at timestamptz NOT NULL DEFAULT now(),"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        insert = (
            "INSERT INTO old_service.outbox (kind, workflow_id, name, payload)"
            " VALUES ($1, 'order:o', 'n', '{}')"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, "event")

        for _ in range(2):  # every start migrates; the second finds nothing to do
            await db.migrate(dsn, "old_service", tmp_path)

        await conn.execute(insert, "event")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, "other")
        checks = await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'old_service.outbox'::regclass"
            " AND contype = 'c'"
        )
        assert checks == 1
    finally:
        await conn.close()


async def test_a_lifecycle_run_by_the_warehouse_simulator_logs_each_step_of_each_fulfillment_order(
    system: System,
) -> None:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    # Stock that ships the order from two warehouses, one fulfillment order each.
    await fulfillment.SetInventoryLevels(
        fpb.SetInventoryLevelsRequest(
            levels=[
                fpb.InventoryLevel(location_id=location, sku=sku, on_hand=1000)
                for sku, location in SPLIT_SKUS.items()
            ]
        )
    )
    async with system.simulator():
        submitted = await capture.SubmitOrder(split_order(), timeout=10)
        order_id = submitted.order.order_id
        view = await wait_for(capture, order_id, {capture_pb2.ORDER_STATUS_FULFILLED})
    assert len(view.fulfillment_orders) == 2

    steps = ["fulfillment.accepted", "fulfillment.picked", "fulfillment.packed"]

    async def logged() -> list[events_pb2.Event]:
        conn = await asyncpg.connect(system.settings.dsn)
        try:
            rows = await conn.fetch(
                "SELECT body FROM capture.order_events"
                " WHERE order_id = $1 AND type LIKE 'fulfillment.%' ORDER BY id",
                order_id,
            )
        finally:
            await conn.close()
        # The warehouse's steps (the lifecycle logs the fulfillment orders it allocated).
        found = [events_pb2.Event.FromString(r["body"]) for r in rows]
        return [e for e in found if e.type in steps]

    # Mixed in the outbox with the shipped and delivered signals of the same order, which the
    # lifecycle acted on before the order was fulfilled: the events are in the log by now or soon.
    events = await eventually(logged, lambda found: len(found) >= 6, "every step of both")
    for fo in view.fulfillment_orders:
        mine = [
            e
            for e in events
            if e.fulfillment_order_changed.fulfillment_order_id == fo.fulfillment_order_id
        ]
        assert [e.type for e in mine] == steps
        assert {e.actor for e in mine} == {f"warehouse:{fo.location_id}"}
        assert {e.channel for e in mine} == {"web"}
