"""Fulfillment's Postgres store: named SQL over the fulfillment schema, domain types out.

Functions that take a connection run inside the caller's transaction, so one RPC can read,
decide (in the domain) and write atomically, together with its idempotency key and outbox row.

Rows are locked in one order everywhere: fulfillment order, then inventory levels by
(location, sku), then a location's daily load by location. Writers that cannot keep to it (a
move releases at one location and reserves at another) are retried on a deadlock.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform import outbox
from oms_platform.erasure import PersonalColumns
from oms_platform.errors import NotFound
from services.fulfillment import domain
from workflows.types import FULFILLMENT_EVENT_SIGNAL, FulfillmentEvent, order_workflow_id

SCHEMA = "fulfillment"

# A connection, whether taken from a pool or not.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# The UTC day daily capacity counts in.
_TODAY = "(now() AT TIME ZONE 'UTC')::date"

# ---- locations and groups --------------------------------------------------------------------

_LOCATION_SELECT = f"""
SELECT l.id, l.name, l.type, l.address_line1, l.address_line2, l.city, l.region,
       l.postal_code, l.country_code, l.latitude, l.longitude, l.priority, l.enabled,
       l.daily_capacity, coalesce(d.fulfillment_orders, 0) AS fulfillment_orders_today,
       array(SELECT m.location_group_id FROM location_group_members m
             WHERE m.location_id = l.id ORDER BY m.location_group_id) AS group_ids
FROM locations l
LEFT JOIN location_daily_load d ON d.location_id = l.id AND d.day = {_TODAY}"""

SQL_LOCATIONS = f"{_LOCATION_SELECT} ORDER BY l.id"
SQL_LOCATION = f"{_LOCATION_SELECT} WHERE l.id = $1"

SQL_LOCATION_IDS = "SELECT id FROM locations"

SQL_UPSERT_LOCATION = """
INSERT INTO locations
    (id, name, type, address_line1, address_line2, city, region, postal_code, country_code,
     latitude, longitude, priority, enabled, daily_capacity)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, type = EXCLUDED.type,
    address_line1 = EXCLUDED.address_line1, address_line2 = EXCLUDED.address_line2,
    city = EXCLUDED.city, region = EXCLUDED.region, postal_code = EXCLUDED.postal_code,
    country_code = EXCLUDED.country_code, latitude = EXCLUDED.latitude,
    longitude = EXCLUDED.longitude, priority = EXCLUDED.priority, enabled = EXCLUDED.enabled,
    daily_capacity = EXCLUDED.daily_capacity"""

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

# ---- routing reads -----------------------------------------------------------------------------

# capacity_left is NULL for a location without a daily capacity.
SQL_CANDIDATES = f"""
SELECT l.id, l.priority, l.latitude, l.longitude, l.type,
       l.daily_capacity - coalesce(d.fulfillment_orders, 0) AS capacity_left,
       array(SELECT m.location_group_id FROM location_group_members m
             WHERE m.location_id = l.id) AS group_ids
FROM locations l
LEFT JOIN location_daily_load d ON d.location_id = l.id AND d.day = {_TODAY}
WHERE l.enabled
ORDER BY l.id"""

# The longest known prefix of the postal code locates the recipient.
SQL_POSTAL_COORDINATES = """
SELECT latitude, longitude FROM postal_coordinates
WHERE country_code = $1 AND starts_with($2, postal_prefix)
ORDER BY length(postal_prefix) DESC
LIMIT 1"""

SQL_ENABLED_LEVELS = """
SELECT il.location_id, il.sku, il.on_hand, il.reserved, il.safety_stock
FROM inventory_levels il JOIN locations l ON l.id = il.location_id
WHERE l.enabled AND il.sku = ANY($1::text[])"""

# The last routing attempt locks the rows it reads (in one global order, so lockers never
# deadlock) and therefore cannot lose a race.
SQL_ENABLED_LEVELS_LOCKED = """
SELECT il.location_id, il.sku, il.on_hand, il.reserved, il.safety_stock
FROM inventory_levels il JOIN locations l ON l.id = il.location_id
WHERE l.enabled AND il.sku = ANY($1::text[])
ORDER BY il.location_id, il.sku
FOR UPDATE OF il"""

# ... and the daily load of every location with a capacity, after making sure it exists.
SQL_ENSURE_CAPACITY_LOAD = f"""
INSERT INTO location_daily_load (location_id, day)
SELECT id, {_TODAY} FROM locations WHERE enabled AND daily_capacity IS NOT NULL
ON CONFLICT DO NOTHING"""

SQL_LOCK_CAPACITY_LOAD = f"""
SELECT d.location_id FROM location_daily_load d JOIN locations l ON l.id = d.location_id
WHERE d.day = {_TODAY} AND l.enabled AND l.daily_capacity IS NOT NULL
ORDER BY d.location_id
FOR UPDATE OF d"""

SQL_DELIVERY_GROUP = """
SELECT delivery_group_id, address_line1, address_line2, city, region, postal_code,
       country_code, delivery_method
