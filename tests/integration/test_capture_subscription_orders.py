"""A subscription's cycle orders at capture, over real gRPC and real Postgres: only the worker
may mark an order as a subscription's cycle; capture stores and shows the subscription and
cycle and hands them, with the deployment's dunning schedule, to the order's lifecycle."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from services.capture import bootstrap
from tests.integration.test_capture_service import (
    capture_as,
    isolated_settings,
    order_request,
    outbox_rows,
    own_database,
)

pb = capture_pb2


@pytest.fixture(scope="module")
async def settings(postgres: EmbeddedPostgres) -> Settings:
    """Capture alone (no Temporal: the lifecycle's start stays in the outbox to be read)."""
    dsn = await own_database(postgres, "oms_capture_subscriptions_it")
    return isolated_settings(dsn, subscription_dunning_retry_seconds="60,180")


@pytest.fixture(scope="module")
async def running(settings: Settings) -> AsyncIterator[RunningService]:
    service = await start_service("capture", settings, port=0)
    yield service
    await service.stop(0.5)


@pytest.fixture(scope="module")
async def worker(
    settings: Settings, running: RunningService
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    async with capture_as(settings, running, auth.WORKFLOW) as stub:
        yield stub


@pytest.fixture(scope="module")
async def sql(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.dsn)
    yield conn
    await conn.close()


async def test_a_cycle_order_keeps_its_subscription_and_cycle_and_is_dunned(
    settings: Settings,
    running: RunningService,
    worker: capture_pb2_grpc.CaptureServiceStub,
    sql: asyncpg.Connection,
) -> None:
    request = order_request(subscription_id="sub-7f3a", subscription_cycle=4)
    request.idempotency_key = "sub-7f3a:4"
    submitted = await worker.SubmitOrder(request)
    order = submitted.order

    assert (order.subscription_id, order.subscription_cycle) == ("sub-7f3a", 4)
    async with capture_as(settings, running, auth.AGENT) as agent:  # what an agent sees
        read = await agent.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert (read.order.subscription_id, read.order.subscription_cycle) == ("sub-7f3a", 4)
    # The cycle submitted again (a retried workflow step) is the same order.
    again = await worker.SubmitOrder(request)
    assert again.duplicate and again.order.order_id == order.order_id

    [start] = await outbox_rows(sql, order.order_id)
    payload = json.loads(start["payload"])
    assert (payload["subscription_id"], payload["subscription_cycle"]) == ("sub-7f3a", 4)
    # As the relay starts it: with this deployment's dunning schedule.
    started = bootstrap.lifecycle_timers(settings)(payload)
    assert started["payment_retry_seconds"] == [60, 180]


async def test_an_order_of_no_subscription_starts_without_a_dunning_schedule(
    settings: Settings, worker: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    order = (await worker.SubmitOrder(order_request())).order

    assert (order.subscription_id, order.subscription_cycle) == ("", 0)
    [start] = await outbox_rows(sql, order.order_id)
    started = bootstrap.lifecycle_timers(settings)(json.loads(start["payload"]))
    assert started["payment_retry_seconds"] == []


@pytest.mark.parametrize("role", [auth.STOREFRONT, auth.ADMIN])
async def test_only_the_worker_may_place_a_subscriptions_order(
    settings: Settings, running: RunningService, sql: asyncpg.Connection, role: str
) -> None:
    request = order_request(subscription_id="sub-7f3a", subscription_cycle=5)
    async with capture_as(settings, running, role) as caller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await caller.SubmitOrder(request)

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "subscription_id" in (refused.value.details() or "")
    stored = await sql.fetchval(
        "SELECT count(*) FROM capture.orders WHERE channel_order_ref = $1",
        request.channel_order_ref,
    )
    assert stored == 0


@pytest.mark.parametrize(
    ("subscription_id", "cycle", "field", "rule"),
    [
        ("sub:7f3a", 1, "subscription_id", "letters, digits"),
        ("sub-7f3a", 0, "subscription_cycle", "at least 1"),
        ("", 2, "subscription_cycle", "0 unless subscription_id is set"),
    ],
)
async def test_a_bad_subscription_or_cycle_is_refused_naming_the_field(
    worker: capture_pb2_grpc.CaptureServiceStub,
    subscription_id: str,
    cycle: int,
    field: str,
    rule: str,
) -> None:
    request = order_request(subscription_id=subscription_id, subscription_cycle=cycle)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await worker.SubmitOrder(request)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(named, description)] = [
        (name, text)
        for name, text in field_violations(refused.value)
        if name.startswith("subscription")
    ]
    assert named == field and rule in description
