"""ImportOrders over real gRPC and Postgres: a client stream in, one result per order out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from tests.callers import persona_channel
from tests.integration.test_capture_service import (
    isolated_settings,
    order_request,
    own_database,
    unique,
)

pb = capture_pb2


@pytest.fixture(scope="module")
async def import_settings(postgres: EmbeddedPostgres) -> Settings:
    return isolated_settings(await own_database(postgres, "oms_capture_import_it"))


@pytest.fixture(scope="module")
async def capture(import_settings: Settings) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    running = await start_service("capture", import_settings, port=0)
    async with persona_channel(import_settings, f"127.0.0.1:{running.port}") as channel:
        yield capture_pb2_grpc.CaptureServiceStub(channel)
    await running.stop(0.5)


@pytest.fixture(scope="module")
async def sql(import_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(import_settings.dsn)
    yield conn
    await conn.close()


def timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


async def stream(
    requests: Iterable[pb.ImportOrdersRequest],
) -> AsyncIterator[pb.ImportOrdersRequest]:
    for request in requests:
        yield request


async def test_a_mixed_import_answers_each_order_and_stores_only_the_good_ones(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    placed = datetime.now(UTC) - timedelta(days=30)
    live = order_request()
    historical = order_request()
    canceled = order_request()
    bad = order_request()
    bad.currency = "ZZZ"
    bad.lines[0].quantity = -1
    reused_key = order_request(idempotency_key=live.idempotency_key)  # another body, same key
    same_ref = order_request(channel_order_ref=historical.channel_order_ref)
    requests = [
        pb.ImportOrdersRequest(order=live),
        pb.ImportOrdersRequest(order=historical, historical=True, placed_at=timestamp(placed)),
        pb.ImportOrdersRequest(
            order=canceled, historical=True, historical_status=pb.ORDER_STATUS_CANCELED
        ),
        pb.ImportOrdersRequest(order=bad),
        pb.ImportOrdersRequest(order=live),  # the same order again in the same stream
        pb.ImportOrdersRequest(order=reused_key),
        pb.ImportOrdersRequest(order=same_ref),
        pb.ImportOrdersRequest(order=order_request(), historical_status=pb.ORDER_STATUS_FULFILLED),
    ]
    response = await capture.ImportOrders(stream(requests))

    r = response.results
    assert [x.index for x in r] == list(range(8))
    assert (response.imported, response.duplicates, response.failed) == (3, 1, 4)
    assert r[0].order_id and not r[0].error_code
    assert (r[4].order_id, r[4].duplicate) == (r[0].order_id, True)
    assert r[3].error_code == "INVALID_ARGUMENT" and not r[3].order_id
    assert {"currency", "lines[0].quantity"} <= {v.field for v in r[3].violations}
    assert r[5].error_code == "ALREADY_EXISTS"
    assert live.idempotency_key in r[5].error_message
    assert r[6].error_code == "ALREADY_EXISTS"
    assert "channel_order_ref" in r[6].error_message
    assert [v.field for v in r[7].violations] == ["historical_status"]

    live_order = (await capture.GetOrder(pb.GetOrderRequest(order_id=r[0].order_id))).order
    assert live_order.status == pb.ORDER_STATUS_PENDING
    assert (
        await sql.fetchval(
            "SELECT count(*) FROM capture.outbox WHERE workflow_id = $1", f"order:{r[0].order_id}"
        )
        == 1
    )

    past = (await capture.GetOrder(pb.GetOrderRequest(order_id=r[1].order_id))).order
    assert past.status == pb.ORDER_STATUS_FULFILLED
    assert past.created_at.ToDatetime(tzinfo=UTC) == placed
    assert [(x.quantities.ordered, x.quantities.fulfilled) for x in past.lines] == [(2, 2), (1, 1)]
    timeline = await capture.GetOrderTimeline(pb.GetOrderTimelineRequest(order_id=r[1].order_id))
    assert [(e.kind, e.actor) for e in timeline.events] == [("order.imported", "import")]
    assert timeline.events[0].at.ToDatetime(tzinfo=UTC) == placed

    gone = (await capture.GetOrder(pb.GetOrderRequest(order_id=r[2].order_id))).order
    assert gone.status == pb.ORDER_STATUS_CANCELED
    assert [x.quantities.canceled for x in gone.lines] == [2, 1]

    historical_starts = await sql.fetchval(
        "SELECT count(*) FROM capture.outbox WHERE workflow_id = ANY($1::text[])",
        [f"order:{r[1].order_id}", f"order:{r[2].order_id}"],
    )
    assert historical_starts == 0
    refs = [x.channel_order_ref for x in (live, historical, canceled, bad, same_ref)]
    stored = await sql.fetchval(
        "SELECT count(*) FROM capture.orders WHERE channel_order_ref = ANY($1::text[])", refs
    )
    assert stored == 3


async def test_running_an_import_again_stores_nothing_new(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    requests = [pb.ImportOrdersRequest(order=order_request(), historical=True) for _ in range(3)]
    first = await capture.ImportOrders(stream(requests))
    again = await capture.ImportOrders(stream(requests))
    assert (again.imported, again.duplicates, again.failed) == (0, 3, 0)
    assert [x.order_id for x in again.results] == [x.order_id for x in first.results]
    assert all(x.duplicate for x in again.results)
    # A live SubmitOrder of the same order with the same key is the same order, too.
    resubmitted = await capture.SubmitOrder(requests[0].order)
    assert resubmitted.duplicate
    assert resubmitted.order.order_id == first.results[0].order_id
    assert resubmitted.order.status == pb.ORDER_STATUS_FULFILLED


async def test_a_large_import_is_written_in_batches_and_matches_shoppers_once(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    emails = [f"{unique('bulk')}@example.com" for _ in range(7)]
    requests = [
        pb.ImportOrdersRequest(order=order_request(email=emails[i % 7]), historical=True)
        for i in range(1200)
    ]
    started = time.monotonic()
    response = await capture.ImportOrders(stream(requests))
    elapsed = time.monotonic() - started
    assert (response.imported, response.failed) == (1200, 0)
    assert len({x.order_id for x in response.results}) == 1200
    shoppers = await sql.fetchval(
        "SELECT count(*) FROM capture.shoppers WHERE email_normalized = ANY($1::text[])", emails
    )
    assert shoppers == 7
    per_shopper = await sql.fetch(
        "SELECT count(*) AS n FROM capture.orders o JOIN capture.shoppers s ON s.id = o.shopper_id"
        " WHERE s.email_normalized = ANY($1::text[]) GROUP BY s.id",
        emails,
    )
    assert sorted(r["n"] for r in per_shopper) == [171, 171, 171, 171, 172, 172, 172]
    assert elapsed < 20, f"1200 orders took {elapsed:.1f}s"