FROM delivery_groups WHERE order_id = $1 AND delivery_group_id = $2"""

SQL_RECORD_DELIVERY_GROUPS = """
INSERT INTO delivery_groups
    (order_id, delivery_group_id, address_line1, address_line2, city, region, postal_code,
     country_code, delivery_method)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[])
ON CONFLICT (order_id, delivery_group_id) DO NOTHING"""

# Locations that rejected any of these order lines of the order, with the lines they rejected.
SQL_REJECTING_LOCATIONS = """
SELECT location_id, array_agg(DISTINCT order_line_id) AS order_line_ids
FROM fulfillment_line_changes
WHERE order_id = $1 AND kind = 'rejected' AND order_line_id = ANY($2::text[])
GROUP BY location_id"""

# ---- inventory -------------------------------------------------------------------------------

SQL_LEVELS_FOR_SKUS = """
SELECT il.location_id, il.sku, il.on_hand, il.reserved, il.safety_stock, l.enabled
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
SELECT unnest($1::text[]), {_TODAY}
ON CONFLICT DO NOTHING"""

# Takes slots only while the location has them, like SQL_RESERVE does for units.
SQL_TAKE_CAPACITY = f"""
UPDATE location_daily_load AS d SET fulfillment_orders = d.fulfillment_orders + $2
FROM locations l
WHERE d.location_id = $1 AND d.day = {_TODAY} AND l.id = d.location_id
  AND (l.daily_capacity IS NULL OR d.fulfillment_orders + $2 <= l.daily_capacity)
RETURNING d.fulfillment_orders"""

# A fulfillment order that stops being work gives back the slot of the day it was created.
SQL_FREE_CAPACITY = """
UPDATE location_daily_load SET fulfillment_orders = fulfillment_orders - 1
WHERE location_id = $1 AND day = ($2::timestamptz AT TIME ZONE 'UTC')::date
  AND fulfillment_orders > 0"""

# ---- fulfillment orders --------------------------------------------------------------------

SQL_INSERT_FULFILLMENT_ORDER = """
INSERT INTO fulfillment_orders (id, order_id, delivery_group_id, location_id, status)
VALUES ($1, $2, $3, $4, 'allocated')"""

SQL_INSERT_LINES = """
INSERT INTO fulfillment_order_lines
    (fulfillment_order_id, line_number, order_line_id, sku, quantity)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[])"""

SQL_INSERT_RESERVATIONS = """
INSERT INTO reservations
    (order_id, fulfillment_order_id, order_line_id, location_id, sku, quantity, status,
     idempotency_key)
SELECT $1, fo, line, loc, sku, qty, 'reserved', $7
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
    AS r (fo, line, loc, sku, qty)"""

_FO_COLUMNS = "id, order_id, delivery_group_id, location_id, status, created_at, updated_at"

SQL_FULFILLMENT_ORDER = f"SELECT {_FO_COLUMNS} FROM fulfillment_orders WHERE id = $1"
SQL_FULFILLMENT_ORDER_FOR_UPDATE = (
    f"SELECT {_FO_COLUMNS} FROM fulfillment_orders WHERE id = $1 FOR UPDATE"
)

SQL_FULFILLMENT_ORDERS_BY_ID = f"""
SELECT {_FO_COLUMNS} FROM fulfillment_orders WHERE id = ANY($1::text[])"""

# Keyset pagination over (created_at, id); empty filters match everything.
SQL_LIST_FULFILLMENT_ORDERS = f"""
SELECT {_FO_COLUMNS} FROM fulfillment_orders
WHERE ($1 = '' OR order_id = $1)
  AND ($2 = '' OR location_id = $2)
  AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4::timestamptz, $5::text))
  AND ($7::text[] IS NULL OR location_id = ANY($7::text[]))
