"""WatchOrder: a storefront's order-tracking page follows an order as it happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from oms_platform.service import RunningService, listener_application_name
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from tests.integration.test_capture_import import stream
from tests.integration.test_capture_service import (
    capture_as,
    isolated_settings,
    order_request,
    own_database,
    unique,
)

pb = capture_pb2


@pytest.fixture(scope="module")
async def watch_settings(postgres: EmbeddedPostgres) -> Settings:
    # A pool of 3: watchers must not hold connections while they wait.
    return isolated_settings(await own_database(postgres, "oms_capture_watch_it"), db_pool_max=3)


@pytest.fixture(scope="module")
async def capture_service(watch_settings: Settings) -> AsyncIterator[RunningService]:
    running = await start_service("capture", watch_settings, port=0)
    yield running
    await running.stop(0.5)


@pytest.fixture(scope="module")
async def capture(
    watch_settings: Settings, capture_service: RunningService
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    """Capture as an admin sees it (submits, reads, imports)."""
    async with capture_as(watch_settings, capture_service, auth.ADMIN) as stub:
        yield stub


@pytest.fixture(scope="module")
async def lifecycle(
    watch_settings: Settings, capture_service: RunningService
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    """Capture as the worker sees it: RecordOrderProgress is the lifecycle's alone."""
    async with capture_as(watch_settings, capture_service, auth.WORKFLOW) as stub:
        yield stub


@pytest.fixture(scope="module")
async def sql(watch_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(watch_settings.dsn)
    yield conn
    await conn.close()


async def progress(
    capture: capture_pb2_grpc.CaptureServiceStub, order_id: str, status: int, kind: str
) -> None:
    await capture.RecordOrderProgress(
        pb.RecordOrderProgressRequest(
            order_id=order_id,
            idempotency_key=unique("step"),
            status=status,  # type: ignore[arg-type]
            event=common_pb2.TimelineEvent(kind=kind, summary=kind, actor="workflow"),
        )
    )


async def next_update(call: Any) -> pb.WatchOrderResponse:
    update = await asyncio.wait_for(call.read(), 5)
    assert update is not grpc.aio.EOF, "the stream ended early"
    return update  # type: ignore[no-any-return]


async def test_a_watcher_sees_the_order_now_then_each_change_until_it_settles(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    call = capture.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id))

    first = await next_update(call)
    assert first.snapshot
    assert first.status == pb.ORDER_STATUS_PENDING
    assert [e.kind for e in first.events] == ["order.captured"]

    await progress(lifecycle, order.order_id, pb.ORDER_STATUS_PROCESSING, "lifecycle.started")
    update = await next_update(call)
    assert (update.snapshot, update.status) == (False, pb.ORDER_STATUS_PROCESSING)
    assert [e.kind for e in update.events] == ["lifecycle.started"]

    await progress(lifecycle, order.order_id, pb.ORDER_STATUS_UNSPECIFIED, "shipment.shipped")
    update = await next_update(call)
    assert update.status == pb.ORDER_STATUS_PROCESSING
    assert [e.kind for e in update.events] == ["shipment.shipped"]

    await progress(lifecycle, order.order_id, pb.ORDER_STATUS_FULFILLED, "order.fulfilled")
    update = await next_update(call)
    assert update.status == pb.ORDER_STATUS_FULFILLED
    assert [e.kind for e in update.events] == ["order.fulfilled"]
    assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_a_settled_order_answers_its_state_and_ends(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    imported = await capture.ImportOrders(
        stream([pb.ImportOrdersRequest(order=order_request(), historical=True)])
    )
    updates = [
        u
        async for u in capture.WatchOrder(
            pb.WatchOrderRequest(order_id=imported.results[0].order_id), timeout=5
        )
    ]
    assert [(u.snapshot, u.status) for u in updates] == [(True, pb.ORDER_STATUS_FULFILLED)]
    assert [e.kind for e in updates[0].events] == ["order.imported"]


async def test_watching_an_unknown_order_is_not_found_and_no_id_is_invalid(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in capture.WatchOrder(pb.WatchOrderRequest(order_id=unique("nope"))):
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in capture.WatchOrder(pb.WatchOrderRequest()):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [("order_id", "is required")]


async def test_many_watchers_share_one_listener_and_hold_no_pool_connection(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
    sql: asyncpg.Connection,
) -> None:
    orders = [(await capture.SubmitOrder(order_request())).order.order_id for _ in range(4)]
    calls = [capture.WatchOrder(pb.WatchOrderRequest(order_id=orders[i % 4])) for i in range(12)]
    for call in calls:
        assert (await next_update(call)).snapshot
    listeners = await sql.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        listener_application_name("capture"),
    )
    assert listeners == 1
    # Twelve waiting watchers and a pool of three: capture still answers at once.
    submitted = await asyncio.wait_for(capture.SubmitOrder(order_request()), 2)
    assert submitted.order.order_id
    await progress(lifecycle, orders[1], pb.ORDER_STATUS_ON_HOLD, "fraud.held")
    for i in (1, 5, 9):
        update = await next_update(calls[i])
        assert update.status == pb.ORDER_STATUS_ON_HOLD
    for call in calls:
        call.cancel()


async def test_watchers_keep_following_after_the_listener_connection_drops(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
    sql: asyncpg.Connection,
) -> None:
    order_id = (await capture.SubmitOrder(order_request())).order.order_id
    call = capture.WatchOrder(pb.WatchOrderRequest(order_id=order_id))
    await next_update(call)
    killed = await sql.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        listener_application_name("capture"),
    )
    assert killed == 1
    # Recorded while nobody listens: read when the listener is back.
    await progress(lifecycle, order_id, pb.ORDER_STATUS_PROCESSING, "lifecycle.started")
    update = await next_update(call)
    assert update.status == pb.ORDER_STATUS_PROCESSING
    assert [e.kind for e in update.events] == ["lifecycle.started"]
    call.cancel()
