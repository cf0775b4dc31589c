"""Two replicas of capture on one database, as `oms dev --replicas 2` and a deployment run them:
a WatchOrder stream follows its order whichever replica records the order's progress, and a
client given both replicas' addresses spreads its calls over them and carries on when one
stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform import auth
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from tests.callers import channel_as
from tests.integration.test_capture_service import isolated_settings, order_request, own_database
from tests.integration.test_capture_watch import next_update, progress

pb = capture_pb2
# Streams each replica serves at most (past it: RESOURCE_EXHAUSTED), small to show the spread.
STREAMS_PER_REPLICA = 3


@pytest.fixture
async def replicas(
    postgres: EmbeddedPostgres,
) -> AsyncIterator[tuple[Settings, list[RunningService]]]:
    dsn = await own_database(postgres, "oms_capture_replicas_it")
    settings = isolated_settings(dsn, watch_max_streams=STREAMS_PER_REPLICA)
    running = [await start_service("capture", settings, port=0) for _ in range(2)]
    try:
        yield settings, running
    finally:
        await asyncio.gather(*(r.stop(0.5) for r in running))


def address(*running: RunningService) -> str:
    """The address setting naming these replicas."""
    return ",".join(f"127.0.0.1:{r.port}" for r in running)


async def test_a_watcher_on_one_replica_sees_progress_recorded_on_the_other(
    replicas: tuple[Settings, list[RunningService]],
) -> None:
    settings, (a, b) = replicas
    async with (
        channel_as(settings, address(a), auth.ADMIN) as on_a,
        channel_as(settings, address(b), auth.ADMIN) as on_b,
        channel_as(settings, address(a), auth.WORKFLOW) as lifecycle_a,
        channel_as(settings, address(b), auth.WORKFLOW) as lifecycle_b,
    ):
        capture_a, capture_b = (
            capture_pb2_grpc.CaptureServiceStub(on_a),
            capture_pb2_grpc.CaptureServiceStub(on_b),
        )
        order_id = (await capture_a.SubmitOrder(order_request())).order.order_id
        watch_a = capture_a.WatchOrder(pb.WatchOrderRequest(order_id=order_id))
        watch_b = capture_b.WatchOrder(pb.WatchOrderRequest(order_id=order_id))
        assert (await next_update(watch_a)).snapshot
        assert (await next_update(watch_b)).snapshot

        # Recorded through replica B: the stream on A (and the one on B) hear of it.
        await progress(
            capture_pb2_grpc.CaptureServiceStub(lifecycle_b),
            order_id,
            pb.ORDER_STATUS_PROCESSING,
            "lifecycle.started",
        )
        for watch in (watch_a, watch_b):
            update = await next_update(watch)
            assert (update.status, [e.kind for e in update.events]) == (
                pb.ORDER_STATUS_PROCESSING,
                ["lifecycle.started"],
            )
        # And the other way round, to the end of the order.
        await progress(
            capture_pb2_grpc.CaptureServiceStub(lifecycle_a),
            order_id,
            pb.ORDER_STATUS_FULFILLED,
            "order.fulfilled",
        )
        for watch in (watch_a, watch_b):
            update = await next_update(watch)
            assert update.status == pb.ORDER_STATUS_FULFILLED
            assert await asyncio.wait_for(watch.read(), 5) is grpc.aio.EOF


async def test_a_client_given_both_replicas_spreads_its_calls_and_carries_on_when_one_stops(
    replicas: tuple[Settings, list[RunningService]],
) -> None:
    settings, (a, b) = replicas
    async with channel_as(settings, address(a, b), auth.ADMIN) as both:
        capture = capture_pb2_grpc.CaptureServiceStub(both)
        orders = [(await capture.SubmitOrder(order_request())).order.order_id for _ in range(4)]
        await both.channel_ready()
        await asyncio.sleep(0.3)  # both replicas' connections up (round robin takes the ready)
        # Twice what one replica serves: only a client whose calls reach both gets them all.
        calls = [
            capture.WatchOrder(pb.WatchOrderRequest(order_id=orders[i % len(orders)]))
            for i in range(2 * STREAMS_PER_REPLICA)
        ]
        for call in calls:
            assert (await next_update(call)).snapshot
        for call in calls:
            call.cancel()

        await a.stop(0.5)
        # Every call from now on is answered by B, without the client doing anything.
        for _ in range(10):
            submitted = await capture.SubmitOrder(order_request(), timeout=5)
            assert submitted.order.order_id