ORDER BY created_at, id
LIMIT $6"""

SQL_LINES = """
SELECT fulfillment_order_id, order_line_id, sku, quantity, quantity_shipped,
       quantity_rejected, quantity_canceled, quantity_moved
FROM fulfillment_order_lines
WHERE fulfillment_order_id = ANY($1::text[])
ORDER BY fulfillment_order_id, line_number"""

SQL_SET_STATUS = """
UPDATE fulfillment_orders SET status = $2, updated_at = now() WHERE id = $1"""

SQL_CANCEL = """
UPDATE fulfillment_orders SET status = 'canceled', cancel_reason = $2, updated_at = now()
WHERE id = $1"""

# Units leave a line for a reason; the line's quantity keeps only what it still ships.
SQL_TAKE_OFF_LINES = """
UPDATE fulfillment_order_lines AS fol SET
    quantity = fol.quantity - s.qty,
    quantity_rejected = fol.quantity_rejected + CASE WHEN $4 = 'rejected' THEN s.qty ELSE 0 END,
    quantity_canceled = fol.quantity_canceled + CASE WHEN $4 = 'canceled' THEN s.qty ELSE 0 END,
    quantity_moved = fol.quantity_moved + CASE WHEN $4 = 'moved' THEN s.qty ELSE 0 END
FROM unnest($2::text[], $3::bigint[]) AS s (line, qty)
WHERE fol.fulfillment_order_id = $1 AND fol.order_line_id = s.line"""

SQL_RECORD_LINE_CHANGES = """
INSERT INTO fulfillment_line_changes
    (kind, order_id, fulfillment_order_id, location_id, order_line_id, quantity, reason,
     idempotency_key)
