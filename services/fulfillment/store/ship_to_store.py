"""Fulfillment's store, ship-to-store: the transfer of a fulfillment order from its warehouse
to the pickup store (units leave the warehouse) and its receipt at the store (units onto the
store's shelf, reserved there for the order)."""

from __future__ import annotations

from collections import defaultdict

from services.fulfillment import domain
from services.fulfillment.store.common import Conn
from services.fulfillment.store.fulfillment_orders import record_reservations, ship_units
from services.fulfillment.store.inventory import SQL_ADD_RESERVED, adjust_inventory

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


def _units(fo: domain.FulfillmentOrder) -> list[domain.FulfillmentLine]:
    return [line for line in fo.lines if line.remaining > 0]


async def ship_to_store(
    conn: Conn, fo: domain.FulfillmentOrder, carrier: str, tracking_number: str
) -> None:
    """The (locked) fulfillment order left its warehouse for the store: its reservations there
    are transferred and the units leave the warehouse's on hand and reserved."""
    items = [domain.ShipmentItem(line.order_line_id, line.remaining) for line in _units(fo)]
    await ship_units(conn, fo, items, "transferred")
    await conn.execute(SQL_MARK_IN_TRANSIT, fo.fulfillment_order_id, carrier, tracking_number)


async def receive_at_store(conn: Conn, fo: domain.FulfillmentOrder) -> None:
    """The store received the (locked) fulfillment order's transfer: the units are on its
    shelf (a receipt of the store's stock), reserved for the order whatever the store's safety
    stock (so not sold to anyone else), with reservations of their own at the store."""
    store_id = fo.pickup_location_id
    key = f"received_at_store:{fo.fulfillment_order_id}"
    units = _units(fo)
    per_sku: dict[str, int] = defaultdict(int)
    for line in units:
        per_sku[line.sku] += line.remaining
    reason = domain.receipt_reason(fo)
    await adjust_inventory(
        conn,
        [
            domain.InventoryAdjustment(store_id, sku, domain.RECEIVED, quantity, reason)
            for sku, quantity in sorted(per_sku.items())
        ],
        key,
    )
    for sku, quantity in sorted(per_sku.items()):
        await conn.execute(SQL_ADD_RESERVED, store_id, sku, quantity)
    await record_reservations(conn, fo, store_id, units, key)
    await conn.execute(SQL_MARK_RECEIVED, fo.fulfillment_order_id)
