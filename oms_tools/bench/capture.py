"""`oms bench capture` and `oms bench reads`: capture's front door under load, each run on a
private stack (the same one `oms bench lifecycle` starts: every service, a worker, the
warehouse simulator, embedded Postgres and Temporal).

`oms bench capture --orders N --concurrency C [--rate R]` submits N orders and reports
accepted orders/s and p50/p99 SubmitOrder latency, and the same for a baseline measured in
the same run: a minimal gRPC server (a child process, as capture is) whose one RPC takes the
same request bytes and does a single INSERT into a scratch table on the same Postgres, with
a pool made as capture's is, of the same size. The ratio is what capture costs over that
floor. `--rate` paces submissions (orders per second; latency then counts from each order's
scheduled time, so a backlog shows).

`oms bench reads --seed 10000 --seed 200000` imports historical orders (ImportOrders) until
the database holds each size in turn, and measures GetOrder and ListOrders (a mix of
filters) p50/p99 at each size; the ratio of p99s shows whether reads grow with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform import auth, db, grpcutil
from oms_platform.loop import event_loop_factory
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from oms_platform.wire import timestamp_from_datetime
from oms_tools.bench.common import Run, bench_caller, private_stack
from oms_tools.bench.profile import Profiler, print_summary
from oms_tools.devstack.temporal_server import free_port, wait_for_port
from oms_tools.samples import CHANNELS, sample_order

COMMANDS = ("capture", "reads")

BASELINE_METHOD = "/oms.bench.v1.Baseline/Insert"
SQL_BASELINE_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.baseline_inserts (
    id         bigserial PRIMARY KEY,
    key        text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
SQL_BASELINE_INSERT = "INSERT INTO bench.baseline_inserts (key) VALUES ($1)"
SQL_OUTBOX_BACKLOG = "SELECT count(*) FROM capture.outbox"
SQL_ORDER_COUNT = "SELECT count(*) FROM capture.orders"
# After seeding, what autovacuum and the checkpointer would have done by then (visibility
# map and statistics up to date, the bulk load's dirty pages written), so the measurement
# sees a settled database rather than the tail of a bulk load.
SQL_SETTLE_TABLES = (
    "VACUUM ANALYZE capture.orders",
    "VACUUM ANALYZE capture.order_lines",
    "VACUUM ANALYZE capture.delivery_groups",
    "VACUUM ANALYZE capture.timeline_events",
    "VACUUM ANALYZE capture.shoppers",
    "VACUUM ANALYZE capture.shopper_channel_ids",
    "VACUUM ANALYZE capture.idempotency_keys",
    "CHECKPOINT",
)


def add_arguments(sub: Any) -> None:
    """Add `capture` and `reads` to `oms bench`'s subcommands."""
    capture = sub.add_parser(
        "capture", help="SubmitOrder throughput and latency vs a one-INSERT gRPC baseline"
    )
    capture.add_argument("--orders", type=int, default=2000)
    capture.add_argument("--concurrency", type=int, default=32)
    capture.add_argument(
        "--rate", type=float, default=0.0, help="orders per second (default: as fast as accepted)"
    )
    capture.add_argument(
        "--shoppers", type=int, default=1000, help="distinct shoppers the orders come from"
    )
    capture.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    capture.add_argument(
        "--drain-minutes",
        type=float,
        default=0.0,
        help="after the burst, wait up to this long for the outbox to empty (every lifecycle "
        "started) and report how long it took; 0 = report the backlog only",
    )
    capture.add_argument(
        "--profile",
        metavar="DIR",
        help="record a py-spy profile of capture, the worker and the other services during "
        "the SubmitOrder phase into DIR and print the top functions by own time",
    )
    reads = sub.add_parser("reads", help="GetOrder and ListOrders latency as the table grows")
    reads.add_argument(
        "--seed",
        type=int,
        action="append",
        help="orders in the database for one measurement; repeat (default 10000 and 200000)",
    )
    reads.add_argument("--requests", type=int, default=2000, help="calls per RPC and size")
    reads.add_argument("--concurrency", type=int, default=4)
    reads.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    for parser in (capture, reads):
        parser.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
        )


