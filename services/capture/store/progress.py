"""Capture's store, progress: a lifecycle step (items added, line buckets, status, a timeline
event) recorded under the order's lock, waking its watchers on commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from oms_platform import limits
from oms_platform.errors import NotFound
from services.capture import domain
from services.capture.store.common import ORDER_CHANGED_CHANNEL, Conn
from services.capture.store.reads import get_order, line_quantities

# The order, locked for the step, with its lines' buckets (no rows: no such order).
SQL_LOCK_ORDER_LINES = """
SELECT l.id, l.quantity_ordered, l.quantity_canceled, l.quantity_allocated,
       l.quantity_fulfilled, l.quantity_return_initiated, l.quantity_returned
FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id
WHERE o.id = $1
FOR UPDATE OF o"""

# A step in one statement: the lines' new buckets, the status (unless ''), a timeline event
# (unless its kind is ''), and a wake-up for the order's watchers when the transaction commits.
SQL_RECORD_STEP = """
WITH before AS (SELECT status FROM orders WHERE id = $1), lines AS (
    UPDATE order_lines AS l SET
        quantity_ordered = x.ordered, quantity_canceled = x.canceled,
        quantity_allocated = x.allocated, quantity_fulfilled = x.fulfilled,
        quantity_return_initiated = x.return_initiated, quantity_returned = x.returned
    FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                $7::bigint[], $8::bigint[])
         AS x (id, ordered, canceled, allocated, fulfilled, return_initiated, returned)
    WHERE l.order_id = $1 AND l.id = x.id
), event AS (
    INSERT INTO timeline_events (order_id, at, kind, summary, actor)
    SELECT $1, coalesce($10::timestamptz, now()), $11, $12, $13 WHERE $11 <> ''
)
UPDATE orders SET status = CASE WHEN $9::text = '' THEN status ELSE $9::text END,
    updated_at = now()
WHERE id = $1
RETURNING pg_notify($14, id), (SELECT status FROM before) AS status_before, channel, created_at"""

# Items added before fulfillment, in one statement: existing lines' new ordered units, tax
# lines and totals ($2), new lines appended after the last position ($3, `n` from 1), and
# the order's new totals.
SQL_ADD_ITEMS = """
WITH changed AS (
    UPDATE order_lines AS l SET
        quantity_ordered = x.ordered, taxes = x.taxes, total_minor = x.total_minor
    FROM jsonb_to_recordset($2::jsonb) AS x (id text, ordered bigint, taxes jsonb,
                                             total_minor bigint)
    WHERE l.order_id = $1 AND l.id = x.id
), added AS (
    INSERT INTO order_lines (
        id, order_id, delivery_group_id, position, sku, name, quantity_ordered,
        unit_price_minor, discounts, taxes, allocated_order_discount_minor, total_minor,
        order_created_at
    )
    SELECT x.id, o.id, x.delivery_group_id,
           (SELECT coalesce(max(position), 0) FROM order_lines WHERE order_id = $1) + x.n,
           x.sku, x.name, x.ordered, x.unit_price_minor, '[]'::jsonb, x.taxes, 0,
           x.total_minor, o.created_at
    FROM jsonb_to_recordset($3::jsonb) AS x (n int, id text, delivery_group_id text, sku text,
                                             name text, ordered bigint,
                                             unit_price_minor bigint, taxes jsonb,
                                             total_minor bigint)
    JOIN orders o ON o.id = $1
)
UPDATE orders SET subtotal_minor = $4, tax_minor = $5, grand_total_minor = $6
WHERE id = $1"""


# A delivery group's new ship-to address (an address change before it shipped).
SQL_SET_DELIVERY_ADDRESS = """
UPDATE delivery_groups SET line1 = $3, line2 = $4, city = $5, region = $6, postal_code = $7,
    country_code = $8
WHERE order_id = $1 AND id = $2"""


# Delivery groups' new promises ($2 ids, $3 days; NULL: none), naming the groups found.
SQL_SET_GROUP_PROMISES = """
UPDATE delivery_groups AS g SET promised_delivery_date = p.day
FROM unnest($2::text[], $3::date[]) AS p (id, day)
WHERE g.order_id = $1 AND g.id = p.id
RETURNING g.id"""

# The order's promise follows its groups': the latest of them (NULL when none has one).
SQL_SET_ORDER_PROMISE = """
UPDATE orders SET promised_delivery_date =
    (SELECT max(promised_delivery_date) FROM delivery_groups WHERE order_id = $1)
