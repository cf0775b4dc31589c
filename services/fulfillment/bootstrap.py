"""Composition root of fulfillment: its schema, migrations, servicer and outbox relay."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import structlog
from google.protobuf import json_format
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform import dead_letters, limits, metrics, request_limits
from oms_platform.db import DB_AWAY
from oms_platform.outbox import RPC_TIMEOUT, EventSink, OutboxRelay
from oms_platform.passes import Pacing, run_passes
from oms_platform.service import BackgroundTask, ServiceContext, ServiceParts
from services.fulfillment import handlers
from services.fulfillment.calendars import PublicHolidays
from services.fulfillment.domain import RoutingPolicy
from services.fulfillment.servicer import FulfillmentServicer
from workflows.types import order_id_of_workflow

log = structlog.get_logger("oms.fulfillment")

SCHEMA = "fulfillment"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the servicer to the pool and its routing policy, sweep expired checkout
    reservations and pickups not collected in time, and relay fulfillment events (shipped,
    delivered, rejected, moved, not collected) to the order workflows and the changes they are
    not told of (accepted, picked, packed, ready for pickup) to capture's event log; a row
    refused for good becomes a process exception in servicing.

    A merchant's routing rules go here: `RoutingPolicy(rules=(SameDayFromStores(), ...))`;
    delivery promises count business days with the `holidays` package's public holidays.
    """
    # Stubs on grpc.aio channels are the async stubs.
    servicing = cast(
        "servicing_pb2_grpc.ServicingServiceAsyncStub",
        servicing_pb2_grpc.ServicingServiceStub(ctx.channel("servicing")),
    )
    capture = capture_pb2_grpc.CaptureServiceStub(ctx.channel("capture"))
    policy = RoutingPolicy(max_splits=ctx.settings.routing_max_splits)
    servicer = FulfillmentServicer(
        ctx.pool,
        policy,
        PublicHolidays(),
        ctx.settings.pickup_collect_within_seconds,
    )
    relay = OutboxRelay(
        ctx.pool,
        SCHEMA,
        ctx.temporal,
        ctx.settings.task_queue,
        batch_size=ctx.settings.outbox_batch_size,
        poll_seconds=ctx.settings.outbox_poll_seconds,
        pass_interval_seconds=ctx.settings.outbox_pass_interval_seconds,
        dead_letter_after=ctx.settings.outbox_dead_letter_after,
        on_dead_letter=dead_letters.process_exception_reporter(servicing, order_id_of_workflow),
        event_sink=capture_event_sink(capture),
        listener=ctx.listener,
    )
    return ServiceParts(
        registrations=[
            (
                fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server,
                request_limits.guard(
                    servicer, fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"]
                ),
            ),
            dead_letters.registration(ctx.pool, SCHEMA),
        ],
        service_names=[
            fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name,
            dead_letters.SERVICE_NAME,
        ],
        background=[
            BackgroundTask(f"oms.outbox.{SCHEMA}", relay.run),
            BackgroundTask(
                "oms.reservations.sweeper",
                sweeper(
                    "reservation sweeper",
                    handlers.release_expired_reservations,
                    ctx.pool,
                    ctx.settings.reservation_sweep_seconds,
                    "expired checkout reservations released",
                ),
            ),
            BackgroundTask(
                "oms.pickups.sweeper",
                sweeper(
                    "pickup sweeper",
                    handlers.cancel_uncollected_pickups,
                    ctx.pool,
                    ctx.settings.pickup_sweep_seconds,
                    "pickups not collected in time canceled",
                ),
            ),
        ],
        gauges=[metrics.outbox_lag(ctx.pool, SCHEMA)],
    )


# Expired reservations released per transaction by the sweeper.
SWEEP_BATCH = 500


def sweeper(
    name: str,
    sweep: Callable[[asyncpg.Pool, int], Awaitable[int]],
    pool: asyncpg.Pool,
    every_seconds: float,
    swept: str,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A background task running `sweep` (one batch of SWEEP_BATCH in a transaction) on
    oms_platform.passes' loop: batch after batch while they come full, then every
    `every_seconds`; backing off while Postgres is away. It runs on every replica: each skips
    the rows another is sweeping. `swept` is logged with how many a batch took."""

    async def one_pass() -> bool:
        count = await sweep(pool, SWEEP_BATCH)
        if count:
            log.info(swept, count=count)
        return count == SWEEP_BATCH

    async def run() -> None:
        await run_passes(name, one_pass, asyncio.Event(), Pacing(every_seconds), DB_AWAY)

    return run


def capture_event_sink(stub: Any, timeout: timedelta = RPC_TIMEOUT) -> EventSink:
    """The relay's EventSink: capture's RecordOrderEvents with `stub` (a CaptureService stub
    on an authenticated channel), at most limits.MAX_RECORDED_EVENTS events a call."""

    async def send(payloads: Sequence[Any]) -> None:
        events = [json_format.ParseDict(p, events_pb2.Event()) for p in payloads]
        for start in range(0, len(events), limits.MAX_RECORDED_EVENTS):
            chunk = events[start : start + limits.MAX_RECORDED_EVENTS]
            await stub.RecordOrderEvents(
                capture_pb2.RecordOrderEventsRequest(events=chunk),
                timeout=timeout.total_seconds(),
            )

    return send
