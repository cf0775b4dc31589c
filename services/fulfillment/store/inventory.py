"""Fulfillment's store, inventory: locations and their groups, inventory levels and their
adjustments, units reserved and released on levels, and each location's daily capacity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from services.fulfillment import domain
from services.fulfillment.store.common import TODAY, Conn, postal_address

# ---- locations and groups --------------------------------------------------------------------

_LOCATION_SELECT = f"""
SELECT l.id, l.name, l.type, l.address_line1, l.address_line2, l.city, l.region,
       l.postal_code, l.country_code, l.latitude, l.longitude, l.priority, l.enabled,
       l.daily_capacity, coalesce(d.fulfillment_orders, 0) AS fulfillment_orders_today,
       l.timezone, l.cutoff_local_time, l.processing_days,
       l.ship_to_store, l.ship_to_store_from,
       array(SELECT m.location_group_id FROM location_group_members m
             WHERE m.location_id = l.id ORDER BY m.location_group_id) AS group_ids
FROM locations l
LEFT JOIN location_daily_load d ON d.location_id = l.id AND d.day = {TODAY}"""

SQL_LOCATIONS = f"{_LOCATION_SELECT} ORDER BY l.id"
SQL_LOCATION = f"{_LOCATION_SELECT} WHERE l.id = $1"

SQL_LOCATION_IDS = "SELECT id FROM locations"

SQL_UPSERT_LOCATION = """
INSERT INTO locations
    (id, name, type, address_line1, address_line2, city, region, postal_code, country_code,
     latitude, longitude, priority, enabled, daily_capacity, timezone, cutoff_local_time,
     processing_days, ship_to_store, ship_to_store_from)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, type = EXCLUDED.type,
    address_line1 = EXCLUDED.address_line1, address_line2 = EXCLUDED.address_line2,
    city = EXCLUDED.city, region = EXCLUDED.region, postal_code = EXCLUDED.postal_code,
    country_code = EXCLUDED.country_code, latitude = EXCLUDED.latitude,
    longitude = EXCLUDED.longitude, priority = EXCLUDED.priority, enabled = EXCLUDED.enabled,
    daily_capacity = EXCLUDED.daily_capacity, timezone = EXCLUDED.timezone,
    cutoff_local_time = EXCLUDED.cutoff_local_time, processing_days = EXCLUDED.processing_days,
    ship_to_store = EXCLUDED.ship_to_store, ship_to_store_from = EXCLUDED.ship_to_store_from"""

SQL_LOCATION_GROUPS = """
SELECT g.id, g.name,
       array(SELECT m.location_id FROM location_group_members m
             WHERE m.location_group_id = g.id ORDER BY m.location_id) AS location_ids
FROM location_groups g
WHERE cardinality($1::text[]) = 0 OR g.id = ANY($1::text[])
ORDER BY g.id"""

SQL_UPSERT_LOCATION_GROUP = """
INSERT INTO location_groups (id, name) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name"""

SQL_CLEAR_LOCATION_GROUP = "DELETE FROM location_group_members WHERE location_group_id = $1"

SQL_ADD_LOCATION_GROUP_MEMBERS = """
INSERT INTO location_group_members (location_group_id, location_id)
SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING"""

# ---- inventory levels ------------------------------------------------------------------------

# Units a level's `reserved` still counts for checkout reservations that expired but are not
# released yet (the sweeper, or the next writer of these SKUs, releases them). They are no
# longer held, so readers leave them out; `il` is the level read.
EXPIRED_HOLDS = """(SELECT coalesce(sum(h.quantity), 0)::bigint FROM checkout_holds h
    WHERE h.held AND h.location_id = il.location_id AND h.sku = il.sku
      AND h.expires_at <= now())"""

SQL_LEVELS_FOR_SKUS = f"""
SELECT il.location_id, il.sku, il.on_hand, il.reserved - {EXPIRED_HOLDS} AS reserved,
       il.safety_stock, l.enabled
