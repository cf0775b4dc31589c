"""Fulfillment's Postgres store: named SQL over the fulfillment schema, domain types out.

Functions that take a connection run inside the caller's transaction, so one RPC can read,
decide (in the domain) and write atomically, together with its idempotency key and outbox row.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform import outbox
from oms_platform.errors import NotFound
from services.fulfillment import domain
from workflows.types import FULFILLMENT_EVENT_SIGNAL, FulfillmentEvent, order_workflow_id

SCHEMA = "fulfillment"

# A connection, whether taken from a pool or not.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# ---- locations and inventory --------------------------------------------------------------

SQL_LOCATIONS = """
SELECT id, name, type, address_line1, address_line2, city, region, postal_code, country_code,
       latitude, longitude, priority, enabled, daily_capacity
FROM locations ORDER BY id"""

SQL_LOCATION_IDS = "SELECT id FROM locations"

SQL_CANDIDATES = """
SELECT id, priority, latitude, longitude FROM locations WHERE enabled ORDER BY id"""

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

SQL_LEVELS_FOR_SKUS = """
SELECT il.location_id, il.sku, il.on_hand, il.reserved, il.safety_stock, l.enabled
FROM inventory_levels il JOIN locations l ON l.id = il.location_id
WHERE il.sku = ANY($1::text[])
ORDER BY il.sku, il.location_id"""

SQL_UPSERT_LEVEL = """
INSERT INTO inventory_levels (location_id, sku, on_hand, safety_stock) VALUES ($1, $2, $3, $4)
ON CONFLICT (location_id, sku) DO UPDATE
    SET on_hand = EXCLUDED.on_hand, safety_stock = EXCLUDED.safety_stock, updated_at = now()
RETURNING location_id, sku, on_hand, reserved, safety_stock"""

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
    (order_id, fulfillment_order_id, order_line_id, location_id, sku, quantity, status)
SELECT $1, fo, line, loc, sku, qty, 'reserved'
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
ORDER BY created_at, id
LIMIT $6"""

SQL_LINES = """
SELECT fulfillment_order_id, order_line_id, sku, quantity, quantity_shipped
FROM fulfillment_order_lines
WHERE fulfillment_order_id = ANY($1::text[])
ORDER BY fulfillment_order_id, line_number"""

SQL_SET_STATUS = """
UPDATE fulfillment_orders SET status = $2, updated_at = now() WHERE id = $1"""

SQL_CANCEL = """
UPDATE fulfillment_orders SET status = 'canceled', cancel_reason = $2, updated_at = now()
WHERE id = $1"""

# ---- reservations ----------------------------------------------------------------------------

SQL_RELEASE_RESERVATIONS = """
UPDATE reservations SET status = 'released', updated_at = now()
WHERE fulfillment_order_id = $1 AND status = 'reserved'
RETURNING location_id, sku, quantity"""

SQL_FULFILL_WHOLE_RESERVATION = """
UPDATE reservations SET status = 'fulfilled', updated_at = now()
WHERE fulfillment_order_id = $1 AND order_line_id = $2 AND status = 'reserved' AND quantity = $3
RETURNING id"""

# A partial shipment: the reserved row keeps what is still held; the shipped part becomes
# its own fulfilled row.
SQL_SHRINK_RESERVATION = """
UPDATE reservations SET quantity = quantity - $3, updated_at = now()
WHERE fulfillment_order_id = $1 AND order_line_id = $2 AND status = 'reserved' AND quantity > $3
RETURNING order_id, location_id, sku"""

SQL_INSERT_FULFILLED_RESERVATION = """
INSERT INTO reservations
    (order_id, fulfillment_order_id, order_line_id, location_id, sku, quantity, status)
VALUES ($1, $2, $3, $4, $5, $6, 'fulfilled')"""

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

SQL_ORDER_OF_SHIPMENT = """
SELECT fo.order_id FROM shipments s JOIN fulfillment_orders fo ON fo.id = s.fulfillment_order_id
WHERE s.id = $1"""


class ReservationConflict(Exception):
    """A concurrent reservation took units this routing counted on; route again."""


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


