"""`oms bench subscriptions`: many subscribers, and one cycle due for all of them at once.

`oms bench subscriptions --subscribers N --concurrency C` starts a private stack (minute
cadences allowed, the warehouse simulator off so cycle orders wait at allocation), creates a
plan and N subscriptions to it from C lanes, all starting at the same moment, and reports:

- **created per second**: CreateSubscription round trips (each writes the subscription and
  its workflow's start to servicing's outbox; the relay starts the workflow);
- **the cycle**: from the moment every first cycle is due until capture has accepted every
  cycle order (one order per subscription, idempotency key `<subscription_id>:1`), with the
  time to the first and to the half;
- **growth** measured at N/2 and N subscriptions waiting for their cycle, and after the
  cycle: the worker's RSS and the Temporal database's size on disk (the dev server's SQLite
  file and its write-ahead log), per 1,000 subscriptions;
- **50,000 subscribers, extrapolated** from those measurements with the formulas printed.

The spread window is 0 unless `--spread-seconds` says otherwise, so all N are due in the same
second: the burst a merchant's 1st of the month would be without the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2
from oms.subscriptions.v1 import subscriptions_pb2 as pb
from oms.subscriptions.v1 import subscriptions_pb2_grpc

from oms_platform import auth, grpcutil, temporal
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from oms_tools.bench.common import bench_caller, drive, percentile_ms, private_stack
from oms_tools.bench.memory import worker_polling, worker_rss
from oms_tools.devstack.stack import Stack

# What every cycle ships: one SKU the bench stocks without limit at one warehouse.
BOX_SKU = "BENCH-SUBSCRIPTION-BOX"
BOX_LOCATION = "wh-east"
BOX_PRICE_MINOR = 3900
SHIPPING_MINOR = 500
# A cadence long enough that only the first cycle falls inside the bench.
CADENCE_MINUTES = 1440
# The size the extrapolation is for (issue 17: a 50,000-subscriber box program).
TARGET = 50_000
POLL_SECONDS = 0.5
SETTLE_SECONDS = 3.0


def add_arguments(sub: Any) -> None:
    """Add `subscriptions` to `oms bench`'s subcommands."""
    parser = sub.add_parser(
        "subscriptions",
        help="create N subscriptions, one cycle due for all at once: creation rate, time "
        "until capture accepted every cycle order, worker RSS and Temporal DB size per 1,000",
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--due-in",
        type=float,
        default=None,
        help="seconds from the start of creation to the cycle all are due at (default: "
        "enough for creation at 20 per second, at least 30)",
    )
    parser.add_argument(
        "--spread-seconds", type=int, default=0, help="the deployment's spread window"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="longest wait for the cycle's orders"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def temporal_db_bytes(stack: Stack) -> int:
    """The dev server's SQLite database on disk: the file and its write-ahead log."""
    folder = stack.data_dir / "temporal"
    return sum(p.stat().st_size for p in folder.glob("temporal.db*") if p.is_file())


async def _stock(settings: Settings) -> None:
    merchandiser = bench_caller(settings, auth.MERCHANDISER)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("fulfillment"), merchandiser, tls=tls) as ch:
        await fulfillment_pb2_grpc.FulfillmentServiceStub(ch).SetInventoryLevels(
            fulfillment_pb2.SetInventoryLevelsRequest(
                levels=[
                    fulfillment_pb2.InventoryLevel(
                        location_id=BOX_LOCATION, sku=BOX_SKU, on_hand=10**8
                    )
                ]
            ),
            timeout=30,
        )


async def _plan(settings: Settings) -> str:
    merchandiser = bench_caller(settings, auth.MERCHANDISER)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("servicing"), merchandiser, tls=tls) as ch:
        response = await subscriptions_pb2_grpc.SubscriptionsServiceStub(ch).CreatePlan(
            pb.CreatePlanRequest(
                idempotency_key=str(uuid.uuid4()),
                name="Bench box",
                items=[
                    pb.PlanItem(
                        sku=BOX_SKU, name="Box", quantity=1, unit_price_minor=BOX_PRICE_MINOR
                    )
                ],
                currency="USD",
                shipping_minor=SHIPPING_MINOR,
                cadence=pb.Cadence(minutes=CADENCE_MINUTES),
                timezone="UTC",
            ),
            timeout=30,
        )
    return str(response.plan.plan_id)


