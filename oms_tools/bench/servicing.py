"""`oms bench servicing`: the Update round trips of changes to an order, on a private stack.

`oms bench servicing --orders N --concurrency C` starts the stack with the warehouse
simulator off (so orders stay ALLOCATED) and times, from C lanes, each call from send to reply
(the reply comes once the order's workflow answered the Temporal Update):

- **cancel**: N allocated sample orders, each canceled whole with SubmitCancel;
- **add-items**: N more allocated orders, each given one more mug with SubmitAddItems (a
  reservation and an authorization of the added amount inside the Update);
- **appeasement**: the same N orders, once the bench's own in-process warehouse simulator
  has delivered them, each given $1.00 of goodwill with SubmitAppeasement (a credit memo and
  a refund of captured money);
- **return**: the same delivered orders, each returning one T-shirt with SubmitReturn (a
  return order opened, the refund waiting for the receipt).

The baseline, in the same run at the same concurrency, is a plain servicing read for the
cancel's orders (ListProcessExceptions by order), so the ratio is what the cancel's Update
round trip costs over a gRPC call to the same service. Every change's outcome is checked (the
bench fails if one did not do what it says), and the return orders are read back afterwards.

With `--profile DIR` the cancel phase is also profiled (py-spy per process into DIR) and
counted per cancel: gRPC calls served by each service and made by the worker to Temporal (the
processes' /metrics), the workflow tasks, local activities and history events of the cancel's
Update (its order's history from the task that accepted it), and SQL statements and
transactions (pg_stat_statements). Those counts do not move with the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc
from temporalio.api.enums.v1 import EventType

from oms_platform import auth, grpcutil, temporal
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from oms_tools.bench import statements
from oms_tools.bench.calls import garbage_collection, metrics_base
from oms_tools.bench.common import (
    STATUS_TIMEOUT_SECONDS,
    Run,
    allocated_orders,
    bench_caller,
    drive,
    private_stack,
    wait_for_status,
)
from oms_tools.bench.cpu import CpuMeter
from oms_tools.bench.lifecycle import history_cost
from oms_tools.bench.probes import Probes
from oms_tools.bench.profile import print_summary
from oms_tools.devstack.simulator import Simulator

# What the changes ask for, against the sample order (oms_tools/samples.py).
MUG_SKU, MUG_PRICE_MINOR, MUG_TAX_MINOR = "SKU-MUG", 1200, 90
TSHIRT_SKU = "SKU-TSHIRT-M"
GOODWILL_MINOR = 100
# A return window open after delivery: the default bench stack closes it at once (so a
# lifecycle ends at delivery), which would refuse every return.
RETURN_WINDOW_DAYS = 30.0
# Statements listed by `--profile`: a cancel's own run to a few dozen, beside the pollers'.
STATEMENTS_SHOWN = 60


def add_arguments(sub: Any) -> None:
    """Add `servicing` to `oms bench`'s subcommands."""
    servicing = sub.add_parser(
        "servicing",
        help="cancel, add-items, appeasement and return round trips (Temporal Updates) vs a "
        "plain servicing read",
    )
    servicing.add_argument("--orders", type=int, default=100)
    servicing.add_argument("--concurrency", type=int, default=10)
    servicing.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    servicing.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    servicing.add_argument(
        "--cancel-only",
        action="store_true",
        help="measure the whole-order cancel and its baseline only (a shorter run)",
    )
    servicing.add_argument(
        "--profile",
        metavar="DIR",
        help="profile the cancel phase: py-spy of the worker and each service into DIR "
        "(speedscope files), and per cancel the gRPC calls, workflow tasks, local activities, "
        "SQL statements and transactions",
    )


def _line_id(order: capture_pb2.Order, sku: str) -> str:
    return next(line.order_line_id for line in order.lines if line.sku == sku)


def _describe(order_id: str, change: servicing_pb2.Change) -> str:
    status = servicing_pb2.ChangeStatus.Name(change.status)
    return f"{order_id}: {status} {change.outcome.summary!r} {change.refusal_message}"


