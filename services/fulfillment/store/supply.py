"""Fulfillment's store, incoming supply and backorders: supply records, the fulfillment orders
promised from them (created backordered, with nothing reserved), and their release when units
arrive.

Lock order, as everywhere in the store: fulfillment orders, then inventory levels; supply rows
are locked after the levels (routing reserves levels before it promises supply, and receiving
adds to its level before it locks the supply and its waiting fulfillment orders).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

import asyncpg

from oms_platform.errors import NotFound
from services.fulfillment import domain
from services.fulfillment.store.common import TODAY, Conn
from services.fulfillment.store.fulfillment_orders import (
    fulfillment_orders_by_id,
    insert_lines,
    record_reservations,
)
from services.fulfillment.store.inventory import reserve_units

_SUPPLY_COLUMNS = (
    "id, kind, reference, location_id, sku, quantity, quantity_received, expected_date, "
    "status, created_at, updated_at"
)

SQL_INSERT_SUPPLY = f"""
INSERT INTO supply (id, kind, reference, location_id, sku, quantity, expected_date, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'open')
RETURNING {_SUPPLY_COLUMNS}"""

SQL_SUPPLY = f"SELECT {_SUPPLY_COLUMNS} FROM supply WHERE id = $1"
SQL_SUPPLY_FOR_UPDATE = f"SELECT {_SUPPLY_COLUMNS} FROM supply WHERE id = $1 FOR UPDATE"

# The open pre-order of a SKU at a location (one at most, by a unique index).
SQL_OPEN_PRE_ORDER = f"""
SELECT {_SUPPLY_COLUMNS} FROM supply
WHERE location_id = $1 AND sku = $2 AND kind = 'pre_order' AND status = 'open'"""

# Open supply of some SKUs, locked in id order so two orders never promise the same units.
SQL_OPEN_SUPPLY_FOR_UPDATE = f"""
SELECT {_SUPPLY_COLUMNS} FROM supply
WHERE status = 'open' AND sku = ANY($1::text[])
ORDER BY id
FOR UPDATE"""

# Empty filters match everything; earliest expected first.
SQL_LIST_SUPPLY = f"""
SELECT {_SUPPLY_COLUMNS} FROM supply
WHERE ($1 = '' OR sku = $1)
  AND ($2 = '' OR location_id = $2)
  AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
ORDER BY expected_date, id
LIMIT $4"""

SQL_CHANGE_SUPPLY = f"""
UPDATE supply SET quantity = $2, expected_date = $3, updated_at = now() WHERE id = $1
RETURNING {_SUPPLY_COLUMNS}"""

SQL_RECEIVE_SUPPLY = f"""
UPDATE supply SET quantity_received = quantity_received + $2, status = $3, updated_at = now()
WHERE id = $1
RETURNING {_SUPPLY_COLUMNS}"""

SQL_CANCEL_SUPPLY = f"""
UPDATE supply SET status = 'canceled', updated_at = now() WHERE id = $1
RETURNING {_SUPPLY_COLUMNS}"""

# Units waiting fulfillment orders are promised, per supply.
SQL_PROMISED = """
SELECT fo.supply_id, sum(l.quantity - l.quantity_shipped)::bigint AS units
FROM fulfillment_orders fo JOIN fulfillment_order_lines l ON l.fulfillment_order_id = fo.id
WHERE fo.status = 'backordered' AND fo.supply_id = ANY($1::text[])
GROUP BY fo.supply_id"""

# A supply's waiting fulfillment orders, oldest first, locked.
SQL_WAITING_FOR_UPDATE = """
SELECT id FROM fulfillment_orders
WHERE supply_id = $1 AND status = 'backordered'
ORDER BY created_at, id
FOR UPDATE"""

# Every supply's backordered fulfillment orders for a SKU at a location, oldest first: stock
# that arrives there without a receipt (an adjustment) goes to them in the order they waited.
SQL_WAITING_AT_FOR_UPDATE = """
SELECT fo.id FROM fulfillment_orders fo
JOIN supply s ON s.id = fo.supply_id
WHERE fo.location_id = $1 AND s.sku = $2 AND fo.status = 'backordered'
ORDER BY fo.created_at, fo.id
FOR UPDATE OF fo"""

SQL_INSERT_BACKORDERED = """
INSERT INTO fulfillment_orders
    (id, order_id, delivery_group_id, location_id, status, supply_id, promise_date)
VALUES ($1, $2, $3, $4, 'backordered', $5, $6)"""

SQL_RELEASE_BACKORDER = """
UPDATE fulfillment_orders SET status = 'allocated', updated_at = now()
WHERE id = $1 AND status = 'backordered'"""

# A waiting fulfillment order promised from another supply (perhaps at another location:
# nothing is reserved yet, so nothing moves but the promise).
SQL_REPROMISE = """
UPDATE fulfillment_orders
SET supply_id = $2, location_id = $3, promise_date = $4, updated_at = now()
WHERE id = $1 AND status = 'backordered'"""

SQL_TODAY = f"SELECT {TODAY}"


def _supply(row: asyncpg.Record, promised: int = 0) -> domain.Supply:
    return domain.Supply(
        supply_id=row["id"],
        kind=row["kind"],
        reference=row["reference"],
        location_id=row["location_id"],
        sku=row["sku"],
        quantity=row["quantity"],
        quantity_received=row["quantity_received"],
        expected_date=row["expected_date"],
        status=row["status"],
        promised=promised,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _with_promised(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[domain.Supply]:
    ids = [row["id"] for row in rows]
    promised = {r["supply_id"]: r["units"] for r in await conn.fetch(SQL_PROMISED, ids)}
    return [_supply(row, promised.get(row["id"], 0)) for row in rows]


async def today(conn: Conn) -> date:
    """The UTC day by the database's clock, which every replica shares."""
    found: date = await conn.fetchval(SQL_TODAY)
    return found