FROM inventory_levels il JOIN locations l ON l.id = il.location_id
WHERE il.sku = ANY($1::text[])
ORDER BY il.sku, il.location_id"""

SQL_AVAILABLE = """
SELECT greatest(on_hand - reserved - safety_stock, 0) FROM inventory_levels
WHERE location_id = $1 AND sku = $2"""

# A whole stock feed in one statement, written in (location, sku) order like every other
# writer of these rows.
SQL_UPSERT_LEVELS = """
INSERT INTO inventory_levels (location_id, sku, on_hand, safety_stock)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
    AS l (location_id, sku, on_hand, safety_stock)
ORDER BY location_id, sku
ON CONFLICT (location_id, sku) DO UPDATE
    SET on_hand = EXCLUDED.on_hand, safety_stock = EXCLUDED.safety_stock, updated_at = now()
RETURNING location_id, sku, on_hand, reserved, safety_stock"""

SQL_ENSURE_LEVELS = """
INSERT INTO inventory_levels (location_id, sku)
SELECT * FROM unnest($1::text[], $2::text[]) AS l (location_id, sku)
ORDER BY location_id, sku
ON CONFLICT (location_id, sku) DO NOTHING"""

SQL_LEVELS_FOR_UPDATE = """
SELECT il.location_id, il.sku, il.on_hand, il.reserved, il.safety_stock
FROM inventory_levels il
JOIN unnest($1::text[], $2::text[]) AS k (location_id, sku)
    ON k.location_id = il.location_id AND k.sku = il.sku
ORDER BY il.location_id, il.sku
FOR UPDATE OF il"""

SQL_SET_ON_HAND = """
UPDATE inventory_levels AS il SET on_hand = s.on_hand, updated_at = now()
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS s (location_id, sku, on_hand)
WHERE il.location_id = s.location_id AND il.sku = s.sku"""

SQL_RECORD_ADJUSTMENTS = """
INSERT INTO inventory_adjustments
    (location_id, sku, kind, quantity, reason, on_hand_before, on_hand_after, idempotency_key)
SELECT l, s, k, q, r, b, a, $8
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
            $7::bigint[]) AS x (l, s, k, q, r, b, a)"""

# Reserves only if the units are still available when the row is written: a concurrent
# reservation that got there first makes this match nothing instead of overselling.
SQL_RESERVE = """
UPDATE inventory_levels SET reserved = reserved + $3, updated_at = now()
WHERE location_id = $1 AND sku = $2 AND on_hand - reserved - safety_stock >= $3
RETURNING reserved"""


async def reserve_units(
    conn: Conn, units: Mapping[tuple[str, str], int]
) -> tuple[str, str, int] | None:
    """Reserve each (location, SKU) quantity while it is available, in the one lock order
    (location, SKU) every reserver takes, so concurrent ones never deadlock. Returns the first
    that was not there (location, SKU, quantity), or None when all were; what was reserved
    before it is the caller's transaction (or savepoint) to undo."""
    for (location_id, sku), quantity in sorted(units.items()):
        if await conn.fetchval(SQL_RESERVE, location_id, sku, quantity) is None:
            return location_id, sku, quantity
    return None


# Units that arrived for an order are reserved for it whatever the level's safety stock (they
# are the order's, not the location's to sell); unlike SQL_RESERVE nothing is checked.
SQL_ADD_RESERVED = """
UPDATE inventory_levels SET reserved = reserved + $3, updated_at = now()
WHERE location_id = $1 AND sku = $2"""

SQL_RELEASE_UNITS = """
UPDATE inventory_levels SET reserved = reserved - $3, updated_at = now()
WHERE location_id = $1 AND sku = $2"""

# Shipped units leave the building: on hand and reserved both go down. On hand is floored at
# zero because a physical shipment proves the units were there even if a stock feed said not.
SQL_SHIP_UNITS = """
UPDATE inventory_levels
SET on_hand = greatest(on_hand - $3, 0), reserved = reserved - $3, updated_at = now()
WHERE location_id = $1 AND sku = $2"""

# ---- daily capacity --------------------------------------------------------------------------

SQL_ENSURE_LOAD = f"""
INSERT INTO location_daily_load (location_id, day)
SELECT unnest($1::text[]), {TODAY}
ON CONFLICT DO NOTHING"""

