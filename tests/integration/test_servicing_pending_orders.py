"""A change for an order capture has acknowledged but whose lifecycle its outbox relay has not
started yet: servicing tells it from an order that does not exist, answers UNAVAILABLE (retry)
rather than NOT_FOUND, and waits briefly in case the relay is about to start it.

Real Postgres (a database of its own, so no other test's relay starts these orders), real gRPC
servers, the real Temporal dev server and a worker; capture's relay is pointed at a Temporal
address nothing listens on, so its orders stay pending until a test starts another capture
whose relay does reach Temporal.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc
from temporalio.client import Client

from oms_platform import temporal
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from oms_tools.registry import start_service
from oms_tools.samples import sample_order
from services.servicing.lifecycles import START_WAIT
from tests.callers import persona_channel
from tests.conftest import migrated_database
from workflows.types import order_workflow_id
from workflows.worker import build_worker

if TYPE_CHECKING:
    from oms.capture.v1.capture_pb2_grpc import CaptureServiceAsyncStub
    from oms.servicing.v1.servicing_pb2_grpc import ServicingServiceAsyncStub


@dataclass
class Stalled:
    """The four services and a worker, with capture's relay unable to start lifecycles."""

    settings: Settings  # what every service but capture runs with (Temporal reachable)
    client: Client
    capture: CaptureServiceAsyncStub
    servicing: ServicingServiceAsyncStub


@pytest.fixture(scope="module")
async def stalled(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[Stalled]:
    settings = replace(
        settings_with_temporal,
        database_url=await migrated_database(postgres, "oms_servicing_pending"),
        task_queue=f"oms-pending-{os.getpid()}",
        outbox_poll_seconds=0.05,
        **{f"{name}_port": free_port() for name in SERVICES},
    )
    no_temporal = replace(settings, temporal_address="127.0.0.1:1")
    running = [
        await start_service(name, no_temporal if name == "capture" else settings)
        for name in SERVICES
    ]
    client = await temporal.connect(settings)
    try:
        async with (
            build_worker(client, settings),
            persona_channel(settings, settings.address_of("capture")) as capture,
            persona_channel(settings, settings.address_of("servicing")) as servicing,
        ):
            yield Stalled(
                settings,
                client,
                capture_pb2_grpc.CaptureServiceStub(capture),
                servicing_pb2_grpc.ServicingServiceStub(servicing),
            )
    finally:
        await asyncio.gather(*(svc.stop(0.5) for svc in running))
        await temporal.close(client)


async def an_acknowledged_order(stalled: Stalled) -> str:
    """An order capture has stored and answered for, its lifecycle not started."""
    response = await stalled.capture.SubmitOrder(sample_order(), timeout=10)
    assert response.order.status == capture_pb2.ORDER_STATUS_PENDING
    return response.order.order_id


def cancel(order_id: str) -> pb.SubmitCancelRequest:
    return pb.SubmitCancelRequest(
        order_id=order_id,
        idempotency_key=f"cancel-{uuid.uuid4()}",
        reason="shopper changed her mind",
    )


async def test_a_cancel_before_the_lifecycle_started_is_unavailable_and_says_to_retry(
    stalled: Stalled,
) -> None:
    order_id = await an_acknowledged_order(stalled)

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as submitted:
        await stalled.servicing.SubmitCancel(cancel(order_id), timeout=30)
    waited = time.monotonic() - started
    with pytest.raises(grpc.aio.AioRpcError) as previewed:
        await stalled.servicing.PreviewCancel(pb.PreviewCancelRequest(order_id=order_id))

    pending = (
        f"order {order_id} is pending: its lifecycle has not started yet; "
        "retry with the same request"
    )
    for error in (submitted.value, previewed.value):
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert error.details() == pending
    # It looked again for a while, in case the relay was about to start it, and no longer.
    assert START_WAIT.total_seconds() <= waited < START_WAIT.total_seconds() + 5
    changes = await stalled.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    assert [c.status for c in changes.changes] == [pb.CHANGE_STATUS_PENDING]


async def test_a_cancel_for_an_order_capture_does_not_know_is_not_found(
    stalled: Stalled,
) -> None:
    order_id = f"order-{uuid.uuid4()}"

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stalled.servicing.SubmitCancel(cancel(order_id), timeout=30)

    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == f"no order {order_id!r}"


async def test_a_cancel_sent_just_before_the_relay_starts_the_lifecycle_waits_and_cancels(
    stalled: Stalled,
) -> None:
    order_id = await an_acknowledged_order(stalled)
    request = cancel(order_id)

    async def submit() -> pb.SubmitCancelResponse:
        return await stalled.servicing.SubmitCancel(request, timeout=30)

    sent = asyncio.create_task(submit())
    await asyncio.sleep(START_WAIT.total_seconds() / 4)  # servicing found no workflow
    assert not sent.done()
    # Another capture on the same database, whose relay reaches Temporal, starts it now.
    relay = await start_service("capture", stalled.settings, port=0)
    try:
        answer = await sent
    finally:
        await relay.stop(0.5)

    assert answer.change.status == pb.CHANGE_STATUS_COMPLETED, answer.change
    assert answer.change.outcome.order_status == "canceled"
    result = await stalled.client.get_workflow_handle(order_workflow_id(order_id)).result()
    assert result["status"] == "canceled"