def _agent_channel(settings: Settings) -> Any:
    agent = auth.dev_caller(settings, "agent:bench", auth.AGENT)
    tls = TLSConfig.from_settings(settings)
    return grpcutil.channel(settings.address_of("servicing"), agent, tls=tls)


async def _measure_cancel(
    settings: Settings,
    order_ids: list[str],
    concurrency: int,
    meter: CpuMeter | None = None,
    probes: Probes | None = None,
) -> tuple[list[Run], dict[str, float], dict[str, Any]]:
    """The whole-order cancel and its baseline read (measured as before the other changes
    joined the bench, so the figure stays comparable), and with `meter` the CPU each cancel
    cost each process while the cancels ran (what they set off afterwards, such as mail, is
    not in it); with `probes`, what they recorded ({} without)."""
    failures: list[str] = []
    async with _agent_channel(settings) as channel:
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
                failures.append(_describe(order_ids[i], change))

        # Warm up the channel and the read path, so connection set-up is not measured.
        await read(0)
        count = len(order_ids)
        read_seconds, read_latencies = await drive(count, concurrency, read)
        if probes is not None:
            await probes.start()
        if meter is not None:
            meter.start()
        try:
            cancel_seconds, cancel_latencies = await drive(count, concurrency, cancel)
            cpu = meter.per_unit_ms(count) if meter is not None else {}
        finally:
            recorded = await probes.stop(count) if probes is not None else {}
    if failures:
        raise RuntimeError(f"{len(failures)} cancels did not cancel the order: {failures[:3]}")
    return (
        [
            Run(
                "SubmitCancel (whole order, Update round trip)",
                count,
                cancel_seconds,
                cancel_latencies,
            ),
            Run("baseline: ListProcessExceptions(order_id)", count, read_seconds, read_latencies),
        ],
        cpu,
        recorded,
    )


async def _deliver(settings: Settings, order_ids: list[str], concurrency: int) -> None:
    """Ship and deliver the orders: the dev simulator's warehouse and carrier, run in this
    process for the phase only (the stack's own is off, so the other orders stay allocated),
    through fulfillment's public RPCs as a real warehouse would."""
    simulator = Simulator(settings)
    playing = asyncio.create_task(simulator.run())
    # Every order is shipped at once, so one deadline for them all: a little longer for more.
    deadline = time.monotonic() + STATUS_TIMEOUT_SECONDS + len(order_ids) * 0.1
    storefront = bench_caller(settings, auth.STOREFRONT)
    tls = TLSConfig.from_settings(settings)
    try:
        async with grpcutil.channel(settings.address_of("capture"), storefront, tls=tls) as channel:
            stub = capture_pb2_grpc.CaptureServiceStub(channel)

            async def delivered(i: int) -> None:
                await wait_for_status(
                    stub, order_ids[i], capture_pb2.ORDER_STATUS_FULFILLED, deadline
                )

            await drive(len(order_ids), concurrency, delivered)
    finally:
        playing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await playing
        await simulator.close()


