"""`oms bench …`, its subcommands and their dispatch: benchmarks that start their own private
stack and report ratios against a baseline measured in the same run.

- `oms bench lifecycle` (lifecycle.py): orders through the whole lifecycle vs a no-op workflow.
- `oms bench capture` / `reads` (capture.py): SubmitOrder throughput and read latency.
- `oms bench routing` (routing.py): routing alone (pure domain), and with recipients located
  among every US ZIP in Postgres.
- `oms bench servicing` (servicing.py): change round trips through Temporal Updates.
- `oms bench memory` (memory.py): the worker's RSS with orders waiting, cached and evicted.
- `oms bench events` (events.py): lifecycle throughput with event-log consumers vs without;
  event and webhook rates and lag.
- `oms bench subscriptions` (subscriptions.py): N subscriptions, one cycle due for all at once.
"""

from __future__ import annotations

import argparse

from oms_tools.bench import (
    capture,
    events,
    lifecycle,
    memory,
    routing,
    servicing,
    subscriptions,
)


def _at_least_one(text: str) -> int:
    """A count of 1 or more (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands of `oms bench`."""
    sub = parser.add_subparsers(dest="bench", required=True)
    lifecycle_parser = sub.add_parser(
        "lifecycle", help="orders through the whole lifecycle vs a no-op baseline"
    )
    lifecycle_parser.add_argument("--orders", type=int, default=200)
    lifecycle_parser.add_argument("--concurrency", type=int, default=20)
    lifecycle_parser.add_argument(
        "--keep", action="store_true", help="keep the bench's data directory"
    )
    lifecycle_parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )
    lifecycle_parser.add_argument(
        "--split-every",
        type=int,
        default=3,
        help="every Nth order ships from two warehouses (split shipment); 0 = never",
    )
    lifecycle_parser.add_argument(
        "--rounds",
        type=_at_least_one,
        default=1,
        help="measure the lifecycle and the baseline this many times, alternating, and report "
        "each round and the median ratio (the machine's drift falls on both sides)",
    )
    lifecycle_parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record a py-spy profile of the worker and each service during the measured "
        "phase into DIR (speedscope files) and print the top functions by own time",
    )
    capture.add_arguments(sub)
    routing_parser = sub.add_parser(
        "routing",
        help="routing latency of a big order (pure domain), and of orders to 10,000 real ZIPs "
        "located in Postgres, vs a trivial one",
    )
    routing.add_arguments(routing_parser)
    servicing.add_arguments(sub)
    memory.add_arguments(sub)
    events.add_arguments(sub)
    subscriptions.add_arguments(sub)


async def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench`."""
    if args.bench in capture.COMMANDS:
        return await capture.run(args)
    if args.bench == "routing":
        return await routing.run(args)
    if args.bench == "servicing":
        return await servicing.run(args)
    if args.bench == "memory":
        return await memory.run(args)
    if args.bench == "events":
        return await events.run(args)
    if args.bench == "subscriptions":
        return await subscriptions.run(args)
    return await lifecycle.run(args)
