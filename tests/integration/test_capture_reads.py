"""ListOrders' created-at range and SKU filters, keyset paging, and the plans behind them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform import db
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from services.capture import domain, store
from tests.callers import persona_channel
from tests.integration.test_capture_import import stream
from tests.integration.test_capture_service import (
    isolated_settings,
    order_request,
    own_database,
    unique,
)

pb = capture_pb2
NOW = datetime.now(UTC).replace(microsecond=0)
CHANNELS = [pb.CHANNEL_WEB, pb.CHANNEL_MARKETPLACE, pb.CHANNEL_STORE, pb.CHANNEL_B2B]


def timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def with_skus(request: pb.SubmitOrderRequest, first: str, second: str) -> pb.SubmitOrderRequest:
    request.lines[0].sku = first
    request.lines[1].sku = second
    return request


@pytest.fixture(scope="module")
async def reads_settings(postgres: EmbeddedPostgres) -> Settings:
    return isolated_settings(await own_database(postgres, "oms_capture_reads_it"))


@pytest.fixture(scope="module")
async def capture(reads_settings: Settings) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    running = await start_service("capture", reads_settings, port=0)
    async with persona_channel(reads_settings, f"127.0.0.1:{running.port}") as channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)
        # Background: 4,000 past orders over 200 days, 40 shoppers, 50 SKUs, 4 channels.
        emails = [f"{unique('reader')}@example.com" for _ in range(40)]
        seed = [
            pb.ImportOrdersRequest(
                order=with_skus(
                    order_request(email=emails[i % 40], channel=CHANNELS[i % 4]),
                    f"BG-{i % 50}",
                    f"BG-{(i * 7) % 50}",
                ),
                historical=True,
                historical_status=pb.ORDER_STATUS_CANCELED if i % 10 == 0 else 0,  # type: ignore[arg-type]
                placed_at=timestamp(NOW - timedelta(days=1, minutes=72 * i)),
            )
            for i in range(4000)
        ]
        response = await stub.ImportOrders(stream(seed))
        assert response.imported == 4000
        conn = await asyncpg.connect(reads_settings.dsn)
        await conn.execute("ANALYZE capture.orders; ANALYZE capture.order_lines")
        await conn.close()
        yield stub
    await running.stop(0.5)


async def all_pages(
    stub: capture_pb2_grpc.CaptureServiceStub, request: pb.ListOrdersRequest
) -> list[pb.Order]:
    out: list[pb.Order] = []
    while True:
        page = await stub.ListOrders(request)
        out += page.orders
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token


async def test_a_created_range_and_a_sku_select_exactly_their_orders_newest_first(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    sku, other = unique("RARE"), unique("OTHER")
    hours = [1, 2, 3, 4, 5, 6]  # placed this many hours ago
    requests = [
        pb.ImportOrdersRequest(
            order=with_skus(order_request(), sku if h != 4 else other, "BG-1"),
            historical=True,
            placed_at=timestamp(NOW - timedelta(hours=h)),
        )
        for h in hours
    ]
    # One more with the SKU on both lines: listed once.
    requests.append(
        pb.ImportOrdersRequest(
            order=with_skus(order_request(), sku, sku),
            historical=True,
            placed_at=timestamp(NOW - timedelta(hours=7)),
        )
    )
    ids = [r.order_id for r in (await capture.ImportOrders(stream(requests))).results]

    with_sku = await all_pages(capture, pb.ListOrdersRequest(sku=sku, page_size=2))
    assert [o.order_id for o in with_sku] == [ids[0], ids[1], ids[2], ids[4], ids[5], ids[6]]

    in_range = await all_pages(
        capture,
        pb.ListOrdersRequest(
            sku=sku,
            page_size=1,
            created_from=timestamp(NOW - timedelta(hours=5)),  # inclusive
            created_to=timestamp(NOW - timedelta(hours=2)),  # exclusive
        ),
    )
    assert [o.order_id for o in in_range] == [ids[2], ids[4]]

    range_only = await all_pages(
        capture,
        pb.ListOrdersRequest(
            page_size=3,
            created_from=timestamp(NOW - timedelta(hours=7)),
            created_to=timestamp(NOW - timedelta(hours=3, minutes=30)),
        ),
    )
    assert [o.order_id for o in range_only] == [ids[3], ids[4], ids[5], ids[6]]


async def test_sku_combines_with_status_channel_and_shopper(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    sku = unique("COMBO")
    email = f"{unique('combo')}@example.com"
    requests = [
        pb.ImportOrdersRequest(
            order=with_skus(order_request(email=email, channel=pb.CHANNEL_WEB), sku, "BG-2"),
            historical=True,
        ),
        pb.ImportOrdersRequest(
            order=with_skus(order_request(channel=pb.CHANNEL_STORE), "BG-3", sku),
            historical=True,
            historical_status=pb.ORDER_STATUS_CANCELED,
        ),
        pb.ImportOrdersRequest(order=with_skus(order_request(email=email), "BG-4", "BG-5")),
    ]
    ids = [r.order_id for r in (await capture.ImportOrders(stream(requests))).results]
    view = await capture.GetOrder(pb.GetOrderRequest(order_id=ids[0]))
    shopper_id = view.order.shopper.shopper_id

    async def listed(**filters: Any) -> list[str]:
        return [o.order_id for o in await all_pages(capture, pb.ListOrdersRequest(**filters))]

    assert await listed(sku=sku, statuses=[pb.ORDER_STATUS_CANCELED]) == [ids[1]]
    assert await listed(sku=sku, channel=pb.CHANNEL_WEB) == [ids[0]]
    assert await listed(sku=sku, shopper_id=shopper_id) == [ids[0]]
    # Imported in one batch: one created_at, so the id breaks the tie.
    assert await listed(shopper_id=shopper_id) == sorted([ids[0], ids[2]], reverse=True)
    assert await listed(sku=unique("NOWHERE")) == []


async def test_pages_stay_stable_while_new_orders_arrive(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    email = f"{unique('stable')}@example.com"
    placed = [(await capture.SubmitOrder(order_request(email=email))).order for _ in range(5)]
    shopper_id = placed[0].shopper.shopper_id
    first = await capture.ListOrders(pb.ListOrdersRequest(shopper_id=shopper_id, page_size=2))
    newer = (await capture.SubmitOrder(order_request(email=email))).order
    rest = await all_pages(
        capture,
        pb.ListOrdersRequest(shopper_id=shopper_id, page_size=2, page_token=first.next_page_token),
    )
    seen = [o.order_id for o in [*first.orders, *rest]]
    assert seen == [o.order_id for o in reversed(placed)]
    assert newer.order_id not in seen


async def test_a_range_that_ends_before_it_starts_is_refused(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.ListOrders(
            pb.ListOrdersRequest(created_from=timestamp(NOW), created_to=timestamp(NOW))
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "created_to" in (raised.value.details() or "")


async def test_a_listing_hands_its_connection_back_as_it_was_lent(
    capture: capture_pb2_grpc.CaptureServiceStub, reads_settings: Settings
) -> None:
    # Pooled connections are not reset on release, so the listing's planner setting must not
    # outlive it, whether the listing succeeds or fails.
    pool = await db.create_pool(reads_settings.dsn, "capture", 1, 1)
    try:
        async with pool.acquire() as conn:
            default = await conn.fetchval("SHOW plan_cache_mode")
            orders = await store.list_orders(conn, domain.OrderFilter(), None, 5)
            assert len(orders) == 5
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == default
            with pytest.raises(asyncpg.PostgresError):
                await store.list_orders(conn, domain.OrderFilter(), None, -1)  # LIMIT < 0
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == default != "force_custom_plan"
    finally:
        await pool.close()


# ---- plans ----------------------------------------------------------------------------------

BIG_TABLES = {"orders", "order_lines"}


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += nodes(child)
    return out


async def explain(
    conn: asyncpg.Connection, where: dict[str, Any], after: tuple[datetime, str] | None = None
) -> list[dict[str, Any]]:
    """The executed plan of one ListOrders page (51 rows) as a flat list of nodes."""
    sql, args = store.list_query(domain.OrderFilter(**where), after, 51)
    async with db.session_setting(conn, *store.PLAN_FOR_PARAMETERS):
        raw = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return nodes(plan)


def rows_read(plan: list[dict[str, Any]]) -> int:
    """Rows the plan pulled out of orders and order_lines, kept or filtered away."""
    return sum(
        int((n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"])
        for n in plan
        if n.get("Relation Name") in BIG_TABLES
    )


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ({}, "orders_newest"),
        ({"created_from": NOW - timedelta(days=30), "created_to": NOW}, "orders_newest"),
        ({"sku": "BG-7"}, "order_lines_sku_newest"),
        ({"sku": "BG-7", "created_from": NOW - timedelta(days=30)}, "order_lines_sku_newest"),
        ({"channel": "store"}, None),  # common: newest first, filtered; rare: its own index
        ({"statuses": ("canceled",)}, None),
        ({"sku": "BG-7", "statuses": ("canceled",)}, "order_lines_sku_newest"),
    ],
)
async def test_a_page_reads_an_index_and_a_few_hundred_rows_of_thousands(
    capture: capture_pb2_grpc.CaptureServiceStub,
    reads_settings: Settings,
    where: dict[str, Any],
    index: str | None,
) -> None:
    conn = await asyncpg.connect(reads_settings.dsn, server_settings={"search_path": "capture"})
    try:
        assert await conn.fetchval("SELECT count(*) FROM orders") > 4000
        for cursor in (None, (NOW - timedelta(days=50), "~")):
            plan = await explain(conn, where, cursor)
            scans = [(n["Node Type"], n.get("Relation Name")) for n in plan]
            assert not [s for s in scans if s[0] == "Seq Scan" and s[1] in BIG_TABLES], scans
            if index is not None:
                assert index in {n.get("Index Name") for n in plan}, scans
            assert rows_read(plan) < 1200, scans
    finally:
        await conn.close()


async def test_a_shoppers_orders_come_from_the_shopper_index(
    capture: capture_pb2_grpc.CaptureServiceStub, reads_settings: Settings
) -> None:
    conn = await asyncpg.connect(reads_settings.dsn, server_settings={"search_path": "capture"})
    try:
        shopper_id = await conn.fetchval("SELECT shopper_id FROM orders LIMIT 1")
        for where in ({"shopper_id": shopper_id}, {"shopper_id": shopper_id, "sku": "BG-7"}):
            plan = await explain(conn, where)
            assert "orders_shopper_newest" in {n.get("Index Name") for n in plan}
            assert rows_read(plan) < 400
    finally:
        await conn.close()
