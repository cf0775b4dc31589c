"""Composition root of the servicing service: its schema, migrations and wiring."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform.service import ServiceContext, ServiceParts
from services.servicing.lifecycles import OrderLifecycles
from services.servicing.servicer import ServicingServicer
from services.servicing.store import ChangeStore, ProcessExceptionStore, ReturnOrderStore

SCHEMA = "servicing"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the stores, the order workflows (Temporal, connected on first use) and the
    servicer; servicing runs nothing in the background."""
    lifecycles = OrderLifecycles(
        ctx.temporal, timedelta(seconds=ctx.settings.servicing_update_timeout_seconds)
    )
    servicer = ServicingServicer(
        ProcessExceptionStore(ctx.pool),
        ReturnOrderStore(ctx.pool),
        ChangeStore(ctx.pool),
        lifecycles,
        timedelta(seconds=ctx.settings.servicing_resolution_grace_seconds),
    )
    return ServiceParts(
        registrations=[(servicing_pb2_grpc.add_ServicingServiceServicer_to_server, servicer)],
        service_names=[servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"].full_name],
        background=[],
    )
