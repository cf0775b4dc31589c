"""Capture's composition root: its schema, migrations, servicer and outbox relay."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import structlog
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform import dead_letters, metrics, request_limits
from oms_platform.outbox import OutboxRelay
from oms_platform.pacing import FrontDoorPacer, PacerSettings
from oms_platform.service import BackgroundTask, ServiceContext, ServiceParts
from oms_platform.settings import Settings
from services.capture.domain import FraudPolicy
from services.capture.erasure import Eraser
from services.capture.servicer import CaptureServicer
from services.capture.watch import OrderWatchHub
from workflows import visibility
from workflows.types import (
    PROCESSING,
    LifecycleTimers,
    order_id_of_workflow,
)

SCHEMA = "capture"
MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger("oms.capture")


def shredder(ctx: ServiceContext) -> Callable[[Sequence[str]], Awaitable[None]]:
    """Destroys the Temporal payload keys of these workflows (crypto-shredding): their
    histories decode nowhere any more."""

    async def shred(subjects: Sequence[str]) -> None:
        vault = (await ctx.codec()).vault
        assert vault is not None
        await vault.shred(subjects)

    return shred


def lifecycle_start_options(payload: dict[str, Any]) -> dict[str, Any]:
    """How a new lifecycle shows in the Temporal UI: its search attributes (processing, on the
    order's channel, its total, not on hold) and its summary and details (nothing personal)."""
    return {
        "search_attributes": visibility.search_attributes(
            status=PROCESSING,
            channel=payload["channel"],
            total_minor=payload["grand_total_minor"],
            currency=payload["currency"],
            on_hold=False,
            location_ids=[],
        ),
        "static_summary": visibility.order_summary(
            payload.get("channel_order_ref", ""),
            payload["channel"],
            payload["grand_total_minor"],
            payload["currency"],
        ),
        "static_details": visibility.order_details(payload),
    }


def lifecycle_timers(settings: Settings) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Completes a lifecycle payload with this deployment's durations as it starts."""

    def prepare(payload: dict[str, Any]) -> dict[str, Any]:
        timers = LifecycleTimers(
            authorization_timeout_seconds=settings.authorization_timeout_seconds,
            escalate_after_seconds=settings.escalate_after_seconds,
            return_window_seconds=settings.return_window_seconds(payload["channel"]),
            continue_as_new_after_events=settings.lifecycle_continue_as_new_after_events,
        )
        return {
            **payload,
            "timers": dataclasses.asdict(timers),
            "exchange_ships_on_receipt": settings.exchange_ships_on_receipt,
        }

    return prepare


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire capture's servicer (with stubs to the other services), its outbox relay and the
    listener that feeds WatchOrder streams."""
    # Stubs on grpc.aio channels are the async stubs.
    fulfillment = cast(
        "fulfillment_pb2_grpc.FulfillmentServiceAsyncStub",
        fulfillment_pb2_grpc.FulfillmentServiceStub(ctx.channel("fulfillment")),
    )
    payments = cast(
        "payments_pb2_grpc.PaymentsServiceAsyncStub",
        payments_pb2_grpc.PaymentsServiceStub(ctx.channel("payments")),
    )
    servicing = cast(
        "servicing_pb2_grpc.ServicingServiceAsyncStub",
        servicing_pb2_grpc.ServicingServiceStub(ctx.channel("servicing")),
    )
    settings = ctx.settings
    watchers = OrderWatchHub(settings.dsn, max_watchers=settings.watch_max_streams)
    pacer = FrontDoorPacer(
        PacerSettings(
            target_seconds=settings.ingest_latency_target_ms / 1000,
            floor_per_second=settings.lifecycle_starts_floor_per_second,
        )
    )
    relay = OutboxRelay(
        ctx.pool,
        SCHEMA,
        ctx.temporal,
        ctx.settings.task_queue,
        start_options=lifecycle_start_options,
        prepare_start=lifecycle_timers(ctx.settings),
        batch_size=ctx.settings.outbox_batch_size,
        poll_seconds=ctx.settings.outbox_poll_seconds,
        pacer=pacer,
        dead_letter_after=settings.outbox_dead_letter_after,
        on_dead_letter=dead_letters.process_exception_reporter(servicing, order_id_of_workflow),
    )

    def captured(latency_seconds: float) -> None:
        pacer.observe(latency_seconds)
        relay.wake()

    servicer = CaptureServicer(
        ctx.pool,
        fulfillment=fulfillment,
        payments=payments,
        servicing=servicing,
        get_order_deadline_seconds=settings.get_order_deadline_seconds,
        fraud_policy=FraudPolicy(
            amount_threshold_minor=settings.fraud_amount_threshold_minor,
            max_orders_per_shopper_per_hour=settings.fraud_max_orders_per_shopper_per_hour,
            flag_country_mismatch=settings.fraud_flag_country_mismatch,
        ),
        watchers=watchers,
        watch_seconds=settings.watch_max_seconds,
        on_captured=captured,
        eraser=Eraser(
            ctx.pool,
            fulfillment=fulfillment,
            payments=payments,
            servicing=servicing,
            temporal=ctx.temporal,
            shred=shredder(ctx),
        ),
    )
    return ServiceParts(
        registrations=[
            (
                capture_pb2_grpc.add_CaptureServiceServicer_to_server,
                request_limits.guard(
                    servicer, capture_pb2.DESCRIPTOR.services_by_name["CaptureService"]
                ),
            ),
            dead_letters.registration(ctx.pool, SCHEMA),
        ],
        service_names=[
            capture_pb2.DESCRIPTOR.services_by_name["CaptureService"].full_name,
            dead_letters.SERVICE_NAME,
        ],
        background=[
            BackgroundTask(f"oms.outbox.{SCHEMA}", relay.run),
            BackgroundTask("oms.watch.capture", watchers.run),
        ],
        gauges=[metrics.outbox_lag(ctx.pool, SCHEMA)],
    )
