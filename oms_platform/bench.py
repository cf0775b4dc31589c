"""`oms bench …`: benchmarks that start their own private stack and report ratios.

`oms bench lifecycle --orders N --concurrency C` drives N orders through the whole lifecycle
(warehouse simulator at zero delay) and, in the same run on the same Temporal server, a
baseline: a no-op workflow running the same number of no-op activities per order with the
same worker settings. Throughput is reported as a ratio of the baseline's.

`oms bench routing` times routing alone (see oms_platform/bench_routing.py).

`oms bench servicing` times SubmitCancel's Update round trip (see oms_platform/bench_servicing.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oms.capture.v1 import capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from oms_platform import auth, bench_routing, grpcutil, temporal
from oms_platform.devstack.stack import Stack
from oms_platform.devstack.temporal_server import free_port
from oms_platform.samples import SPLIT_SKUS, sample_order, split_order
from oms_platform.settings import SERVICES, Settings
from oms_platform.tls import TLSConfig
from workflows.baseline import BenchNoop, bench_noop
from workflows.types import order_workflow_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True)
    lifecycle = sub.add_parser(
        "lifecycle", help="orders through the whole lifecycle vs a no-op baseline"
    )
    lifecycle.add_argument("--orders", type=int, default=200)
    lifecycle.add_argument("--concurrency", type=int, default=20)
    lifecycle.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    lifecycle.add_argument(
        "--split-every",
        type=int,
        default=3,
        help="every Nth order ships from two warehouses (split shipment); 0 = never",
    )
    from oms_platform import bench_capture

    bench_capture.add_arguments(sub)
    routing = sub.add_parser(
        "routing", help="routing latency of a big order (pure domain) vs a trivial one"
    )
    bench_routing.add_arguments(routing)
    from oms_platform import bench_servicing

    bench_servicing.add_arguments(sub)


@dataclass
class Run:
    """One measured phase."""

    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 2),
            "p50_ms": round(self.percentile(0.5), 1),
            "p99_ms": round(self.percentile(0.99), 1),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 1) if self.latencies else 0,
        }


def bench_settings(data_dir: Path) -> Settings:
    """A private stack on free ports, so a running `make dev` is left alone."""
    ports: dict[str, Any] = {f"{name}_port": free_port() for name in SERVICES}
    addresses: dict[str, Any] = {f"{name}_address": "" for name in SERVICES}
    return Settings.from_env(
        data_dir=str(data_dir),
        database_url="",
        temporal_address="",
        embedded_postgres_port=free_port(),
        embedded_temporal_port=free_port(),
        embedded_temporal_ui_port=free_port(),
        codec_server_port=free_port(),
        # No metrics endpoints: their fixed dev ports would collide with a running `make dev`.
        dev_metrics_port=0,
        simulator=True,
        simulator_step_seconds=0.0,
        # Lifecycles end at delivery (no return window), so a workflow's result marks it.
        return_window_days=0.0,
        simulator_poll_seconds=0.05,
        outbox_poll_seconds=0.05,
        log_format="json",
        # Quiet unless asked for (OMS_LOG_LEVEL=info shows, e.g., when starts were paced).
        log_level=os.environ.get("OMS_LOG_LEVEL", "warning"),
        **ports,
        **addresses,
    )


def bench_caller(settings: Settings, role: str) -> auth.TokenSource:
    """A bench's identity: a token from the bench stack's own dev issuer, like any caller's."""
    channels = auth.ALL_CHANNELS if role == auth.STOREFRONT else ()
    return auth.dev_caller(
        settings, f"bench-{role}", role, channels=channels, ttl_seconds=24 * 3600
    )


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
    """Entry point of `oms bench`."""
    from oms_platform import bench_capture

    if args.bench in bench_capture.COMMANDS:
        return await bench_capture.run(args)
    if args.bench == "routing":
        return bench_routing.run(args)
    if args.bench == "servicing":
        from oms_platform import bench_servicing

        return await bench_servicing.run(args)
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
