"""Fulfillment's store, transit-time upkeep: the writes of the carriers' transit table (its
reads are the delivery promises' `transit_table`)."""

from __future__ import annotations

from services.fulfillment import domain
from services.fulfillment.store.common import Conn

# Edits check the whole table (caps on bands and methods, a method's 0 km band deleted last)
# before they write: writers take turns, while estimates (plain reads) never wait for them.
SQL_LOCK_TRANSIT_TIMES = "LOCK TABLE transit_times IN SHARE ROW EXCLUSIVE MODE"

SQL_UPSERT_TRANSIT_TIME = """
INSERT INTO transit_times (delivery_method, from_km, transit_days) VALUES ($1, $2, $3)
ON CONFLICT (delivery_method, from_km) DO UPDATE SET transit_days = EXCLUDED.transit_days"""

SQL_DELETE_TRANSIT_TIME = """
DELETE FROM transit_times WHERE delivery_method = $1 AND from_km = $2"""


async def lock_transit_times(conn: Conn) -> None:
    """Keep other edits of the table out until this transaction ends."""
    await conn.execute(SQL_LOCK_TRANSIT_TIMES)


async def upsert_transit_band(conn: Conn, band: domain.TransitBand) -> None:
    """Store a band's days, adding the band when its method has no band starting there."""
    await conn.execute(
        SQL_UPSERT_TRANSIT_TIME, band.delivery_method, band.from_km, band.transit_days
    )


async def delete_transit_band(conn: Conn, delivery_method: str, from_km: int) -> None:
    """Remove the method's band starting at `from_km`."""
    await conn.execute(SQL_DELETE_TRANSIT_TIME, delivery_method, from_km)
