"""Fulfillment's store, fulfillment orders: their lines and status, reservations settled as
units ship or leave, shipments, and the signal telling the order's workflow about it."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import asyncpg
from oms.events.v1 import events_pb2

from oms_platform import outbox
from oms_platform.errors import NotFound
from services.fulfillment import domain
from services.fulfillment.store.common import SCHEMA, Conn
from services.fulfillment.store.inventory import (
    SQL_FREE_CAPACITY,
    SQL_RELEASE_UNITS,
    SQL_SHIP_UNITS,
    available,
    reserve_units,
    take_capacity,
)
from workflows.types import FULFILLMENT_EVENT_SIGNAL, FulfillmentEvent, order_workflow_id

# ---- fulfillment orders --------------------------------------------------------------------

# A pickup group's fulfillment orders carry its store, as the routed delivery group names it.
SQL_INSERT_FULFILLMENT_ORDER = """
INSERT INTO fulfillment_orders
    (id, order_id, delivery_group_id, location_id, status, pickup_location_id)
VALUES ($1, $2, $3, $4, 'allocated', coalesce(
    (SELECT pickup_location_id FROM delivery_groups
     WHERE order_id = $2 AND delivery_group_id = $3), ''))"""

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

_FO_COLUMNS = (
    "id, order_id, delivery_group_id, location_id, status, created_at, updated_at, "
    "supply_id, promise_date, "
    "pickup_location_id, ready_for_pickup_at, pickup_deadline, "
    "transfer_carrier, transfer_tracking_number, transfer_shipped_at, received_at_store_at, "
    "promised_delivery_date"
)

SQL_FULFILLMENT_ORDER = f"SELECT {_FO_COLUMNS} FROM fulfillment_orders WHERE id = $1"
SQL_FULFILLMENT_ORDER_FOR_UPDATE = (
    f"SELECT {_FO_COLUMNS} FROM fulfillment_orders WHERE id = $1 FOR UPDATE"
)

SQL_FULFILLMENT_ORDERS_BY_ID = f"""
SELECT {_FO_COLUMNS} FROM fulfillment_orders WHERE id = ANY($1::text[])"""

# An order's fulfillment orders, locked in id order (the order every writer locks them in).
SQL_ORDER_FULFILLMENT_ORDERS_FOR_UPDATE = f"""
SELECT {_FO_COLUMNS} FROM fulfillment_orders WHERE order_id = $1 ORDER BY id FOR UPDATE"""

# Keyset pagination over (created_at, id); empty filters match everything.
SQL_LIST_FULFILLMENT_ORDERS = f"""
SELECT {_FO_COLUMNS} FROM fulfillment_orders
WHERE ($1 = '' OR order_id = $1)
  AND ($2 = '' OR location_id = $2)
  AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4::timestamptz, $5::text))
  AND ($7::text[] IS NULL OR location_id = ANY($7::text[])
       OR pickup_location_id = ANY($7::text[]))
ORDER BY created_at, id
LIMIT $6"""

# A shipment as one row: its columns, then its items (order line, quantity) in item order
# (`_shipment` reads it).
_SHIPMENT_ROW = """
ROW(s.id, s.fulfillment_order_id, s.carrier, s.service, s.tracking_number, s.shipped_at,
    s.delivered_at, s.estimated_delivery_date,
    ARRAY(
        SELECT ROW(i.order_line_id, i.quantity) FROM shipment_items i
        WHERE i.shipment_id = s.id ORDER BY i.item_number
    ))"""

# Fulfillment orders' lines and shipments (with their items), in one statement: per id, its
# lines in line order and its shipments in the order they shipped, as arrays of rows.
SQL_PARTS = f"""
SELECT f.id,
    ARRAY(
        SELECT ROW(l.order_line_id, l.sku, l.quantity, l.quantity_shipped,
                   l.quantity_rejected, l.quantity_canceled, l.quantity_moved)
        FROM fulfillment_order_lines l WHERE l.fulfillment_order_id = f.id
        ORDER BY l.line_number
    ) AS lines,
    ARRAY(
        SELECT {_SHIPMENT_ROW}
        FROM shipments s WHERE s.fulfillment_order_id = f.id
        ORDER BY s.shipped_at, s.id
    ) AS shipments
FROM unnest($1::text[]) AS f (id)"""

SQL_SET_STATUS = """
UPDATE fulfillment_orders SET status = $2, updated_at = now() WHERE id = $1 RETURNING updated_at"""

SQL_CANCEL = """
UPDATE fulfillment_orders SET status = 'canceled', cancel_reason = $2, updated_at = now()
WHERE id = $1 RETURNING updated_at"""

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
INSERT INTO shipments
    (id, fulfillment_order_id, carrier, service, tracking_number, estimated_delivery_date)
VALUES ($1, $2, $3, $4, $5, $6)"""

SQL_INSERT_SHIPMENT_ITEMS = """
INSERT INTO shipment_items (shipment_id, item_number, order_line_id, quantity)
SELECT $1, n, line, qty FROM unnest($2::int[], $3::text[], $4::bigint[]) AS i (n, line, qty)"""

