"""The event log from a subscriber's side, over real gRPC and real Postgres, with two capture
replicas on one database: what SubmitOrder, ImportOrders and RecordOrderProgress write to the
log, SubscribeEvents streaming history then live events, resuming, filters, heartbeats, a
storefront held to its channels, and both replicas serving the same stream. Nobody calls the
sequencer by hand: the replicas' sequencer tasks number what is written (their poll interval is
long here, so only the wake-ups on commit can be what numbers it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2, events_pb2_grpc

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from oms_platform.outbox import event_id
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from services.capture.store import events as event_log
from tests.callers import channel_as, oms_cli
from tests.integration.test_capture_service import isolated_settings, order_request, own_database

pb = capture_pb2
ev = events_pb2
HEARTBEAT_SECONDS = 0.3


@pytest.fixture(scope="module")
async def replicas(
    postgres: EmbeddedPostgres,
) -> AsyncIterator[tuple[Settings, list[RunningService]]]:
    dsn = await own_database(postgres, "oms_event_stream_it")
    settings = isolated_settings(
        dsn,
        events_sequencer_poll_seconds=30.0,
        events_stream_heartbeat_seconds=HEARTBEAT_SECONDS,
        events_stream_page_size=2,
        events_stream_max_streams=8,
    )
    running = [await start_service("capture", settings, port=0) for _ in range(2)]
    yield settings, running
    await asyncio.gather(*(r.stop(0.5) for r in running))


@pytest.fixture(scope="module")
async def admin(replicas: tuple[Settings, list[RunningService]]) -> AsyncIterator[Any]:
    settings, (a, _) = replicas
    async with channel_as(settings, f"127.0.0.1:{a.port}", auth.ADMIN) as channel:
        yield channel


@pytest.fixture(scope="module")
def capture(admin: Any) -> capture_pb2_grpc.CaptureServiceStub:
    return capture_pb2_grpc.CaptureServiceStub(admin)


@pytest.fixture(scope="module")
def events(admin: Any) -> events_pb2_grpc.EventsServiceStub:
    return events_pb2_grpc.EventsServiceStub(admin)


@pytest.fixture(scope="module")
async def lifecycle(
    replicas: tuple[Settings, list[RunningService]],
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    settings, (_, b) = replicas
    async with channel_as(settings, f"127.0.0.1:{b.port}", auth.WORKFLOW) as channel:
        yield capture_pb2_grpc.CaptureServiceStub(channel)


@pytest.fixture(scope="module")
async def sql(replicas: tuple[Settings, list[RunningService]]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(replicas[0].dsn)
    yield conn
    await conn.close()


async def until_quiet(call: Any) -> tuple[list[ev.Event], int]:
    """What a stream sends until its first heartbeat, and the head that heartbeat carries."""
    received: list[ev.Event] = []
    while True:
        response = await asyncio.wait_for(call.read(), 5)
        assert response is not grpc.aio.EOF, "the stream ended early"
        if not response.events:
            return received, response.head_sequence
        received.extend(response.events)


async def log_of(events: events_pb2_grpc.EventsServiceStub, *order_ids: str) -> list[ev.Event]:
    """Everything the log holds for these orders, read from the beginning."""
    call = events.SubscribeEvents(ev.SubscribeEventsRequest(from_sequence=1, order_ids=order_ids))
    try:
        return (await until_quiet(call))[0]
    finally:
        call.cancel()


def step(order_id: str, kind: str, status: int = 0, **fields: Any) -> pb.RecordOrderProgressRequest:
    return pb.RecordOrderProgressRequest(
        order_id=order_id,
        idempotency_key=uuid.uuid4().hex,
        status=status,  # type: ignore[arg-type]
        event=common_pb2.TimelineEvent(kind=kind, summary=kind, actor="warehouse:loc-1"),
        **fields,
    )


async def test_a_submitted_order_is_one_order_captured_event_and_a_retry_adds_none(
    capture: capture_pb2_grpc.CaptureServiceStub, events: events_pb2_grpc.EventsServiceStub
) -> None:
    request = order_request()
    order = (await capture.SubmitOrder(request)).order
    assert (await capture.SubmitOrder(request)).duplicate

    [captured] = await log_of(events, order.order_id)
    assert (captured.type, captured.order_id, captured.channel, captured.actor) == (
        "order.captured",
        order.order_id,
        "web",
        "shopper",
    )
    assert captured.event_id.startswith("evt_") and captured.sequence > 0
    assert captured.recorded_at.ToDatetime() >= captured.occurred_at.ToDatetime()
    payload = captured.order_captured
    assert payload.channel_order_ref == request.channel_order_ref
    assert (payload.grand_total.amount_minor, payload.grand_total.currency) == (2859, "USD")
    assert [(line.sku, line.quantity) for line in payload.lines] == [("MUG-1", 2), ("TEA-1", 1)]
    assert [line.order_line_id for line in payload.lines] == [
        line.order_line_id for line in order.lines
    ]
    assert payload.shopper_id == order.shopper.shopper_id and payload.shopper_id


async def test_a_flagged_order_carries_its_fraud_reasons(
    capture: capture_pb2_grpc.CaptureServiceStub, events: events_pb2_grpc.EventsServiceStub
) -> None:
    request = order_request(channel_customer_id=uuid.uuid4().hex)
    # Billing and shipping countries differ: the default policy flags it.
    request.billing_address.CopyFrom(
        common_pb2.PostalAddress(
            line1="1 Rue", city="Paris", postal_code="75001", country_code="FR"
        )
    )
    order = (await capture.SubmitOrder(request)).order
    assert order.fraud_reasons
    [captured] = await log_of(events, order.order_id)
    assert list(captured.order_captured.fraud_reasons) == list(order.fraud_reasons)
    assert captured.order_captured.shopper_id == order.shopper.shopper_id


async def test_imported_orders_are_one_order_imported_event_each(
    capture: capture_pb2_grpc.CaptureServiceStub, events: events_pb2_grpc.EventsServiceStub
) -> None:
    async def stream() -> AsyncIterator[pb.ImportOrdersRequest]:
        yield pb.ImportOrdersRequest(order=order_request(), historical=True)
        yield pb.ImportOrdersRequest(order=order_request())

    response = await capture.ImportOrders(stream())
    ids = [r.order_id for r in response.results]
    assert response.imported == 2
    logged = await log_of(events, *ids)
    assert sorted((e.order_id, e.type, e.actor) for e in logged) == sorted(
        (i, "order.imported", "import") for i in ids
    )
    assert all(e.order_captured.grand_total.amount_minor == 2859 for e in logged)


async def test_a_step_with_typed_events_logs_them_completed_by_capture(
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
) -> None:
    order_id = (await capture.SubmitOrder(order_request())).order.order_id
    typed = [
        ev.Event(
            type="fulfillment.allocated",
            order_id="someone-else",  # capture says whose order it is
            fulfillment_order_changed=ev.FulfillmentOrderChanged(
                fulfillment_order_id=f"fo-{n}", location_id=f"loc-{n}", status="allocated"
            ),
        )
        for n in (1, 2)
    ]
    request = step(order_id, "fulfillment.allocated", pb.ORDER_STATUS_ALLOCATED, events=typed)
    await lifecycle.RecordOrderProgress(request)
    await lifecycle.RecordOrderProgress(request)  # a replay writes nothing new

    logged = (await log_of(events, order_id))[1:]
    assert [(e.type, e.order_id, e.channel, e.actor) for e in logged] == [
        ("fulfillment.allocated", order_id, "web", "warehouse:loc-1")
    ] * 2
    assert [e.fulfillment_order_changed.fulfillment_order_id for e in logged] == ["fo-1", "fo-2"]
    assert len({e.event_id for e in logged}) == 2
    assert logged[1].sequence == logged[0].sequence + 1


async def test_a_step_without_typed_events_is_given_one_derived_from_its_kind(
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
) -> None:
    order_id = (await capture.SubmitOrder(order_request())).order.order_id
    await lifecycle.RecordOrderProgress(
        step(order_id, "lifecycle.started", pb.ORDER_STATUS_PROCESSING)
    )
    await lifecycle.RecordOrderProgress(
        step(order_id, "exception.payment", pb.ORDER_STATUS_ON_HOLD)
    )
    await lifecycle.RecordOrderProgress(step(order_id, "fulfillment.picked"))
    await lifecycle.RecordOrderProgress(step(order_id, "note.added"))  # no event of the log

    logged = (await log_of(events, order_id))[1:]
    assert [e.type for e in logged] == [
        "order.processing",
        "exception.raised",
        "fulfillment.picked",
    ]
    changed = logged[0].order_status_changed
    assert (changed.from_status, changed.to_status) == ("pending", "processing")
    assert logged[1].process_exception_changed.category == "payment"
    assert logged[2].fulfillment_order_changed.status == "picked"


async def test_a_batch_with_an_unknown_event_type_is_refused_whole(
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
) -> None:
    order_id = (await capture.SubmitOrder(order_request())).order.order_id
    good = step(order_id, "lifecycle.started", pb.ORDER_STATUS_PROCESSING)
    bad = step(order_id, "shipment.shipped", events=[ev.Event(type="shipment.teleported")])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await lifecycle.RecordOrderProgressBatch(
            pb.RecordOrderProgressBatchRequest(order_id=order_id, steps=[good, bad])
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, rule)] = field_violations(refused.value)
    assert field == "steps[1].events[0].type" and "unknown event type" in rule
    assert [e.type for e in await log_of(events, order_id)] == ["order.captured"]
    assert (await capture.GetOrder(pb.GetOrderRequest(order_id=order_id))).order.status == (
        pb.ORDER_STATUS_PENDING
    )


async def test_a_stream_sends_history_then_live_events_and_resumes_exactly_after_a_cancel(
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
) -> None:
    order_id = (await capture.SubmitOrder(order_request())).order.order_id
    for kind in ("fulfillment.accepted", "fulfillment.picked", "fulfillment.packed"):
        await lifecycle.RecordOrderProgress(step(order_id, kind))
    call = events.SubscribeEvents(ev.SubscribeEventsRequest(from_sequence=1, order_ids=[order_id]))
    history, _ = await until_quiet(call)  # pages of 2: more than one page
    assert [e.type for e in history] == [
        "order.captured",
        "fulfillment.accepted",
        "fulfillment.picked",
        "fulfillment.packed",
    ]
    await lifecycle.RecordOrderProgress(step(order_id, "shipment.shipped"))
    live = await asyncio.wait_for(call.read(), 5)
    assert [e.type for e in live.events] == ["shipment.shipped"]
    last_seen = live.events[-1].sequence
    call.cancel()

    await lifecycle.RecordOrderProgress(step(order_id, "shipment.delivered"))
    await lifecycle.RecordOrderProgress(
        step(order_id, "order.fulfilled", pb.ORDER_STATUS_FULFILLED)
    )
    again = events.SubscribeEvents(
        ev.SubscribeEventsRequest(from_sequence=last_seen + 1, order_ids=[order_id])
    )
    rest, _ = await until_quiet(again)
    again.cancel()
    assert [e.type for e in rest] == ["shipment.delivered", "order.fulfilled"]
    sequences = [e.sequence for e in history + live.events[:] + rest]
    assert sequences == sorted(set(sequences))


async def test_filters_by_type_family_channel_and_order(
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
) -> None:
    web = (await capture.SubmitOrder(order_request())).order.order_id
    store = (await capture.SubmitOrder(order_request(channel=pb.CHANNEL_STORE))).order.order_id
    for order_id in (web, store):
        await lifecycle.RecordOrderProgress(step(order_id, "shipment.shipped"))
        await lifecycle.RecordOrderProgress(step(order_id, "shipment.delivered"))
        await lifecycle.RecordOrderProgress(step(order_id, "fulfillment.packed"))

    async def read(**filters: Any) -> list[tuple[str, str]]:
        call = events.SubscribeEvents(
            ev.SubscribeEventsRequest(
                from_sequence=1, order_ids=filters.pop("order_ids", [web, store]), **filters
            )
        )
        try:
            return [(e.order_id, e.type) for e in (await until_quiet(call))[0]]
        finally:
            call.cancel()

    assert await read(types=["shipment.delivered"]) == [
        (web, "shipment.delivered"),
        (store, "shipment.delivered"),
    ]
    assert await read(types=["shipment.*"], channels=["store"]) == [
        (store, "shipment.shipped"),
        (store, "shipment.delivered"),
    ]
    assert await read(order_ids=[web], types=["fulfillment.*", "order.captured"]) == [
        (web, "order.captured"),
        (web, "fulfillment.packed"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await read(types=["shipment.teleported", "bogus.*"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(refused.value)] == ["types[0]", "types[1]"]
    with pytest.raises(grpc.aio.AioRpcError) as both:
        await read(from_time=common_pb2_timestamp())
    assert [f for f, _ in field_violations(both.value)] == ["from_time"]


def common_pb2_timestamp() -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    at = Timestamp()
    at.FromDatetime(datetime.now(UTC))
    return at


async def test_a_quiet_stream_sends_heartbeats_carrying_the_head(
    capture: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
    sql: asyncpg.Connection,
) -> None:
    call = events.SubscribeEvents(ev.SubscribeEventsRequest(order_ids=["no-such-order"]))
    await capture.SubmitOrder(order_request())  # sequenced, but not for this stream
    started = asyncio.get_running_loop().time()
    nothing, head = await until_quiet(call)
    assert nothing == [] and asyncio.get_running_loop().time() - started >= HEARTBEAT_SECONDS * 0.8
    for _ in range(50):  # the sequencer numbers the order within moments
        if head == await sql.fetchval("SELECT seq FROM capture.event_log_head"):
            break
        _, head = await until_quiet(call)
    assert head == await sql.fetchval("SELECT seq FROM capture.event_log_head")
    call.cancel()


async def test_a_storefront_follows_only_its_own_channels(
    replicas: tuple[Settings, list[RunningService]],
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    settings, (a, _) = replicas
    web = (await capture.SubmitOrder(order_request())).order.order_id
    store = (await capture.SubmitOrder(order_request(channel=pb.CHANNEL_STORE))).order.order_id
    async with channel_as(
        settings, f"127.0.0.1:{a.port}", auth.STOREFRONT, channels=["web"]
    ) as channel:
        storefront = events_pb2_grpc.EventsServiceStub(channel)
        call = storefront.SubscribeEvents(
            ev.SubscribeEventsRequest(from_sequence=1, order_ids=[web, store])
        )
        mine, _ = await until_quiet(call)
        call.cancel()
        assert [(e.order_id, e.channel) for e in mine] == [(web, "web")]
        others = storefront.SubscribeEvents(
            ev.SubscribeEventsRequest(from_sequence=1, channels=["web", "store"])
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await others.read()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "own channels" in (refused.value.details() or "")


async def test_both_replicas_serve_the_same_stream(
    replicas: tuple[Settings, list[RunningService]],
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    settings, (a, b) = replicas
    order_ids = [(await capture.SubmitOrder(order_request())).order.order_id for _ in range(3)]
    for order_id in order_ids:
        await lifecycle.RecordOrderProgress(
            step(order_id, "lifecycle.started", pb.ORDER_STATUS_PROCESSING)
        )
    streams = []
    for replica in (a, b):
        async with channel_as(settings, f"127.0.0.1:{replica.port}", auth.AGENT) as channel:
            call = events_pb2_grpc.EventsServiceStub(channel).SubscribeEvents(
                ev.SubscribeEventsRequest(from_sequence=1, order_ids=order_ids)
            )
            streams.append((await until_quiet(call))[0])
            call.cancel()
    on_a, on_b = streams
    assert len(on_a) == 6
    assert [e.SerializeToString(deterministic=True) for e in on_a] == [
        e.SerializeToString(deterministic=True) for e in on_b
    ]


async def test_events_written_by_any_transaction_are_streamed_without_a_manual_sequencer_pass(
    events: events_pb2_grpc.EventsServiceStub, sql: asyncpg.Connection
) -> None:
    order_id = f"ord-{uuid.uuid4().hex}"
    call = events.SubscribeEvents(ev.SubscribeEventsRequest(order_ids=[order_id]))
    await asyncio.sleep(0.1)  # the stream has started at the head
    written = ev.Event(
        event_id=event_id(order_id), type="order.closed", order_id=order_id, channel="web"
    )
    written.occurred_at.FromDatetime(datetime.now(UTC))
    async with sql.transaction():
        await sql.execute("SET LOCAL search_path = capture")
        await event_log.append_events(sql, [written])
    started = asyncio.get_running_loop().time()
    response = await asyncio.wait_for(call.read(), 5)
    call.cancel()
    assert [e.event_id for e in response.events] == [written.event_id]
    # Woken by the commit, not found by the (30 s) poll.
    assert asyncio.get_running_loop().time() - started < 1.0


async def oms(settings: Settings, replica: RunningService, *args: str) -> tuple[int, str, str]:
    """Run the `oms` CLI against one replica."""
    return await oms_cli(settings, *args, env={"OMS_CAPTURE_ADDRESS": f"127.0.0.1:{replica.port}"})


async def test_the_cli_prints_what_the_log_holds_and_stops_at_the_head(
    replicas: tuple[Settings, list[RunningService]],
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
) -> None:
    settings, (a, _) = replicas
    order_id = (await capture.SubmitOrder(order_request())).order.order_id
    await lifecycle.RecordOrderProgress(step(order_id, "shipment.shipped"))
    logged = await log_of(events, order_id)

    code, out, err = await oms(
        settings, a, "events", "tail", "--no-follow", "--json", "--order", order_id
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["sequence"], x["type"], x["order_id"]) for x in lines] == [
        (str(e.sequence), e.type, e.order_id) for e in logged
    ]
    code, out, err = await oms(
        settings, a, "events", "tail", "--no-follow", "--order", order_id, "--type", "order.*"
    )
    assert code == 0, err
    [line] = out.splitlines()
    assert line.split()[0] == str(logged[0].sequence)
    assert "order.captured" in line and order_id in line
    assert "grand_total=28.59 USD lines=MUG-1x2,TEA-1x1" in line


async def test_a_replica_serves_at_most_its_streams_then_answers_resource_exhausted(
    replicas: tuple[Settings, list[RunningService]],
) -> None:
    settings, (_, b) = replicas
    async with channel_as(settings, f"127.0.0.1:{b.port}", auth.AGENT) as channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)
        calls = [
            stub.SubscribeEvents(ev.SubscribeEventsRequest(order_ids=["none"])) for _ in range(8)
        ]
        await asyncio.gather(*(until_quiet(c) for c in calls))  # each is being served
        one_more = stub.SubscribeEvents(ev.SubscribeEventsRequest(order_ids=["none"]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await one_more.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in calls:
            call.cancel()


async def test_a_stream_from_a_time_starts_at_the_first_event_recorded_since(
    capture: capture_pb2_grpc.CaptureServiceStub,
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    events: events_pb2_grpc.EventsServiceStub,
) -> None:
    order_id = (await capture.SubmitOrder(order_request())).order.order_id
    [captured] = await log_of(events, order_id)
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await lifecycle.RecordOrderProgress(
        step(order_id, "lifecycle.started", pb.ORDER_STATUS_PROCESSING)
    )
    request = ev.SubscribeEventsRequest(order_ids=[order_id], stop_at_head=True)
    request.from_time.FromDatetime(since)
    await asyncio.sleep(0.2)  # sequenced by now
    received = [e async for r in events.SubscribeEvents(request) for e in r.events]
    assert [e.type for e in received] == ["order.processing"]
    assert received[0].sequence > captured.sequence
