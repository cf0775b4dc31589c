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
from oms_tools.bench import statements
from oms_tools.bench.baseline import BenchNoop, bench_noop
from oms_tools.bench.calls import garbage_collection, metrics_base
from oms_tools.bench.common import Run, bench_caller, private_stack
from oms_tools.bench.cpu import CpuMeter
from oms_tools.bench.probes import Probes
from oms_tools.bench.profile import print_summary
from oms_tools.samples import SPLIT_SKUS, sample_order, split_order
from workflows.types import order_workflow_id


async def _wait_result(client: Client, workflow_id: str) -> Any:
    handle = client.get_workflow_handle(workflow_id)
    pause = 0.05
    while True:
        try:
            return await handle.result()
        except RPCError:
            # Not started yet: the capture outbox relay starts it just after the commit. Asked
            # again at a growing interval, so the driver's own polling stays a small load on the
            # Temporal server it measures (the baseline starts its workflows itself).
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.4)


async def lifecycle_phase(
    settings: Settings, client: Client, orders: int, concurrency: int, split_every: int = 0
) -> tuple[Run, list[str], list[str]]:
    """Drive `orders` sample orders from submit to delivered from `concurrency` lanes (every
    `split_every`th a split order); the run, the one-shipment orders' ids, the split ones'."""
    storefront = bench_caller(settings, auth.STOREFRONT)
    channel = grpcutil.channel(
        settings.address_of("capture"), storefront, tls=TLSConfig.from_settings(settings)
    )
    stub = capture_pb2_grpc.CaptureServiceStub(channel)
    latencies: list[float] = []
    order_ids: list[str] = []  # the sample order: one fulfillment order
    split_ids: list[str] = []  # shipped from two warehouses
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
        (split_ids if split else order_ids).append(order_id)

    async def lane() -> None:
        while not queue.empty():
            await one_order(queue.get_nowait())

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    await channel.close()
    if failures:
        raise RuntimeError(f"{len(failures)} orders did not reach fulfilled: {failures[:3]}")
    return Run("lifecycle", orders, elapsed, latencies), order_ids, split_ids


# The baseline: a no-op workflow with this many plain no-op activities, fixed so the ratio
# reads "cheaper than twelve remote steps" whatever the lifecycle becomes (issue 15).
BASELINE_ACTIVITIES = 12
# Histories read for the per-order cost (each is one fetch from Temporal).
COST_SAMPLE = 30
# What each history event kind counts as, in the per-order cost.
_COUNTED = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED: "workflow_tasks",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
    EventType.EVENT_TYPE_TIMER_STARTED: "timers",
}


async def history_cost(
    client: Client, order_ids: list[str], since: EventType.ValueType | None = None
) -> dict[str, float]:
    """What an order's happy path costs Temporal, averaged over (up to COST_SAMPLE of) the
    orders: history events, workflow tasks, activities (remote, and local ones: their
    markers), signals, updates and timers. With `since`, only from the workflow task that
    recorded the first event of that type on (an Update's acceptance: what the Update cost)."""
    totals: dict[str, float] = {
        "events": 0, "workflow_tasks": 0, "activities": 0, "local_activities": 0,
        "signals": 0, "updates": 0, "timers": 0,
    }  # fmt: skip
    sample = order_ids[:COST_SAMPLE]
    for order_id in sample:
        history = await client.get_workflow_handle(order_workflow_id(order_id)).fetch_history()
        events = list(history.events)
        if since is not None:
            first = next((n for n, e in enumerate(events) if e.event_type == since), len(events))
            scheduled = EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
            while first > 0 and events[first].event_type != scheduled:
                first -= 1
            events = events[first:]
        totals["events"] += len(events)
        for event in events:
            if event.event_type in _COUNTED:
                totals[_COUNTED[event.event_type]] += 1
            elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
                marker = event.marker_recorded_event_attributes.marker_name
                totals["local_activities"] += "local_activity" in marker
    return {k: round(v / len(sample), 1) for k, v in totals.items()} if sample else totals


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


def _ratio(lifecycle: Run, baseline: Run) -> float:
    return lifecycle.per_second / baseline.per_second if baseline.per_second else 0.0


def _rounds(runs: list[Run]) -> list[dict[str, float]]:
    """Each round's figures: `runs` is lifecycle, baseline, lifecycle, baseline, ..."""
    return [
        {
            "orders_per_min": round(lifecycle.per_second * 60, 1),
            "baseline_per_min": round(baseline.per_second * 60, 1),
            "ratio": round(_ratio(lifecycle, baseline), 3),
        }
        for lifecycle, baseline in zip(runs[::2], runs[1::2], strict=True)
    ]


