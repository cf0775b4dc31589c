"""Capture's tables: named, parameterised SQL and the functions that run it.

Every function takes a connection, so the caller decides the transaction (SubmitOrder and
RecordOrderProgress run inside `oms_platform.db.idempotent`'s).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform import outbox
from oms_platform.errors import AlreadyExists, NotFound
from services.capture import domain

SCHEMA = "capture"

# A connection of our own or one borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy

# ---- shoppers ---------------------------------------------------------------------------

# The shopper known by this channel id first, else the one with this email.
SQL_MATCH_SHOPPER = """
SELECT s.id, s.kind, s.email_normalized, s.name, s.phone, s.company, m.linked
FROM (
    SELECT shopper_id, true AS linked FROM shopper_channel_ids
    WHERE channel = $1 AND channel_customer_id = $2 AND $2 <> ''
    UNION ALL
    SELECT id, false FROM shoppers WHERE email_normalized = $3 AND $3 <> ''
) AS m
JOIN shoppers s ON s.id = m.shopper_id
ORDER BY m.linked DESC
LIMIT 1"""

# Losing a race for the same email inserts nothing; the caller matches again.
SQL_CREATE_SHOPPER = """
INSERT INTO shoppers (id, kind, email_normalized, name, phone, company)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (email_normalized) WHERE email_normalized <> '' DO NOTHING
RETURNING id, kind, email_normalized, name, phone, company"""

SQL_LINK_CHANNEL_ID = """
INSERT INTO shopper_channel_ids (channel, channel_customer_id, shopper_id) VALUES ($1, $2, $3)
ON CONFLICT (channel, channel_customer_id) DO NOTHING"""

# ---- orders -----------------------------------------------------------------------------

# One round trip: the order, its delivery groups, its lines and its first timeline event.
# Nothing is inserted when the channel's order reference is already taken.
SQL_INSERT_ORDER = """
WITH o AS (
    INSERT INTO orders (
        id, channel, channel_order_ref, status, shopper_id, currency,
        subtotal_minor, discount_minor, tax_minor, shipping_minor, grand_total_minor,
        payment_method_type, payment_token, payment_preauthorization_ref, discounts
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
    ON CONFLICT (channel, channel_order_ref) DO NOTHING
    RETURNING id, created_at, updated_at
), g AS (
    INSERT INTO delivery_groups (
        id, order_id, position, ref, recipient_name, line1, line2, city, region,
        postal_code, country_code, delivery_method, shipping_minor
    )
    SELECT x.id, o.id, x.position, x.ref, x.recipient_name, x.line1, x.line2, x.city,
           x.region, x.postal_code, x.country_code, x.delivery_method, x.shipping_minor
    FROM o, jsonb_to_recordset($16::jsonb) AS x(
        id text, position int, ref text, recipient_name text, line1 text, line2 text,
        city text, region text, postal_code text, country_code text, delivery_method text,
        shipping_minor bigint
    )
), l AS (
    INSERT INTO order_lines (
        id, order_id, delivery_group_id, position, sku, name, quantity_ordered,
        unit_price_minor, discounts, taxes, allocated_order_discount_minor, total_minor
    )
    SELECT x.id, o.id, x.delivery_group_id, x.position, x.sku, x.name, x.quantity,
           x.unit_price_minor, x.discounts, x.taxes, x.allocated_order_discount_minor,
           x.total_minor
    FROM o, jsonb_to_recordset($17::jsonb) AS x(
        id text, delivery_group_id text, position int, sku text, name text, quantity bigint,
        unit_price_minor bigint, discounts jsonb, taxes jsonb,
        allocated_order_discount_minor bigint, total_minor bigint
    )
), t AS (
    INSERT INTO timeline_events (order_id, kind, summary, actor)
    SELECT o.id, $18, $19, $20 FROM o
)
SELECT id, created_at, updated_at FROM o"""

_ORDER_COLUMNS = """
    o.id, o.channel, o.channel_order_ref, o.status, o.shopper_id, o.currency,
    o.subtotal_minor, o.discount_minor, o.tax_minor, o.shipping_minor, o.grand_total_minor,
    o.payment_method_type, o.payment_token, o.payment_preauthorization_ref, o.discounts,
    o.created_at, o.updated_at,
    s.kind AS shopper_kind, s.email_normalized AS shopper_email, s.name AS shopper_name,
    s.phone AS shopper_phone, s.company AS shopper_company,
    (SELECT c.channel_customer_id FROM shopper_channel_ids c
     WHERE c.shopper_id = o.shopper_id AND c.channel = o.channel
     ORDER BY c.channel_customer_id LIMIT 1) AS shopper_channel_customer_id
"""

SQL_ORDERS_BY_ID = (
    "SELECT"
    + _ORDER_COLUMNS
    + """FROM orders o JOIN shoppers s ON s.id = o.shopper_id
WHERE o.id = ANY($1::text[])"""
)

# Newest first; the cursor is the last row's (created_at, id). Empty filters match all.
SQL_LIST_ORDERS = (
    "SELECT"
    + _ORDER_COLUMNS
    + """FROM orders o JOIN shoppers s ON s.id = o.shopper_id
WHERE (cardinality($1::text[]) = 0 OR o.status = ANY($1::text[]))
  AND ($2::text = '' OR o.channel = $2::text)
  AND ($3::text = '' OR o.shopper_id = $3::text)
  AND ($4::timestamptz IS NULL OR (o.created_at, o.id) < ($4::timestamptz, $5::text))
ORDER BY o.created_at DESC, o.id DESC
LIMIT $6"""
)

SQL_GROUPS_OF_ORDERS = """
SELECT id, order_id, ref, recipient_name, line1, line2, city, region, postal_code,
       country_code, delivery_method, shipping_minor
FROM delivery_groups WHERE order_id = ANY($1::text[])
ORDER BY order_id, position"""

SQL_LINES_OF_ORDERS = """
SELECT id, order_id, delivery_group_id, sku, name, quantity_ordered, quantity_canceled,
       quantity_allocated, quantity_fulfilled, quantity_return_initiated, quantity_returned,
       unit_price_minor, discounts, taxes, allocated_order_discount_minor, total_minor
FROM order_lines WHERE order_id = ANY($1::text[])
ORDER BY order_id, position"""

# ---- progress ---------------------------------------------------------------------------

SQL_LOCK_ORDER = "SELECT id FROM orders WHERE id = $1 FOR UPDATE"
SQL_LINE_QUANTITIES = """
SELECT id, quantity_ordered, quantity_canceled, quantity_allocated, quantity_fulfilled,
       quantity_return_initiated, quantity_returned
FROM order_lines WHERE order_id = $1"""
SQL_SET_LINE_QUANTITIES = """
UPDATE order_lines AS l SET
    quantity_ordered = x.ordered, quantity_canceled = x.canceled,
    quantity_allocated = x.allocated, quantity_fulfilled = x.fulfilled,
    quantity_return_initiated = x.return_initiated, quantity_returned = x.returned
FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
            $8::bigint[]) AS x(id, ordered, canceled, allocated, fulfilled, return_initiated,
                               returned)
