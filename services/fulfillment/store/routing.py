"""Fulfillment's store, routing: what routing reads (enabled locations, their availability
and capacity, recipients' coordinates, who rejected what), the delivery groups it routed,
and the routing decisions it recorded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.fulfillment import domain
from services.fulfillment.store.common import TODAY, Conn, postal_address
from services.fulfillment.store.inventory import EXPIRED_HOLDS, inventory_level, ship_to_store

# ---- routing reads -----------------------------------------------------------------------------

# capacity_left is NULL for a location without a daily capacity.
SQL_CANDIDATES = f"""
SELECT l.id, l.priority, l.latitude, l.longitude, l.type,
       l.ship_to_store, l.ship_to_store_from,
       l.daily_capacity - coalesce(d.fulfillment_orders, 0) AS capacity_left,
       array(SELECT m.location_group_id FROM location_group_members m
             WHERE m.location_id = l.id) AS group_ids
FROM locations l
LEFT JOIN location_daily_load d ON d.location_id = l.id AND d.day = {TODAY}
WHERE l.enabled
ORDER BY l.id"""

# The longest known prefix of the postal code locates the recipient: a full code loaded from a
# data set, else a seeded prefix. $2 holds every prefix of the code, so with a country's tens
# of thousands of codes loaded this stays a few probes of the primary key, never a scan.
SQL_POSTAL_COORDINATES = """
SELECT latitude, longitude FROM postal_coordinates
WHERE country_code = $1 AND postal_prefix = ANY($2::text[])
ORDER BY length(postal_prefix) DESC
LIMIT 1"""

# Held units of expired checkout reservations are left out, as GetAvailability leaves them out
# (writers release them before routing; delivery promises only read).
SQL_ENABLED_LEVELS = f"""
SELECT il.location_id, il.sku, il.on_hand, il.reserved - {EXPIRED_HOLDS} AS reserved,
       il.safety_stock
FROM inventory_levels il JOIN locations l ON l.id = il.location_id
WHERE l.enabled AND il.sku = ANY($1::text[])"""

# The last routing attempt locks the rows it reads (in one global order, so lockers never
# deadlock) and therefore cannot lose a race.
SQL_ENABLED_LEVELS_LOCKED = f"""
SELECT il.location_id, il.sku, il.on_hand, il.reserved - {EXPIRED_HOLDS} AS reserved,
       il.safety_stock
FROM inventory_levels il JOIN locations l ON l.id = il.location_id
WHERE l.enabled AND il.sku = ANY($1::text[])
ORDER BY il.location_id, il.sku
FOR UPDATE OF il"""

# ... and the daily load of every location with a capacity, after making sure it exists.
SQL_ENSURE_CAPACITY_LOAD = f"""
INSERT INTO location_daily_load (location_id, day)
SELECT id, {TODAY} FROM locations WHERE enabled AND daily_capacity IS NOT NULL
ON CONFLICT DO NOTHING"""

SQL_LOCK_CAPACITY_LOAD = f"""
SELECT d.location_id FROM location_daily_load d JOIN locations l ON l.id = d.location_id
WHERE d.day = {TODAY} AND l.enabled AND l.daily_capacity IS NOT NULL
ORDER BY d.location_id
FOR UPDATE OF d"""

SQL_DELIVERY_GROUP = """
SELECT delivery_group_id, address_line1, address_line2, city, region, postal_code,
       country_code, delivery_method, pickup_location_id
FROM delivery_groups WHERE order_id = $1 AND delivery_group_id = $2"""

SQL_RECORD_DELIVERY_GROUPS = """
INSERT INTO delivery_groups
    (order_id, delivery_group_id, address_line1, address_line2, city, region, postal_code,
     country_code, delivery_method, pickup_location_id)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[])
