"""Capture with a whole system behind it: the four services, a worker, a real Temporal dev
server and the warehouse simulator. The services use a database of their own, so their
outbox relays never take rows another test is looking at."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import temporal
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import TemporalDevServer, free_port
from oms_tools.registry import start_service
from oms_tools.samples import sample_order
from tests.conftest import TEST_CODEC_KEYS, System
from tests.integration.test_capture_service import unique
from tests.integration.test_capture_temporal_outage import settled, simulator, whole_database
from workflows.worker import build_worker

pb = capture_pb2


@pytest.fixture(scope="module")
async def own_system(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> AsyncIterator[System]:
    settings = Settings.from_env(
        env={},
        database_url=await whole_database(postgres, "oms_capture_system_it"),
        codec_keys_file=str(TEST_CODEC_KEYS),
        temporal_address=temporal_server.target,
        task_queue=f"oms-capture-system-{os.getpid()}",
        db_pool_min=1,
        db_pool_max=5,
        outbox_poll_seconds=0.05,
        log_format="console",
        **{f"{name}_port": free_port() for name in SERVICES},
    )
    running = {name: await start_service(name, settings) for name in SERVICES}
    client = await temporal.connect(settings)
    try:
        async with build_worker(client, settings):
            yield System(settings=settings, client=client, services=running)
    finally:
        await asyncio.gather(*(svc.stop(0.5) for svc in running.values()))
        await temporal.close(client)


async def test_twenty_identical_concurrent_submits_make_one_order_and_one_workflow(
    own_system: System,
) -> None:
    system = own_system
    stub = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    request = sample_order(email=f"{unique('twin')}@example.com")
    responses = await asyncio.gather(*(stub.SubmitOrder(request, timeout=10) for _ in range(20)))
    [order_id] = {r.order.order_id for r in responses}
    assert sum(not r.duplicate for r in responses) == 1

    async with simulator(system.settings):
        order = await settled(stub, order_id)
    assert order.status == pb.ORDER_STATUS_FULFILLED

    mine = await stub.ListOrders(pb.ListOrdersRequest(shopper_id=order.shopper.shopper_id))
    assert [o.order_id for o in mine.orders] == [order_id]
    runs = [w.id async for w in system.client.list_workflows(f"WorkflowId = 'order:{order_id}'")]
    assert runs == [f"order:{order_id}"]
    history = await system.client.get_workflow_handle(f"order:{order_id}").fetch_history()
    started = [
        e for e in history.events if e.HasField("workflow_execution_started_event_attributes")
    ]
    assert len(started) == 1
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    summary = await payments.GetPaymentSummary(
        payments_pb2.GetPaymentSummaryRequest(order_id=order_id)
    )
    assert len(summary.authorizations) == 1
    assert summary.summary.captured.amount_minor == order.totals.grand_total.amount_minor