def _report(runs: list[Run], as_json: bool, extra: dict[str, Any]) -> None:
    rounds = _rounds(runs)
    # The middle round by ratio (the lower middle of an even count): its figures are reported.
    middle = sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]
    ratio = middle["ratio"]
    extra = {**extra, "orders_per_min": middle["orders_per_min"]}
    if as_json:
        print(
            json.dumps(
                {
                    **extra,
                    "runs": [r.as_dict() for r in runs],
                    "rounds": rounds,
                    "throughput_ratio": ratio,
                },
                indent=2,
            )
        )
        return
    print()
    print(f"{'phase':<48} {'orders/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for run in runs:
        d = run.as_dict()
        print(f"{run.name:<48} {d['per_second']:>9} {d['p50_ms']:>9} {d['p99_ms']:>9}")
    if len(rounds) > 1:
        print(
            "\nrounds (lifecycle, baseline orders/min, ratio): "
            + "; ".join(
                f"{r['orders_per_min']:g}, {r['baseline_per_min']:g}, {r['ratio']:.2f}"
                for r in rounds
            )
        )
    print(
        f"\nlifecycle throughput = {ratio:.2f} x baseline "
        + ("(the median round; " if len(rounds) > 1 else "(")
        + f"{extra['orders']} orders, concurrency {extra['concurrency']}; "
        f"{extra['orders_per_min']} orders/min submit to delivered)"
    )
    for label, key in (("one fulfillment order", "per_order"), ("split", "per_split_order")):
        cost = extra[key]
        if cost.get("events"):
            print(
                f"per order ({label}): {cost['events']:g} history events, "
                f"{cost['workflow_tasks']:g} workflow tasks, {cost['activities']:g} activities "
                f"+ {cost['local_activities']:g} local, {cost['signals']:g} signals, "
                f"{cost['updates']:g} updates, {cost['timers']:g} timers"
            )
    cpu, baseline_cpu = extra["cpu_ms_per_order"], extra["baseline_cpu_ms_per_order"]
    print(
        f"CPU per order: {cpu['total']:g} ms ("
        + ", ".join(f"{name} {ms:g}" for name, ms in cpu.items() if name != "total")
        + f"); the baseline: {baseline_cpu['total']:g} ms per workflow"
    )
    if "statements" in extra:
        print("\n" + "\n".join(statements.report(extra["statements"], "order")))
    if "calls" in extra:
        print("\ncalls per order, by the process that served them (the worker: what it asked of")
        print("Temporal, and the workflow tasks and local activities it ran):")
        for role, counted in extra["calls"].items():
            print(f"  {role}: " + ", ".join(f"{what} {n:g}" for what, n in counted.items()))
    if "gc_ms" in extra:
        print("\n" + garbage_collection(extra["gc_ms"], "order"))
    if "profile" in extra:
        print("\nwhere the measured phase spent CPU, by own time (py-spy):")
        print_summary(extra["profile"])


async def run(args: argparse.Namespace) -> int:
    """`oms bench lifecycle`."""
    profile_dir = getattr(args, "profile", None)
    metrics = {"dev_metrics_port": metrics_base()} if profile_dir else {}
    async with private_stack("oms-bench-", args.keep, **metrics) as stack:
        settings = stack.settings
        client = await temporal.connect(settings)
        try:
            await _stock_split_skus(settings)
            # Warm up: one order end to end, so start-up costs are not measured.
            await lifecycle_phase(settings, client, 1, 1)
            probes = Probes(stack, Path(profile_dir)) if profile_dir else None
            if probes:
                await probes.start()
            meter = CpuMeter({**stack.pids(), **stack.server_pids()})
            meter.start()
            try:
                lifecycle, order_ids, split_ids = await lifecycle_phase(
                    settings, client, args.orders, args.concurrency, args.split_every
                )
                cpu = meter.per_unit_ms(args.orders)
            finally:
                profile = probes.stop_profile() if probes else {}
            recorded = await probes.per_unit(args.orders) if probes else {}
            cost = await history_cost(client, order_ids)
            split_cost = await history_cost(client, split_ids)
            meter.start()
            baseline = await _baseline_phase(
                client, BASELINE_ACTIVITIES, args.orders, args.concurrency
            )
            baseline_cpu = meter.per_unit_ms(args.orders)
            runs = [lifecycle, baseline]
            # Further rounds, alternating, for the ratio only (the cost, CPU and profile are
            # the first round's).
            for _ in range(getattr(args, "rounds", 1) - 1):
                again, _, _ = await lifecycle_phase(
                    settings, client, args.orders, args.concurrency, args.split_every
                )
                runs += [
                    again,
                    await _baseline_phase(
                        client, BASELINE_ACTIVITIES, args.orders, args.concurrency
                    ),
                ]
            _report(
                runs,
                args.json,
                {
                    "orders": args.orders,
                    "concurrency": args.concurrency,
                    "baseline_activities": BASELINE_ACTIVITIES,
                    "split_every": args.split_every,
                    "per_order": cost,
                    "per_split_order": split_cost,
                    "cpu_ms_per_order": cpu,
                    "baseline_cpu_ms_per_order": baseline_cpu,
                    **({"profile": profile, **recorded} if probes else {}),
                },
            )
        finally:
            await temporal.close(client)
    return 0
