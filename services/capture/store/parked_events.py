"""Capture's store, parked events: warehouse steps of a fulfillment order whose allocation the
log has not recorded yet, held until it has (migration 0008).

Why. A fulfillment order's warehouse steps reach capture from fulfillment's outbox, its
allocation from the order's lifecycle (which reports a section's steps together when the
section ends); a fast warehouse can be heard first. Both writers hold the order's lock, so
the check "is it allocated in the log?" and the allocation's write are serialized: either the
step sees the allocation and is logged at once, or it is parked and the allocation's
transaction logs it right after itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from oms.events.v1 import events_pb2

from services.capture.domain import events as vocabulary
from services.capture.store import events as event_log
from services.capture.store.common import Conn

ALLOCATED = "fulfillment.allocated"

# The channels of the named orders, locked like a progress step locks its order; in id order,
# so two calls naming the same orders cannot deadlock.
SQL_LOCK_ORDER_CHANNELS = """
SELECT id, channel FROM orders WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"""

# The fulfillment orders the log has told of as allocated, for these orders (their bodies are
# read: the fulfillment order is inside the payload).
SQL_ALLOCATED = """
SELECT body FROM order_events WHERE order_id = ANY($1::text[]) AND type = $2"""

# The fulfillment orders with steps waiting, for these orders (a later step waits behind them).
SQL_WAITING = """
SELECT DISTINCT fulfillment_order_id FROM parked_events WHERE order_id = ANY($1::text[])"""


async def lock_orders(conn: Conn, order_ids: Sequence[str]) -> dict[str, str]:
    """Lock the named orders (as a progress step does) and return each one's channel; orders
    that do not exist are left out."""
    rows = await conn.fetch(SQL_LOCK_ORDER_CHANNELS, sorted(set(order_ids)))
    return {r["id"]: r["channel"] for r in rows}


SQL_PARK = """
INSERT INTO parked_events (event_id, order_id, fulfillment_order_id, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
ON CONFLICT (event_id) DO NOTHING"""

# One order's waiting steps of these fulfillment orders, taken, in arrival order.
SQL_TAKE = """
WITH taken AS (
    DELETE FROM parked_events
    WHERE order_id = $1 AND fulfillment_order_id = ANY($2::text[])
    RETURNING id, body
)
SELECT body FROM taken ORDER BY id"""

# The orders with a step waiting longer than allowed, locked like a progress step locks its
# order (in id order: no deadlock with another releaser); SKIP LOCKED: an order being written
# now is released by its writer or on the next pass.
SQL_LOCK_OVERDUE_ORDERS = """
SELECT id FROM orders
WHERE id IN (SELECT order_id FROM parked_events WHERE parked_at < now() - make_interval(secs => $1))
ORDER BY id LIMIT $2
FOR UPDATE SKIP LOCKED"""

SQL_ANY_OVERDUE = """
SELECT EXISTS (SELECT 1 FROM parked_events WHERE parked_at < now() - make_interval(secs => $1))"""

SQL_TAKE_ALL = """
WITH taken AS (DELETE FROM parked_events WHERE order_id = $1 RETURNING id, body)
SELECT body FROM taken ORDER BY id"""


def fulfillment_order_of(event: events_pb2.Event) -> str:
    """The fulfillment order a step is about ('' for an event about none)."""
    if event.WhichOneof("payload") != vocabulary.FULFILLMENT_ORDER_CHANGED:
        return ""
    return event.fulfillment_order_changed.fulfillment_order_id


async def allocated(conn: Conn, order_ids: Sequence[str]) -> set[str]:
    """The fulfillment orders of these orders the log has as allocated."""
    found = set()
    for row in await conn.fetch(SQL_ALLOCATED, list(order_ids), ALLOCATED):
        event = events_pb2.Event.FromString(row["body"])
        found.add(event.fulfillment_order_changed.fulfillment_order_id)
    return found


async def waiting(conn: Conn, order_ids: Sequence[str]) -> set[str]:
    """The fulfillment orders of these orders with steps parked."""
    rows = await conn.fetch(SQL_WAITING, list(order_ids))
    return {r["fulfillment_order_id"] for r in rows}


async def park(conn: Conn, events: Sequence[events_pb2.Event]) -> None:
    """Hold these steps (complete, as the log would keep them) in the caller's transaction (an
    event id already parked is left as it is)."""
    if not events:
        return
    await conn.execute(
        SQL_PARK,
        [e.event_id for e in events],
        [e.order_id for e in events],
        [fulfillment_order_of(e) for e in events],
        [e.SerializeToString() for e in events],
    )


async def release(conn: Conn, order_id: str, fulfillment_order_ids: Iterable[str]) -> int:
    """Log the order's steps parked for these fulfillment orders, after what the caller's
    transaction has written (under the order's lock, which the caller holds). How many."""
    fos = sorted(set(fulfillment_order_ids))
    if not fos:
        return 0
    rows = await conn.fetch(SQL_TAKE, order_id, fos)
    await event_log.append_events(conn, [events_pb2.Event.FromString(r["body"]) for r in rows])
    return len(rows)


async def release_overdue(conn: Conn, max_age_seconds: float, limit: int = 100) -> int:
    """Log, in one transaction, the steps parked longer than `max_age_seconds` for up to
    `limit` orders (with their later steps, in order): an allocation that never names its
    fulfillment order (a lifecycle from before typed events) must not hold them for ever."""
    if not await conn.fetchval(SQL_ANY_OVERDUE, max_age_seconds):
        return 0  # the usual answer, in one round trip
    released = 0
    async with conn.transaction():
        for row in await conn.fetch(SQL_LOCK_OVERDUE_ORDERS, max_age_seconds, limit):
            taken = await conn.fetch(SQL_TAKE_ALL, row["id"])
            events = [events_pb2.Event.FromString(r["body"]) for r in taken]
            await event_log.append_events(conn, events)
            released += len(events)
    return released
