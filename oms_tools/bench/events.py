"""`oms bench events`: what following the event log costs the order path, and how fast and how
late events reach their consumers.

`oms bench events --orders N --concurrency C --subscribers S --webhooks W` starts one private
stack (as `oms bench lifecycle` does) and drives N orders to delivery twice, with the same
concurrency: once with nobody reading the log (the reference; capture writes and sequences it
either way), once with consumers: S SubscribeEvents streams following the whole log from
sequence 1 (agents and services in turn, each checking that every sequence follows the last)
and W webhook subscriptions to every type, delivering to a receiver in the bench's process
that answers 200 and verifies a sample of signatures.

Neither run is favoured by going first (a warmer stack) or last (a bigger database): each is
split in halves run as reference, consumers, consumers, reference (ABBA), and each run's
orders/s is its two halves' orders over their seconds. Before the consumers' halves the
streams catch up with the log (history is not timed); after them the bench waits until every
stream has read, and the receiver has got, every event of the run, then removes the webhooks
and closes the streams before the last reference half.

Reported: orders/s (and /min) of each run and the consumers' cost, `1 - with/without`;
events/s through each stream and in all, and webhook deliveries/s, while the consumers' halves
ran; the lag from an event's `occurred_at` to its arrival, p50 and p99, for the streams and
for webhooks; events per order. The bench fails (exit 1, after its report) if a stream saw a
gap, an event did not reach a webhook or a signature did not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from oms_platform import auth, temporal
from oms_platform.settings import Settings
from oms_tools.bench.common import Run, percentile_ms, private_stack
from oms_tools.bench.consumers import (
    StreamFollower,
    WebhookReceiver,
    add_webhooks,
    remove_webhooks,
    settled_head,
)
from oms_tools.bench.lifecycle import lifecycle_phase

# The roles the streams follow the log as, in turn (both see every channel).
STREAM_ROLES = (auth.AGENT, auth.SERVICE)
# How long streams may take to catch up with the log, or to read the last events of the run.
CATCH_UP_SECONDS = 120.0
# The receiver is waited for while deliveries keep arriving; this long without one, the rest
# are reported missing.
DELIVERY_STALL_SECONDS = 60.0
# The cost of consumers the issue aims under.
COST_GOAL = 0.10


def add_arguments(sub: Any) -> None:
    """Add `events` to `oms bench`'s subcommands."""
    parser = sub.add_parser(
        "events",
        help="lifecycle throughput with SubscribeEvents streams and webhooks following the log "
        "vs without; event and webhook rates and lag",
    )
    parser.add_argument("--orders", type=int, default=200, help="orders per run (at least 2)")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--subscribers", type=int, default=4, help="SubscribeEvents streams")
    parser.add_argument("--webhooks", type=int, default=2, help="webhook subscriptions")
    parser.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def _joined(name: str, halves: list[Run]) -> Run:
    """One run of two halves: their orders over their seconds."""
    return Run(
        name,
        sum(h.count for h in halves),
        sum(h.seconds for h in halves),
        [latency for h in halves for latency in h.latencies],
    )


