"""Capture's composition root: its schema, migrations, servicer and outbox relay."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import structlog
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.events.v1 import events_pb2, events_pb2_grpc
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
from services.capture.events.notifications import Notifications, NotifySettings
from services.capture.events.notifications_mail import SmtpConfig, SmtpNotifier
from services.capture.events.sequencer import Sequencer, log_gauges
from services.capture.events.servicer import EventsServicer
from services.capture.events.stream import LogHub, StreamLimits
from services.capture.events.webhooks import SecretBox, WebhookAdmin
from services.capture.events.webhooks_delivery import (
    WebhookFanOut,
    WebhookSender,
    pending_gauge,
)
from services.capture.events.webhooks_rules import RetryPolicy
from services.capture.late_orders import late_orders_gauge
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
    """Completes a lifecycle payload with this deployment's durations as it starts: its
    timers, and for a subscription's cycle order the dunning schedule (other orders keep an
    empty one, so a decline cancels them at once)."""
    dunning = settings.dunning_retry_seconds  # read now: a bad setting stops capture starting

    def prepare(payload: dict[str, Any]) -> dict[str, Any]:
        timers = LifecycleTimers(
            authorization_timeout_seconds=settings.authorization_timeout_seconds,
            escalate_after_seconds=settings.escalate_after_seconds,
            return_window_seconds=settings.return_window_seconds(payload["channel"]),
            continue_as_new_after_events=settings.lifecycle_continue_as_new_after_events,
        )
        prepared = {
            **payload,
            "timers": dataclasses.asdict(timers),
            "exchange_ships_on_receipt": settings.exchange_ships_on_receipt,
        }
        if payload.get("subscription_id"):
            prepared["payment_retry_seconds"] = list(dunning)
        return prepared

    return prepare


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire capture's servicer (with stubs to the other services), its outbox relay, the event
    log's sequencer and consumers, and the hubs that feed WatchOrder and SubscribeEvents
    streams."""
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
    watchers = OrderWatchHub(ctx.listener, max_watchers=settings.watch_max_streams)
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
        pass_interval_seconds=ctx.settings.outbox_pass_interval_seconds,
        pacer=pacer,
        dead_letter_after=settings.outbox_dead_letter_after,
        on_dead_letter=dead_letters.process_exception_reporter(servicing, order_id_of_workflow),
        listener=ctx.listener,
    )

    # Shopper notifications: a consumer of the event log and a sender, on every replica.
    notifications = Notifications(
        ctx.pool,
        SmtpNotifier(SmtpConfig.from_settings(settings)),
        NotifySettings.from_settings(settings),
        listener=ctx.listener,
    )
    # The event log: its sequencer and the hub of SubscribeEvents streams (README "Events").
    sequencer = Sequencer(
        ctx.pool,
        ctx.listener,
        poll_seconds=settings.events_sequencer_poll_seconds,
        batch_size=settings.events_sequencer_batch_size,
        park_max_seconds=settings.events_park_max_seconds,
        pass_interval_seconds=settings.events_pass_interval_seconds,
    )
    log_hub = LogHub(ctx.listener, max_streams=settings.events_stream_max_streams)

    def captured(latency_seconds: float) -> None:
        pacer.observe(latency_seconds)
        relay.wake()
        sequencer.wake()  # SubmitOrder does not NOTIFY (see store.SQL_CAPTURE_ORDER)

    secrets = SecretBox(settings.codec_keys_path)
    sender = WebhookSender(
        ctx.pool,
        secrets,
        RetryPolicy(
            first_seconds=settings.webhook_retry_first_seconds,
            cap_seconds=settings.webhook_retry_max_seconds,
            period_seconds=settings.webhook_retry_period_seconds,
        ),
        timeout_seconds=settings.webhook_timeout_seconds,
        concurrency=settings.webhook_max_concurrency,
        poll_seconds=settings.webhook_poll_seconds,
    )
    fan_out = WebhookFanOut(
        ctx.pool,
        batch_size=settings.webhook_fanout_batch_size,
        poll_seconds=settings.webhook_poll_seconds,
        on_queued=sender.wake,
        listener=ctx.listener,
        pass_interval_seconds=settings.events_pass_interval_seconds,
    )

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
            (
                events_pb2_grpc.add_EventsServiceServicer_to_server,
                request_limits.guard(
                    EventsServicer(
                        ctx.pool,
                        log_hub=log_hub,
                        stream_limits=StreamLimits(
                            page_size=settings.events_stream_page_size,
                            heartbeat_seconds=settings.events_stream_heartbeat_seconds,
                            max_seconds=settings.events_stream_max_seconds,
                        ),
                        webhook_admin=WebhookAdmin(ctx.pool, secrets, sender.wake),
                    ),
                    events_pb2.DESCRIPTOR.services_by_name["EventsService"],
                ),
            ),
            dead_letters.registration(ctx.pool, SCHEMA),
        ],
        service_names=[
            capture_pb2.DESCRIPTOR.services_by_name["CaptureService"].full_name,
            events_pb2.DESCRIPTOR.services_by_name["EventsService"].full_name,
            dead_letters.SERVICE_NAME,
        ],
        background=[
            BackgroundTask(f"oms.outbox.{SCHEMA}", relay.run),
            BackgroundTask("oms.watch.capture", watchers.run),
            BackgroundTask("oms.notifications.capture", notifications.run_consumer),
            BackgroundTask("oms.notifications.capture.sender", notifications.run_sender),
            BackgroundTask("oms.events.sequencer", sequencer.run),
            BackgroundTask("oms.events.streams", log_hub.run),
            BackgroundTask("oms.webhooks.fanout", fan_out.run),
            BackgroundTask("oms.webhooks.sender", sender.run),
        ],
        gauges=[
            metrics.outbox_lag(ctx.pool, SCHEMA),
            log_gauges(ctx.pool),
            pending_gauge(ctx.pool),
            late_orders_gauge(ctx.pool),
        ],
    )
