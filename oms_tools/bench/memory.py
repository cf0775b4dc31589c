"""`oms bench memory`: the worker's resident memory with orders waiting for shipment.

`oms bench memory --orders N --concurrency C` starts a private stack with the warehouse
simulator off and a sticky cache big enough for every order, and reports the worker's RSS
(VmRSS of its process):

- **idle**: polling, before any order;
- **cached**: N sample orders submitted and ALLOCATED, every workflow waiting for its
  shipment and held in the worker's cache;
- **evicted**: the worker restarted with its sticky cache off (`OMS_WORKER_MAX_CACHED_
  WORKFLOWS=0`), then every workflow queried once, so each was replayed from its history and
  dropped again; the RSS of the fresh worker before the queries is reported too.

The issue's goal is at most 200 MiB with 1,000 orders waiting (issue 15).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from oms_platform import temporal
from oms_platform.settings import Settings
from oms_tools.bench.common import allocated_orders, drive, private_stack, rss_mib
from oms_tools.devstack.stack import Stack
from workflows.types import STATUS_QUERY, order_workflow_id

GOAL_MIB = 200
# Workflows the cached phase's cache holds beyond the orders (the warm-up's, any spare).
CACHE_SLACK = 100
# A worker whose sticky cache is off drops every workflow after each task.
EVICTED_CACHE = 0
# Let the last workflow tasks finish and the worker settle before reading its memory.
SETTLE_SECONDS = 3.0
POLLING_TIMEOUT_SECONDS = 60.0


def add_arguments(sub: Any) -> None:
    """Add `memory` to `oms bench`'s subcommands."""
    memory = sub.add_parser(
        "memory", help="worker RSS idle, with N orders waiting cached, and evicted"
    )
    memory.add_argument("--orders", type=int, default=1000)
    memory.add_argument("--concurrency", type=int, default=20)
    memory.add_argument("--keep", action="store_true", help="keep the bench's data directory")
    memory.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def worker_rss(stack: Stack) -> float:
    """RSS of the stack's worker process(es), summed, in MiB."""
    pids = stack.pids()
    return sum(rss_mib(pids[name]) for name in stack.replica_names("worker"))


async def worker_polling(client: Client, settings: Settings, stack: Stack) -> None:
    """Wait until every worker process of the stack polls the order task queue (its pid is
    in the poller's identity, the SDK's default `pid@host`), so a reading is of a worker that
    is up, not one still importing."""
    pids = stack.pids()
    wanted = {str(pids[name]) for name in stack.replica_names("worker")}
    deadline = time.monotonic() + POLLING_TIMEOUT_SECONDS
    while True:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace,
                task_queue=TaskQueue(name=settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        polling = {p.identity.partition("@")[0] for p in described.pollers}
        if wanted <= polling:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker(s) {sorted(wanted - polling)} not polling in time")
        await asyncio.sleep(0.2)


async def _settled_rss(stack: Stack) -> float:
    await asyncio.sleep(SETTLE_SECONDS)
    return worker_rss(stack)


_PHASES = (
    ("idle (before orders)", "rss_idle_mib"),
    ("cached (every workflow in the cache)", "rss_cached_mib"),
    ("restarted, cache off, before replay", "rss_restarted_mib"),
    ("evicted (every workflow replayed, dropped)", "rss_evicted_mib"),
)


def _report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print()
    print(f"worker RSS, {report['orders']} orders waiting for shipment:")
    for label, key in _PHASES:
        print(f"  {label:<44} {report[key]:>8.1f} MiB")
    print(
        f"replayed {report['orders']} workflows in {report['replay_seconds']} s; "
        f"goal: at most {GOAL_MIB} MiB (cached {report['rss_cached_mib']:.0f} MiB)"
    )
    others = ", ".join(f"{k} {v:.0f}" for k, v in report["rss_by_process_mib"].items())
    print(f"every process with the orders cached (MiB): {others}")


async def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench memory`."""
    async with private_stack(
        "oms-bench-memory-",
        args.keep,
        simulator=False,
        worker_max_cached_workflows=args.orders + CACHE_SLACK,
    ) as stack:
        settings = stack.settings
        client = await temporal.connect(settings)
        try:
            await worker_polling(client, settings, stack)
            idle = await _settled_rss(stack)
            orders = await allocated_orders(settings, args.orders, args.concurrency)
            cached = await _settled_rss(stack)
            by_process = {name: round(rss_mib(pid), 1) for name, pid in stack.pids().items()}
            for name in stack.replica_names("worker"):
                stack.restart(name, OMS_WORKER_MAX_CACHED_WORKFLOWS=str(EVICTED_CACHE))
            await worker_polling(client, settings, stack)
            restarted = await _settled_rss(stack)

            async def replay(i: int) -> None:
                handle = client.get_workflow_handle(order_workflow_id(orders[i].order_id))
                status = await handle.query(STATUS_QUERY)
                if status != "allocated":
                    raise RuntimeError(f"{orders[i].order_id}: {status!r}, not allocated")

            replay_seconds, _ = await drive(len(orders), args.concurrency, replay)
            evicted = await _settled_rss(stack)
        finally:
            await temporal.close(client)
        _report(
            {
                "orders": args.orders,
                "rss_idle_mib": round(idle, 1),
                "rss_cached_mib": round(cached, 1),
                "rss_restarted_mib": round(restarted, 1),
                "rss_evicted_mib": round(evicted, 1),
                "replay_seconds": round(replay_seconds, 2),
                "goal_mib": GOAL_MIB,
                "rss_by_process_mib": by_process,
            },
            getattr(args, "json", False),
        )
    return 0