async def _wait_until(
    done: Callable[[], bool], seconds: float, what: str, tasks: list[asyncio.Task[None]]
) -> None:
    """Wait until `done()`; RuntimeError after `seconds`, or as soon as a consumer failed."""
    deadline = time.monotonic() + seconds
    while not done():
        for task in tasks:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError(f"a stream ended while waiting until {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} after {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def _all_delivered(receiver: WebhookReceiver, upto: int) -> None:
    """Wait until every hook has every event through `upto`, or deliveries stall."""
    seen, stalled_since = -1, time.monotonic()
    while any(hook.missing(upto) for hook in receiver.hooks):
        count = sum(len(hook.sequences) for hook in receiver.hooks)
        if count != seen:
            seen, stalled_since = count, time.monotonic()
        elif time.monotonic() - stalled_since > DELIVERY_STALL_SECONDS:
            return
        await asyncio.sleep(0.05)


@dataclass
class Measured:
    """The consumers' run: its halves and orders, when it ran (wall clock), and the stretch of
    the log it wrote (first and last sequence)."""

    halves: list[Run]
    order_ids: list[str]
    began: float
    ended: float
    first_sequence: int
    last_sequence: int


async def _consumers_run(
    settings: Settings,
    client: Client,
    halves: tuple[int, int],
    concurrency: int,
    followers: list[StreamFollower],
    receiver: WebhookReceiver,
    webhooks: int,
) -> Measured:
    """Start the consumers, run their halves, wait until they have every event, remove them."""
    quiet = max(1.0, 4 * settings.events_sequencer_poll_seconds)
    start_head = await settled_head(settings, quiet)
    for follower in followers:
        follower.arrivals.measure_from = start_head
    tasks = [asyncio.create_task(f.run()) for f in followers]
    try:
        await add_webhooks(settings, receiver, webhooks)
        for hook in receiver.hooks:
            hook.arrivals.measure_from = start_head
        await _wait_until(
            lambda: all(f.last_sequence >= start_head for f in followers),
            CATCH_UP_SECONDS,
            "every stream caught up with the log",
            tasks,
        )
        began = time.time()
        runs, order_ids = [], []
        for count in halves:
            run, ids, _ = await lifecycle_phase(settings, client, count, concurrency)
            runs.append(run)
            order_ids += ids
        ended = time.time()
        last = await settled_head(settings, quiet)
        measured = Measured(runs, order_ids, began, ended, start_head + 1, last)
        await _wait_until(
            lambda: all(f.last_sequence >= measured.last_sequence for f in followers),
            CATCH_UP_SECONDS,
            "every stream read the run's events",
            tasks,
        )
        await _all_delivered(receiver, measured.last_sequence)
        await remove_webhooks(settings, receiver)
        return measured
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def _results(
    without: Run, measured: Measured, followers: list[StreamFollower], receiver: WebhookReceiver
) -> dict[str, Any]:
    with_consumers = _joined("with consumers", measured.halves)
    cost = 1 - with_consumers.per_second / without.per_second if without.per_second else 0.0
    window = measured.ended - measured.began
    per_stream = [
        _rate(f.arrivals.between(measured.began, measured.ended), window) for f in followers
    ]
    stream_lags = [lag for f in followers for lag in f.arrivals.lags]
    hook_lags = [lag for h in receiver.hooks for lag in h.arrivals.lags]
    deliveries = sum(h.arrivals.between(measured.began, measured.ended) for h in receiver.hooks)
    events = measured.last_sequence - measured.first_sequence + 1
    # Counted by a stream, by order, when there is one; else the run's stretch of the log.
    if followers and measured.order_ids:
        counted = sum(followers[0].arrivals.per_order[o] for o in measured.order_ids)
        per_order = counted / len(measured.order_ids)
    else:
        per_order = events / with_consumers.count if with_consumers.count else 0.0
    return {
        "runs": [without.as_dict(), with_consumers.as_dict()],
        "orders_per_second_without": round(without.per_second, 2),
        "orders_per_second_with": round(with_consumers.per_second, 2),
        "orders_per_min_without": round(without.per_second * 60, 1),
        "orders_per_min_with": round(with_consumers.per_second * 60, 1),
        "consumer_cost": round(cost, 4),
        "events": events,
        "events_per_order": round(per_order, 2),
        "events_per_second": round(sum(per_stream), 2),
        "events_per_second_per_stream": per_stream,
        "lag_p50_ms": round(percentile_ms(stream_lags, 0.5), 1),
        "lag_p99_ms": round(percentile_ms(stream_lags, 0.99), 1),
        "webhook_deliveries": sum(len(h.delivery_ids) for h in receiver.hooks),
        "webhook_deliveries_per_second": _rate(deliveries, window),
        "webhook_lag_p50_ms": round(percentile_ms(hook_lags, 0.5), 1),
        "webhook_lag_p99_ms": round(percentile_ms(hook_lags, 0.99), 1),
        "checked": {
            "events_per_stream": [f.received for f in followers],
            "gaps": sum(len(f.gaps) for f in followers),
            "webhook_missing": sum(h.missing(measured.last_sequence) for h in receiver.hooks),
            "webhook_duplicates": sum(h.duplicates for h in receiver.hooks),
            "signatures_verified": sum(h.verified for h in receiver.hooks),
            "signatures_bad": sum(h.bad_signatures for h in receiver.hooks),
        },
    }


def _problems(results: dict[str, Any], followers: list[StreamFollower]) -> list[str]:
    checked = results["checked"]
    found = [f"stream {i}: gap {g}" for i, f in enumerate(followers) for g in f.gaps[:3]]
    if checked["webhook_missing"]:
        found.append(f"{checked['webhook_missing']} webhook deliveries never arrived")
    if checked["signatures_bad"]:
        found.append(f"{checked['signatures_bad']} webhook signatures did not verify")
    return found


def _print(report: dict[str, Any]) -> None:
    without, with_consumers = report["runs"]
    print()
    print(f"{'run (two halves each, ABBA)':<48} {'orders/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    names = (
        "without consumers",
        f"with {report['subscribers']} streams, {report['webhooks']} webhooks",
    )
    for name, run in zip(names, (without, with_consumers), strict=True):
        print(f"{name:<48} {run['per_second']:>9} {run['p50_ms']:>9} {run['p99_ms']:>9}")
    cost = report["consumer_cost"]
    verdict = "within" if cost < COST_GOAL else "over"
    print(
        f"\nconsumer cost = 1 - with/without = {cost:.1%} ({verdict} the {COST_GOAL:.0%} goal; "
        f"{report['orders_per_min_with']} vs {report['orders_per_min_without']} orders/min)"
    )
    print(f"events: {report['events']} in the run, {report['events_per_order']} per order")
    per_stream = ", ".join(f"{r:g}" for r in report["events_per_second_per_stream"])
    print(
        f"SubscribeEvents: {report['events_per_second']} events/s in all ({per_stream} per "
        f"stream), lag p50 {report['lag_p50_ms']} ms, p99 {report['lag_p99_ms']} ms"
    )
    checked = report["checked"]
    print(
        f"webhooks: {report['webhook_deliveries_per_second']} deliveries/s, lag p50 "
        f"{report['webhook_lag_p50_ms']} ms, p99 {report['webhook_lag_p99_ms']} ms; "
        f"{report['webhook_deliveries']} delivered, {checked['webhook_missing']} missing, "
        f"{checked['signatures_verified']} signatures verified"
    )


async def run(args: argparse.Namespace) -> int:
    """`oms bench events`."""
    if args.orders < 2:
        print(
            "oms bench events: --orders must be at least 2 (each run is two halves)",
            file=sys.stderr,
        )
        return 2
    first, second = args.orders // 2, args.orders - args.orders // 2
    async with private_stack("oms-bench-events-", args.keep) as stack:
        settings = stack.settings
        client = await temporal.connect(settings)
        receiver = WebhookReceiver()
        await receiver.start()
        followers = [
            StreamFollower(settings, STREAM_ROLES[i % len(STREAM_ROLES)])
            for i in range(args.subscribers)
        ]
        try:
            # Warm up: one order end to end, so start-up costs are not measured.
            await lifecycle_phase(settings, client, 1, 1)
            without_a, _, _ = await lifecycle_phase(settings, client, first, args.concurrency)
            measured = await _consumers_run(
                settings,
                client,
                (second, first),
                args.concurrency,
                followers,
                receiver,
                args.webhooks,
            )
            without_b, _, _ = await lifecycle_phase(settings, client, second, args.concurrency)
        finally:
            await receiver.stop()
            await temporal.close(client)
    without_a.name, without_b.name = "without consumers, 1st half", "without consumers, 2nd half"
    for n, half in enumerate(measured.halves):
        half.name = f"with consumers, {('1st', '2nd')[n]} half"
    report = {
        "orders": args.orders,
        "concurrency": args.concurrency,
        "subscribers": args.subscribers,
        "webhooks": args.webhooks,
        **_results(
            _joined("without consumers", [without_a, without_b]), measured, followers, receiver
        ),
        # In the order they ran.
        "halves": [r.as_dict() for r in (without_a, *measured.halves, without_b)],
    }
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    problems = _problems(report, followers)
    for problem in problems:
        print(f"oms bench events: {problem}", file=sys.stderr)
    return 1 if problems else 0