async def insert_supply(conn: Conn, supply_id: str, request: domain.SupplyRequest) -> domain.Supply:
    """A new open supply."""
    row = await conn.fetchrow(
        SQL_INSERT_SUPPLY,
        supply_id,
        request.kind,
        request.reference,
        request.location_id,
        request.sku,
        request.quantity,
        request.expected_date,
    )
    assert row is not None  # INSERT … RETURNING
    return _supply(row)


async def open_pre_order(conn: Conn, location_id: str, sku: str) -> domain.Supply | None:
    """The open pre-order of a SKU at a location, if any."""
    row = await conn.fetchrow(SQL_OPEN_PRE_ORDER, location_id, sku)
    return None if row is None else (await _with_promised(conn, [row]))[0]


async def get_supply(conn: Conn, supply_id: str, for_update: bool = False) -> domain.Supply:
    """One supply with the units its waiting fulfillment orders are promised."""
    row = await conn.fetchrow(SQL_SUPPLY_FOR_UPDATE if for_update else SQL_SUPPLY, supply_id)
    if row is None:
        raise NotFound(f"supply {supply_id} does not exist")
    return (await _with_promised(conn, [row]))[0]


async def open_supply(conn: Conn, skus: Sequence[str]) -> list[domain.Supply]:
    """Open supply of these SKUs, locked until commit."""
    rows = await conn.fetch(SQL_OPEN_SUPPLY_FOR_UPDATE, sorted(set(skus)))
    return await _with_promised(conn, rows)


async def list_supply(
    conn: Conn, sku: str, location_id: str, statuses: Sequence[str], limit: int
) -> list[domain.Supply]:
    """Supply matching the filters, earliest expected first."""
    rows = await conn.fetch(SQL_LIST_SUPPLY, sku, location_id, list(statuses), limit)
    return await _with_promised(conn, rows)


async def change_supply(conn: Conn, supply: domain.Supply) -> domain.Supply:
    """Store a (locked) supply's quantity and expected date."""
    row = await conn.fetchrow(
        SQL_CHANGE_SUPPLY, supply.supply_id, supply.quantity, supply.expected_date
    )
    assert row is not None  # the caller locked it
    return (await _with_promised(conn, [row]))[0]


async def receive_supply(conn: Conn, supply_id: str, quantity: int, status: str) -> None:
    """Count units of a (locked) supply as arrived."""
    await conn.execute(SQL_RECEIVE_SUPPLY, supply_id, quantity, status)


async def cancel_supply(conn: Conn, supply_id: str) -> None:
    """Mark a (locked) supply canceled."""
    await conn.execute(SQL_CANCEL_SUPPLY, supply_id)


async def waiting(conn: Conn, supply_id: str) -> list[domain.FulfillmentOrder]:
    """A supply's backordered fulfillment orders, oldest first, locked until commit."""
    ids = [row["id"] for row in await conn.fetch(SQL_WAITING_FOR_UPDATE, supply_id)]
    return await fulfillment_orders_by_id(conn, ids)


async def waiting_at(conn: Conn, location_id: str, sku: str) -> list[domain.FulfillmentOrder]:
    """The backordered fulfillment orders waiting for `sku` at a location, whatever supply
    promised them, oldest first, locked until commit."""
    ids = [row["id"] for row in await conn.fetch(SQL_WAITING_AT_FOR_UPDATE, location_id, sku)]
    return await fulfillment_orders_by_id(conn, ids)


async def create_backordered(
    conn: Conn,
    order_id: str,
    backorders: Sequence[domain.Backorder],
    new_id: Callable[[], str],
) -> list[domain.FulfillmentOrder]:
    """A backordered fulfillment order per backorder, at its supply's location; nothing is
    reserved until the supply arrives."""
    created: list[tuple[str, Sequence[domain.RoutingLine]]] = []
    for backorder in backorders:
        fo_id = new_id()
        created.append((fo_id, backorder.lines))
        supply = backorder.supply
        await conn.execute(
            SQL_INSERT_BACKORDERED,
            fo_id,
            order_id,
            backorder.delivery_group_id,
            supply.location_id,
            supply.supply_id,
            supply.expected_date,
        )
    await insert_lines(conn, created)
    return await fulfillment_orders_by_id(conn, [fo_id for fo_id, _ in created])


class _Short(Exception):
    """A SKU of the fulfillment order is not available at its location."""


async def release(conn: Conn, fo: domain.FulfillmentOrder, idempotency_key: str) -> bool:
    """Reserve a (locked) backordered fulfillment order's units at its location and make it
    the location's work (allocated). False, and nothing done, when the units are not
    available there (reserved meanwhile, or held back as safety stock)."""
    lines = [line for line in fo.lines if line.remaining > 0]
    needed: dict[str, int] = {}
    for line in lines:
        needed[line.sku] = needed.get(line.sku, 0) + line.remaining
    try:
        async with conn.transaction():  # a savepoint: a SKU short undoes the others
            units = {(fo.location_id, sku): quantity for sku, quantity in needed.items()}
            if short := await reserve_units(conn, units):
                raise _Short(short[1])
    except _Short:
        return False
    await record_reservations(conn, fo, fo.location_id, lines, idempotency_key)
    await conn.execute(SQL_RELEASE_BACKORDER, fo.fulfillment_order_id)
    return True


async def repromise(conn: Conn, fulfillment_order_id: str, supply: domain.Supply) -> None:
    """Promise a (locked) waiting fulfillment order from another supply."""
    await conn.execute(
        SQL_REPROMISE,
        fulfillment_order_id,
        supply.supply_id,
        supply.location_id,
        supply.expected_date,
    )
