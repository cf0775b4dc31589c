"""Fulfillment's store, delivery addresses: a delivery group's fulfillment orders, locked to
send the group elsewhere, and the address kept for routing its units again."""

from __future__ import annotations

from services.fulfillment import domain
from services.fulfillment.store.common import Conn
from services.fulfillment.store.fulfillment_orders import _FO_COLUMNS, _assemble

# The group's fulfillment orders, locked until commit (in id order, as every locker takes them).
SQL_GROUP_FULFILLMENT_ORDERS_FOR_UPDATE = f"""
SELECT {_FO_COLUMNS}
FROM fulfillment_orders WHERE order_id = $1 AND delivery_group_id = $2
ORDER BY id FOR UPDATE"""

# A new address replaces the one routing reads (a group routed before addresses were kept
# gets its row now).
SQL_SET_DELIVERY_ADDRESS = """
INSERT INTO delivery_groups
    (order_id, delivery_group_id, address_line1, address_line2, city, region, postal_code,
     country_code, delivery_method)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '')
ON CONFLICT (order_id, delivery_group_id) DO UPDATE SET
    address_line1 = excluded.address_line1, address_line2 = excluded.address_line2,
    city = excluded.city, region = excluded.region, postal_code = excluded.postal_code,
    country_code = excluded.country_code"""


async def group_fulfillment_orders(
    conn: Conn, order_id: str, delivery_group_id: str
) -> list[domain.FulfillmentOrder]:
    """The delivery group's fulfillment orders, locked until commit."""
    rows = await conn.fetch(SQL_GROUP_FULFILLMENT_ORDERS_FOR_UPDATE, order_id, delivery_group_id)
    return await _assemble(conn, rows)


async def set_delivery_address(
    conn: Conn, order_id: str, delivery_group_id: str, address: domain.PostalAddress
) -> None:
    """Keep the group's new address for routing its units again later."""
    await conn.execute(
        SQL_SET_DELIVERY_ADDRESS,
        order_id,
        delivery_group_id,
        address.line1,
        address.line2,
        address.city,
        address.region,
        address.postal_code,
        address.country_code.upper(),
    )