async def _measure_changes(
    settings: Settings, orders: list[capture_pb2.Order], concurrency: int
) -> tuple[list[Run], dict[str, int]]:
    """Add-items on the allocated `orders`, then (once delivered) appeasement and return;
    the runs, and what was checked to have changed."""
    order_ids = [o.order_id for o in orders]
    count = len(orders)
    failures: list[str] = []
    checked = {"items_added": 0, "goodwill_refunded": 0, "returns_opened": 0}

    def outcome_of(i: int, change: servicing_pb2.Change, key: str, done: bool) -> None:
        if change.status == servicing_pb2.CHANGE_STATUS_COMPLETED and done:
            checked[key] += 1
        else:
            failures.append(_describe(order_ids[i], change))

    async with _agent_channel(settings) as channel:
        stub = servicing_pb2_grpc.ServicingServiceStub(channel)

        async def add_items(i: int) -> None:
            order = orders[i]
            response = await stub.SubmitAddItems(
                servicing_pb2.SubmitAddItemsRequest(
                    order_id=order.order_id,
                    idempotency_key=f"bench-add-{uuid.uuid4()}",
                    reason="bench: one more mug",
                    increases=[
                        servicing_pb2.LineIncrease(
                            order_line_id=_line_id(order, MUG_SKU),
                            quantity=1,
                            tax_minor=MUG_TAX_MINOR,
                        )
                    ],
                ),
                timeout=60,
            )
            added = MUG_PRICE_MINOR + MUG_TAX_MINOR
            total = order.totals.grand_total.amount_minor + added
            change = response.change
            outcome_of(i, change, "items_added", change.outcome.grand_total_minor == total)

        async def appease(i: int) -> None:
            response = await stub.SubmitAppeasement(
                servicing_pb2.SubmitAppeasementRequest(
                    order_id=order_ids[i],
                    idempotency_key=f"bench-appease-{uuid.uuid4()}",
                    reason="bench: goodwill for a late parcel",
                    amount_minor=GOODWILL_MINOR,
                ),
                timeout=60,
            )
            change = response.change
            outcome_of(
                i, change, "goodwill_refunded", change.outcome.refunded_minor == GOODWILL_MINOR
            )

        async def give_back(i: int) -> None:
            response = await stub.SubmitReturn(
                servicing_pb2.SubmitReturnRequest(
                    order_id=order_ids[i],
                    idempotency_key=f"bench-return-{uuid.uuid4()}",
                    reason="bench: too small",
                    lines=[
                        servicing_pb2.ReturnItem(
                            order_line_id=_line_id(orders[i], TSHIRT_SKU),
                            quantity=1,
                            reason="too small",
                            condition=servicing_pb2.ITEM_CONDITION_NEW,
                        )
                    ],
                ),
                timeout=60,
            )
            change = response.change
            outcome_of(i, change, "returns_opened", bool(change.outcome.return_order_id))

        async def timed(name: str, call: Callable[[int], Awaitable[None]]) -> Run:
            seconds, latencies = await drive(count, concurrency, call)
            if failures:
                raise RuntimeError(f"{len(failures)} {name} did not do it: {failures[:3]}")
            return Run(name, count, seconds, latencies)

        runs = [await timed("SubmitAddItems (one more unit, Update round trip)", add_items)]
        await _deliver(settings, order_ids, concurrency)
        runs.append(await timed("SubmitAppeasement (refund, Update round trip)", appease))
        runs.append(await timed("SubmitReturn (one unit, Update round trip)", give_back))

        # Read back: every order now has a return order servicing knows of.
        async def listed(i: int) -> None:
            page = await stub.ListReturnOrders(
                servicing_pb2.ListReturnOrdersRequest(order_id=order_ids[i]), timeout=30
            )
            checked["return_orders_listed"] += len(page.return_orders)

        checked["return_orders_listed"] = 0
        await drive(count, concurrency, listed)
    return runs, checked


# JSON key prefix of each run, in the order `run` measures them.
_KEYS = ("cancel", "baseline", "add_items", "appease", "return")


