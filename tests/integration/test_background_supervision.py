"""Background tasks are supervised: a relay that dies of an unexpected error is logged,
reported NOT_SERVING on the gRPC health service under its name, restarted with back-off, and
every row is still delivered. Real Postgres, real Temporal dev server, a real gRPC server's
health service watched over gRPC."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from temporalio.client import Client

from oms_platform import auth, db, grpcutil, outbox
from oms_platform.service import BackgroundTask, RunningService, supervise
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import TemporalDevServer
from tests.conftest import migrated_database

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROWS = 5
FAILURES = 3


async def test_a_relay_that_dies_unexpectedly_is_restarted_shows_its_outage_and_delivers_all(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, settings: Settings
) -> None:
    dsn = await migrated_database(postgres, "oms_supervision")
    pool = await db.create_pool(dsn, "capture", 1, 3)
    client = await Client.connect(temporal_server.target)
    run = uuid.uuid4().hex[:8]
    workflow_ids = [f"supervised:{run}:{i}" for i in range(ROWS)]
    async with pool.acquire() as conn, conn.transaction():
        for workflow_id in workflow_ids:
            await outbox.enqueue(conn, "capture", "start", workflow_id, "Nothing", {})

    calls = 0

    async def flaky_client() -> Client:
        """Breaks in a way the relay does not expect, a few times, then connects."""
        nonlocal calls
        calls += 1
        if calls <= FAILURES:
            raise LookupError(f"client factory broke ({calls})")
        return client

    relay = outbox.OutboxRelay(
        pool, "capture", flaky_client, f"supervised-{run}", poll_seconds=0.05
    )
    server, port, health = await grpcutil.start_server(
        [], [], "127.0.0.1:0", auth.Authenticator.from_settings(settings)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    seen: list[int] = []

    async def watch() -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        async for answer in stub.Watch(health_pb2.HealthCheckRequest(service="oms.outbox.capture")):
            seen.append(answer.status)

    watcher = asyncio.create_task(watch())
    supervisor = asyncio.create_task(
        supervise(
            BackgroundTask("oms.outbox.capture", relay.run),
            health,
            first_seconds=0.3,
            max_seconds=0.6,
        )
    )
    try:
        deadline = time.monotonic() + 30
        while await pool.fetchval("SELECT count(*) FROM outbox"):
            assert time.monotonic() < deadline, f"rows left; health went {seen}"
            await asyncio.sleep(0.1)
        for workflow_id in workflow_ids:
            await client.get_workflow_handle(workflow_id).describe()
        assert calls == FAILURES + 1
        assert NOT_SERVING in seen, seen
        assert seen[-1] == SERVING, seen
        # Restarted after each failure, with back-off: 0.3 s, 0.6 s, 0.6 s (capped).
        assert not supervisor.done()
    finally:
        for task in (supervisor, watcher):
            task.cancel()
        await asyncio.gather(supervisor, watcher, return_exceptions=True)
        await channel.close()
        await server.stop(0)
        await pool.close()


async def test_every_background_task_of_a_service_answers_on_the_health_service(
    services: dict[str, RunningService],
) -> None:
    expected = {
        "capture": [
            "oms.outbox.capture",
            "oms.watch.capture",
            "oms.events.sequencer",
            "oms.events.streams",
            "oms.notifications.capture",
            "oms.notifications.capture.sender",
            "oms.webhooks.fanout",
            "oms.webhooks.sender",
        ],
        "fulfillment": ["oms.outbox.fulfillment"],
        # Starts subscription workflows.
        "servicing": ["oms.outbox.servicing"],
    }
    for name, tasks in expected.items():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{services[name].port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for task in tasks:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=task))
                assert answer.status == SERVING, task
