"""Graceful shutdown of a service (issue 12): health turns NOT_SERVING first, calls already
running finish within the grace, and past the grace they are cut off. Payments is the service
under test because its simulated gateway can be made slow (a call that takes a known time)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import auth, db
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from services.payments import bootstrap
from services.payments.store import SQL_LOCK_ORDER
from tests.callers import channel_as

pb = payments_pb2
GATEWAY_SECONDS = 1.5  # how long every call to the simulated gateway takes
SERVICE = "oms.payments.v1.PaymentsService"


@pytest.fixture
async def payments(postgres: EmbeddedPostgres) -> AsyncIterator[RunningService]:
    """Payments with a slow gateway, on a port of its own (each test stops it)."""
    await db.ensure_database(postgres.dsn)
    await db.migrate(postgres.dsn, bootstrap.SCHEMA, bootstrap.MIGRATIONS)
    settings = Settings.from_env(
        env={},
        database_url=postgres.dsn,
        db_pool_min=1,
        db_pool_max=5,
        log_format="console",
        gateway_latency_ms=int(GATEWAY_SECONDS * 1000),
    )
    running = await start_service("payments", settings, port=0)
    try:
        yield running
    finally:
        await running.stop(0)  # returns at once if the test stopped it


def authorize(
    stub: payments_pb2_grpc.PaymentsServiceStub, order_id: str
) -> asyncio.Task[pb.AuthorizePaymentResponse]:
    """An AuthorizePayment call, running (it spends GATEWAY_SECONDS at the gateway)."""
    request = pb.AuthorizePaymentRequest(
        order_id=order_id,
        idempotency_key=f"{order_id}:authorize",
        payment_method=pb.PaymentMethod(type=pb.PAYMENT_METHOD_TYPE_CARD, token="tok_visa"),
        amount=common_pb2.Money(amount_minor=2500, currency="USD"),
    )
    return asyncio.ensure_future(stub.AuthorizePayment(request, timeout=30))


# The order's lock as payments takes it, but tried: it fails while a call holds it.
SQL_TRY_LOCK_ORDER = SQL_LOCK_ORDER.replace("pg_advisory_xact_lock", "pg_try_advisory_xact_lock")


async def in_the_handler(dsn: str, order_id: str) -> None:
    """Wait until payments runs the call for `order_id`: it holds the order's lock from before
    the gateway until its transaction ends (each try here is a transaction of its own, so it
    lets go at once)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 10
        while await conn.fetchval(SQL_TRY_LOCK_ORDER, order_id):
            assert time.monotonic() < deadline, "the call never reached payments"
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def test_a_stopping_service_answers_not_serving_and_finishes_the_calls_in_flight(
    payments: RunningService,
) -> None:
    settings = payments.context.settings
    async with channel_as(settings, f"127.0.0.1:{payments.port}", auth.WORKFLOW) as channel:
        stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        assert await health_of(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
        order_id = f"order-{uuid.uuid4()}"
        in_flight = authorize(stub, order_id)
        await in_the_handler(settings.dsn, order_id)  # the call is at the gateway now

        began = time.monotonic()
        stopping = asyncio.create_task(payments.stop(5.0, not_serving_for=0.5))
        await asyncio.sleep(0.1)
        # Still answering, but telling load balancers to send nothing more.
        for name in ("", SERVICE):
            assert await health_of(channel, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not in_flight.done()

        # The call started before the shutdown completes normally, after the server stopped
        # accepting calls (0.5 s in) and well inside the 5 s grace.
        reply = await in_flight
        assert reply.authorization.status == pb.AUTHORIZATION_STATUS_APPROVED
        assert 0.5 < time.monotonic() - began < 5.0
        await stopping

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_of(channel, "")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_calls_still_running_when_the_grace_ends_are_cut_off(
    payments: RunningService,
) -> None:
    settings = payments.context.settings
    async with channel_as(settings, f"127.0.0.1:{payments.port}", auth.WORKFLOW) as channel:
        order_id = f"order-{uuid.uuid4()}"
        in_flight = authorize(payments_pb2_grpc.PaymentsServiceStub(channel), order_id)
        await in_the_handler(settings.dsn, order_id)  # running when the grace begins

        began = time.monotonic()
        await payments.stop(0.2)
        assert time.monotonic() - began < GATEWAY_SECONDS  # did not wait for the call

        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await in_flight
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE, cut.value