def _subscription(plan_id: str, i: int, start_at: Timestamp) -> pb.CreateSubscriptionRequest:
    return pb.CreateSubscriptionRequest(
        idempotency_key=f"bench-subscription-{uuid.uuid4()}",
        plan_id=plan_id,
        channel="web",
        subscriber=pb.Subscriber(email=f"subscriber-{i}@example.com", name="Bench Subscriber"),
        delivery_address=common_pb2.PostalAddress(
            line1="1 Market St",
            city="Philadelphia",
            region="PA",
            postal_code="19106",
            country_code="US",
        ),
        delivery_method="standard",
        payment_method=payments_pb2.PaymentMethod(
            type=payments_pb2.PAYMENT_METHOD_TYPE_CARD, token="tok_visa"
        ),
        start_at=start_at,
    )


async def _growth_point(stack: Stack, subscribers: int) -> dict[str, Any]:
    await asyncio.sleep(SETTLE_SECONDS)
    return {
        "subscribers": subscribers,
        "worker_rss_mib": round(worker_rss(stack), 1),
        "temporal_db_mib": round(temporal_db_bytes(stack) / 2**20, 2),
    }


async def _cycle_orders(dsn: str, total: int, due: datetime, within: float) -> dict[str, Any]:
    """Wait until capture holds a cycle order for each subscription; when the first, the
    half and the last were accepted, in seconds after `due`."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while True:
            accepted = await conn.fetchval(
                "SELECT count(*) FROM capture.orders WHERE subscription_id <> ''"
            )
            if accepted >= total:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {accepted} of {total} cycle orders after {within:g} s")
            await asyncio.sleep(POLL_SECONDS)
        times = [
            row["created_at"]
            for row in await conn.fetch(
                "SELECT created_at FROM capture.orders WHERE subscription_id <> ''"
                " ORDER BY created_at"
            )
        ]
        per_subscription = await conn.fetchval(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM capture.orders"
            " WHERE subscription_id <> '' GROUP BY subscription_id, subscription_cycle) c"
        )
    finally:
        await conn.close()

    def after(at: datetime) -> float:
        return round((at - due).total_seconds(), 2)

    return {
        "orders": len(times),
        "most_orders_for_one_cycle": per_subscription,
        "first_accepted_s": after(times[0]),
        "half_accepted_s": after(times[len(times) // 2]),
        "all_accepted_s": after(times[-1]),
    }


def extrapolate(report: dict[str, Any]) -> dict[str, Any]:
    """50,000 subscribers from the measured run, linearly: rates stay what they were; memory
    and disk grow by what each subscription added between N/2 and N (the worker's RSS stops
    growing once its sticky cache is full)."""
    half, full = report["growth"][0], report["growth"][1]
    added = full["subscribers"] - half["subscribers"]
    rss_slope = (full["worker_rss_mib"] - half["worker_rss_mib"]) / added if added else 0.0
    db_slope = (full["temporal_db_mib"] - half["temporal_db_mib"]) / added if added else 0.0
    cache = report["worker_cache"]
    cached_full = min(full["subscribers"], cache)
    rss_target = full["worker_rss_mib"] + rss_slope * (min(TARGET, cache) - cached_full)
    db_target = full["temporal_db_mib"] + db_slope * (TARGET - full["subscribers"])
    cycle_rate = report["cycle"]["orders"] / max(report["cycle"]["all_accepted_s"], 1e-9)
    return {
        "subscribers": TARGET,
        "create_seconds": round(TARGET / report["created_per_second"], 0),
        "cycle_seconds": round(TARGET / cycle_rate, 0),
        "worker_rss_mib": round(rss_target, 0),
        "temporal_db_mib_before_cycle": round(db_target, 0),
        "formulas": {
            "create_seconds": "50000 / created_per_second",
            "cycle_seconds": "50000 / (N / all_accepted_s)",
            "worker_rss_mib": "rss(N) + (rss(N) - rss(N/2)) / (N/2) x (min(50000, cache) - "
            "min(N, cache))",
            "temporal_db_mib": "db(N) + (db(N) - db(N/2)) / (N/2) x (50000 - N)",
        },
    }


def _report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    n = report["subscribers"]
    cycle = report["cycle"]
    print()
    print(
        f"{n} subscriptions created in {report['create_seconds']} s: "
        f"{report['created_per_second']} per second (p99 {report['create_p99_ms']} ms)"
    )
    print(
        f"one cycle due for all at once (spread {report['spread_seconds']} s): capture accepted "
        f"the first order {cycle['first_accepted_s']} s after, half after "
        f"{cycle['half_accepted_s']} s, all {cycle['orders']} after {cycle['all_accepted_s']} s "
        f"(at most {cycle['most_orders_for_one_cycle']} order per cycle)"
    )
    print(f"{'':<40} {'worker RSS MiB':>15} {'Temporal DB MiB':>16}")
    for label, point in (
        ("idle", report["idle"]),
        *((f"{p['subscribers']} subscriptions waiting", p) for p in report["growth"]),
        ("after the cycle", report["after_cycle"]),
    ):
        print(f"{label:<40} {point['worker_rss_mib']:>15} {point['temporal_db_mib']:>16}")
    print(
        f"per 1,000 subscriptions waiting: Temporal DB {report['temporal_db_mib_per_1000']} MiB, "
        f"worker RSS {report['worker_rss_mib_per_1000']} MiB (sticky cache "
        f"{report['worker_cache']} workflows); after the cycle, with its orders allocated: "
        f"Temporal DB {report['temporal_db_mib_per_1000_after_cycle']} MiB"
    )
    target = report["extrapolated"]
    print(
        f"\n{TARGET} subscribers, extrapolated: created in {target['create_seconds']:.0f} s, "
        f"one cycle for all accepted in {target['cycle_seconds']:.0f} s, worker RSS "
        f"{target['worker_rss_mib']:.0f} MiB, Temporal DB "
        f"{target['temporal_db_mib_before_cycle']:.0f} MiB before the cycle"
    )
    for name, formula in target["formulas"].items():
        print(f"  {name} = {formula}")


async def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench subscriptions`."""
    n = args.subscribers
    if n < 2:
        raise SystemExit("error: --subscribers must be at least 2")
    due_in = args.due_in if args.due_in is not None else max(30.0, n / 20)
    async with private_stack(
        "oms-bench-subscriptions-",
        args.keep,
        simulator=False,
        subscription_minute_cadence=True,
        subscription_spread_seconds=args.spread_seconds,
    ) as stack:
        settings = stack.settings
        client = await temporal.connect(settings)
        try:
            await worker_polling(client, settings, stack)
        finally:
            await temporal.close(client)
        await _stock(settings)
        plan_id = await _plan(settings)
        idle = await _growth_point(stack, 0)
        began = datetime.now(UTC)
        due = (began + timedelta(seconds=due_in)).replace(microsecond=0) + timedelta(seconds=1)
        start_at = Timestamp()
        start_at.FromDatetime(due)
        agent = bench_caller(settings, auth.AGENT)
        tls = TLSConfig.from_settings(settings)
        growth = []
        async with grpcutil.channel(settings.address_of("servicing"), agent, tls=tls) as ch:
            stub = subscriptions_pb2_grpc.SubscriptionsServiceStub(ch)

            async def create(i: int) -> None:
                await stub.CreateSubscription(_subscription(plan_id, i, start_at), timeout=60)

            half = n // 2
            first_seconds, first_latencies = await drive(
                half, args.concurrency, lambda i: create(i)
            )
            growth.append(await _growth_point(stack, half))
            second_seconds, second_latencies = await drive(
                n - half, args.concurrency, lambda i: create(half + i)
            )
        create_seconds = first_seconds + second_seconds
        latencies = first_latencies + second_latencies
        if datetime.now(UTC) + timedelta(seconds=SETTLE_SECONDS) >= due:
            raise SystemExit(
                f"error: creating {n} subscriptions took {create_seconds:.0f} s, past the cycle "
                f"due {due_in:.0f} s after the start: run again with a larger --due-in"
            )
        growth.append(await _growth_point(stack, n))
        cycle = await _cycle_orders(settings.dsn, n, due, args.timeout)
        after_cycle = await _growth_point(stack, n)
        full = growth[-1]
        report: dict[str, Any] = {
            "subscribers": n,
            "concurrency": args.concurrency,
            "spread_seconds": args.spread_seconds,
            "create_seconds": round(create_seconds, 2),
            "created_per_second": round(n / create_seconds, 1),
            "create_p99_ms": round(percentile_ms(latencies, 0.99), 1),
            "due_after_seconds": round((due - began).total_seconds(), 1),
            "cycle": cycle,
            "idle": idle,
            "growth": growth,
            "after_cycle": after_cycle,
            "worker_cache": settings.worker_max_cached_workflows,
            "temporal_db_mib_per_1000": round(
                (full["temporal_db_mib"] - idle["temporal_db_mib"]) / n * 1000, 2
            ),
            # After the cycle: the subscriptions' next runs and their orders' lifecycles (to
            # allocation: the simulator is off) as well.
            "temporal_db_mib_per_1000_after_cycle": round(
                (after_cycle["temporal_db_mib"] - idle["temporal_db_mib"]) / n * 1000, 2
            ),
            "worker_rss_mib_per_1000": round(
                (full["worker_rss_mib"] - idle["worker_rss_mib"]) / n * 1000, 2
            ),
        }
        report["extrapolated"] = extrapolate(report)
        _report(report, getattr(args, "json", False))
        if args.keep:
            print(f"data directory kept: {Path(settings.data_dir)}")
    return 0
