"""Fulfillment's store, store pickup: a fulfillment order set aside at its store with its
deadline, and the ones whose deadline passed, for the pickup sweeper."""

from __future__ import annotations

from datetime import datetime

from services.fulfillment.store.common import Conn

# The deadline is counted by the database's clock, as the sweeper compares it, so replicas
# agree on when a fulfillment order is due.
SQL_MARK_READY = """
UPDATE fulfillment_orders SET
    status = 'ready_for_pickup',
    ready_for_pickup_at = now(),
    pickup_deadline = now() + make_interval(secs => $2),
    updated_at = now()
WHERE id = $1
RETURNING updated_at"""

# Every replica sweeps; each takes the due rows nobody else holds.
SQL_LOCK_DUE_PICKUPS = """
SELECT id FROM fulfillment_orders
WHERE status = 'ready_for_pickup' AND pickup_deadline <= now()
ORDER BY pickup_deadline, id
LIMIT $1
FOR UPDATE SKIP LOCKED"""


async def mark_ready(
    conn: Conn, fulfillment_order_id: str, collect_within_seconds: float
) -> datetime:
    """Set a (locked) fulfillment order aside for pickup until `collect_within_seconds` from
    now; returns its new updated_at."""
    updated_at: datetime = await conn.fetchval(
        SQL_MARK_READY, fulfillment_order_id, float(collect_within_seconds)
    )
    return updated_at


async def lock_due_pickups(conn: Conn, limit: int) -> list[str]:
    """Lock up to `limit` fulfillment orders not collected by their deadline that no other
    sweeper holds; returns their ids."""
    return [row["id"] for row in await conn.fetch(SQL_LOCK_DUE_PICKUPS, limit)]
