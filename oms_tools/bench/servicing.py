"""`oms bench servicing`: the Update round trip of a change to an order, on a private stack.

`oms bench servicing --orders N --concurrency C` starts the stack with the warehouse
simulator off (so orders stay ALLOCATED), submits N sample orders, waits until each is
allocated, then cancels each whole order with servicing SubmitCancel from C lanes and times
each call from send to reply (the reply comes once the order's workflow answered the
Temporal Update). The baseline, in the same run at the same concurrency, is a plain servicing
read for the same orders (ListProcessExceptions by order), so the ratio is what the Update
round trip costs over a gRPC call to the same service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform import auth, grpcutil
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from oms_tools.bench.common import Run, bench_caller, bench_stack
from oms_tools.samples import sample_order

ALLOCATED_TIMEOUT_SECONDS = 120.0


def add_arguments(sub: Any) -> None:
    """Add `servicing` to `oms bench`'s subcommands."""
    servicing = sub.add_parser(
        "servicing", help="SubmitCancel (Update round trip) latency vs a plain servicing read"
    )
    servicing.add_argument("--orders", type=int, default=100)
    servicing.add_argument("--concurrency", type=int, default=10)
    servicing.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    servicing.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


async def _drive(count: int, concurrency: int, call: Any) -> tuple[float, list[float]]:
    """Run `await call(i)` for i in 0..count-1 from `concurrency` lanes; (elapsed, latencies)."""
    latencies = [0.0] * count
    indexes = iter(range(count))

    async def lane() -> None:
        for i in indexes:
            sent = time.perf_counter()
            await call(i)
            latencies[i] = time.perf_counter() - sent

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies


async def _allocated_orders(settings: Settings, count: int, concurrency: int) -> list[str]:
    """Submit `count` sample orders and wait until every one is ALLOCATED."""
    order_ids: list[str] = [""] * count
    deadline = time.monotonic() + ALLOCATED_TIMEOUT_SECONDS
    storefront = bench_caller(settings, auth.STOREFRONT)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("capture"), storefront, tls=tls) as channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)

        async def submit_and_wait(i: int) -> None:
            response = await stub.SubmitOrder(sample_order(), timeout=30)
            order_id = response.order.order_id
            order_ids[i] = order_id
            while True:
                view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id))
                status = view.order.status
                if status == capture_pb2.ORDER_STATUS_ALLOCATED:
                    return
                if status in (capture_pb2.ORDER_STATUS_ON_HOLD, capture_pb2.ORDER_STATUS_CANCELED):
                    name = capture_pb2.OrderStatus.Name(status)
                    raise RuntimeError(f"order {order_id} went {name}, not ALLOCATED")
                if time.monotonic() > deadline:
                    name = capture_pb2.OrderStatus.Name(status)
                    raise RuntimeError(f"order {order_id} still {name} after the timeout")
                await asyncio.sleep(0.05)

        await _drive(count, concurrency, submit_and_wait)
    return order_ids


async def _measure(settings: Settings, order_ids: list[str], concurrency: int) -> list[Run]:
    failures: list[str] = []
    agent = auth.dev_caller(settings, "agent:bench", auth.AGENT)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("servicing"), agent, tls=tls) as channel:
        stub = servicing_pb2_grpc.ServicingServiceStub(channel)

        async def read(i: int) -> None:
            await stub.ListProcessExceptions(
                servicing_pb2.ListProcessExceptionsRequest(order_id=order_ids[i]), timeout=30
            )

        async def cancel(i: int) -> None:
            response = await stub.SubmitCancel(
                servicing_pb2.SubmitCancelRequest(
                    order_id=order_ids[i],
                    idempotency_key=f"bench-cancel-{uuid.uuid4()}",
                    reason="bench: Update round trip",
                ),
                timeout=60,
            )
            change = response.change
            if (
                change.status != servicing_pb2.CHANGE_STATUS_COMPLETED
                or change.outcome.order_status != "canceled"
            ):
                failures.append(
                    f"{order_ids[i]}: {servicing_pb2.ChangeStatus.Name(change.status)} "
                    f"order_status={change.outcome.order_status!r} {change.refusal_message}"
                )

        # Warm up the channel and the read path, so connection set-up is not measured.
        await read(0)
        count = len(order_ids)
        read_seconds, read_latencies = await _drive(count, concurrency, read)
        cancel_seconds, cancel_latencies = await _drive(count, concurrency, cancel)
    if failures:
        raise RuntimeError(f"{len(failures)} cancels did not cancel the order: {failures[:3]}")
    return [
        Run(
            "SubmitCancel (whole order, Update round trip)", count, cancel_seconds, cancel_latencies
        ),
        Run("baseline: ListProcessExceptions(order_id)", count, read_seconds, read_latencies),
    ]


def _report(runs: list[Run], as_json: bool, extra: dict[str, Any]) -> None:
    cancel, baseline = (r.as_dict() for r in runs)
    ratios = {
        f"{q}_ratio": round(cancel[f"{q}_ms"] / baseline[f"{q}_ms"], 1)
        if baseline[f"{q}_ms"]
        else 0
        for q in ("p50", "p99", "mean")
    }
    if as_json:
        print(json.dumps({**extra, "runs": [r.as_dict() for r in runs], **ratios}, indent=2))
        return
    print()
    print(f"{'phase':<48} {'calls/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for run, d in zip(runs, (cancel, baseline), strict=True):
        print(
            f"{run.name:<48} {d['per_second']:>9} {d['p50_ms']:>9} {d['p99_ms']:>9} "
            f"{d['mean_ms']:>9}"
        )
    print(
        f"\nSubmitCancel = {ratios['p50_ratio']} x baseline at p50, "
        f"{ratios['p99_ratio']} x at p99, {ratios['mean_ratio']} x on the mean "
        f"({extra['orders']} orders, concurrency {extra['concurrency']})"
    )


async def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench servicing`."""
    async with bench_stack("oms-bench-servicing-", args.keep, simulator=False) as settings:
        # Warm up: one order allocated and canceled, so start-up costs are not measured.
        await _measure(settings, await _allocated_orders(settings, 1, 1), 1)
        order_ids = await _allocated_orders(settings, args.orders, args.concurrency)
        runs = await _measure(settings, order_ids, args.concurrency)
        _report(
            runs,
            getattr(args, "json", False),
            {"orders": args.orders, "concurrency": args.concurrency},
        )
    return 0
