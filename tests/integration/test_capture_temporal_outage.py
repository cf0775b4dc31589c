"""Capture keeps accepting while Temporal is down: orders are acknowledged (pending), and when
Temporal is back every one of them runs its lifecycle exactly once.

A private Temporal dev server (stopped and started again on the same database file and
port), a database of its own (so no other test's relays take these orders), the four
services, a worker and the warehouse simulator, all real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import db
from oms_platform import temporal as temporal_client
from oms_platform.service import RunningService
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.simulator import Simulator
from oms_tools.devstack.temporal_server import TemporalDevServer, free_port
from oms_tools.registry import migrate_all, start_service
from oms_tools.samples import sample_order
from tests.callers import persona_channel
from tests.conftest import TEST_CODEC_KEYS
from tests.integration.test_capture_service import unique
from workflows.worker import build_worker

pb = capture_pb2
ORDERS = 6


async def whole_database(postgres: EmbeddedPostgres, name: str) -> str:
    base, _, query = postgres.dsn.partition("?")
    dsn = base.rpartition("/")[0] + f"/{name}" + (f"?{query}" if query else "")
    await db.ensure_database(dsn)
    await migrate_all(Settings(database_url=dsn))
    return dsn


@contextlib.asynccontextmanager
async def simulator(settings: Settings) -> AsyncIterator[None]:
    sim = Simulator(replace(settings, simulator_step_seconds=0.0, simulator_poll_seconds=0.05))
    task = asyncio.create_task(sim.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.close()


async def settled(stub: capture_pb2_grpc.CaptureServiceStub, order_id: str) -> pb.Order:
    deadline = time.monotonic() + 90
    while True:
        order = (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id), timeout=10)).order
        if order.status in (pb.ORDER_STATUS_FULFILLED, pb.ORDER_STATUS_CANCELED):
            return order
        assert time.monotonic() < deadline, f"order {order_id} still {order.status}"
        await asyncio.sleep(0.2)


async def test_orders_taken_while_temporal_is_down_each_run_their_lifecycle_once_it_is_back(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = await whole_database(postgres, "oms_capture_outage_it")
    db_file = tmp_path / "temporal" / "temporal.db"
    temporal = TemporalDevServer(db_file, free_port(), 0, ui=False)
    temporal.start()
    settings = Settings.from_env(
        env={},
        database_url=dsn,
        codec_keys_file=str(TEST_CODEC_KEYS),
        temporal_address=temporal.target,
        task_queue=f"oms-outage-{os.getpid()}",
        db_pool_min=1,
        db_pool_max=5,
        outbox_poll_seconds=0.05,
        log_format="console",
        **{f"{name}_port": free_port() for name in SERVICES},
    )
    running: dict[str, RunningService] = {}
    try:
        running = {name: await start_service(name, settings) for name in SERVICES}
        client = await temporal_client.connect(settings)
        async with (
            build_worker(client, settings),
            simulator(settings),
            persona_channel(settings, settings.address_of("capture")) as capture_channel,
            persona_channel(settings, settings.address_of("payments")) as payments_channel,
        ):
            stub = capture_pb2_grpc.CaptureServiceStub(capture_channel)
            # One order before the outage, so every client has been connected once.
            before = (await stub.SubmitOrder(sample_order(email=f"{unique('o')}@x.io"))).order
            await settled(stub, before.order_id)

            temporal.stop()
            submitted = await asyncio.gather(
                *(
                    stub.SubmitOrder(sample_order(email=f"{unique('outage')}@example.com"))
                    for _ in range(ORDERS)
                )
            )
            order_ids = [r.order.order_id for r in submitted]
            assert all(r.order.status == pb.ORDER_STATUS_PENDING for r in submitted)
            await asyncio.sleep(1.0)  # the relay tries, and fails, meanwhile
            for order_id in order_ids:
                view = await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))
                assert view.order.status == pb.ORDER_STATUS_PENDING
            conn = await asyncpg.connect(dsn)
            try:
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM capture.outbox WHERE workflow_id = ANY($1::text[])",
                    [f"order:{i}" for i in order_ids],
                )
            finally:
                await conn.close()
            assert waiting == ORDERS

            # Back on the same database file and port.
            temporal = TemporalDevServer(db_file, temporal.port, 0, ui=False)
            temporal.start()
            finished = [await settled(stub, order_id) for order_id in order_ids]
            assert [o.status for o in finished] == [pb.ORDER_STATUS_FULFILLED] * ORDERS

            payments = payments_pb2_grpc.PaymentsServiceStub(payments_channel)
            for order_id in order_ids:
                runs = [
                    w.id async for w in client.list_workflows(f"WorkflowId = 'order:{order_id}'")
                ]
                assert runs == [f"order:{order_id}"], f"{order_id} ran {len(runs)} times"
                summary = await payments.GetPaymentSummary(
                    payments_pb2.GetPaymentSummaryRequest(order_id=order_id)
                )
                assert len(summary.authorizations) == 1
                assert len(summary.captures) == 1
        await temporal_client.close(client)
    finally:
        await asyncio.gather(*(svc.stop(0.5) for svc in running.values()))
        temporal.stop()