SQL_ADD_SHIPPED = """
UPDATE fulfillment_order_lines AS fol SET quantity_shipped = fol.quantity_shipped + s.qty
FROM unnest($2::text[], $3::bigint[]) AS s (line, qty)
WHERE fol.fulfillment_order_id = $1 AND fol.order_line_id = s.line"""

SQL_SHIPMENT = f"SELECT {_SHIPMENT_ROW} AS shipment FROM shipments s WHERE s.id = $1"

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


class ReservationConflict(Exception):
    """A concurrent reservation took units (or a capacity slot) this routing counted on;
    route again."""


@dataclass(frozen=True)
class Page:
    """One page of fulfillment orders and where the next one starts."""

    fulfillment_orders: list[domain.FulfillmentOrder]
    next_cursor: domain.Cursor | None


# ---- reading ----------------------------------------------------------------------------------


async def _assemble(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[domain.FulfillmentOrder]:
    ids = [row["id"] for row in rows]
    if not ids:
        return []
    lines: dict[str, tuple[domain.FulfillmentLine, ...]] = {}
    shipments: dict[str, tuple[domain.Shipment, ...]] = {}
    for parts in await conn.fetch(SQL_PARTS, ids):
        fo_id = parts["id"]
        lines[fo_id] = tuple(
            domain.FulfillmentLine(
                order_line_id=line_id,
                sku=sku,
                quantity=quantity,
                quantity_shipped=shipped,
                quantity_rejected=rejected,
                quantity_canceled=canceled,
                quantity_moved=moved,
            )
            for line_id, sku, quantity, shipped, rejected, canceled, moved in parts["lines"]
        )
        shipments[fo_id] = tuple(_shipment(row) for row in parts["shipments"])
    return [
        domain.FulfillmentOrder(
            fulfillment_order_id=row["id"],
            order_id=row["order_id"],
            delivery_group_id=row["delivery_group_id"],
            location_id=row["location_id"],
            status=row["status"],
            lines=lines[row["id"]],
            shipments=shipments[row["id"]],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            supply_id=row["supply_id"] or "",
            promise_date=row["promise_date"],
            pickup_location_id=row["pickup_location_id"],
            ready_for_pickup_at=row["ready_for_pickup_at"],
            pickup_deadline=row["pickup_deadline"],
            transfer_carrier=row["transfer_carrier"],
            transfer_tracking_number=row["transfer_tracking_number"],
            transfer_shipped_at=row["transfer_shipped_at"],
            received_at_store_at=row["received_at_store_at"],
            promised_delivery_date=row["promised_delivery_date"],
        )
        for row in rows
    ]


def _shipment(row: Any) -> domain.Shipment:
    """A shipment from its row as `_SHIPMENT_ROW` makes it."""
    (
        shipment_id,
        fulfillment_order_id,
        carrier,
        service,
        tracking_number,
        shipped_at,
        delivered_at,
        estimated,
        items,
    ) = row
    return domain.Shipment(
        shipment_id=shipment_id,
        fulfillment_order_id=fulfillment_order_id,
        carrier=carrier,
        service=service,
        tracking_number=tracking_number,
        items=tuple(domain.ShipmentItem(line_id, quantity) for line_id, quantity in items),
        shipped_at=shipped_at,
        delivered_at=delivered_at,
        estimated_delivery_date=estimated,
    )


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


async def order_fulfillment_orders_for_update(
    conn: Conn, order_id: str
) -> list[domain.FulfillmentOrder]:
    """Every fulfillment order of the order, with lines and shipments, locked until commit."""
    rows = await conn.fetch(SQL_ORDER_FULFILLMENT_ORDERS_FOR_UPDATE, order_id)
    return await _assemble(conn, rows)


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
    row = await conn.fetchval(SQL_SHIPMENT, shipment_id)
    if row is None:
        raise NotFound(f"shipment {shipment_id} does not exist")
    return _shipment(row)


# ---- writing ----------------------------------------------------------------------------------


async def _create(
    conn: Conn,
    order_id: str,
    allocations: Sequence[tuple[str, domain.Allocation]],
    new_id: Callable[[], str],
    idempotency_key: str,
) -> list[domain.FulfillmentOrder]:
    """Fulfillment orders (status allocated), their lines and their reservations, for units
    already reserved; `allocations` are (delivery group, allocation) pairs."""
    created: list[tuple[str, domain.Allocation]] = []
    for delivery_group_id, allocation in allocations:
        fo_id = new_id()
        created.append((fo_id, allocation))
        await conn.execute(
            SQL_INSERT_FULFILLMENT_ORDER,
            fo_id,
            order_id,
            delivery_group_id,
            allocation.location_id,
        )
    await insert_lines(conn, [(fo_id, allocation.lines) for fo_id, allocation in created])
    held = [(fo_id, a.location_id, line) for fo_id, a in created for line in a.lines]
    if held:
        await conn.execute(
            SQL_INSERT_RESERVATIONS,
            order_id,
            [fo_id for fo_id, _, _ in held],
            [line.order_line_id for _, _, line in held],
            [location_id for _, location_id, _ in held],
            [line.sku for _, _, line in held],
            [line.quantity for _, _, line in held],
            idempotency_key,
        )
    return await fulfillment_orders_by_id(conn, [fo_id for fo_id, _ in created])


async def insert_lines(conn: Conn, new: Sequence[tuple[str, Sequence[domain.RoutingLine]]]) -> None:
    """The lines of new fulfillment orders (each id with its lines), numbered from 1 in
    each, in one statement."""
    rows = [
        (fo_id, number, line.order_line_id, line.sku, line.quantity)
        for fo_id, lines in new
        for number, line in enumerate(lines, start=1)
    ]
    if rows:
        await conn.execute(SQL_INSERT_LINES, *(list(column) for column in zip(*rows, strict=True)))


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
    if short := await reserve_units(conn, plan.reservations()):
        location_id, sku, quantity = short
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


async def set_status(conn: Conn, fulfillment_order_id: str, status: str) -> datetime:
    """Move a (locked) fulfillment order to `status`; returns its new updated_at."""
    updated_at: datetime = await conn.fetchval(SQL_SET_STATUS, fulfillment_order_id, status)
    return updated_at


async def _settle_reservation(
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


async def ship_units(
    conn: Conn, fo: domain.FulfillmentOrder, items: Sequence[domain.ShipmentItem], settle_as: str
) -> None:
    """Units of a (locked) fulfillment order leave the building they are reserved at: each
    line's reservation settled as `settle_as` ('fulfilled' for the shopper's parcel,
    'transferred' for a ship-to-store transfer), and on hand and reserved down per SKU."""
    fo_id = fo.fulfillment_order_id
    sku_of = {line.order_line_id: line.sku for line in fo.lines}
    leaving: dict[str, int] = defaultdict(int)
    for item in items:
        leaving[sku_of[item.order_line_id]] += item.quantity
        await _settle_reservation(conn, fo_id, item.order_line_id, item.quantity, settle_as)
    for sku, quantity in sorted(leaving.items()):
        await conn.execute(SQL_SHIP_UNITS, fo.stock_location_id, sku, quantity)


async def record_reservations(
    conn: Conn,
    fo: domain.FulfillmentOrder,
    location_id: str,
    lines: Sequence[domain.FulfillmentLine],
    idempotency_key: str,
) -> None:
    """Reservations of the unshipped units of a fulfillment order's `lines` at a location
    whose level already counts them as reserved."""
    await conn.execute(
        SQL_INSERT_RESERVATIONS,
        fo.order_id,
        [fo.fulfillment_order_id] * len(lines),
        [line.order_line_id for line in lines],
        [location_id] * len(lines),
        [line.sku for line in lines],
        [line.remaining for line in lines],
        idempotency_key,
    )


async def take_off(
    conn: Conn,
    fo: domain.FulfillmentOrder,
    change: domain.FulfillmentOrderReduction,
    reason: str,
    key: str,
) -> datetime | None:
    """Apply a line change to a (locked) fulfillment order: lines reduced and the change
    recorded, the units' reservations released (or transferred), its status moved on, and
    its capacity slot given back when it stops being work. Returns its new updated_at when
    the status moved (None when it did not)."""
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
    for line in change.lines if change.holds_stock else ():
        await _settle_reservation(conn, fo_id, line.order_line_id, line.quantity, settled)
        released[line.sku] += line.quantity
    for sku, quantity in sorted(released.items()):
        await conn.execute(SQL_RELEASE_UNITS, fo.stock_location_id, sku, quantity)
    updated_at: datetime | None = None
    if change.status_after == domain.CANCELED and change.status_before != domain.CANCELED:
        updated_at = await conn.fetchval(SQL_CANCEL, fo_id, reason)
    elif change.status_after != change.status_before:
        updated_at = await set_status(conn, fo_id, change.status_after)
    if change.frees_capacity and fo.created_at is not None:
        await conn.execute(SQL_FREE_CAPACITY, fo.location_id, fo.created_at)
    return updated_at


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
    if short := await reserve_units(
        conn, {(target.location_id, sku): quantity for sku, quantity in needed.items()}
    ):
        _, sku, quantity = short
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
    estimated_delivery_date: date | None = None,
) -> domain.Shipment:
    """Record a parcel of a (locked) fulfillment order: lines shipped, reservations
    fulfilled, on hand and reserved down, status as planned."""
    fo_id = fo.fulfillment_order_id
    await conn.execute(
        SQL_INSERT_SHIPMENT,
        shipment_id,
        fo_id,
        carrier,
        service,
        tracking_number,
        estimated_delivery_date,
    )
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
    await ship_units(conn, fo, plan.items, "fulfilled")
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


async def log_order_event(conn: Conn, event: events_pb2.Event) -> None:
    """Record an event for the order's log, through the outbox (same transaction as the change
    it reports), behind the signals already recorded for the order's workflow."""
    await outbox.enqueue(
        cast(asyncpg.Connection, conn),
        SCHEMA,
        outbox.EVENT,
        order_workflow_id(event.order_id),
        event.type,
        outbox.event_payload(event),
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
