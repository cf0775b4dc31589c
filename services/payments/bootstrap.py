"""Composition root of the payments service: its schema, migrations, gateway and servicer."""

from __future__ import annotations

from pathlib import Path

from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform.service import ServiceContext, ServiceParts
from oms_platform.settings import Settings
from services.payments.gateway import PaymentGateway, SimulatedGateway
from services.payments.servicer import PaymentsServicer

SCHEMA = "payments"
MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name


def make_gateway(settings: Settings) -> PaymentGateway:
    """The payment gateway adapter these settings call for (today: the simulated one)."""
    return SimulatedGateway(
        latency_ms=settings.gateway_latency_ms,
        decline_above_minor=settings.gateway_decline_above_minor,
        transient_failure_rate=settings.gateway_transient_failure_rate,
    )


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the gateway and the servicer over the service's pool."""
    servicer = PaymentsServicer(
        ctx.pool, make_gateway(ctx.settings), hold_hours=ctx.settings.authorization_hold_hours
    )
    return ServiceParts(
        registrations=[(payments_pb2_grpc.add_PaymentsServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