async def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench capture` and `oms bench reads`."""
    overrides = {"simulator": False} if args.bench == "reads" else {}
    async with private_stack(f"oms-bench-{args.bench}-", args.keep, **overrides) as stack:
        if args.bench == "capture":
            profile_dir = getattr(args, "profile", None)
            profiler = Profiler(Path(profile_dir), stack.pids()) if profile_dir else None
            await _run_capture(stack.settings, args, profiler)
        else:
            await _run_reads(stack.settings, args)
    return 0


# ---- shared -------------------------------------------------------------------------------


async def _drive(
    count: int,
    concurrency: int,
    call: Callable[[int], Awaitable[Any]],
    rate: float = 0.0,
) -> tuple[float, list[float]]:
    """Run `call(i)` for i in 0..count-1 from `concurrency` lanes, optionally paced at
    `rate` per second; returns (elapsed seconds, latency of each call)."""
    latencies: list[float] = [0.0] * count
    next_index = iter(range(count))
    began = time.perf_counter()

    async def lane() -> None:
        for i in next_index:
            scheduled = began + i / rate if rate else 0.0
            if rate:
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.perf_counter()
            await call(i)
            # Paced: from the scheduled time, so time spent queued behind busy lanes counts.
            latencies[i] = time.perf_counter() - (scheduled if rate else sent)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies


def _print_runs(runs: list[Run], unit: str = "calls/s") -> None:
    print(f"\n{'phase':<52} {unit:>12} {'p50 ms':>9} {'p99 ms':>9}")
    for run in runs:
        d = run.as_dict()
        print(f"{run.name:<52} {d['per_second']:>12} {d['p50_ms']:>9} {d['p99_ms']:>9}")


# ---- capture ------------------------------------------------------------------------------


class _BaselineServer:
    """The floor: the same request bytes over gRPC, one INSERT, an empty answer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(
        self, request: capture_pb2.SubmitOrderRequest, context: grpc.aio.ServicerContext
    ) -> capture_pb2.SubmitOrderResponse:
        await self._pool.execute(SQL_BASELINE_INSERT, request.idempotency_key)
        return capture_pb2.SubmitOrderResponse()


async def serve_baseline(dsn: str, port: int, pool_size: int) -> None:
    """Run the baseline server until killed (the bench runs it as a child process)."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(SQL_BASELINE_SCHEMA)
    await conn.close()
    pool = await db.create_pool(dsn, "bench", min_size=pool_size, max_size=pool_size)
    baseline = _BaselineServer(pool)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "oms.bench.v1.Baseline",
                {
                    "Insert": grpc.unary_unary_rpc_method_handler(
                        baseline.insert,
                        request_deserializer=capture_pb2.SubmitOrderRequest.FromString,
                        response_serializer=capture_pb2.SubmitOrderResponse.SerializeToString,
                    )
                },
            )
        ]
    )
    # Under TLS (the bench's stack started with OMS_DEV_TLS=1) the floor pays for it too.
    credentials = TLSConfig.from_settings(Settings.from_env()).server_credentials()
    if credentials is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    await server.wait_for_termination()


def _start_baseline(settings: Settings) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(Path(settings.data_dir) / "logs" / "baseline.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "oms_tools.bench.capture", "baseline-server",
         settings.dsn, str(port), str(settings.db_pool_max)],
        stdout=log, stderr=log, start_new_session=True, env={**os.environ, **settings.as_env()},
    )  # fmt: skip
    wait_for_port("127.0.0.1", port, 30.0, process)
    return process, port


def _orders(count: int, shoppers: int) -> list[capture_pb2.SubmitOrderRequest]:
    """Sample orders from a pool of shoppers, channels in turn; built before timing."""
    names = list(CHANNELS)
    return [
        sample_order(channel=names[i % len(names)], email=f"bench-{i % shoppers}@example.com")
        for i in range(count)
    ]


async def _capture_phase(
    name: str,
    call: Callable[[capture_pb2.SubmitOrderRequest], Awaitable[Any]],
    requests: list[capture_pb2.SubmitOrderRequest],
    concurrency: int,
    rate: float,
) -> Run:
    elapsed, latencies = await _drive(len(requests), concurrency, lambda i: call(requests[i]), rate)
    return Run(name, len(requests), elapsed, latencies)


async def _run_capture(
    settings: Settings, args: argparse.Namespace, profiler: Profiler | None = None
) -> None:
    baseline_process, baseline_port = _start_baseline(settings)
    tls = TLSConfig.from_settings(settings)
    try:
        async with (
            grpcutil.channel(
                settings.address_of("capture"), bench_caller(settings, auth.STOREFRONT), tls=tls
            ) as capture_channel,
            grpcutil.channel(f"127.0.0.1:{baseline_port}", tls=tls) as baseline_channel,
        ):
            capture = capture_pb2_grpc.CaptureServiceStub(capture_channel)
            baseline = baseline_channel.unary_unary(
                BASELINE_METHOD,
                request_serializer=capture_pb2.SubmitOrderRequest.SerializeToString,
                response_deserializer=capture_pb2.SubmitOrderResponse.FromString,
            )

            async def submit(request: capture_pb2.SubmitOrderRequest) -> None:
                await capture.SubmitOrder(request, timeout=30)

            async def insert(request: capture_pb2.SubmitOrderRequest) -> None:
                await baseline(request, timeout=30)

            # Warm up both (connections, prepared statements, first shoppers).
            warm = _orders(100, args.shoppers)
            await _capture_phase("warm-up", insert, warm, 10, 0.0)
            await _capture_phase("warm-up", submit, warm, 10, 0.0)

            requests = _orders(args.orders, args.shoppers)
            rate = f", {args.rate:g}/s paced" if args.rate else ""
            floor = await _capture_phase(
                f"baseline (gRPC + one INSERT){rate}", insert, requests, args.concurrency, args.rate
            )
            requests = _orders(args.orders, args.shoppers)  # new keys: every one a new order
            if profiler:
                profiler.start()
            try:
                captured = await _capture_phase(
                    f"capture SubmitOrder{rate}", submit, requests, args.concurrency, args.rate
                )
            finally:
                profile = profiler.stop() if profiler else None
        last_accepted = time.monotonic()
        conn = await asyncpg.connect(settings.dsn)
        try:
            backlog = await conn.fetchval(SQL_OUTBOX_BACKLOG)
            drain = await _drain(conn, backlog, last_accepted, args.drain_minutes * 60)
        finally:
            await conn.close()
    finally:
        baseline_process.terminate()
        baseline_process.wait(10)
    _report_capture(floor, captured, backlog, drain, args, profile)


# How often the drain is looked at.
DRAIN_POLL_SECONDS = 5.0


async def _drain(
    conn: Any, backlog: int, last_accepted: float, within_seconds: float
) -> dict[str, Any]:
    """Wait (up to `within_seconds`) for capture's outbox to empty after the burst: every
    lifecycle started. Returns how long that took after the last accepted order, or, when it
    did not empty in time, the rate lifecycles were started at and the projected drain time."""
    if within_seconds <= 0 or backlog == 0:
        return {"drained_after_seconds": 0.0 if backlog == 0 else None}
    waiting = backlog
    while time.monotonic() - last_accepted < within_seconds:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        waiting = await conn.fetchval(SQL_OUTBOX_BACKLOG)
        if waiting == 0:
            return {"drained_after_seconds": round(time.monotonic() - last_accepted, 1)}
    elapsed = time.monotonic() - last_accepted
    per_minute = (backlog - waiting) / elapsed * 60 if elapsed else 0.0
    return {
        "drained_after_seconds": None,
        "still_waiting": waiting,
        "starts_per_minute": round(per_minute, 1),
        "projected_drain_minutes": round(backlog / per_minute, 1) if per_minute else None,
    }


def _report_capture(
    floor: Run,
    captured: Run,
    backlog: int,
    drain: dict[str, Any],
    args: argparse.Namespace,
    profile: dict[str, Any] | None = None,
) -> None:
    ratio = captured.per_second / floor.per_second if floor.per_second else 0.0
    summary = {
        "orders": args.orders,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "runs": [floor.as_dict(), captured.as_dict()],
        "accepted_per_minute": round(captured.per_second * 60),
        "throughput_ratio": round(ratio, 3),
        "p99_ratio": round(captured.percentile(0.99) / max(floor.percentile(0.99), 1e-9), 2),
        "lifecycle_starts_waiting_in_outbox": backlog,
        "drain": drain,
        **({"profile": profile} if profile is not None else {}),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    _print_runs([floor, captured], "accepted/s")
    print(
        f"\ncapture accepted {captured.per_second * 60:,.0f} orders/min "
        f"({args.orders} orders, concurrency {args.concurrency}"
        f"{f', paced at {args.rate:g}/s' if args.rate else ''}, "
        f"{captured.seconds:.1f} s); throughput {ratio:.2f} x baseline, "
        f"p99 {summary['p99_ratio']} x baseline"
    )
    print(f"lifecycle starts still queued in the outbox at the end: {backlog}")
    if drain.get("drained_after_seconds") is not None and backlog:
        print(
            f"every lifecycle started {drain['drained_after_seconds']:.0f} s after the last order"
        )
    elif "starts_per_minute" in drain:
        print(
            f"not drained within {args.drain_minutes:g} min: {drain['still_waiting']} still "
            f"waiting, {drain['starts_per_minute']:,.0f} starts/min, drain projected at "
            f"{drain['projected_drain_minutes']} min"
        )
    if profile is not None:
        print("\nwhere the SubmitOrder phase spent CPU, by own time (py-spy):")
        print_summary(profile)


# ---- reads --------------------------------------------------------------------------------


SKUS = 50
DAYS = 365


def _historical(i: int, now: datetime, shoppers: int) -> capture_pb2.ImportOrdersRequest:
    """Order i of the seed: a past order of one of `shoppers`, placed within the year, with
    two of SKUS SKUs, on one of the channels in turn; one in ten canceled."""
    names = list(CHANNELS)
    order = sample_order(channel=names[i % len(names)], email=f"reader-{i % shoppers}@example.com")
    order.lines[0].sku = f"SKU-BENCH-{i % SKUS}"
    order.lines[1].sku = f"SKU-BENCH-{(i * 7 + 3) % SKUS}"
    return capture_pb2.ImportOrdersRequest(
        order=order,
        historical=True,
        historical_status=(
            capture_pb2.ORDER_STATUS_CANCELED if i % 10 == 0 else capture_pb2.ORDER_STATUS_FULFILLED
        ),
        placed_at=timestamp_from_datetime(now - timedelta(seconds=(i * 7919) % (DAYS * 86400))),
    )


async def _seed(
    stub: capture_pb2_grpc.CaptureServiceStub, start: int, stop: int, now: datetime
) -> list[str]:
    ids: list[str] = []
    shoppers = 2000
    step = 10_000

    def chunk(a: int, b: int) -> Iterator[capture_pb2.ImportOrdersRequest]:
        for i in range(a, b):
            yield _historical(i, now, shoppers)

    async def stream(a: int, b: int) -> AsyncIterator[capture_pb2.ImportOrdersRequest]:
        for request in chunk(a, b):
            yield request

    for a in range(start, stop, step):
        b = min(stop, a + step)
        response = await stub.ImportOrders(stream(a, b), timeout=600)
        if response.failed:
            first = next(r for r in response.results if r.error_code)
            raise RuntimeError(f"{response.failed} orders failed to import: {first}")
        ids += [r.order_id for r in response.results]
        print(f"  seeded {b:,} orders", flush=True)
    return ids


def _list_requests(
    now: datetime, shopper_ids: list[str], rng: random.Random
) -> Iterator[tuple[str, capture_pb2.ListOrdersRequest]]:
    """ListOrders calls of every kind in turn, each with random values."""
    while True:
        yield "newest", capture_pb2.ListOrdersRequest()
        yield "status", capture_pb2.ListOrdersRequest(statuses=[capture_pb2.ORDER_STATUS_CANCELED])
        channel = rng.choice(list(CHANNELS.values()))
        yield "channel", capture_pb2.ListOrdersRequest(channel=channel)
        yield "shopper", capture_pb2.ListOrdersRequest(shopper_id=rng.choice(shopper_ids))
        yield "sku", capture_pb2.ListOrdersRequest(sku=f"SKU-BENCH-{rng.randrange(SKUS)}")
        start = now - timedelta(days=rng.randrange(7, DAYS))
        yield (
            "week",
            capture_pb2.ListOrdersRequest(
                created_from=timestamp_from_datetime(start),
                created_to=timestamp_from_datetime(start + timedelta(days=7)),
            ),
        )


async def _measure_reads(
    stub: capture_pb2_grpc.CaptureServiceStub,
    size: int,
    order_ids: list[str],
    requests: int,
    concurrency: int,
    now: datetime,
) -> tuple[Run, Run, dict[str, Run]]:
    rng = random.Random(size)
    sample = [rng.choice(order_ids) for _ in range(requests)]
    shoppers = list(
        {
            (await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=i))).order.shopper.shopper_id
            for i in sample[:50]
        }
    )

    async def get(i: int) -> None:
        view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=sample[i]), timeout=10)
        assert view.order.order_id == sample[i]

    await _drive(min(200, requests), concurrency, get)  # warm
    elapsed, latencies = await _drive(requests, concurrency, get)
    get_run = Run(f"GetOrder @ {size:,} orders", requests, elapsed, latencies)

    calls = list(zip(range(requests), _list_requests(now, shoppers, rng), strict=False))
    kinds: dict[str, list[float]] = {}

    async def list_page(i: int) -> None:
        kind, request = calls[i][1]
        started = time.perf_counter()
        page = await stub.ListOrders(request, timeout=10)
        if kind == "newest":  # and the page after it, by the cursor
            await stub.ListOrders(
                capture_pb2.ListOrdersRequest(page_token=page.next_page_token), timeout=10
            )
        kinds.setdefault(kind, []).append(time.perf_counter() - started)

    await _drive(min(200, requests), concurrency, list_page)  # warm
    kinds.clear()
    elapsed, latencies = await _drive(requests, concurrency, list_page)
    list_run = Run(f"ListOrders @ {size:,} orders (mix)", requests, elapsed, latencies)
    per_kind = {k: Run(f"  {k} @ {size:,}", len(v), elapsed, v) for k, v in kinds.items()}
    return get_run, list_run, per_kind


async def _run_reads(settings: Settings, args: argparse.Namespace) -> None:
    sizes = sorted(set(args.seed or [10_000, 200_000]))
    now = datetime.now(UTC)
    results: list[tuple[int, Run, Run, dict[str, Run]]] = []
    order_ids: list[str] = []
    tls = TLSConfig.from_settings(settings)
    # Seeding imports history, a back-office job (admin); the measured reads are an agent's.
    admin = auth.dev_caller(settings, "bench-import", auth.ADMIN)
    async with (
        grpcutil.channel(settings.address_of("capture"), admin, tls=tls) as seeding,
        grpcutil.channel(
            settings.address_of("capture"),
            auth.dev_caller(settings, "bench-agent", auth.AGENT),
            tls=tls,
        ) as channel,
    ):
        stub = capture_pb2_grpc.CaptureServiceStub(channel)
        seed_stub = capture_pb2_grpc.CaptureServiceStub(seeding)
        conn = await asyncpg.connect(settings.dsn)
        try:
            for size in sizes:
                print(f"seeding to {size:,} orders…", flush=True)
                began = time.perf_counter()
                order_ids += await _seed(seed_stub, len(order_ids), size, now)
                seeded = time.perf_counter() - began
                for sql in SQL_SETTLE_TABLES:
                    await conn.execute(sql)
                stored = await conn.fetchval(SQL_ORDER_COUNT)
                print(f"  {stored:,} orders stored ({seeded:.0f} s of importing)", flush=True)
                results.append(
                    (
                        size,
                        *await _measure_reads(
                            stub, size, order_ids, args.requests, args.concurrency, now
                        ),
                    )
                )
        finally:
            await conn.close()
    _report_reads(results, args)


def _report_reads(
    results: list[tuple[int, Run, Run, dict[str, Run]]], args: argparse.Namespace
) -> None:
    first, last = results[0], results[-1]
    growth = {
        "GetOrder": last[1].percentile(0.99) / max(first[1].percentile(0.99), 1e-9),
        "ListOrders": last[2].percentile(0.99) / max(first[2].percentile(0.99), 1e-9),
    }
    if args.json:
        print(
            json.dumps(
                {
                    "sizes": [
                        {
                            "orders": size,
                            "get_order": g.as_dict(),
                            "list_orders": lst.as_dict(),
                            "list_orders_by_kind": {k: r.as_dict() for k, r in kinds.items()},
                        }
                        for size, g, lst, kinds in results
                    ],
                    "p99_growth": {k: round(v, 2) for k, v in growth.items()},
                },
                indent=2,
            )
        )
        return
    runs: list[Run] = []
    for _, g, lst, kinds in results:
        runs += [g, lst, *kinds.values()]
    _print_runs(runs)
    print(
        f"\np99 from {first[0]:,} to {last[0]:,} orders: "
        + ", ".join(f"{k} {v:.2f} x" for k, v in growth.items())
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "baseline-server":
        # On the loop the services run on, so the baseline differs from capture only in work.
        loop = event_loop_factory(Settings.from_env().event_loop)
        with asyncio.Runner(loop_factory=loop) as runner:
            runner.run(serve_baseline(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        sys.exit("usage: python -m oms_tools.bench.capture baseline-server DSN PORT POOL")
