"""Composition root of the servicing service: its schema, migrations and wiring."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

from oms.capture.v1 import capture_pb2_grpc
from oms.outbox.v1 import outbox_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform import metrics, request_limits
from oms_platform.service import ServiceContext, ServiceParts
from services.servicing.deliveries import DeadLetterOwners
from services.servicing.lifecycles import OrderLifecycles
from services.servicing.orders import CaptureOrders
from services.servicing.servicer import ServicingServicer
from services.servicing.store import ChangeStore, ProcessExceptionStore, ReturnOrderStore

SCHEMA = "servicing"
MIGRATIONS = Path(__file__).parent / "migrations"
# Capture answers GetOrder within its get_order_deadline_seconds (late sections are left
# out); asking whether an order exists allows that and this much more.
CAPTURE_DEADLINE_MARGIN_SECONDS = 1.0


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the stores, the order workflows (Temporal, connected on first use, and capture,
    asked about orders Temporal has no workflow for), the services holding dead letters, and
    the servicer; in the background servicing only refreshes its metrics (exceptions open)."""
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

    async def exceptions_open() -> None:
        metrics.set_exceptions_open(await exceptions.open_by_category())

    servicer = ServicingServicer(
        exceptions,
        ReturnOrderStore(ctx.pool),
        ChangeStore(ctx.pool),
        lifecycles,
        timedelta(seconds=ctx.settings.servicing_resolution_grace_seconds),
        orders,
        # The services with an outbox, whose dead letters delivery failures name.
        DeadLetterOwners(
            {
                name: outbox_pb2_grpc.OutboxServiceStub(ctx.channel(name))
                for name in ("capture", "fulfillment")
            }
        ),
    )
    return ServiceParts(
        registrations=[
            (
                servicing_pb2_grpc.add_ServicingServiceServicer_to_server,
                request_limits.guard(
                    servicer, servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"]
                ),
            )
        ],
        service_names=[servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"].full_name],
        background=[],
        gauges=[exceptions_open],
    )