# Takes slots only while the location has them, like SQL_RESERVE does for units.
SQL_TAKE_CAPACITY = f"""
UPDATE location_daily_load AS d SET fulfillment_orders = d.fulfillment_orders + $2
FROM locations l
WHERE d.location_id = $1 AND d.day = {TODAY} AND l.id = d.location_id
  AND (l.daily_capacity IS NULL OR d.fulfillment_orders + $2 <= l.daily_capacity)
RETURNING d.fulfillment_orders"""

# A fulfillment order that stops being work gives back the slot of the day it was created.
SQL_FREE_CAPACITY = """
UPDATE location_daily_load SET fulfillment_orders = fulfillment_orders - 1
WHERE location_id = $1 AND day = ($2::timestamptz AT TIME ZONE 'UTC')::date
  AND fulfillment_orders > 0"""


# ---- reading ----------------------------------------------------------------------------------


def _location(row: asyncpg.Record) -> domain.Location:
    return domain.Location(
        location_id=row["id"],
        name=row["name"],
        type=row["type"],
        address=postal_address(row),
        latitude=row["latitude"],
        longitude=row["longitude"],
        priority=row["priority"],
        enabled=row["enabled"],
        daily_capacity=row["daily_capacity"],
        group_ids=tuple(row["group_ids"]),
        fulfillment_orders_today=row["fulfillment_orders_today"],
        schedule=domain.ProcessingSchedule(
            timezone=row["timezone"],
            cutoff=row["cutoff_local_time"],
            processing_days=row["processing_days"],
        ),
        ship_to_store=ship_to_store(row),
    )


def ship_to_store(row: asyncpg.Record) -> domain.ShipToStore:
    """A store's ship-to-store setting in a row of locations."""
    return domain.ShipToStore(row["ship_to_store"], tuple(row["ship_to_store_from"]))


def inventory_level(row: asyncpg.Record) -> domain.InventoryLevel:
    """The inventory level in a row of inventory_levels."""
    return domain.InventoryLevel(
        location_id=row["location_id"],
        sku=row["sku"],
        on_hand=row["on_hand"],
        reserved=row["reserved"],
        safety_stock=row["safety_stock"],
    )


async def list_locations(conn: Conn) -> list[domain.Location]:
    """Every location, enabled or not."""
    return [_location(row) for row in await conn.fetch(SQL_LOCATIONS)]


async def get_location(conn: Conn, location_id: str) -> domain.Location | None:
    """One location; None when there is no such location."""
    row = await conn.fetchrow(SQL_LOCATION, location_id)
    return None if row is None else _location(row)


async def location_ids(conn: Conn) -> set[str]:
    """Ids of every location."""
    return {row["id"] for row in await conn.fetch(SQL_LOCATION_IDS)}


async def upsert_location(conn: Conn, location: domain.Location) -> domain.Location:
    """Create or replace a location; returns it as stored."""
    a = location.address
    await conn.execute(
        SQL_UPSERT_LOCATION,
        location.location_id,
        location.name,
        location.type,
        a.line1,
        a.line2,
        a.city,
        a.region,
        a.postal_code,
        a.country_code,
        location.latitude,
        location.longitude,
        location.priority,
        location.enabled,
        location.daily_capacity,
        location.schedule.timezone,
        location.schedule.cutoff,
        location.schedule.processing_days,
        location.ship_to_store.accepted,
        list(location.ship_to_store.from_location_ids),
    )
    stored = await get_location(conn, location.location_id)
    assert stored is not None  # just written
    return stored


async def location_groups(conn: Conn, only: Sequence[str] = ()) -> list[domain.LocationGroup]:
    """Location groups with their members (all, or only those named)."""
    return [
        domain.LocationGroup(row["id"], row["name"], tuple(row["location_ids"]))
        for row in await conn.fetch(SQL_LOCATION_GROUPS, list(only))
    ]