WHERE id = $1"""


class Recorded(NamedTuple):
    """What a step did: the order after it (None when not read back), the status it had
    before, what the transition metrics need, and its lines' buckets after it (what a next
    step under the same lock starts from)."""

    order: domain.Order | None
    status_before: str
    channel: str
    created_at: datetime
    lines: dict[str, domain.Quantities]


async def record_progress(
    conn: Conn,
    order_id: str,
    status: str,
    changes: Sequence[domain.LineQuantityChange],
    event: domain.TimelineEvent | None,
    additions: Sequence[domain.LineAddition] = (),
    *,
    read_back: bool = True,
    addresses: Sequence[tuple[str, domain.PostalAddress]] = (),
    promises: Sequence[domain.DeliveryPromise] = (),
    locked: dict[str, domain.Quantities] | None = None,
) -> Recorded:
    """Apply a lifecycle step: items added, buckets, status, a timeline event, delivery
    groups' new `addresses` (group id, address) and `promises` (the order's promise follows);
    returns the order after it (when `read_back`), the status it had before and its lines.

    `locked`: the lines as an earlier step of the caller's transaction left them (its
    `Recorded.lines`), the order locked by it; without, the order is locked and its lines
    read here. The order's watchers are woken when the caller's transaction commits.
    """
    if locked is None or additions:
        current = await lock_order_lines(conn, order_id)
        if additions:
            await _add_items(conn, order_id, additions)
            current = await lock_order_lines(conn, order_id)
    else:
        current = locked
    after = domain.apply_line_changes(order_id, current, changes) if changes else {}
    ids = list(after)
    row = await conn.fetchrow(
        SQL_RECORD_STEP,
        order_id,
        ids,
        [after[i].ordered for i in ids],
        [after[i].canceled for i in ids],
        [after[i].allocated for i in ids],
        [after[i].fulfilled for i in ids],
        [after[i].return_initiated for i in ids],
        [after[i].returned for i in ids],
        status,
        event.at if event else None,
        event.kind if event else "",
        event.summary if event else "",
        event.actor if event else "",
        ORDER_CHANGED_CHANNEL,
    )
    assert row is not None  # the order is locked above
    for delivery_group_id, address in addresses:
        updated = await conn.execute(
            SQL_SET_DELIVERY_ADDRESS,
            order_id,
            delivery_group_id,
            address.line1,
            address.line2,
            address.city,
            address.region,
            address.postal_code,
            address.country_code,
        )
        if updated == "UPDATE 0":
            raise _group_not_found(order_id, delivery_group_id)
    if promises:
        await _set_promises(conn, order_id, promises)
    order = await get_order(conn, order_id) if read_back else None
    return Recorded(
        order, row["status_before"], row["channel"], row["created_at"], {**current, **after}
    )


async def lock_order_lines(conn: Conn, order_id: str) -> dict[str, domain.Quantities]:
    """Lock the order (until the caller's transaction ends) and read its lines' buckets;
    NotFound when there is no such order."""
    rows = await conn.fetch(SQL_LOCK_ORDER_LINES, order_id)
    if not rows:
        raise NotFound(f"order {limits.echo(order_id)} not found")
    return {r["id"]: line_quantities(r) for r in rows if r["id"] is not None}


async def _set_promises(
    conn: Conn, order_id: str, promises: Sequence[domain.DeliveryPromise]
) -> None:
    """Keep delivery groups' promises and the order's, the latest of its groups'."""
    ids = [p.delivery_group_id for p in promises]
    found = {
        row["id"]
        for row in await conn.fetch(
            SQL_SET_GROUP_PROMISES, order_id, ids, [p.promised_delivery_date for p in promises]
        )
    }
    for delivery_group_id in ids:
        if delivery_group_id not in found:
            raise _group_not_found(order_id, delivery_group_id)
    await conn.execute(SQL_SET_ORDER_PROMISE, order_id)


def _group_not_found(order_id: str, delivery_group_id: str) -> NotFound:
    """The refusal of a progress report naming a delivery group the order does not have."""
    return NotFound(
        f"delivery group {limits.echo(delivery_group_id)} of order "
        f"{limits.echo(order_id)} not found"
    )


async def _add_items(conn: Conn, order_id: str, additions: Sequence[domain.LineAddition]) -> None:
    """Take items added before fulfillment into the order's lines and totals."""
    added = domain.add_items(await get_order(conn, order_id), additions)
    await conn.execute(
        SQL_ADD_ITEMS,
        order_id,
        [
            {
                "id": line.order_line_id,
                "ordered": line.quantities.ordered,
                "taxes": [{"name": t.name, "amount_minor": t.amount_minor} for t in line.taxes],
                "total_minor": line.total_minor,
            }
            for line in added.changed
        ],
        [
            {
                "n": n,
                "id": line.order_line_id,
                "delivery_group_id": line.delivery_group_id,
                "sku": line.sku,
                "name": line.name,
                "ordered": line.quantities.ordered,
                "unit_price_minor": line.unit_price_minor,
                "taxes": [{"name": t.name, "amount_minor": t.amount_minor} for t in line.taxes],
                "total_minor": line.total_minor,
            }
            for n, line in enumerate(added.new, start=1)
        ],
        added.totals.subtotal_minor,
        added.totals.tax_minor,
        added.totals.grand_total_minor,
    )
