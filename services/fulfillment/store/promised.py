"""Fulfillment's store, the promise a fulfillment order carries: the route each one takes
(its location, its delivery group's method and address, where that address is, a pickup's
store), and the promised delivery date kept on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from services.fulfillment import domain
from services.fulfillment.store.common import Conn, postal_address
from services.fulfillment.store.inventory import get_location
from services.fulfillment.store.routing import coordinates_of

# Each fulfillment order with its pickup store ('' unless a pickup) and its delivery group's
# method and address (a group routed before addresses were kept has none: no method, no
# address).
SQL_ROUTES = """
SELECT fo.id, fo.location_id, fo.pickup_location_id,
       coalesce(g.delivery_method, '') AS delivery_method,
       coalesce(g.address_line1, '') AS address_line1,
       coalesce(g.address_line2, '') AS address_line2, coalesce(g.city, '') AS city,
       coalesce(g.region, '') AS region, coalesce(g.postal_code, '') AS postal_code,
       coalesce(g.country_code, '') AS country_code
FROM fulfillment_orders fo
LEFT JOIN delivery_groups g
       ON g.order_id = fo.order_id AND g.delivery_group_id = fo.delivery_group_id
WHERE fo.id = ANY($1::text[])"""

SQL_SET_PROMISED = """
UPDATE fulfillment_orders AS fo SET promised_delivery_date = p.day
FROM unnest($1::text[], $2::date[]) AS p (id, day)
WHERE fo.id = p.id"""


async def routes(conn: Conn, fulfillment_order_ids: Sequence[str]) -> dict[str, domain.Route]:
    """The route of each fulfillment order named (those whose location or pickup store is
    gone are left out); each location is read and each address located once."""
    rows = await conn.fetch(SQL_ROUTES, list(fulfillment_order_ids))
    locations: dict[str, domain.Location | None] = {}
    destinations: dict[domain.PostalAddress, domain.Coordinates | None] = {}

    async def location_of(location_id: str) -> domain.Location | None:
        if location_id not in locations:
            locations[location_id] = await get_location(conn, location_id)
        return locations[location_id]

    out: dict[str, domain.Route] = {}
    for row in rows:
        location = await location_of(row["location_id"])
        store_id = row["pickup_location_id"]
        store = await location_of(store_id) if store_id else None
        if location is None or (store_id and store is None):
            continue
        address = postal_address(row)
        if address not in destinations:
            destinations[address] = await coordinates_of(conn, address)
        out[row["id"]] = domain.Route(
            location=location,
            delivery_method=row["delivery_method"],
            country_code=address.country_code,
            destination=destinations[address],
            pickup_store=store,
        )
    return out


async def set_promised(conn: Conn, promised: Mapping[str, date | None]) -> None:
    """Keep each fulfillment order's promised delivery date (None: no promise)."""
    if promised:
        ids = list(promised)
        await conn.execute(SQL_SET_PROMISED, ids, [promised[i] for i in ids])