WHERE l.order_id = $1 AND l.id = x.id"""
SQL_TOUCH_ORDER = """
UPDATE orders SET status = CASE WHEN $2::text = '' THEN status ELSE $2::text END,
    updated_at = now()
WHERE id = $1"""
SQL_APPEND_EVENT = """
INSERT INTO timeline_events (order_id, at, kind, summary, actor)
VALUES ($1, coalesce($2::timestamptz, now()), $3, $4, $5)"""

# ---- timeline ---------------------------------------------------------------------------

SQL_TIMELINE = """
SELECT at, kind, summary, actor FROM timeline_events WHERE order_id = $1 ORDER BY at, seq"""
SQL_ORDER_EXISTS = "SELECT 1 FROM orders WHERE id = $1"


def new_id() -> str:
    """A fresh record id."""
    return str(uuid.uuid4())


async def match_shopper(conn: Conn, channel: str, details: domain.ShopperDetails) -> domain.Shopper:
    """The shopper by (channel, channel_customer_id), else by email, else a new one.

    The channel id is linked to whichever shopper is found, so the next order from it
    matches directly.
    """
    email = domain.normalize_email(details.email)
    channel_id = details.channel_customer_id.strip()
    row = await conn.fetchrow(SQL_MATCH_SHOPPER, channel, channel_id, email)
    linked = row is not None and row["linked"]
    if row is None:
        row = await conn.fetchrow(
            SQL_CREATE_SHOPPER,
            new_id(),
            details.kind,
            email,
            details.name,
            details.phone,
            details.company,
        )
        if row is None:  # another order created this email's shopper first
            row = await conn.fetchrow(SQL_MATCH_SHOPPER, channel, channel_id, email)
            assert row is not None
            linked = row["linked"]
    if channel_id and not linked:
        await conn.execute(SQL_LINK_CHANNEL_ID, channel, channel_id, row["id"])
    return domain.Shopper(
        shopper_id=row["id"],
        kind=row["kind"],
        email=row["email_normalized"],
        name=row["name"],
        phone=row["phone"],
        company=row["company"],
        channel_customer_id=channel_id,
    )


async def insert_order(
    conn: Conn,
    order: domain.Order,
    event: domain.TimelineEvent,
    workflow_id: str,
    workflow_name: str,
    lifecycle_payload: dict[str, Any],
) -> domain.Order:
    """Store a captured order with its first event and queue its lifecycle's start.

    Raises AlreadyExists when the channel's order reference is taken.
    """
    groups = [
        {
            "id": g.delivery_group_id,
            "position": i,
            "ref": g.ref,
            "recipient_name": g.recipient_name,
            "line1": g.address.line1,
            "line2": g.address.line2,
            "city": g.address.city,
            "region": g.address.region,
            "postal_code": g.address.postal_code,
            "country_code": g.address.country_code,
            "delivery_method": g.delivery_method,
            "shipping_minor": g.shipping_minor,
        }
        for i, g in enumerate(order.delivery_groups)
    ]
    lines = [
        {
            "id": line.order_line_id,
            "delivery_group_id": line.delivery_group_id,
            "position": i,
            "sku": line.sku,
            "name": line.name,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price_minor,
            "discounts": [_adjustment_json(d) for d in line.discounts],
            "taxes": [{"name": t.name, "amount_minor": t.amount_minor} for t in line.taxes],
            "allocated_order_discount_minor": line.allocated_order_discount_minor,
            "total_minor": line.total_minor,
        }
        for i, line in enumerate(order.lines)
    ]
    t = order.totals
    pm = order.payment_method
    row = await conn.fetchrow(
        SQL_INSERT_ORDER,
        order.order_id,
        order.channel,
        order.channel_order_ref,
        order.status,
        order.shopper.shopper_id,
        order.currency,
        t.subtotal_minor,
        t.discount_minor,
        t.tax_minor,
        t.shipping_minor,
        t.grand_total_minor,
        pm.type,
        pm.token,
        pm.preauthorization_ref,
        [_adjustment_json(d) for d in order.discounts],
        groups,
        lines,
        event.kind,
        event.summary,
        event.actor,
    )
    if row is None:
        raise AlreadyExists(
            "channel_order_ref",
            f"channel_order_ref {order.channel_order_ref!r} is already an order on channel "
            f"{order.channel!r}",
        )
    await outbox.enqueue(
        cast(asyncpg.Connection, conn),
        SCHEMA,
        "start",
        workflow_id,
        workflow_name,
        lifecycle_payload,
    )
    return replace(order, created_at=row["created_at"], updated_at=row["updated_at"])


async def load_orders(conn: Conn, order_ids: Sequence[str]) -> list[domain.Order]:
    """The named orders that exist, in the order asked."""
    rows = await conn.fetch(SQL_ORDERS_BY_ID, list(order_ids))
    by_id = {o.order_id: o for o in await _assemble(conn, rows)}
    return [by_id[i] for i in order_ids if i in by_id]


async def get_order(conn: Conn, order_id: str) -> domain.Order:
    """One order; NotFound when there is none."""
    found = await load_orders(conn, [order_id])
    if not found:
        raise NotFound(f"order {order_id!r} not found")
    return found[0]


async def list_orders(
    conn: Conn,
    statuses: Sequence[str],
    channel: str,
    shopper_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[domain.Order]:
    """Up to `limit` orders matching the filters, newest first, after the cursor."""
    rows = await conn.fetch(
        SQL_LIST_ORDERS,
        list(statuses),
        channel,
        shopper_id,
        after[0] if after else None,
        after[1] if after else "",
        limit,
    )
    return await _assemble(conn, rows)


async def record_progress(
    conn: Conn,
    order_id: str,
    status: str,
    changes: Sequence[domain.LineQuantityChange],
    event: domain.TimelineEvent | None,
) -> domain.Order:
    """Apply a lifecycle step: buckets, status and a timeline event; returns the order."""
    if await conn.fetchval(SQL_LOCK_ORDER, order_id) is None:
        raise NotFound(f"order {order_id!r} not found")
    if changes:
        rows = await conn.fetch(SQL_LINE_QUANTITIES, order_id)
        current = {r["id"]: _quantities(r) for r in rows}
        after = domain.apply_line_changes(order_id, current, changes)
        if after:
            ids = list(after)
            await conn.execute(
                SQL_SET_LINE_QUANTITIES,
                order_id,
                ids,
                [after[i].ordered for i in ids],
                [after[i].canceled for i in ids],
                [after[i].allocated for i in ids],
                [after[i].fulfilled for i in ids],
                [after[i].return_initiated for i in ids],
                [after[i].returned for i in ids],
            )
    await conn.execute(SQL_TOUCH_ORDER, order_id, status)
    if event is not None:
        await conn.execute(
            SQL_APPEND_EVENT, order_id, event.at, event.kind, event.summary, event.actor
        )
    return await get_order(conn, order_id)


async def timeline(conn: Conn, order_id: str) -> list[domain.TimelineEvent]:
    """An order's events, oldest first; NotFound when there is no such order."""
    rows = await conn.fetch(SQL_TIMELINE, order_id)
    if not rows and await conn.fetchval(SQL_ORDER_EXISTS, order_id) is None:
        raise NotFound(f"order {order_id!r} not found")
    return [
        domain.TimelineEvent(at=r["at"], kind=r["kind"], summary=r["summary"], actor=r["actor"])
        for r in rows
    ]


