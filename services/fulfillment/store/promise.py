"""Fulfillment's store, delivery promises: the carriers' transit times, and everything an
estimate reads in one consistent snapshot."""

from __future__ import annotations

from services.fulfillment import domain
from services.fulfillment.store.common import Conn
from services.fulfillment.store.inventory import list_locations
from services.fulfillment.store.routing import routing_snapshot

SQL_TRANSIT_TIMES = """
SELECT delivery_method, from_km, transit_days FROM transit_times
ORDER BY delivery_method, from_km"""


async def transit_table(conn: Conn) -> domain.TransitTable:
    """Transit days by delivery method and distance band."""
    rows = await conn.fetch(SQL_TRANSIT_TIMES)
    return domain.TransitTable(
        tuple(
            domain.TransitBand(row["delivery_method"], row["from_km"], row["transit_days"])
            for row in rows
        )
    )


async def promise_snapshot(conn: Conn, question: domain.DeliveryQuestion) -> domain.PromiseSnapshot:
    """Enabled locations and their stock of the question's SKUs, where its address is, every
    location's schedule and the transit times. Locks nothing: run it in a repeatable-read
    transaction so they all describe one moment."""
    lines = tuple(domain.RoutingLine("", item.sku, item.quantity) for item in question.items)
    group = domain.DeliveryGroup("", question.address, lines)
    routing = await routing_snapshot(conn, [group], lock=False)
    locations = {location.location_id: location for location in await list_locations(conn)}
    return domain.PromiseSnapshot(
        candidates=routing.candidates,
        availability=routing.availability,
        destination=routing.destinations[group.delivery_group_id],
        locations=locations,
        transit=await transit_table(conn),
    )
