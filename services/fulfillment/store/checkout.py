"""Fulfillment's store, checkout reservations: holding a cart's units on inventory levels (the
same `reserved` count fulfillment orders use), reading a reservation, and ending its holds
when it is released, expires or an order consumes it.

Locks are taken reservation first, then inventory levels by (location, sku), like every other
writer of levels after its own record."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import asyncpg

from services.fulfillment import domain
from services.fulfillment.store.common import Conn
from services.fulfillment.store.fulfillment_orders import ReservationConflict
from services.fulfillment.store.inventory import SQL_RELEASE_UNITS, reserve_units

# The database's clock decides expiry everywhere (now() is the transaction's start), so every
# replica agrees on which holds are live.
SQL_INSERT_RESERVATION = """
INSERT INTO checkout_reservations (id, status, skus, quantities, expires_at, idempotency_key)
VALUES ($1, 'held', $2, $3, now() + make_interval(secs => $4), $5)
RETURNING expires_at"""

SQL_INSERT_HOLDS = """
INSERT INTO checkout_holds (reservation_id, line_index, location_id, sku, quantity, expires_at)
SELECT $1, i, loc, sku, qty, $6
FROM unnest($2::int[], $3::text[], $4::text[], $5::bigint[]) AS h (i, loc, sku, qty)"""

# A held reservation past its expiry reads 'expired' before the sweeper gets to it.
_RESERVATION_COLUMNS = """
id, CASE WHEN status = 'held' AND expires_at <= now() THEN 'expired' ELSE status END AS status,
skus, quantities, expires_at, order_id, created_at"""

SQL_RESERVATION = f"SELECT {_RESERVATION_COLUMNS} FROM checkout_reservations WHERE id = $1"
SQL_RESERVATION_FOR_UPDATE = f"{SQL_RESERVATION} FOR UPDATE"

SQL_HOLDS = """
SELECT line_index, location_id, sku, quantity FROM checkout_holds
WHERE reservation_id = $1 ORDER BY line_index, location_id"""

# Expired reservations holding units of these SKUs, locked in id order; a writer about to
# count availability of the SKUs releases them first (waiting for a concurrent releaser).
SQL_LOCK_EXPIRED_FOR_SKUS = """
SELECT r.id FROM checkout_reservations r
WHERE r.status = 'held' AND r.expires_at <= now()
  AND r.id IN (SELECT h.reservation_id FROM checkout_holds h
               WHERE h.held AND h.sku = ANY($1::text[]) AND h.expires_at <= now())
ORDER BY r.id
FOR UPDATE OF r"""

# The sweeper's batch: replicas skip each other's rows instead of waiting.
SQL_LOCK_EXPIRED_BATCH = """
SELECT id FROM checkout_reservations
WHERE status = 'held' AND expires_at <= now()
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED"""

SQL_END_HOLDS = """
UPDATE checkout_holds SET held = false
WHERE reservation_id = ANY($1::text[]) AND held
RETURNING location_id, sku, quantity"""

SQL_SET_RESERVATION_STATUS = """
UPDATE checkout_reservations SET status = $2, order_id = $3, updated_at = now()
WHERE id = ANY($1::text[]) AND status = 'held'
RETURNING id"""


def _reservation(
    row: asyncpg.Record, holds: Iterable[asyncpg.Record]
) -> domain.CheckoutReservation:
    return domain.CheckoutReservation(
        reservation_id=row["id"],
        status=row["status"],
        expires_at=row["expires_at"],
        lines=tuple(
            domain.CartLine(sku, quantity)
            for sku, quantity in zip(row["skus"], row["quantities"], strict=True)
        ),
        holds=tuple(
            domain.Hold(h["line_index"], h["location_id"], h["sku"], h["quantity"]) for h in holds
        ),
        order_id=row["order_id"],
        created_at=row["created_at"],
    )


async def get_reservation(
    conn: Conn, reservation_id: str, for_update: bool = False
) -> domain.CheckoutReservation | None:
    """One checkout reservation with its holds; None when there is none. `for_update` locks
    it until commit."""
    sql = SQL_RESERVATION_FOR_UPDATE if for_update else SQL_RESERVATION
    row = await conn.fetchrow(sql, reservation_id)
    if row is None:
        return None
    return _reservation(row, await conn.fetch(SQL_HOLDS, reservation_id))


async def hold(
    conn: Conn,
    reservation_id: str,
    request: domain.ReservationRequest,
    holds: Sequence[domain.Hold],
) -> domain.CheckoutReservation:
    """Record the reservation and reserve its units on their levels. Raises
    ReservationConflict when a concurrent writer took units the routing counted on (the
    caller's transaction then keeps nothing)."""
    expires_at = await conn.fetchval(
        SQL_INSERT_RESERVATION,
        reservation_id,
        [line.sku for line in request.lines],
        [line.quantity for line in request.lines],
        float(request.ttl_seconds),
        request.idempotency_key,
    )
    if short := await reserve_units(conn, domain.held_units(holds)):
        location_id, sku, quantity = short
        raise ReservationConflict(f"{quantity} of {sku} at {location_id}")
    await conn.execute(
        SQL_INSERT_HOLDS,
        reservation_id,
        [h.line_index for h in holds],
        [h.location_id for h in holds],
        [h.sku for h in holds],
        [h.quantity for h in holds],
        expires_at,
    )
    found = await get_reservation(conn, reservation_id)
    assert found is not None  # just written
    return found


async def _end(conn: Conn, reservation_ids: Sequence[str], status: str, order_id: str = "") -> int:
    """Give the (locked) reservations' held units back to their levels and move the held ones
    to `status`; returns how many were held."""
    if not reservation_ids:
        return 0
    units: dict[tuple[str, str], int] = defaultdict(int)
    for row in await conn.fetch(SQL_END_HOLDS, list(reservation_ids)):
        units[(row["location_id"], row["sku"])] += row["quantity"]
    for (location_id, sku), quantity in sorted(units.items()):
        await conn.execute(SQL_RELEASE_UNITS, location_id, sku, quantity)
    changed = await conn.fetch(SQL_SET_RESERVATION_STATUS, list(reservation_ids), status, order_id)
    return len(changed)


async def release_if_held(conn: Conn, reservation: domain.CheckoutReservation, status: str) -> bool:
    """Give a (locked) reservation's units back if it still holds them, moving it to `status`
    (released, or expired when its time had run out anyway); returns whether it held any."""
    return await _end(conn, [reservation.reservation_id], status) > 0


async def consume(conn: Conn, reservation: domain.CheckoutReservation, order_id: str) -> None:
    """Mark a (locked, held) reservation consumed by an order, its units given back to their
    levels in this transaction for the order's routing to reserve again where it uses them
    (so the units are counted once, and those it does not use are free)."""
    await _end(conn, [reservation.reservation_id], domain.CONSUMED, order_id)


async def release_expired_for(conn: Conn, skus: Iterable[str]) -> int:
    """Release the expired reservations holding units of these SKUs (before counting their
    availability); returns how many."""
    ids = [row["id"] for row in await conn.fetch(SQL_LOCK_EXPIRED_FOR_SKUS, sorted(set(skus)))]
    await _end(conn, ids, domain.EXPIRED)
    return len(ids)


async def release_expired_batch(conn: Conn, limit: int) -> int:
    """Release up to `limit` expired reservations nobody else is working on; returns how many."""
    ids = [row["id"] for row in await conn.fetch(SQL_LOCK_EXPIRED_BATCH, limit)]
    await _end(conn, ids, domain.EXPIRED)
    return len(ids)