# ---- rows -> domain ---------------------------------------------------------------------


def _adjustment_json(adjustment: domain.Adjustment) -> dict[str, Any]:
    return {
        "code": adjustment.code,
        "description": adjustment.description,
        "amount_minor": adjustment.amount_minor,
    }


def _adjustments(items: list[dict[str, Any]]) -> tuple[domain.Adjustment, ...]:
    return tuple(
        domain.Adjustment(
            code=d.get("code", ""),
            description=d.get("description", ""),
            amount_minor=int(d["amount_minor"]),
        )
        for d in items
    )


def _quantities(row: asyncpg.Record) -> domain.Quantities:
    return domain.Quantities(
        ordered=row["quantity_ordered"],
        canceled=row["quantity_canceled"],
        allocated=row["quantity_allocated"],
        fulfilled=row["quantity_fulfilled"],
        return_initiated=row["quantity_return_initiated"],
        returned=row["quantity_returned"],
    )


async def _assemble(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[domain.Order]:
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    groups: dict[str, list[domain.DeliveryGroup]] = {i: [] for i in ids}
    for g in await conn.fetch(SQL_GROUPS_OF_ORDERS, ids):
        groups[g["order_id"]].append(
            domain.DeliveryGroup(
                delivery_group_id=g["id"],
                ref=g["ref"],
                recipient_name=g["recipient_name"],
                address=domain.Address(
                    line1=g["line1"],
                    line2=g["line2"],
                    city=g["city"],
                    region=g["region"],
                    postal_code=g["postal_code"],
                    country_code=g["country_code"],
                ),
                delivery_method=g["delivery_method"],
                shipping_minor=g["shipping_minor"],
            )
        )
    lines: dict[str, list[domain.OrderLine]] = {i: [] for i in ids}
    for line in await conn.fetch(SQL_LINES_OF_ORDERS, ids):
        lines[line["order_id"]].append(
            domain.OrderLine(
                order_line_id=line["id"],
                delivery_group_id=line["delivery_group_id"],
                sku=line["sku"],
                name=line["name"],
                unit_price_minor=line["unit_price_minor"],
                discounts=_adjustments(line["discounts"]),
                taxes=tuple(
                    domain.TaxLine(name=t.get("name", ""), amount_minor=int(t["amount_minor"]))
                    for t in line["taxes"]
                ),
                allocated_order_discount_minor=line["allocated_order_discount_minor"],
                total_minor=line["total_minor"],
                quantities=_quantities(line),
            )
        )
    return [
        domain.Order(
            order_id=r["id"],
            channel=r["channel"],
            channel_order_ref=r["channel_order_ref"],
            status=r["status"],
            shopper=domain.Shopper(
                shopper_id=r["shopper_id"],
                kind=r["shopper_kind"],
                email=r["shopper_email"],
                name=r["shopper_name"],
                phone=r["shopper_phone"],
                company=r["shopper_company"],
                channel_customer_id=r["shopper_channel_customer_id"] or "",
            ),
            currency=r["currency"],
            delivery_groups=tuple(groups[r["id"]]),
            lines=tuple(lines[r["id"]]),
            discounts=_adjustments(r["discounts"]),
            totals=domain.Totals(
                subtotal_minor=r["subtotal_minor"],
                discount_minor=r["discount_minor"],
                tax_minor=r["tax_minor"],
                shipping_minor=r["shipping_minor"],
                grand_total_minor=r["grand_total_minor"],
            ),
            payment_method=domain.PaymentMethod(
                type=r["payment_method_type"],
                token=r["payment_token"],
                preauthorization_ref=r["payment_preauthorization_ref"],
            ),
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]