ON CONFLICT (order_id, delivery_group_id) DO NOTHING"""

# Locations that rejected any of these order lines of the order, with the lines they rejected.
SQL_REJECTING_LOCATIONS = """
SELECT location_id, array_agg(DISTINCT order_line_id) AS order_line_ids
FROM fulfillment_line_changes
WHERE order_id = $1 AND kind = 'rejected' AND order_line_id = ANY($2::text[])
GROUP BY location_id"""

# ---- routing decisions -----------------------------------------------------------------------

SQL_INSERT_DECISION = """
INSERT INTO routing_decisions
    (order_id, delivery_group_id, trigger, source_fulfillment_order_id, summary,
     chosen_location_ids, alternatives, excluded, unallocated, idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""

SQL_DECISIONS = """
SELECT order_id, delivery_group_id, trigger, source_fulfillment_order_id, summary,
       chosen_location_ids, alternatives, excluded, unallocated, decided_at
FROM routing_decisions WHERE order_id = $1 ORDER BY id"""


@dataclass(frozen=True)
class RoutingSnapshot:
    """What routing reads: enabled locations, their availability, recipients' coordinates."""

    candidates: list[domain.Candidate]
    availability: dict[tuple[str, str], int]
    destinations: dict[str, domain.Coordinates | None]


# ---- reading ----------------------------------------------------------------------------------


async def coordinates_of(conn: Conn, address: domain.PostalAddress) -> domain.Coordinates | None:
    """Approximate coordinates of an address's postal code; None when unknown."""
    postal = domain.normalize_postal_code(address.postal_code)
    if not postal or not address.country_code:
        return None
    row = await conn.fetchrow(
        SQL_POSTAL_COORDINATES, address.country_code.upper(), domain.postal_prefixes(postal)
    )
    return None if row is None else domain.Coordinates(row["latitude"], row["longitude"])


async def routing_snapshot(
    conn: Conn, groups: Sequence[domain.DeliveryGroup], lock: bool
) -> RoutingSnapshot:
    """Read what routing needs; with `lock`, hold the inventory rows and the daily loads of
    capacity-limited locations until commit."""
    skus = sorted({line.sku for g in groups for line in g.lines})
    rows = await conn.fetch(SQL_ENABLED_LEVELS_LOCKED if lock else SQL_ENABLED_LEVELS, skus)
    if lock:
        await conn.execute(SQL_ENSURE_CAPACITY_LOAD)
        await conn.fetch(SQL_LOCK_CAPACITY_LOAD)
    availability = {
        (row["location_id"], row["sku"]): inventory_level(row).available for row in rows
    }
    candidates = [
        domain.Candidate(
            location_id=row["id"],
            priority=row["priority"],
            coordinates=domain.Coordinates(row["latitude"], row["longitude"]),
            type=row["type"],
            capacity_left=row["capacity_left"],
            group_ids=frozenset(row["group_ids"]),
            ship_to_store=ship_to_store(row),
        )
        for row in await conn.fetch(SQL_CANDIDATES)
    ]
    destinations = {g.delivery_group_id: await coordinates_of(conn, g.address) for g in groups}
    return RoutingSnapshot(candidates, availability, destinations)


async def delivery_group(
    conn: Conn, order_id: str, delivery_group_id: str, lines: Sequence[domain.RoutingLine]
) -> domain.DeliveryGroup:
    """A routed delivery group again, with `lines` to route; an order routed before
    addresses were kept gets an empty address (routing then ranks by priority)."""
    row = await conn.fetchrow(SQL_DELIVERY_GROUP, order_id, delivery_group_id)
    if row is None:
        return domain.DeliveryGroup(delivery_group_id, domain.PostalAddress(), tuple(lines))
    return domain.DeliveryGroup(
        delivery_group_id,
        postal_address(row),
        tuple(lines),
        row["delivery_method"],
        row["pickup_location_id"],
    )


async def record_delivery_groups(
    conn: Conn, order_id: str, groups: Sequence[domain.DeliveryGroup]
) -> None:
    """Keep where each delivery group goes, for routing its units again later."""

    def column(get: Callable[[domain.DeliveryGroup], str]) -> list[str]:
        return [get(g) for g in groups]

    await conn.execute(
        SQL_RECORD_DELIVERY_GROUPS,
        order_id,
        column(lambda g: g.delivery_group_id),
        column(lambda g: g.address.line1),
        column(lambda g: g.address.line2),
        column(lambda g: g.address.city),
        column(lambda g: g.address.region),
        column(lambda g: g.address.postal_code),
        column(lambda g: g.address.country_code),
        column(lambda g: g.delivery_method),
        column(lambda g: g.pickup_location_id),
    )


async def rejecting_locations(
    conn: Conn, order_id: str, order_line_ids: Iterable[str]
) -> dict[str, list[str]]:
    """Locations that rejected any of these order lines, with the lines each rejected."""
    rows = await conn.fetch(SQL_REJECTING_LOCATIONS, order_id, sorted(set(order_line_ids)))
    return {row["location_id"]: sorted(row["order_line_ids"]) for row in rows}


def _decision(row: asyncpg.Record) -> domain.RoutingDecision:
    def alternative(a: dict[str, Any]) -> domain.Alternative:
        return domain.Alternative(**{**a, "location_ids": tuple(a["location_ids"])})

    return domain.RoutingDecision(
        order_id=row["order_id"],
        delivery_group_id=row["delivery_group_id"],
        trigger=row["trigger"],
        source_fulfillment_order_id=row["source_fulfillment_order_id"],
        summary=tuple(row["summary"]),
        chosen_location_ids=tuple(row["chosen_location_ids"]),
        alternatives=tuple(alternative(a) for a in row["alternatives"]),
        excluded=tuple(domain.Exclusion(**e) for e in row["excluded"]),
        unallocated=tuple(domain.RoutingLine(**u) for u in row["unallocated"]),
        decided_at=row["decided_at"],
    )


async def routing_decisions(conn: Conn, order_id: str) -> list[domain.RoutingDecision]:
    """Every routing decision of an order, oldest first."""
    return [_decision(row) for row in await conn.fetch(SQL_DECISIONS, order_id)]


# ---- writing ----------------------------------------------------------------------------------


async def record_decisions(
    conn: Conn, decisions: Sequence[domain.RoutingDecision], idempotency_key: str
) -> None:
    """Keep routing decisions for the order's record."""

    def as_json(items: Iterable[Any]) -> list[Any]:
        return [dataclasses.asdict(item) for item in items]

    for d in decisions:
        await conn.execute(
            SQL_INSERT_DECISION,
            d.order_id,
            d.delivery_group_id,
            d.trigger,
            d.source_fulfillment_order_id,
            list(d.summary),
            list(d.chosen_location_ids),
            as_json(d.alternatives),
            as_json(d.excluded),
            as_json(d.unallocated),
            idempotency_key,
        )