def _location(row: asyncpg.Record) -> domain.Location:
    return domain.Location(
        location_id=row["id"],
        name=row["name"],
        type=row["type"],
        address=domain.PostalAddress(
            line1=row["address_line1"],
            line2=row["address_line2"],
            city=row["city"],
            region=row["region"],
            postal_code=row["postal_code"],
            country_code=row["country_code"],
        ),
        latitude=row["latitude"],
        longitude=row["longitude"],
        priority=row["priority"],
        enabled=row["enabled"],
        daily_capacity=row["daily_capacity"],
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


async def location_ids(conn: Conn) -> set[str]:
    """Ids of every location."""
    return {row["id"] for row in await conn.fetch(SQL_LOCATION_IDS)}


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
    """Read what routing needs; with `lock`, hold the inventory rows until commit."""
    skus = sorted({line.sku for g in groups for line in g.lines})
    candidates = [
        domain.Candidate(
            row["id"], row["priority"], domain.Coordinates(row["latitude"], row["longitude"])
        )
        for row in await conn.fetch(SQL_CANDIDATES)
    ]
    rows = await conn.fetch(SQL_ENABLED_LEVELS_LOCKED if lock else SQL_ENABLED_LEVELS, skus)
    availability = {(row["location_id"], row["sku"]): _level(row).available for row in rows}
    destinations = {g.delivery_group_id: await coordinates_of(conn, g.address) for g in groups}
    return RoutingSnapshot(candidates, availability, destinations)


async def levels_for_skus(
    conn: Conn, skus: Sequence[str]
) -> list[tuple[domain.InventoryLevel, bool]]:
    """Every location's level of the SKUs, with whether the location is enabled."""
    rows = await conn.fetch(SQL_LEVELS_FOR_SKUS, list(skus))
    return [(_level(row), row["enabled"]) for row in rows]


async def _assemble(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[domain.FulfillmentOrder]:
    ids = [row["id"] for row in rows]
    if not ids:
        return []
    lines: dict[str, list[domain.FulfillmentLine]] = defaultdict(list)
    for row in await conn.fetch(SQL_LINES, ids):
        lines[row["fulfillment_order_id"]].append(
            domain.FulfillmentLine(
                row["order_line_id"], row["sku"], row["quantity"], row["quantity_shipped"]
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


# ---- writing ----------------------------------------------------------------------------------


async def set_inventory_levels(
    conn: Conn, levels: Sequence[domain.InventoryLevel]
) -> list[domain.InventoryLevel]:
    """Upsert on hand and safety stock; returns the levels as stored, in request order."""
    stored: dict[tuple[str, str], domain.InventoryLevel] = {}
    # Rows are written in one global order so concurrent writers never deadlock.
    for level in sorted(levels, key=lambda lv: (lv.location_id, lv.sku)):
        row = await conn.fetchrow(
            SQL_UPSERT_LEVEL, level.location_id, level.sku, level.on_hand, level.safety_stock
        )
        assert row is not None  # an upsert always returns its row
        stored[(level.location_id, level.sku)] = _level(row)
    return [stored[(lv.location_id, lv.sku)] for lv in levels]


async def reserve_and_create(
    conn: Conn,
    order_id: str,
    plan: domain.RoutingPlan,
    new_id: Callable[[], str],
) -> list[domain.FulfillmentOrder]:
    """Reserve the plan's units and create its fulfillment orders (status allocated).

    Raises ReservationConflict if any unit is no longer available; the caller's transaction
    then rolls back whatever was reserved before it.
    """
    # One global lock order (location, sku) so concurrent reservers never deadlock.
    for (location_id, sku), quantity in sorted(plan.reservations().items()):
        if await conn.fetchval(SQL_RESERVE, location_id, sku, quantity) is None:
            raise ReservationConflict(f"{quantity} of {sku} at {location_id}")
    ids: list[str] = []
    line_fo: list[str] = []
    line_numbers: list[int] = []
    line_ids: list[str] = []
    line_locations: list[str] = []
    skus: list[str] = []
    quantities: list[int] = []
    for group in plan.groups:
        for allocation in group.allocations:
            fo_id = new_id()
            ids.append(fo_id)
            await conn.execute(
                SQL_INSERT_FULFILLMENT_ORDER,
                fo_id,
                order_id,
                group.delivery_group_id,
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
            SQL_INSERT_RESERVATIONS, order_id, line_fo, line_ids, line_locations, skus, quantities
        )
    return await fulfillment_orders_by_id(conn, ids)


async def set_status(conn: Conn, fulfillment_order_id: str, status: str) -> None:
    """Move a (locked) fulfillment order to `status`."""
    await conn.execute(SQL_SET_STATUS, fulfillment_order_id, status)


async def cancel(conn: Conn, fo: domain.FulfillmentOrder, reason: str) -> None:
    """Cancel a (locked) fulfillment order and give its reserved units back."""
    released: dict[tuple[str, str], int] = defaultdict(int)
    for row in await conn.fetch(SQL_RELEASE_RESERVATIONS, fo.fulfillment_order_id):
        released[(row["location_id"], row["sku"])] += row["quantity"]
    for (location_id, sku), quantity in sorted(released.items()):
        await conn.execute(SQL_RELEASE_UNITS, location_id, sku, quantity)
    await conn.execute(SQL_CANCEL, fo.fulfillment_order_id, reason)


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
        whole = await conn.fetchval(
            SQL_FULFILL_WHOLE_RESERVATION, fo_id, item.order_line_id, item.quantity
        )
        if whole is None:
            row = await conn.fetchrow(
                SQL_SHRINK_RESERVATION, fo_id, item.order_line_id, item.quantity
            )
            if row is not None:
                await conn.execute(
                    SQL_INSERT_FULFILLED_RESERVATION,
                    row["order_id"],
                    fo_id,
                    item.order_line_id,
                    row["location_id"],
                    row["sku"],
                    item.quantity,
                )
    for sku, quantity in sorted(shipped.items()):
        await conn.execute(SQL_SHIP_UNITS, fo.location_id, sku, quantity)
    if plan.status_after != fo.status:
        await set_status(conn, fo_id, plan.status_after)
    return await get_shipment(conn, shipment_id)


async def mark_delivered(conn: Conn, shipment_id: str) -> bool:
    """Set a shipment's delivered time; False if it was already set (nothing changes)."""
    return await conn.fetchval(SQL_MARK_DELIVERED, shipment_id) is not None


async def order_of_shipment(conn: Conn, shipment_id: str) -> str:
    """The order a shipment belongs to."""
    order_id = await conn.fetchval(SQL_ORDER_OF_SHIPMENT, shipment_id)
    if order_id is None:
        raise NotFound(f"shipment {shipment_id} does not exist")
    return str(order_id)


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