def _report(runs: list[Run], as_json: bool, extra: dict[str, Any]) -> None:
    figures = dict(zip(_KEYS[: len(runs)], (r.as_dict() for r in runs), strict=True))
    cancel, baseline = figures["cancel"], figures["baseline"]
    ratios = {
        f"{q}_ratio": round(cancel[f"{q}_ms"] / baseline[f"{q}_ms"], 1)
        if baseline[f"{q}_ms"]
        else 0
        for q in ("p50", "p99", "mean")
    }
    flat = {f"{key}_{q}_ms": d[f"{q}_ms"] for key, d in figures.items() for q in ("p50", "p99")}
    if as_json:
        report = {**extra, "runs": [r.as_dict() for r in runs], **flat, **ratios}
        print(json.dumps(report, indent=2))
        return
    print()
    print(f"{'phase':<52} {'calls/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for run, d in zip(runs, figures.values(), strict=True):
        print(
            f"{run.name:<52} {d['per_second']:>9} {d['p50_ms']:>9} {d['p99_ms']:>9} "
            f"{d['mean_ms']:>9}"
        )
    print(
        f"\nSubmitCancel = {ratios['p50_ratio']} x baseline at p50, "
        f"{ratios['p99_ratio']} x at p99, {ratios['mean_ratio']} x on the mean "
        f"({extra['orders']} orders, concurrency {extra['concurrency']})"
    )
    cpu = extra["cancel_cpu_ms"]
    print(
        f"CPU per cancel: {cpu['total']:g} ms ("
        + ", ".join(f"{name} {ms:g}" for name, ms in cpu.items() if name != "total")
        + ")"
    )
    checked = extra["checked"]
    print("checked: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in checked.items()))
    if "probes" in extra:
        _report_probes(extra["probes"])


def _report_probes(probes: dict[str, Any]) -> None:
    """What `--profile` counted per cancel, and where the processes spent their CPU."""
    history, calls, sql = probes["history"], probes["calls"], probes["statements"]
    total = calls.pop("total")
    print(
        f"\nper cancel: {total['oms_calls']:g} gRPC calls between oms processes, "
        f"{total['worker_to_temporal']:g} from the worker to Temporal; "
        f"{total['workflow_tasks']:g} workflow tasks and {total['local_activities']:g} local "
        f"activities run by the worker; the Update's history: {history['events']:g} events, "
        f"{history['workflow_tasks']:g} workflow tasks, {history['local_activities']:g} local "
        "activities"
    )
    for process, counted in calls.items():
        print(f"  {process}: " + ", ".join(f"{what} {n:g}" for what, n in counted.items()))
    print(garbage_collection(probes["gc_ms"], "cancel"))
    print("\n".join(statements.report(sql, "cancel")))
    print("\nwhere the cancel phase spent CPU, by own time (py-spy):")
    print_summary(probes["profile"])


async def _update_history(settings: Settings, order_ids: list[str]) -> dict[str, float]:
    """What the cancel's Update added to its order's history, averaged over the orders."""
    client = await temporal.connect(settings)
    try:
        accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        return await history_cost(client, order_ids, since=accepted)
    finally:
        await temporal.close(client)


async def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench servicing`."""
    profile_dir = getattr(args, "profile", None)
    # Metrics endpoints only when profiling: the calls are counted from them.
    metrics = {"dev_metrics_port": metrics_base()} if profile_dir else {}
    async with private_stack(
        "oms-bench-servicing-",
        args.keep,
        simulator=False,
        return_window_days=RETURN_WINDOW_DAYS,
        **metrics,
    ) as stack:
        settings = stack.settings
        # Warm up: one order through each change, so start-up costs are not measured.
        warm = await allocated_orders(settings, 2, 1)
        cancel_only = getattr(args, "cancel_only", False)
        await _measure_cancel(settings, [warm[0].order_id], 1)
        if not cancel_only:
            await _measure_changes(settings, warm[1:], 1)
        to_cancel = await allocated_orders(settings, args.orders, args.concurrency)
        canceled = [o.order_id for o in to_cancel]
        meter = CpuMeter({**stack.pids(), **stack.server_pids()})
        probes = Probes(stack, Path(profile_dir), top=STATEMENTS_SHOWN) if profile_dir else None
        runs, cpu, recorded = await _measure_cancel(
            settings, canceled, args.concurrency, meter, probes
        )
        if recorded:
            recorded["history"] = await _update_history(settings, canceled)
        changes: list[Run] = []
        checked: dict[str, int] = {}
        if not cancel_only:
            to_change = await allocated_orders(settings, args.orders, args.concurrency)
            changes, checked = await _measure_changes(settings, to_change, args.concurrency)
        checked = {"orders_canceled": args.orders, **checked}
        _report(
            runs + changes,
            getattr(args, "json", False),
            {
                "orders": args.orders,
                "concurrency": args.concurrency,
                "checked": checked,
                "cancel_cpu_ms": cpu,
                **({"probes": recorded} if recorded else {}),
            },
        )
    return 0
