"""Composition root of the servicing service: its schema, migrations and wiring (servicing
serves ServicingService and SubscriptionsService, and relays its outbox: the starts of
subscription workflows)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

from oms.capture.v1 import capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2_grpc
from oms.outbox.v1 import outbox_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc
from oms.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from oms_platform import dead_letters, metrics, request_limits
from oms_platform.outbox import OutboxRelay
from oms_platform.service import BackgroundTask, ServiceContext, ServiceParts
from services.servicing.addresses import FulfillmentRouting
from services.servicing.carrier import SimulatedCarrier
from services.servicing.deliveries import DeadLetterOwners
from services.servicing.inventory import FulfillmentInventory
from services.servicing.lifecycles import OrderLifecycles
from services.servicing.orders import CaptureOrders
from services.servicing.policy_store import ReturnLabelStore, ReturnPolicyStore
from services.servicing.returns import Returns
from services.servicing.servicer import ServicingServicer
from services.servicing.store import ChangeStore, ProcessExceptionStore, ReturnOrderStore
from services.servicing.subscription_servicer import SubscriptionsServicer
from services.servicing.subscription_store import SubscriptionStore
from services.servicing.subscription_workflows import SubscriptionWorkflows

SCHEMA = "servicing"
MIGRATIONS = Path(__file__).parent / "migrations"
# Capture answers GetOrder within its get_order_deadline_seconds (late sections are left
# out); asking whether an order exists allows that and this much more.
CAPTURE_DEADLINE_MARGIN_SECONDS = 1.0


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the stores, the order workflows (Temporal, connected on first use, and capture,
    asked about orders Temporal has no workflow for), the services holding dead letters, the
    servicers, and the outbox relay that starts subscription workflows; in the background
    servicing also refreshes its metrics (exceptions open, outbox lag)."""
    # Stubs on grpc.aio channels are the async stubs.
    capture = cast(
        "capture_pb2_grpc.CaptureServiceAsyncStub",
        capture_pb2_grpc.CaptureServiceStub(ctx.channel("capture")),
    )
    orders = CaptureOrders(
        capture, ctx.settings.get_order_deadline_seconds + CAPTURE_DEADLINE_MARGIN_SECONDS
    )
    lifecycles = OrderLifecycles(
        ctx.temporal, timedelta(seconds=ctx.settings.servicing_update_timeout_seconds), orders
    )
    exceptions = ProcessExceptionStore(ctx.pool)
    # Return labels come from the simulated carrier (the only carrier adapter so far); its
    # parcels are in its own schema, where tests and the dev stack move them.
    carrier = SimulatedCarrier(ctx.settings.dsn)
    ctx.on_close(carrier.close)
    fulfillment = cast(
        "fulfillment_pb2_grpc.FulfillmentServiceAsyncStub",
        fulfillment_pb2_grpc.FulfillmentServiceStub(ctx.channel("fulfillment")),
    )
    return_cases = Returns(
        changes=ChangeStore(ctx.pool),
        returns=ReturnOrderStore(ctx.pool),
        lifecycles=lifecycles,
        policies=ReturnPolicyStore(ctx.pool),
        labels=ReturnLabelStore(ctx.pool),
        carrier=carrier,
        inventory=FulfillmentInventory(fulfillment, ctx.settings.servicing_update_timeout_seconds),
        order_skus=orders,
    )

    async def exceptions_open() -> None:
        metrics.set_exceptions_open(await exceptions.open_by_category())

    servicer = ServicingServicer(
        exceptions,
        timedelta(seconds=ctx.settings.servicing_resolution_grace_seconds),
        orders,
        # The services with an outbox, whose dead letters delivery failures name.
        DeadLetterOwners(
            {
                name: outbox_pb2_grpc.OutboxServiceStub(ctx.channel(name))
                for name in ("capture", "fulfillment")
            }
        ),
        return_cases,
        FulfillmentRouting(fulfillment, ctx.settings.servicing_update_timeout_seconds),
    )
    settings = ctx.settings
    # Starts each new subscription's workflow (written with the subscription). No process
    # exception is raised for a dead letter here: they name no order; admins see them with
    # `oms outbox list --service servicing`.
    relay = OutboxRelay(
        ctx.pool,
        SCHEMA,
        ctx.temporal,
        settings.task_queue,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        pass_interval_seconds=settings.outbox_pass_interval_seconds,
        dead_letter_after=settings.outbox_dead_letter_after,
        listener=ctx.listener,
    )
    subscriptions = SubscriptionsServicer(
        SubscriptionStore(ctx.pool),
        SubscriptionWorkflows(
            ctx.temporal, timedelta(seconds=settings.servicing_update_timeout_seconds)
        ),
        spread_seconds=settings.subscription_spread_seconds,
        minute_cadence=settings.subscription_minute_cadence,
        on_enqueued=relay.wake,
    )
    servicing_service = servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"]
    subscriptions_service = subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionsService"]
    return ServiceParts(
        registrations=[
            (
                servicing_pb2_grpc.add_ServicingServiceServicer_to_server,
                request_limits.guard(servicer, servicing_service),
            ),
            (
                subscriptions_pb2_grpc.add_SubscriptionsServiceServicer_to_server,
                request_limits.guard(subscriptions, subscriptions_service),
            ),
            dead_letters.registration(ctx.pool, SCHEMA),
        ],
        service_names=[
            servicing_service.full_name,
            subscriptions_service.full_name,
            dead_letters.SERVICE_NAME,
        ],
        background=[BackgroundTask(f"oms.outbox.{SCHEMA}", relay.run)],
        gauges=[exceptions_open, metrics.outbox_lag(ctx.pool, SCHEMA)],
    )