SELECT $1, $2, $3, $4, line, qty, $5, $6
FROM unnest($7::text[], $8::bigint[]) AS s (line, qty)"""

# ---- reservations ----------------------------------------------------------------------------

# Units of a fulfillment order line leave the reserved state: shipped ('fulfilled'), handed
# back ('released') or moved to another location ('transferred'). When only part of the
# reserved row goes, the row keeps what is still held and the part becomes its own row with
# the original's order and idempotency key, so each row's quantity is entirely in its status.
SQL_SETTLE_WHOLE_RESERVATION = """
UPDATE reservations SET status = $4, updated_at = now()
WHERE fulfillment_order_id = $1 AND order_line_id = $2 AND status = 'reserved' AND quantity = $3
RETURNING id"""

SQL_SHRINK_RESERVATION = """
UPDATE reservations SET quantity = quantity - $3, updated_at = now()
WHERE fulfillment_order_id = $1 AND order_line_id = $2 AND status = 'reserved' AND quantity > $3
RETURNING order_id, location_id, sku, idempotency_key"""

SQL_INSERT_SETTLED_RESERVATION = """
INSERT INTO reservations
    (order_id, fulfillment_order_id, order_line_id, location_id, sku, quantity, status,
     idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"""

# ---- shipments -------------------------------------------------------------------------------

SQL_INSERT_SHIPMENT = """
INSERT INTO shipments (id, fulfillment_order_id, carrier, service, tracking_number)
VALUES ($1, $2, $3, $4, $5)"""

SQL_INSERT_SHIPMENT_ITEMS = """
INSERT INTO shipment_items (shipment_id, item_number, order_line_id, quantity)
SELECT $1, n, line, qty FROM unnest($2::int[], $3::text[], $4::bigint[]) AS i (n, line, qty)"""

SQL_ADD_SHIPPED = """
UPDATE fulfillment_order_lines AS fol SET quantity_shipped = fol.quantity_shipped + s.qty
FROM unnest($2::text[], $3::bigint[]) AS s (line, qty)
WHERE fol.fulfillment_order_id = $1 AND fol.order_line_id = s.line"""

_SHIPMENT_COLUMNS = (
    "id, fulfillment_order_id, carrier, service, tracking_number, shipped_at, delivered_at"
)

SQL_SHIPMENTS = f"""
SELECT {_SHIPMENT_COLUMNS} FROM shipments
WHERE fulfillment_order_id = ANY($1::text[])
ORDER BY shipped_at, id"""

SQL_SHIPMENT = f"SELECT {_SHIPMENT_COLUMNS} FROM shipments WHERE id = $1"

SQL_SHIPMENT_ITEMS = """
SELECT shipment_id, order_line_id, quantity FROM shipment_items
WHERE shipment_id = ANY($1::text[])
ORDER BY shipment_id, item_number"""

# Delivered once: a repeated report matches nothing and changes nothing.
SQL_MARK_DELIVERED = """
UPDATE shipments SET delivered_at = now() WHERE id = $1 AND delivered_at IS NULL
RETURNING id"""

# Where a fulfillment order or a shipment's fulfillment order ships from (who may act on it).
SQL_LOCATION_OF_FULFILLMENT_ORDER = "SELECT location_id FROM fulfillment_orders WHERE id = $1"
SQL_LOCATION_OF_SHIPMENT = """
SELECT fo.location_id FROM shipments s JOIN fulfillment_orders fo ON fo.id = s.fulfillment_order_id
WHERE s.id = $1"""

SQL_ORDER_OF_SHIPMENT = """
SELECT fo.order_id FROM shipments s JOIN fulfillment_orders fo ON fo.id = s.fulfillment_order_id
WHERE s.id = $1"""

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


class ReservationConflict(Exception):
    """A concurrent reservation took units (or a capacity slot) this routing counted on;
    route again."""


@dataclass(frozen=True)
class RoutingSnapshot:
    """What routing reads: enabled locations, their availability, recipients' coordinates."""

    candidates: list[domain.Candidate]
    availability: dict[tuple[str, str], int]
    destinations: dict[str, domain.Coordinates | None]


@dataclass(frozen=True)
class Page:
    """One page of fulfillment orders and where the next one starts."""

    fulfillment_orders: list[domain.FulfillmentOrder]
    next_cursor: domain.Cursor | None


# ---- reading ----------------------------------------------------------------------------------


def _address(row: asyncpg.Record) -> domain.PostalAddress:
    return domain.PostalAddress(
        line1=row["address_line1"],
        line2=row["address_line2"],
        city=row["city"],
        region=row["region"],
        postal_code=row["postal_code"],
        country_code=row["country_code"],
    )


def _location(row: asyncpg.Record) -> domain.Location:
    return domain.Location(
        location_id=row["id"],
        name=row["name"],
        type=row["type"],
        address=_address(row),
        latitude=row["latitude"],
        longitude=row["longitude"],
        priority=row["priority"],
        enabled=row["enabled"],
        daily_capacity=row["daily_capacity"],
        group_ids=tuple(row["group_ids"]),
        fulfillment_orders_today=row["fulfillment_orders_today"],
    )


def _level(row: asyncpg.Record) -> domain.InventoryLevel:
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


async def coordinates_of(conn: Conn, address: domain.PostalAddress) -> domain.Coordinates | None:
    """Approximate coordinates of an address's postal code; None when unknown."""
    postal = domain.normalize_postal_code(address.postal_code)
    if not postal or not address.country_code:
        return None
    row = await conn.fetchrow(SQL_POSTAL_COORDINATES, address.country_code.upper(), postal)
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
    availability = {(row["location_id"], row["sku"]): _level(row).available for row in rows}
    candidates = [
        domain.Candidate(
            location_id=row["id"],
            priority=row["priority"],
            coordinates=domain.Coordinates(row["latitude"], row["longitude"]),
            type=row["type"],
            capacity_left=row["capacity_left"],
            group_ids=frozenset(row["group_ids"]),
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
        delivery_group_id, _address(row), tuple(lines), row["delivery_method"]
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
    )


async def rejecting_locations(
    conn: Conn, order_id: str, order_line_ids: Iterable[str]
) -> dict[str, list[str]]:
    """Locations that rejected any of these order lines, with the lines each rejected."""
    rows = await conn.fetch(SQL_REJECTING_LOCATIONS, order_id, sorted(set(order_line_ids)))
    return {row["location_id"]: sorted(row["order_line_ids"]) for row in rows}


async def levels_for_skus(
    conn: Conn, skus: Sequence[str]
) -> list[tuple[domain.InventoryLevel, bool]]:
    """Every location's level of the SKUs, with whether the location is enabled."""
    rows = await conn.fetch(SQL_LEVELS_FOR_SKUS, list(skus))
    return [(_level(row), row["enabled"]) for row in rows]


async def available(conn: Conn, location_id: str, sku: str) -> int:
    """Units of a SKU available to fulfill at a location (0 without a level)."""
    return int(await conn.fetchval(SQL_AVAILABLE, location_id, sku) or 0)


async def _assemble(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[domain.FulfillmentOrder]:
    ids = [row["id"] for row in rows]
    if not ids:
        return []
    lines: dict[str, list[domain.FulfillmentLine]] = defaultdict(list)
    for row in await conn.fetch(SQL_LINES, ids):
        lines[row["fulfillment_order_id"]].append(
            domain.FulfillmentLine(
                order_line_id=row["order_line_id"],
                sku=row["sku"],
                quantity=row["quantity"],
                quantity_shipped=row["quantity_shipped"],
                quantity_rejected=row["quantity_rejected"],
                quantity_canceled=row["quantity_canceled"],
                quantity_moved=row["quantity_moved"],
            )
        )
    shipments: dict[str, list[domain.Shipment]] = defaultdict(list)
    for shipment in await _shipments(conn, await conn.fetch(SQL_SHIPMENTS, ids)):
        shipments[shipment.fulfillment_order_id].append(shipment)
    return [
        domain.FulfillmentOrder(
            fulfillment_order_id=row["id"],
            order_id=row["order_id"],
            delivery_group_id=row["delivery_group_id"],
            location_id=row["location_id"],
            status=row["status"],
            lines=tuple(lines[row["id"]]),
            shipments=tuple(shipments[row["id"]]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        for row in rows
    ]


async def _shipments(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[domain.Shipment]:
    if not rows:
        return []
    items: dict[str, list[domain.ShipmentItem]] = defaultdict(list)
    for row in await conn.fetch(SQL_SHIPMENT_ITEMS, [r["id"] for r in rows]):
        items[row["shipment_id"]].append(domain.ShipmentItem(row["order_line_id"], row["quantity"]))
    return [
        domain.Shipment(
            shipment_id=row["id"],
            fulfillment_order_id=row["fulfillment_order_id"],
            carrier=row["carrier"],
            service=row["service"],
            tracking_number=row["tracking_number"],
            items=tuple(items[row["id"]]),
            shipped_at=row["shipped_at"],
            delivered_at=row["delivered_at"],
        )
        for row in rows
    ]


async def get_fulfillment_order(
    conn: Conn, fulfillment_order_id: str, for_update: bool = False
) -> domain.FulfillmentOrder:
    """One fulfillment order with lines and shipments; `for_update` locks it until commit."""
    sql = SQL_FULFILLMENT_ORDER_FOR_UPDATE if for_update else SQL_FULFILLMENT_ORDER
    row = await conn.fetchrow(sql, fulfillment_order_id)
    if row is None:
        raise NotFound(f"fulfillment order {fulfillment_order_id} does not exist")
    return (await _assemble(conn, [row]))[0]


async def fulfillment_orders_by_id(conn: Conn, ids: Sequence[str]) -> list[domain.FulfillmentOrder]:
    """Fulfillment orders in the order of `ids`."""
    rows = await conn.fetch(SQL_FULFILLMENT_ORDERS_BY_ID, list(ids))
    found = {fo.fulfillment_order_id: fo for fo in await _assemble(conn, rows)}
    return [found[i] for i in ids if i in found]


async def list_fulfillment_orders(
    conn: Conn, where: domain.ListFilter, cursor: domain.Cursor | None, size: int
) -> Page:
    """One page, oldest first, after `cursor`."""
    rows = await conn.fetch(
        SQL_LIST_FULFILLMENT_ORDERS,
        where.order_id,
        where.location_id,
        list(where.statuses),
        cursor.created_at if cursor else None,
        cursor.fulfillment_order_id if cursor else "",
        size + 1,
        None if where.within_locations is None else list(where.within_locations),
    )
    more = len(rows) > size
    rows = rows[:size]
    nxt = domain.Cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return Page(await _assemble(conn, rows), nxt)


async def get_shipment(conn: Conn, shipment_id: str) -> domain.Shipment:
    """One shipment with its items."""
    row = await conn.fetchrow(SQL_SHIPMENT, shipment_id)
    if row is None:
        raise NotFound(f"shipment {shipment_id} does not exist")
    return (await _shipments(conn, [row]))[0]


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


async def set_inventory_levels(
    conn: Conn, levels: Sequence[domain.InventoryLevel]
) -> list[domain.InventoryLevel]:
    """Upsert on hand and safety stock in one statement; returns the levels as stored, in
    request order."""
    rows = await conn.fetch(
        SQL_UPSERT_LEVELS,
        [lv.location_id for lv in levels],
        [lv.sku for lv in levels],
        [lv.on_hand for lv in levels],
        [lv.safety_stock for lv in levels],
    )
    stored = {(row["location_id"], row["sku"]): _level(row) for row in rows}
    return [stored[(lv.location_id, lv.sku)] for lv in levels]


async def adjust_inventory(
    conn: Conn, adjustments: Sequence[domain.InventoryAdjustment], idempotency_key: str
) -> list[domain.InventoryLevel]:
    """Apply adjustments in order (levels locked, missing ones created at zero) and record
    each; returns the level after each adjustment."""
    keys = sorted({(a.location_id, a.sku) for a in adjustments})
    locations, skus = [k[0] for k in keys], [k[1] for k in keys]
    await conn.execute(SQL_ENSURE_LEVELS, locations, skus)
    rows = await conn.fetch(SQL_LEVELS_FOR_UPDATE, locations, skus)
    steps = domain.apply_adjustments(
        {(row["location_id"], row["sku"]): _level(row) for row in rows}, adjustments
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
    return [after for _, after in steps]


async def take_capacity(conn: Conn, per_location: Mapping[str, int]) -> str | None:
    """Count new fulfillment orders against today's capacity of their locations; returns
    the first location without enough capacity left (and then takes nothing there)."""
    ids = sorted(per_location)
    await conn.execute(SQL_ENSURE_LOAD, ids)
    for location_id in ids:
        if await conn.fetchval(SQL_TAKE_CAPACITY, location_id, per_location[location_id]) is None:
            return location_id
    return None


async def _create(
    conn: Conn,
    order_id: str,
    allocations: Sequence[tuple[str, domain.Allocation]],
    new_id: Callable[[], str],
    idempotency_key: str,
) -> list[domain.FulfillmentOrder]:
    """Fulfillment orders (status allocated), their lines and their reservations, for units
    already reserved; `allocations` are (delivery group, allocation) pairs."""
    ids: list[str] = []
    line_fo: list[str] = []
    line_numbers: list[int] = []
    line_ids: list[str] = []
    line_locations: list[str] = []
    skus: list[str] = []
    quantities: list[int] = []
    for delivery_group_id, allocation in allocations:
        fo_id = new_id()
        ids.append(fo_id)
        await conn.execute(
            SQL_INSERT_FULFILLMENT_ORDER,
            fo_id,
            order_id,
            delivery_group_id,
            allocation.location_id,
        )
        for number, line in enumerate(allocation.lines, start=1):
            line_fo.append(fo_id)
            line_numbers.append(number)
            line_ids.append(line.order_line_id)
            line_locations.append(allocation.location_id)
            skus.append(line.sku)
            quantities.append(line.quantity)
    if ids:
        await conn.execute(SQL_INSERT_LINES, line_fo, line_numbers, line_ids, skus, quantities)
        await conn.execute(
            SQL_INSERT_RESERVATIONS,
            order_id,
            line_fo,
            line_ids,
            line_locations,
            skus,
            quantities,
            idempotency_key,
        )
    return await fulfillment_orders_by_id(conn, ids)


async def reserve_and_create(
    conn: Conn,
    order_id: str,
    plan: domain.RoutingPlan,
    new_id: Callable[[], str],
    idempotency_key: str,
) -> list[domain.FulfillmentOrder]:
    """Reserve the plan's units, take its capacity slots and create its fulfillment orders
    (status allocated), each reservation carrying the order id and `idempotency_key`.

    Raises ReservationConflict if any unit or slot is no longer there; the caller's
    transaction then rolls back whatever was reserved before it.
    """
    # One global lock order (location, sku) so concurrent reservers never deadlock.
    for (location_id, sku), quantity in sorted(plan.reservations().items()):
        if await conn.fetchval(SQL_RESERVE, location_id, sku, quantity) is None:
            raise ReservationConflict(f"{quantity} of {sku} at {location_id}")
    full = await take_capacity(conn, plan.fulfillment_orders_per_location())
    if full is not None:
        raise ReservationConflict(f"no daily capacity left at {full}")
    allocations = [
        (group.delivery_group_id, allocation)
        for group in plan.groups
        for allocation in group.allocations
    ]
    return await _create(conn, order_id, allocations, new_id, idempotency_key)


async def set_status(conn: Conn, fulfillment_order_id: str, status: str) -> None:
    """Move a (locked) fulfillment order to `status`."""
    await conn.execute(SQL_SET_STATUS, fulfillment_order_id, status)


async def _settle(
    conn: Conn, fulfillment_order_id: str, order_line_id: str, quantity: int, status: str
) -> None:
    """Move `quantity` reserved units of a fulfillment order line to `status`."""
    whole = await conn.fetchval(
        SQL_SETTLE_WHOLE_RESERVATION, fulfillment_order_id, order_line_id, quantity, status
    )
    if whole is not None:
        return
    row = await conn.fetchrow(SQL_SHRINK_RESERVATION, fulfillment_order_id, order_line_id, quantity)
    if row is not None:
        await conn.execute(
            SQL_INSERT_SETTLED_RESERVATION,
            row["order_id"],
            fulfillment_order_id,
            order_line_id,
            row["location_id"],
            row["sku"],
            quantity,
            status,
            row["idempotency_key"],
        )


async def take_off(
    conn: Conn,
    fo: domain.FulfillmentOrder,
    change: domain.FulfillmentOrderReduction,
    reason: str,
    key: str,
) -> None:
    """Apply a line change to a (locked) fulfillment order: lines reduced and the change
    recorded, the units' reservations released (or transferred), its status moved on, and
    its capacity slot given back when it stops being work."""
    fo_id = fo.fulfillment_order_id
    line_ids = [line.order_line_id for line in change.lines]
    quantities = [line.quantity for line in change.lines]
    await conn.execute(SQL_TAKE_OFF_LINES, fo_id, line_ids, quantities, change.kind)
    await conn.execute(
        SQL_RECORD_LINE_CHANGES,
        change.kind,
        fo.order_id,
        fo_id,
        fo.location_id,
        reason,
        key,
        line_ids,
        quantities,
    )
    settled = "transferred" if change.kind == domain.MOVED else "released"
    released: dict[str, int] = defaultdict(int)
    for line in change.lines:
        await _settle(conn, fo_id, line.order_line_id, line.quantity, settled)
        released[line.sku] += line.quantity
    for sku, quantity in sorted(released.items()):
        await conn.execute(SQL_RELEASE_UNITS, fo.location_id, sku, quantity)
    if change.status_after == domain.CANCELED and change.status_before != domain.CANCELED:
        await conn.execute(SQL_CANCEL, fo_id, reason)
    elif change.status_after != change.status_before:
        await set_status(conn, fo_id, change.status_after)
    if change.frees_capacity and fo.created_at is not None:
        await conn.execute(SQL_FREE_CAPACITY, fo.location_id, fo.created_at)


async def move(
    conn: Conn,
    fo: domain.FulfillmentOrder,
    change: domain.FulfillmentOrderReduction,
    target: domain.Location,
    new_id: Callable[[], str],
    reason: str,
    key: str,
) -> domain.FulfillmentOrder:
    """Reserve the units at `target`, take them off `fo` (its reservations transferred) and
    create the target's fulfillment order; returns it. Raises the domain's refusal when the
    target has not got the units available or no capacity left today."""
    needed: dict[str, int] = defaultdict(int)
    for line in change.lines:
        needed[line.sku] += line.quantity
    for sku, quantity in sorted(needed.items()):
        if await conn.fetchval(SQL_RESERVE, target.location_id, sku, quantity) is None:
            have = await available(conn, target.location_id, sku)
            raise domain.refuse_move_stock(target, sku, have, quantity)
    if await take_capacity(conn, {target.location_id: 1}) is not None:
        raise domain.refuse_move_capacity(target)
    await take_off(conn, fo, change, reason, key)
    [created] = await _create(
        conn,
        fo.order_id,
        [(fo.delivery_group_id, domain.Allocation(target.location_id, change.lines))],
        new_id,
        key,
    )
    return created


async def record_shipment(
    conn: Conn,
    fo: domain.FulfillmentOrder,
    shipment_id: str,
    carrier: str,
    service: str,
    tracking_number: str,
    plan: domain.ShipmentPlan,
) -> domain.Shipment:
    """Record a parcel of a (locked) fulfillment order: lines shipped, reservations
    fulfilled, on hand and reserved down, status as planned."""
    fo_id = fo.fulfillment_order_id
    await conn.execute(SQL_INSERT_SHIPMENT, shipment_id, fo_id, carrier, service, tracking_number)
    line_ids = [item.order_line_id for item in plan.items]
    quantities = [item.quantity for item in plan.items]
    await conn.execute(
        SQL_INSERT_SHIPMENT_ITEMS,
        shipment_id,
        list(range(1, len(line_ids) + 1)),
        line_ids,
        quantities,
    )
    await conn.execute(SQL_ADD_SHIPPED, fo_id, line_ids, quantities)
    sku_of = {line.order_line_id: line.sku for line in fo.lines}
    shipped: dict[str, int] = defaultdict(int)
    for item in plan.items:
        shipped[sku_of[item.order_line_id]] += item.quantity
        await _settle(conn, fo_id, item.order_line_id, item.quantity, "fulfilled")
    for sku, quantity in sorted(shipped.items()):
        await conn.execute(SQL_SHIP_UNITS, fo.location_id, sku, quantity)
    if plan.status_after != fo.status:
        await set_status(conn, fo_id, plan.status_after)
    return await get_shipment(conn, shipment_id)


async def mark_delivered(conn: Conn, shipment_id: str) -> bool:
    """Set a shipment's delivered time; False if it was already set (nothing changes)."""
    return await conn.fetchval(SQL_MARK_DELIVERED, shipment_id) is not None


async def location_of_fulfillment_order(conn: Conn, fulfillment_order_id: str) -> str:
    """The location a fulfillment order ships from."""
    location = await conn.fetchval(SQL_LOCATION_OF_FULFILLMENT_ORDER, fulfillment_order_id)
    if location is None:
        raise NotFound(f"fulfillment order {fulfillment_order_id} does not exist")
    return str(location)


async def location_of_shipment(conn: Conn, shipment_id: str) -> str:
    """The location a shipment left from."""
    location = await conn.fetchval(SQL_LOCATION_OF_SHIPMENT, shipment_id)
    if location is None:
        raise NotFound(f"shipment {shipment_id} does not exist")
    return str(location)


async def order_of_shipment(conn: Conn, shipment_id: str) -> str:
    """The order a shipment belongs to."""
    order_id = await conn.fetchval(SQL_ORDER_OF_SHIPMENT, shipment_id)
    if order_id is None:
        raise NotFound(f"shipment {shipment_id} does not exist")
    return str(order_id)


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


async def signal_order(conn: Conn, order_id: str, event: FulfillmentEvent) -> None:
    """Tell the order's workflow about a fulfillment event, through the outbox (same
    transaction as the change it reports)."""
    await outbox.enqueue(
        cast(asyncpg.Connection, conn),
        SCHEMA,
        "signal",
        order_workflow_id(order_id),
        FULFILLMENT_EVENT_SIGNAL,
        dataclasses.asdict(event),
    )


# ---- personal data -----------------------------------------------------------------------------

# Where fulfillment keeps a shopper's personal data: the ship-to address of each routed
# delivery group, and free text an agent or a warehouse may have typed about the order.
PERSONAL_COLUMNS = (
    PersonalColumns(
        "delivery_groups",
        blank=("address_line1", "address_line2", "city", "region", "postal_code"),
    ),
    PersonalColumns("fulfillment_orders", text=("cancel_reason",)),
    PersonalColumns("fulfillment_line_changes", text=("reason",)),
    PersonalColumns("routing_decisions", text=("summary",)),
)
