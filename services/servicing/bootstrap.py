"""Composition root of the servicing service: its schema, migrations and wiring."""

from __future__ import annotations

from pathlib import Path

from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform.service import ServiceContext, ServiceParts
from services.servicing.servicer import ServicingServicer
from services.servicing.store import ProcessExceptionStore

SCHEMA = "servicing"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the store and servicer; servicing runs nothing in the background (yet)."""
    servicer = ServicingServicer(ProcessExceptionStore(ctx.pool))
    return ServiceParts(
        registrations=[(servicing_pb2_grpc.add_ServicingServiceServicer_to_server, servicer)],
        service_names=[servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"].full_name],
        background=[],
    )