async def upsert_location_group(conn: Conn, group: domain.LocationGroup) -> domain.LocationGroup:
    """Create or replace a group and its members; returns it as stored."""
    await conn.execute(SQL_UPSERT_LOCATION_GROUP, group.location_group_id, group.name)
    await conn.execute(SQL_CLEAR_LOCATION_GROUP, group.location_group_id)
    await conn.execute(
        SQL_ADD_LOCATION_GROUP_MEMBERS, group.location_group_id, list(group.location_ids)
    )
    [stored] = await location_groups(conn, [group.location_group_id])
    return stored


async def levels_for_skus(
    conn: Conn, skus: Sequence[str]
) -> list[tuple[domain.InventoryLevel, bool]]:
    """Every location's level of the SKUs, with whether the location is enabled."""
    rows = await conn.fetch(SQL_LEVELS_FOR_SKUS, list(skus))
    return [(inventory_level(row), row["enabled"]) for row in rows]


async def available(conn: Conn, location_id: str, sku: str) -> int:
    """Units of a SKU available to fulfill at a location (0 without a level)."""
    return int(await conn.fetchval(SQL_AVAILABLE, location_id, sku) or 0)


# ---- writing ----------------------------------------------------------------------------------


async def set_inventory_levels(
    conn: Conn, levels: Sequence[domain.InventoryLevel]
) -> list[tuple[domain.InventoryLevel, domain.InventoryLevel]]:
    """Upsert on hand and safety stock in one statement; returns each level before (locked
    first, so nothing changes it in between; zero where there was none) and as stored, in
    request order."""
    keys = sorted({(lv.location_id, lv.sku) for lv in levels})
    found = await conn.fetch(SQL_LEVELS_FOR_UPDATE, [k[0] for k in keys], [k[1] for k in keys])
    before = {(row["location_id"], row["sku"]): inventory_level(row) for row in found}
    rows = await conn.fetch(
        SQL_UPSERT_LEVELS,
        [lv.location_id for lv in levels],
        [lv.sku for lv in levels],
        [lv.on_hand for lv in levels],
        [lv.safety_stock for lv in levels],
    )
    stored = {(row["location_id"], row["sku"]): inventory_level(row) for row in rows}
    steps = []
    for lv in levels:
        where = (lv.location_id, lv.sku)
        steps.append((before.get(where, domain.InventoryLevel(*where, on_hand=0)), stored[where]))
    return steps


async def adjust_inventory(
    conn: Conn, adjustments: Sequence[domain.InventoryAdjustment], idempotency_key: str
) -> list[tuple[domain.InventoryLevel, domain.InventoryLevel]]:
    """Apply adjustments in order (levels locked, missing ones created at zero) and record
    each; returns the level before and after each adjustment."""
    keys = sorted({(a.location_id, a.sku) for a in adjustments})
    locations, skus = [k[0] for k in keys], [k[1] for k in keys]
    await conn.execute(SQL_ENSURE_LEVELS, locations, skus)
    rows = await conn.fetch(SQL_LEVELS_FOR_UPDATE, locations, skus)
    steps = domain.apply_adjustments(
        {(row["location_id"], row["sku"]): inventory_level(row) for row in rows}, adjustments
    )
    final = {(after.location_id, after.sku): after.on_hand for _, after in steps}
    await conn.execute(
        SQL_SET_ON_HAND,
        [k[0] for k in final],
        [k[1] for k in final],
        list(final.values()),
    )
    await conn.execute(
        SQL_RECORD_ADJUSTMENTS,
        [a.location_id for a in adjustments],
        [a.sku for a in adjustments],
        [a.kind for a in adjustments],
        [a.quantity for a in adjustments],
        [a.reason for a in adjustments],
        [before.on_hand for before, _ in steps],
        [after.on_hand for _, after in steps],
        idempotency_key,
    )
    return steps


async def take_capacity(conn: Conn, per_location: Mapping[str, int]) -> str | None:
    """Count new fulfillment orders against today's capacity of their locations; returns
    the first location without enough capacity left (and then takes nothing there)."""
    ids = sorted(per_location)
    await conn.execute(SQL_ENSURE_LOAD, ids)
    for location_id in ids:
        if await conn.fetchval(SQL_TAKE_CAPACITY, location_id, per_location[location_id]) is None:
            return location_id
    return None
