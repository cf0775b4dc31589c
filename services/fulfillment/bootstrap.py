"""Composition root of fulfillment: its schema, migrations, servicer and outbox relay."""

from __future__ import annotations

from pathlib import Path

from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc

from oms_platform import request_limits
from oms_platform.outbox import OutboxRelay
from oms_platform.service import ServiceContext, ServiceParts
from services.fulfillment.domain import RoutingPolicy
from services.fulfillment.servicer import FulfillmentServicer

SCHEMA = "fulfillment"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the servicer to the pool and its routing policy, and relay fulfillment events
    (shipped, delivered, rejected, moved) to the order workflows.

    A merchant's routing rules go here: `RoutingPolicy(rules=(SameDayFromStores(), ...))`.
    """
    policy = RoutingPolicy(max_splits=ctx.settings.routing_max_splits)
    servicer = FulfillmentServicer(ctx.pool, policy)
    relay = OutboxRelay(
        ctx.pool,
        SCHEMA,
        ctx.temporal,
        ctx.settings.task_queue,
        batch_size=ctx.settings.outbox_batch_size,
        poll_seconds=ctx.settings.outbox_poll_seconds,
    )
    return ServiceParts(
        registrations=[
            (
                fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server,
                request_limits.guard(
                    servicer, fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"]
                ),
            )
        ],
        service_names=[fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name],
        background=[relay.run],
    )
