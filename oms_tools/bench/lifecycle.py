"""`oms bench lifecycle`: orders through the whole lifecycle against a no-op baseline.

`oms bench lifecycle --orders N --concurrency C` drives N orders through the whole lifecycle
(warehouse simulator at zero delay) and, in the same run on the same Temporal server, a
baseline: a no-op workflow running the same number of no-op activities per order with the
same worker settings. Throughput is reported as a ratio of the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from oms.capture.v1 import capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from oms_platform import auth, grpcutil, temporal
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from oms_tools.bench.baseline import BenchNoop, bench_noop
from oms_tools.bench.common import Run, bench_caller, bench_settings
from oms_tools.devstack.stack import Stack
from oms_tools.samples import SPLIT_SKUS, sample_order, split_order
from workflows.types import order_workflow_id


async def _wait_result(client: Client, workflow_id: str) -> Any:
    handle = client.get_workflow_handle(workflow_id)
    while True:
        try:
            return await handle.result()
        except RPCError:
            # Not started yet: the capture outbox relay starts it just after the commit.
            await asyncio.sleep(0.02)


async def _lifecycle_phase(
    settings: Settings, client: Client, orders: int, concurrency: int, split_every: int = 0
) -> tuple[Run, list[str]]:
    storefront = bench_caller(settings, auth.STOREFRONT)
    channel = grpcutil.channel(
        settings.address_of("capture"), storefront, tls=TLSConfig.from_settings(settings)
    )
    stub = capture_pb2_grpc.CaptureServiceStub(channel)
    latencies: list[float] = []
    order_ids: list[str] = []
    failures: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(orders):
        queue.put_nowait(i)

    async def one_order(index: int) -> None:
        started = time.perf_counter()
        split = split_every and index % split_every == split_every - 1
        request = split_order() if split else sample_order()
        response = await stub.SubmitOrder(request, timeout=30)
        order_id = response.order.order_id
        result = await _wait_result(client, order_workflow_id(order_id))
        if result.get("status") != "fulfilled":
            failures.append(f"{order_id}: {result}")
        latencies.append(time.perf_counter() - started)
        order_ids.append(order_id)

    async def lane() -> None:
        while not queue.empty():
            await one_order(queue.get_nowait())

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    await channel.close()
    if failures:
        raise RuntimeError(f"{len(failures)} orders did not reach fulfilled: {failures[:3]}")
    return Run("lifecycle", orders, elapsed, latencies), order_ids


async def _activities_per_order(client: Client, order_ids: list[str]) -> int:
    """Activities an order ran, averaged over (up to 30 of) the measured orders."""
    counts = []
    for order_id in order_ids[:30]:
        history = await client.get_workflow_handle(order_workflow_id(order_id)).fetch_history()
        counts.append(
            sum(
                1
                for event in history.events
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            )
        )
    return round(sum(counts) / len(counts))


async def _stock_split_skus(settings: Settings) -> None:
    merchandiser = bench_caller(settings, auth.MERCHANDISER)
    tls = TLSConfig.from_settings(settings)
    address = settings.address_of("fulfillment")
    async with grpcutil.channel(address, merchandiser, tls=tls) as channel:
        await fulfillment_pb2_grpc.FulfillmentServiceStub(channel).SetInventoryLevels(
            fulfillment_pb2.SetInventoryLevelsRequest(
                levels=[
                    fulfillment_pb2.InventoryLevel(location_id=location, sku=sku, on_hand=10**7)
                    for sku, location in SPLIT_SKUS.items()
                ]
            ),
            timeout=30,
        )


async def _baseline_phase(client: Client, activities: int, orders: int, concurrency: int) -> Run:
    queue_name = f"bench-baseline-{uuid.uuid4()}"
    latencies: list[float] = []
    worker = Worker(
        client,
        task_queue=queue_name,
        workflows=[BenchNoop],
        activities=[bench_noop],
        max_concurrent_activities=200,
        max_concurrent_workflow_tasks=100,
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(orders):
        queue.put_nowait(i)

    async def lane() -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            await client.execute_workflow(
                BenchNoop.run, activities, id=f"bench:{uuid.uuid4()}", task_queue=queue_name
            )
            latencies.append(time.perf_counter() - started)

    async with worker:
        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return Run(
        f"baseline (no-op workflow, {activities} no-op activities)", orders, elapsed, latencies
    )


def _report(runs: list[Run], as_json: bool, extra: dict[str, Any]) -> None:
    lifecycle, baseline = runs
    ratio = lifecycle.per_second / baseline.per_second if baseline.per_second else 0.0
    if as_json:
        print(
            json.dumps(
                {**extra, "runs": [r.as_dict() for r in runs], "throughput_ratio": round(ratio, 3)},
                indent=2,
            )
        )
        return
    print()
    print(f"{'phase':<48} {'orders/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for run in runs:
        d = run.as_dict()
        print(f"{run.name:<48} {d['per_second']:>9} {d['p50_ms']:>9} {d['p99_ms']:>9}")
    print(
        f"\nlifecycle throughput = {ratio:.2f} x baseline "
        f"({extra['orders']} orders, concurrency {extra['concurrency']})"
    )


async def run(args: argparse.Namespace) -> int:
    """`oms bench lifecycle`."""
    data_dir = Path(tempfile.mkdtemp(prefix="oms-bench-"))
    stack = Stack(bench_settings(data_dir))
    settings = await stack.start()
    closing: list[Client] = []
    try:
        client = await temporal.connect(settings)
        closing.append(client)
        await _stock_split_skus(settings)
        # Warm up: one order end to end, so start-up costs are not measured.
        await _lifecycle_phase(settings, client, 1, 1)
        lifecycle, order_ids = await _lifecycle_phase(
            settings, client, args.orders, args.concurrency, args.split_every
        )
        activities = await _activities_per_order(client, order_ids)
        baseline = await _baseline_phase(client, activities, args.orders, args.concurrency)
        _report(
            [lifecycle, baseline],
            args.json,
            {
                "orders": args.orders,
                "concurrency": args.concurrency,
                "activities_per_order": activities,
                "split_every": args.split_every,
            },
        )
    finally:
        for opened in closing:
            await temporal.close(opened)
        stack.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
    return 0
