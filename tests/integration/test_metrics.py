"""Metrics over real gRPC, Postgres and Temporal: each call is counted under the code its caller
saw, a pool's waiting gauge sees a blocked acquire, and the worker's endpoint carries the Temporal
SDK series the dashboard and alert rules read — the failed-workflow-task counter included."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.worker import Worker

from oms_platform import auth, db, grpcutil, metrics, temporal
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from oms_tools.registry import start_service
from tests.integration.failing_workflow import AlwaysFailingTask
from tests.integration.test_capture_service import (
    capture_as,
    isolated_settings,
    order_request,
    own_database,
)

pb = capture_pb2


@pytest.fixture(scope="module")
async def metered_settings(postgres: EmbeddedPostgres) -> Settings:
    return isolated_settings(await own_database(postgres, "oms_metrics_it"))


@pytest.fixture(scope="module")
async def capture_service(metered_settings: Settings) -> AsyncIterator[RunningService]:
    running = await start_service("capture", metered_settings, port=0)
    yield running
    await running.stop(0.5)


def calls(method: str, code: str, kind: str) -> float:
    """How many `method` calls of capture ended with `code` so far (this process's registry)."""
    labels = {
        "grpc_service": "CaptureService",
        "grpc_method": method,
        "grpc_type": kind,
        "grpc_code": code,
    }
    return REGISTRY.get_sample_value("oms_rpc_duration_seconds_count", labels) or 0.0


async def settled(expected: float, read: Callable[[], float], tries: int = 50) -> float:
    """`read()` once it reaches `expected` (a call is counted when gRPC closes it), or its last."""
    for _ in range(tries):
        if read() >= expected:
            break
        await asyncio.sleep(0.05)
    return float(read())


async def test_each_call_is_counted_under_the_code_its_caller_saw(
    metered_settings: Settings, capture_service: RunningService
) -> None:
    before = {
        "ok": calls("SubmitOrder", "OK", "unary"),
        "invalid": calls("SubmitOrder", "INVALID_ARGUMENT", "unary"),
        "missing": calls("GetOrder", "NOT_FOUND", "unary"),
        "anonymous": calls("GetOrder", "UNAUTHENTICATED", "unary"),
        "denied": calls("RecordOrderProgress", "PERMISSION_DENIED", "unary"),
    }
    async with capture_as(metered_settings, capture_service, auth.ADMIN) as capture:
        await capture.SubmitOrder(order_request())
        bad = order_request()
        bad.currency = "dollars"
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await capture.SubmitOrder(bad)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await capture.GetOrder(pb.GetOrderRequest(order_id="ord_nobody"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    async with capture_as(metered_settings, capture_service, auth.STOREFRONT) as storefront:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await storefront.RecordOrderProgress(pb.RecordOrderProgressRequest(order_id="o"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with grpcutil.channel(f"127.0.0.1:{capture_service.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await capture_pb2_grpc.CaptureServiceStub(channel).GetOrder(
                pb.GetOrderRequest(order_id="ord_nobody")
            )
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

    after = {
        "ok": await settled(before["ok"] + 1, lambda: calls("SubmitOrder", "OK", "unary")),
        "invalid": await settled(
            before["invalid"] + 1, lambda: calls("SubmitOrder", "INVALID_ARGUMENT", "unary")
        ),
        "missing": await settled(
            before["missing"] + 1, lambda: calls("GetOrder", "NOT_FOUND", "unary")
        ),
        "anonymous": await settled(
            before["anonymous"] + 1, lambda: calls("GetOrder", "UNAUTHENTICATED", "unary")
        ),
        "denied": await settled(
            before["denied"] + 1,
            lambda: calls("RecordOrderProgress", "PERMISSION_DENIED", "unary"),
        ),
    }
    assert {k: after[k] - before[k] for k in before} == dict.fromkeys(before, 1.0)


async def test_a_watch_the_caller_hangs_up_is_a_cancelled_stream_not_a_slow_success(
    metered_settings: Settings, capture_service: RunningService
) -> None:
    cancelled = calls("WatchOrder", "CANCELLED", "server_stream")
    succeeded = calls("WatchOrder", "OK", "server_stream")
    async with capture_as(metered_settings, capture_service, auth.ADMIN) as capture:
        order = (await capture.SubmitOrder(order_request())).order
        watch = capture.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id))
        first = await watch.read()
        assert first.snapshot
        watch.cancel()
    counted = await settled(
        cancelled + 1, lambda: calls("WatchOrder", "CANCELLED", "server_stream")
    )
    assert counted >= cancelled + 1  # `settled` returns the last reading even when short
    assert calls("WatchOrder", "OK", "server_stream") == succeeded


async def test_a_watch_outliving_its_deadline_is_counted_as_the_caller_saw_it(
    metered_settings: Settings, capture_service: RunningService
) -> None:
    expired = calls("WatchOrder", "DEADLINE_EXCEEDED", "server_stream")
    async with capture_as(metered_settings, capture_service, auth.ADMIN) as capture:
        order = (await capture.SubmitOrder(order_request())).order
        watch = capture.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=1.0)
        assert (await watch.read()).snapshot
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await watch.read()  # nothing happens to the order within the second
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    counted = await settled(
        expired + 1, lambda: calls("WatchOrder", "DEADLINE_EXCEEDED", "server_stream")
    )
    assert counted >= expired + 1


def pool_samples(pools: metrics.PoolMetrics) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (s.name, tuple(s.labels.values())): s.value
        for family in pools.collect()
        for s in family.samples
    }


async def test_the_pool_gauges_show_connections_in_use_and_tasks_waiting_for_one(
    metered_settings: Settings,
) -> None:
    pool = await db.create_pool(metered_settings.dsn, "capture", min_size=1, max_size=1)
    pools = metrics.PoolMetrics()
    pools.add("capture", pool)
    try:
        assert pool_samples(pools)[("oms_db_pool_waiting", ("capture",))] == 0
        async with pool.acquire():
            queued = asyncio.create_task(pool.fetchval("SELECT 1"))
            await asyncio.sleep(0.2)
            held = pool_samples(pools)
            assert held[("oms_db_pool_connections", ("capture", "in_use"))] == 1
            assert held[("oms_db_pool_max_connections", ("capture",))] == 1
            assert held[("oms_db_pool_waiting", ("capture",))] == 1, "asyncpg's queue changed?"
        assert await queued == 1
        assert pool_samples(pools)[("oms_db_pool_waiting", ("capture",))] == 0
    finally:
        await pool.close()


def folded(registry: CollectorRegistry) -> dict[str, float]:
    """A scrape of `registry` as Prometheus reads it: series name → sum over its labels."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


async def test_the_worker_endpoint_counts_failed_workflow_tasks_under_the_alerts_name(
    settings_with_temporal: Settings,
) -> None:
    registry = CollectorRegistry()
    runtime = metrics.temporal_runtime(free_port(), registry)
    client = await temporal.connect(settings_with_temporal, runtime=runtime)
    queue = f"failing-{uuid.uuid4()}"
    try:
        async with Worker(client, task_queue=queue, workflows=[AlwaysFailingTask]):
            handle = await client.start_workflow(
                AlwaysFailingTask.run, id=f"failing-{uuid.uuid4()}", task_queue=queue
            )
            try:
                failed = "temporal_workflow_task_execution_failed_total"
                assert await settled(1, lambda: folded(registry).get(failed, 0.0), tries=200)
            finally:
                await handle.terminate("test over")
        scraped = folded(registry)
        # Every SDK series the dashboard and the rules read, with the suffixes they use.
        for name, kind in metrics.TEMPORAL_SDK_SERIES.items():
            if kind == "histogram" and "activity" not in name:
                assert scraped.get(f"{name}_count", 0) > 0, name
            elif kind == "counter":
                assert scraped.get(f"{name}_total", 0) > 0, name
    finally:
        await temporal.close(client)
