"""Fulfillment's store, ship-to-store: the transfer of a fulfillment order from its warehouse
to the pickup store (units leave the warehouse), its receipt at the store (units onto the
store's shelf, reserved there for the order), and who acts for a pickup at the store."""

from __future__ import annotations

from collections import defaultdict

from services.fulfillment import domain
from services.fulfillment.store.common import Conn
from services.fulfillment.store.fulfillment_orders import (
    SQL_INSERT_RESERVATIONS,
    settle_reservation,
)
from services.fulfillment.store.inventory import SQL_SHIP_UNITS

SQL_MARK_IN_TRANSIT = """
UPDATE fulfillment_orders SET
    status = 'in_transit_to_store',
    transfer_carrier = $2,
    transfer_tracking_number = $3,
    transfer_shipped_at = now(),
    updated_at = now()
WHERE id = $1"""

SQL_MARK_RECEIVED = """
UPDATE fulfillment_orders SET received_at_store_at = now(), updated_at = now() WHERE id = $1"""

# The units arrive at the store for this order: on hand and reserved both go up, whatever the
# store's safety stock (they are the order's, not the store's to sell), in (location, sku)
# order like every writer of levels; each is recorded as a receipt of the store's stock.
SQL_RECEIVE_UNITS = """
WITH arrived AS (
    INSERT INTO inventory_levels AS il (location_id, sku, on_hand, reserved)
    SELECT $1, u.sku, u.quantity, u.quantity
    FROM unnest($2::text[], $3::bigint[]) AS u (sku, quantity)
    ORDER BY u.sku
    ON CONFLICT (location_id, sku) DO UPDATE SET
        on_hand = il.on_hand + EXCLUDED.on_hand,
        reserved = il.reserved + EXCLUDED.reserved,
        updated_at = now()
    RETURNING il.sku, il.on_hand
)
INSERT INTO inventory_adjustments
    (location_id, sku, kind, quantity, reason, on_hand_before, on_hand_after, idempotency_key)
SELECT $1, a.sku, 'received', u.quantity, $4, a.on_hand - u.quantity, a.on_hand, $5
FROM arrived a JOIN unnest($2::text[], $3::bigint[]) AS u (sku, quantity) ON u.sku = a.sku"""

# Who acts for a fulfillment order at its store: the pickup store (the warehouse ships a
# ship-to-store one, the store hands it over), else the location itself.
SQL_STORE_OF_FULFILLMENT_ORDER = """
SELECT CASE WHEN pickup_location_id <> '' THEN pickup_location_id ELSE location_id END
FROM fulfillment_orders WHERE id = $1"""


def _units(fo: domain.FulfillmentOrder) -> list[domain.FulfillmentLine]:
    return [line for line in fo.lines if line.remaining > 0]


async def ship_to_store(
    conn: Conn, fo: domain.FulfillmentOrder, carrier: str, tracking_number: str
) -> None:
    """The (locked) fulfillment order left its warehouse for the store: its reservations there
    are transferred and the units leave the warehouse's on hand and reserved."""
    fo_id = fo.fulfillment_order_id
    left: dict[str, int] = defaultdict(int)
    for line in _units(fo):
        await settle_reservation(conn, fo_id, line.order_line_id, line.remaining, "transferred")
        left[line.sku] += line.remaining
    for sku, quantity in sorted(left.items()):
        await conn.execute(SQL_SHIP_UNITS, fo.location_id, sku, quantity)
    await conn.execute(SQL_MARK_IN_TRANSIT, fo_id, carrier, tracking_number)


async def receive_at_store(conn: Conn, fo: domain.FulfillmentOrder) -> None:
    """The store received the (locked) fulfillment order's transfer: the units are on its
    shelf, reserved for the order (so not sold to anyone else), with reservations of their
    own at the store."""
    fo_id = fo.fulfillment_order_id
    store_id = fo.pickup_location_id
    key = f"received_at_store:{fo_id}"
    per_sku: dict[str, int] = defaultdict(int)
    for line in _units(fo):
        per_sku[line.sku] += line.remaining
    skus = sorted(per_sku)
    await conn.execute(
        SQL_RECEIVE_UNITS,
        store_id,
        skus,
        [per_sku[s] for s in skus],
        domain.receipt_reason(fo),
        key,
    )
    lines = _units(fo)
    await conn.execute(
        SQL_INSERT_RESERVATIONS,
        fo.order_id,
        [fo_id] * len(lines),
        [line.order_line_id for line in lines],
        [store_id] * len(lines),
        [line.sku for line in lines],
        [line.remaining for line in lines],
        key,
    )
    await conn.execute(SQL_MARK_RECEIVED, fo_id)


async def store_of_fulfillment_order(conn: Conn, fulfillment_order_id: str) -> str | None:
    """The location that hands a fulfillment order over at its store; None if it does not
    exist."""
    found = await conn.fetchval(SQL_STORE_OF_FULFILLMENT_ORDER, fulfillment_order_id)
    return None if found is None else str(found)
