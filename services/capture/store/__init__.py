"""Capture's tables: named, parameterised SQL and the functions that run it.

Every function takes a connection, so the caller decides the transaction. SubmitOrder's
write is one statement (its own implicit transaction); imports and RecordOrderProgress run
inside the caller's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform import db, erasure, limits, outbox, tracing
from oms_platform.errors import AlreadyExists, NotFound
from services.capture import domain
from workflows.types import order_workflow_id

SCHEMA = "capture"

# Postgres NOTIFY channel carrying the id of an order whose status or timeline changed.
ORDER_CHANGED_CHANNEL = "oms_capture_order_changed"
# The relay of capture's outbox listens here.
OUTBOX_CHANNEL = outbox.channel_name(SCHEMA)

# Names of the unique constraints a capture can run into.
CHANNEL_ORDER_REF_CONSTRAINT = "orders_channel_channel_order_ref_key"
SHOPPER_EMAIL_CONSTRAINT = "shoppers_email"

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

# The same match for many orders at once (imports): one row per input position.
SQL_MATCH_SHOPPERS = """
SELECT x.i, s.id, s.kind, s.email_normalized, s.name, s.phone, s.company, m.linked
FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) AS x (i, channel, cid, email)
LEFT JOIN LATERAL (
    SELECT shopper_id, true AS linked FROM shopper_channel_ids
    WHERE channel = x.channel AND channel_customer_id = x.cid AND x.cid <> ''
    UNION ALL
    SELECT id, false FROM shoppers WHERE email_normalized = x.email AND x.email <> ''
    ORDER BY 2 DESC
    LIMIT 1
) AS m ON true
LEFT JOIN shoppers s ON s.id = m.shopper_id"""

# New shoppers of an import; one that lost a race for its email is not inserted (the caller
# matches it again).
SQL_CREATE_SHOPPERS = """
INSERT INTO shoppers (id, kind, email_normalized, name, phone, company)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
ON CONFLICT (email_normalized) WHERE email_normalized <> '' DO NOTHING
RETURNING id"""

SQL_LINK_CHANNEL_IDS = """
INSERT INTO shopper_channel_ids (channel, channel_customer_id, shopper_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (channel, channel_customer_id) DO NOTHING"""

# Fraud screening's velocity rule: lock the shopper (until the transaction ends), so
# concurrent orders of one shopper are screened one after the other, then count their
# orders since a time. Two statements: the count must see what committed while we waited.
SQL_LOCK_SHOPPER = "SELECT id FROM shoppers WHERE id = $1 FOR UPDATE"
# Which channel an order came from: a storefront reads only its own channels' orders.
SQL_CHANNEL_OF_ORDER = "SELECT channel FROM orders WHERE id = $1"

SQL_COUNT_ORDERS_SINCE = """
SELECT count(*) FROM orders WHERE shopper_id = $1 AND created_at > $2::timestamptz"""

# ---- orders: writing --------------------------------------------------------------------

# The rows of an order, as JSON documents (one element per order, group, line, event, start),
# shared by SubmitOrder's single statement and the bulk import. {shopper_id} is where the
# order's shopper comes from: the row itself (import) or the shopper matched in the statement.
_ORDER_ROWS = """
    SELECT x.id, x.channel, x.channel_order_ref, x.status, {shopper_id}, x.currency,
           x.subtotal_minor, x.discount_minor, x.tax_minor, x.shipping_minor,
           x.grand_total_minor, x.payment_method_type, x.payment_token,
           x.payment_preauthorization_ref, x.discounts, x.additional_payment_methods,
           x.billing_address, x.fraud_reasons, x.created_at, x.created_at
    FROM jsonb_to_recordset($1::jsonb) AS x (
        id text, channel text, channel_order_ref text, status text, shopper_id text,
        currency text, subtotal_minor bigint, discount_minor bigint, tax_minor bigint,
        shipping_minor bigint, grand_total_minor bigint, payment_method_type text,
        payment_token text, payment_preauthorization_ref text, discounts jsonb,
        additional_payment_methods jsonb, billing_address jsonb, fraud_reasons text[],
        created_at timestamptz
    )"""
_INSERT_ORDERS = """
    INSERT INTO orders (
        id, channel, channel_order_ref, status, shopper_id, currency,
        subtotal_minor, discount_minor, tax_minor, shipping_minor, grand_total_minor,
        payment_method_type, payment_token, payment_preauthorization_ref, discounts,
        additional_payment_methods, billing_address, fraud_reasons, created_at, updated_at
    )"""
_INSERT_CHILDREN = """
), g AS (
    INSERT INTO delivery_groups (
        id, order_id, position, ref, recipient_name, line1, line2, city, region,
        postal_code, country_code, delivery_method, shipping_minor
    )
    SELECT x.id, x.order_id, x.position, x.ref, x.recipient_name, x.line1, x.line2, x.city,
           x.region, x.postal_code, x.country_code, x.delivery_method, x.shipping_minor
    FROM jsonb_to_recordset($2::jsonb) AS x (
        id text, order_id text, position int, ref text, recipient_name text, line1 text,
        line2 text, city text, region text, postal_code text, country_code text,
        delivery_method text, shipping_minor bigint
    )
    WHERE x.order_id IN (SELECT id FROM o)
), l AS (
    INSERT INTO order_lines (
        id, order_id, delivery_group_id, position, sku, name, quantity_ordered,
        quantity_canceled, quantity_fulfilled, unit_price_minor, discounts, taxes,
        allocated_order_discount_minor, total_minor, order_created_at
    )
    SELECT x.id, x.order_id, x.delivery_group_id, x.position, x.sku, x.name, x.ordered,
           x.canceled, x.fulfilled, x.unit_price_minor, x.discounts, x.taxes,
           x.allocated_order_discount_minor, x.total_minor, x.order_created_at
    FROM jsonb_to_recordset($3::jsonb) AS x (
        id text, order_id text, delivery_group_id text, position int, sku text, name text,
        ordered bigint, canceled bigint, fulfilled bigint, unit_price_minor bigint,
        discounts jsonb, taxes jsonb, allocated_order_discount_minor bigint,
        total_minor bigint, order_created_at timestamptz
    )
    WHERE x.order_id IN (SELECT id FROM o)
), t AS (
    -- In the order given, so events of one instant keep their order (seq).
    INSERT INTO timeline_events (order_id, at, kind, summary, actor)
    SELECT x.order_id, x.at, x.kind, x.summary, x.actor
    FROM jsonb_to_recordset($4::jsonb) AS x (
        n int, order_id text, at timestamptz, kind text, summary text, actor text
    )
    WHERE x.order_id IN (SELECT id FROM o)
    ORDER BY x.n
), b AS (
    -- The lifecycles' starts, in the platform's outbox (see oms_platform.outbox), in the
    -- order the orders arrived.
    INSERT INTO outbox (kind, workflow_id, name, payload, trace_context)
    SELECT 'start', x.workflow_id, x.name, x.payload, x.trace_context
    FROM jsonb_to_recordset($5::jsonb) AS x (
        n int, order_id text, workflow_id text, name text, payload jsonb, trace_context jsonb
    )
    WHERE x.order_id IN (SELECT id FROM o)
    ORDER BY x.n
)"""

# SubmitOrder in one round trip. Claim the idempotency key (with the order id it answers
# with); match the shopper by the channel's customer id, else by email, or create them;
# link the customer id; store the order, its groups, lines, first events and lifecycle
# start. No NOTIFY: Postgres serializes the commits of every notifying transaction, and a
# new order has no watchers yet; the capture process wakes its own relay (others poll).
# Every insert hangs off the claimed key, so a key seen before stores nothing and no row
# comes back. A channel order reference already taken, or a new shopper's email taken by a
# concurrent order first, raises a unique violation and nothing is stored. Returns the
# shopper.
SQL_CAPTURE_ORDER = (
    """
WITH k AS (
    INSERT INTO idempotency_keys (key, request_hash, response) VALUES ($6, $7, $8)
    ON CONFLICT (key) DO NOTHING
    RETURNING key
), m AS (
    SELECT s.id, s.kind, s.email_normalized, s.name, s.phone, s.company, x.linked
    FROM (
        SELECT shopper_id, true AS linked FROM shopper_channel_ids
        WHERE channel = $9 AND channel_customer_id = $10 AND $10 <> ''
        UNION ALL
        SELECT id, false FROM shoppers WHERE email_normalized = $11 AND $11 <> ''
    ) AS x
    JOIN shoppers s ON s.id = x.shopper_id
    ORDER BY x.linked DESC
    LIMIT 1
), ns AS (
    INSERT INTO shoppers (id, kind, email_normalized, name, phone, company)
    SELECT $12, $13, $11, $14, $15, $16 FROM k WHERE NOT EXISTS (SELECT 1 FROM m)
    RETURNING id, kind, email_normalized, name, phone, company, false AS linked
), sh AS (
    SELECT * FROM m UNION ALL SELECT * FROM ns
), cl AS (
    INSERT INTO shopper_channel_ids (channel, channel_customer_id, shopper_id)
    SELECT $9, $10, sh.id FROM k, sh WHERE $10 <> '' AND NOT sh.linked
    ON CONFLICT (channel, channel_customer_id) DO NOTHING
), o AS ("""
    + _INSERT_ORDERS
    + _ORDER_ROWS.format(shopper_id="(SELECT id FROM sh)")
    + """
    WHERE EXISTS (SELECT 1 FROM k)
    RETURNING id"""
    + _INSERT_CHILDREN
    + """
SELECT sh.id, sh.kind, sh.email_normalized, sh.name, sh.phone, sh.company
FROM o, sh"""
)

# A batch of imported orders; one whose channel order reference is taken is skipped (the
# ids of the stored ones come back).
SQL_IMPORT_ORDERS = (
    """
WITH o AS ("""
    + _INSERT_ORDERS
    + _ORDER_ROWS.format(shopper_id="x.shopper_id")
    + """
    ON CONFLICT (channel, channel_order_ref) DO NOTHING
    RETURNING id"""
    + _INSERT_CHILDREN
    + """
SELECT id FROM o"""
)

SQL_WAKE_OUTBOX = "SELECT pg_notify($1, '')"

# ---- idempotency keys of captures -------------------------------------------------------

SQL_STORED_CAPTURE = "SELECT request_hash, response FROM idempotency_keys WHERE key = $1"
SQL_STORED_CAPTURES = """
SELECT key, request_hash, response FROM idempotency_keys WHERE key = ANY($1::text[])"""
# An import's keys with their responses; the keys come back that were free.
SQL_CLAIM_CAPTURE_KEYS = """
INSERT INTO idempotency_keys (key, request_hash, response)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
ON CONFLICT (key) DO NOTHING
RETURNING key"""
SQL_RELEASE_KEYS = "DELETE FROM idempotency_keys WHERE key = ANY($1::text[])"
SQL_TAKEN_CHANNEL_ORDER_REFS = """
SELECT channel, channel_order_ref FROM orders
WHERE (channel, channel_order_ref) IN (
    SELECT * FROM unnest($1::text[], $2::text[])
)"""

# ---- orders: reading --------------------------------------------------------------------

_ORDER_COLUMNS = """
    o.id, o.channel, o.channel_order_ref, o.status, o.shopper_id, o.currency,
    o.subtotal_minor, o.discount_minor, o.tax_minor, o.shipping_minor, o.grand_total_minor,
    o.payment_method_type, o.payment_token, o.payment_preauthorization_ref, o.discounts,
    o.additional_payment_methods, o.billing_address, o.fraud_reasons,
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

# ListOrders' filters on an order; empty ones match everything. $6/$7 is the cursor: the
# last row's (created_at, id).
_LIST_FILTERS = """
  (cardinality($1::text[]) = 0 OR o.status = ANY($1::text[]))
  AND ($2::text = '' OR o.channel = $2::text)
  AND ($3::text = '' OR o.shopper_id = $3::text)
  AND ($4::timestamptz IS NULL OR o.created_at >= $4::timestamptz)
  AND ($5::timestamptz IS NULL OR o.created_at < $5::timestamptz)
  AND ($6::timestamptz IS NULL OR (o.created_at, o.id) < ($6::timestamptz, $7::text))"""

# Newest first, driven by the orders indexes (created_at / status / channel / shopper, each
# with created_at and id): a page reads about a page of index entries, or a page divided by
# how common a filtered value is. A SKU here comes with a shopper: each of their few orders
# is probed for it.
SQL_LIST_ORDERS = (
    "SELECT"
    + _ORDER_COLUMNS
    + "FROM orders o JOIN shoppers s ON s.id = o.shopper_id\nWHERE"
    + _LIST_FILTERS
    + """
  AND ($9::text = '' OR o.id IN (SELECT l.order_id FROM order_lines l WHERE l.sku = $9::text))
ORDER BY o.created_at DESC, o.id DESC
LIMIT $8"""
)

# Orders with a line of SKU $3, newest first, driven by order_lines_sku_newest: the index
# hands out (order_created_at, order_id) in page order and each entry fetches its order
# (status and channel filters applied there) until the page is full, so a page costs about
# a page however many orders have the SKU. An order with the SKU on several lines is listed
# once, by the first of them.
SQL_LIST_ORDERS_WITH_SKU = (
    """
SELECT x.* FROM order_lines l
CROSS JOIN LATERAL (
    SELECT"""
    + _ORDER_COLUMNS
    + """FROM orders o JOIN shoppers s ON s.id = o.shopper_id
    WHERE o.id = l.order_id
      AND (cardinality($1::text[]) = 0 OR o.status = ANY($1::text[]))
      AND ($2::text = '' OR o.channel = $2::text)
    OFFSET 0
) AS x
WHERE l.sku = $3::text
  AND ($4::timestamptz IS NULL OR l.order_created_at >= $4::timestamptz)
  AND ($5::timestamptz IS NULL OR l.order_created_at < $5::timestamptz)
  AND ($6::timestamptz IS NULL OR (l.order_created_at, l.order_id) < ($6::timestamptz, $7::text))
  AND NOT EXISTS (
      SELECT 1 FROM order_lines d
      WHERE d.order_id = l.order_id AND d.sku = l.sku AND d.position < l.position
  )
ORDER BY l.order_created_at DESC, l.order_id DESC
LIMIT $8"""
)

# Filters that turn on or off per request defeat a generic plan; each list query is planned
# for its own parameters (this setting, for the query only).
PLAN_FOR_PARAMETERS = ("plan_cache_mode", "force_custom_plan")

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
RETURNING pg_notify($14, id), (SELECT status FROM before) AS status_before"""

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

# ---- timeline ---------------------------------------------------------------------------

SQL_TIMELINE = """
SELECT at, kind, summary, actor FROM timeline_events WHERE order_id = $1 ORDER BY at, seq"""
SQL_ORDER_EXISTS = "SELECT 1 FROM orders WHERE id = $1"

# A watcher's view: the order's status and the events recorded after `$2` (a timeline seq).
SQL_CHANGES_SINCE = """
SELECT o.status, o.updated_at, e.seq, e.at, e.kind, e.summary, e.actor
FROM orders o
LEFT JOIN timeline_events e ON e.order_id = o.id AND e.seq > $2
WHERE o.id = $1
ORDER BY e.at, e.seq"""


def new_id() -> str:
    """A fresh record id."""
    return str(uuid.uuid4())


# ---- shoppers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShopperMatch:
    """The shopper an order belongs to; `is_new`: nobody matched, so they are yet to be
    created (with the order)."""

    shopper: domain.Shopper
    is_new: bool


def _shopper_from_row(row: Any, channel_id: str) -> domain.Shopper:
    return domain.Shopper(
        shopper_id=row["id"],
        kind=row["kind"],
        email=row["email_normalized"],
        name=row["name"],
        phone=row["phone"],
        company=row["company"],
        channel_customer_id=channel_id,
    )


def _new_shopper(details: domain.ShopperDetails, channel_id: str) -> domain.Shopper:
    return domain.Shopper(
        shopper_id=new_id(),
        kind=details.kind,
        email=domain.normalize_email(details.email),
        name=details.name,
        phone=details.phone,
        company=details.company,
        channel_customer_id=channel_id,
    )


async def find_shopper(conn: Conn, channel: str, details: domain.ShopperDetails) -> ShopperMatch:
    """The shopper by (channel, channel_customer_id), else by email, else a new one (not
    stored yet). The velocity rule uses it to lock the shopper before counting."""
    channel_id = details.channel_customer_id.strip()
    email = domain.normalize_email(details.email)
    row = await conn.fetchrow(SQL_MATCH_SHOPPER, channel, channel_id, email)
    if row is None:
        return ShopperMatch(_new_shopper(details, channel_id), is_new=True)
    return ShopperMatch(_shopper_from_row(row, channel_id), is_new=False)


async def lock_shopper(conn: Conn, shopper_id: str) -> None:
    """Hold the shopper until the caller's transaction ends."""
    await conn.execute(SQL_LOCK_SHOPPER, shopper_id)


async def count_orders_since(conn: Conn, shopper_id: str, since: datetime) -> int:
    """The shopper's orders created after `since`."""
    return int(await conn.fetchval(SQL_COUNT_ORDERS_SINCE, shopper_id, since) or 0)


async def match_shoppers(
    conn: Conn, requests: Sequence[tuple[str, domain.ShopperDetails]]
) -> list[domain.Shopper]:
    """The shopper of each (channel, details), in order, creating and linking as needed.

    New people's orders in one batch share one new shopper (by email, else by the channel's
    customer id). Runs inside the caller's transaction.
    """
    channel_ids = [d.channel_customer_id.strip() for _, d in requests]
    emails = [domain.normalize_email(d.email) for _, d in requests]
    found: dict[int, tuple[domain.Shopper, bool]] = {}  # position -> (shopper, linked)
    pending = list(range(len(requests)))
    for _ in range(3):  # a concurrent writer may take a new email between match and insert
        rows = await conn.fetch(
            SQL_MATCH_SHOPPERS,
            pending,
            [requests[i][0] for i in pending],
            [channel_ids[i] for i in pending],
            [emails[i] for i in pending],
        )
        for row in rows:
            if row["id"] is not None:
                found[row["i"]] = (_shopper_from_row(row, channel_ids[row["i"]]), row["linked"])
        pending = [i for i in pending if i not in found]
        if not pending:
            break
        people: dict[str, domain.Shopper] = {}
        for i in pending:
            person = emails[i] or f"{requests[i][0]}\x00{channel_ids[i]}"
            if person not in people:
                people[person] = _new_shopper(requests[i][1], channel_ids[i])
        news = list(people.values())
        created = await conn.fetch(
            SQL_CREATE_SHOPPERS,
            [n.shopper_id for n in news],
            [n.kind for n in news],
            [n.email for n in news],
            [n.name for n in news],
            [n.phone for n in news],
            [n.company for n in news],
        )
        stored = {r["id"] for r in created}
        for i in pending:
            new = people[emails[i] or f"{requests[i][0]}\x00{channel_ids[i]}"]
            if new.shopper_id in stored:
                found[i] = (replace(new, channel_customer_id=channel_ids[i]), False)
        pending = [i for i in pending if i not in found]
        if not pending:
            break
    if pending:
        raise RuntimeError(f"could not match the shoppers of {len(pending)} orders")
    links = [
        (requests[i][0], channel_ids[i], found[i][0].shopper_id)
        for i in range(len(requests))
        if channel_ids[i] and not found[i][1]
    ]
    if links:
        await conn.execute(
            SQL_LINK_CHANNEL_IDS,
            [c for c, _, _ in links],
            [cid for _, cid, _ in links],
            [sid for _, _, sid in links],
        )
    return [found[i][0] for i in range(len(requests))]


# ---- orders: writing --------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRows:
    """An order (or many) as the JSON rows the insert statements take."""

    orders: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    lines: list[dict[str, Any]]
    events: list[dict[str, Any]]
    starts: list[dict[str, Any]]

    @staticmethod
    def empty() -> OrderRows:
        return OrderRows([], [], [], [], [])

    def add(
        self,
        order: domain.Order,
        events: Sequence[domain.TimelineEvent],
        start: tuple[str, str, dict[str, Any]] | None,
    ) -> None:
        """Add an order with its first events and, unless None, its lifecycle start
        (workflow id, workflow name, payload)."""
        assert order.created_at is not None, "the capture time is set before storing"
        created = order.created_at.isoformat()
        t = order.totals
        pm = order.payment_method
        self.orders.append(
            {
                "id": order.order_id,
                "channel": order.channel,
                "channel_order_ref": order.channel_order_ref,
                "status": order.status,
                "shopper_id": order.shopper.shopper_id,
                "currency": order.currency,
                "subtotal_minor": t.subtotal_minor,
                "discount_minor": t.discount_minor,
                "tax_minor": t.tax_minor,
                "shipping_minor": t.shipping_minor,
                "grand_total_minor": t.grand_total_minor,
                "payment_method_type": pm.type,
                "payment_token": pm.token,
                "payment_preauthorization_ref": pm.preauthorization_ref,
                "discounts": [_adjustment_json(d) for d in order.discounts],
                "additional_payment_methods": [
                    _payment_method_json(m) for m in order.additional_payment_methods
                ],
                "billing_address": (
                    _address_json(order.billing_address) if order.billing_address else None
                ),
                "fraud_reasons": list(order.fraud_reasons),
                "created_at": created,
            }
        )
        for i, g in enumerate(order.delivery_groups):
            self.groups.append(
                {
                    "id": g.delivery_group_id,
                    "order_id": order.order_id,
                    "position": i,
                    "ref": g.ref,
                    "recipient_name": g.recipient_name,
                    **_address_json(g.address),
                    "delivery_method": g.delivery_method,
                    "shipping_minor": g.shipping_minor,
                }
            )
        for i, line in enumerate(order.lines):
            q = line.quantities
            self.lines.append(
                {
                    "id": line.order_line_id,
                    "order_id": order.order_id,
                    "delivery_group_id": line.delivery_group_id,
                    "position": i,
                    "sku": line.sku,
                    "name": line.name,
                    "ordered": q.ordered,
                    "canceled": q.canceled,
                    "fulfilled": q.fulfilled,
                    "unit_price_minor": line.unit_price_minor,
                    "discounts": [_adjustment_json(d) for d in line.discounts],
                    "taxes": [{"name": x.name, "amount_minor": x.amount_minor} for x in line.taxes],
                    "allocated_order_discount_minor": line.allocated_order_discount_minor,
                    "total_minor": line.total_minor,
                    "order_created_at": created,
                }
            )
        for event in events:
            self.events.append(
                {
                    "n": len(self.events),
                    "order_id": order.order_id,
                    "at": (event.at or order.created_at).isoformat(),
                    "kind": event.kind,
                    "summary": event.summary,
                    "actor": event.actor,
                }
            )
        if start is not None:
            workflow_id, name, payload = start
            self.starts.append(
                {
                    "n": len(self.starts),
                    "order_id": order.order_id,
                    "workflow_id": workflow_id,
                    "name": name,
                    "payload": payload,
                    # The submitting call's trace continues when the relay starts it.
                    "trace_context": tracing.carrier(),
                }
            )


class ShopperTaken(Exception):
    """A new shopper's email was taken by a concurrent order first; match again."""


async def capture_order(
    conn: Conn,
    key: str,
    fingerprint: bytes,
    response: bytes,
    details: domain.ShopperDetails,
    new_shopper_id: str,
    order: domain.Order,
    events: Sequence[domain.TimelineEvent],
    start: tuple[str, str, dict[str, Any]],
) -> domain.Shopper | None:
    """Store a captured order under its idempotency key in one statement, matching (or
    creating, as `new_shopper_id`) its shopper from `details`; returns the shopper. None
    when the key was taken before (nothing stored). `order.shopper` is not used.

    Raises AlreadyExists when the channel's order reference is taken, ShopperTaken when a
    concurrent order created the new shopper's email first.
    """
    rows = OrderRows.empty()
    rows.add(order, events, start)
    channel_id = details.channel_customer_id.strip()
    try:
        row = await conn.fetchrow(
            SQL_CAPTURE_ORDER,
            rows.orders,
            rows.groups,
            rows.lines,
            rows.events,
            rows.starts,
            key,
            fingerprint,
            response,
            order.channel,
            channel_id,
            domain.normalize_email(details.email),
            new_shopper_id,
            details.kind,
            details.name,
            details.phone,
            details.company,
        )
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == CHANNEL_ORDER_REF_CONSTRAINT:
            raise channel_ref_taken(order.channel, order.channel_order_ref) from error
        if error.constraint_name == SHOPPER_EMAIL_CONSTRAINT:
            raise ShopperTaken(details.email) from error
        raise
    return None if row is None else _shopper_from_row(row, channel_id)


def channel_ref_taken(channel: str, channel_order_ref: str) -> AlreadyExists:
    """The error for a channel order reference that is already an order."""
    return AlreadyExists(
        "channel_order_ref",
        f"channel_order_ref {limits.echo(channel_order_ref)} is already an order on channel "
        f"{limits.echo(channel)}",
    )


async def stored_capture(conn: Conn, key: str) -> tuple[bytes, bytes | None] | None:
    """(request fingerprint, response) stored under an idempotency key, if any."""
    row = await conn.fetchrow(SQL_STORED_CAPTURE, key)
    if row is None:
        return None
    response = row["response"]
    return bytes(row["request_hash"]), bytes(response) if response is not None else None


async def stored_captures(conn: Conn, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes | None]]:
    """key -> (request fingerprint, response) for those of `keys` already stored."""
    rows = await conn.fetch(SQL_STORED_CAPTURES, list(keys))
    return {
        r["key"]: (
            bytes(r["request_hash"]),
            bytes(r["response"]) if r["response"] is not None else None,
        )
        for r in rows
    }


async def taken_channel_order_refs(
    conn: Conn, refs: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Those (channel, channel_order_ref) pairs that are already orders."""
    if not refs:
        return set()
    rows = await conn.fetch(
        SQL_TAKEN_CHANNEL_ORDER_REFS, [c for c, _ in refs], [r for _, r in refs]
    )
    return {(r["channel"], r["channel_order_ref"]) for r in rows}


async def claim_capture_keys(conn: Conn, claims: Sequence[tuple[str, bytes, bytes]]) -> set[str]:
    """Store (key, fingerprint, response) for keys not seen before; returns those claimed."""
    rows = await conn.fetch(
        SQL_CLAIM_CAPTURE_KEYS,
        [k for k, _, _ in claims],
        [f for _, f, _ in claims],
        [r for _, _, r in claims],
    )
    return {r["key"] for r in rows}


async def release_keys(conn: Conn, keys: Sequence[str]) -> None:
    """Forget idempotency keys whose orders were not stored after all."""
    if keys:
        await conn.execute(SQL_RELEASE_KEYS, list(keys))


async def import_orders(conn: Conn, rows: OrderRows) -> set[str]:
    """Store a batch of orders; returns the ids stored (a taken channel reference is
    skipped). Wakes the outbox relay when lifecycles are to start."""
    if not rows.orders:
        return set()
    stored = await conn.fetch(
        SQL_IMPORT_ORDERS, rows.orders, rows.groups, rows.lines, rows.events, rows.starts
    )
    if rows.starts:
        await conn.execute(SQL_WAKE_OUTBOX, OUTBOX_CHANNEL)
    return {r["id"] for r in stored}


# ---- orders: reading --------------------------------------------------------------------


async def load_orders(conn: Conn, order_ids: Sequence[str]) -> list[domain.Order]:
    """The named orders that exist, in the order asked."""
    rows = await conn.fetch(SQL_ORDERS_BY_ID, list(order_ids))
    by_id = {o.order_id: o for o in await _assemble(conn, rows)}
    return [by_id[i] for i in order_ids if i in by_id]


async def channel_of(conn: Conn, order_id: str) -> str:
    """The channel an order came from; NotFound when there is no such order."""
    channel = await conn.fetchval(SQL_CHANNEL_OF_ORDER, order_id)
    if channel is None:
        raise NotFound(f"order {limits.echo(order_id)} not found")
    return str(channel)


async def get_order(conn: Conn, order_id: str) -> domain.Order:
    """One order; NotFound when there is none."""
    found = await load_orders(conn, [order_id])
    if not found:
        raise NotFound(f"order {limits.echo(order_id)} not found")
    return found[0]


def list_query(
    where: domain.OrderFilter, after: tuple[datetime, str] | None, limit: int
) -> tuple[str, list[Any]]:
    """The statement of one ListOrders page and its arguments."""
    cursor_at, cursor_id = after if after else (None, "")
    head = [list(where.statuses), where.channel]
    window = [where.created_from, where.created_to, cursor_at, cursor_id, limit]
    if where.sku and not where.shopper_id:
        # A shopper's own orders are fewer than a SKU's: then the orders side drives.
        return SQL_LIST_ORDERS_WITH_SKU, [*head, where.sku, *window]
    return SQL_LIST_ORDERS, [*head, where.shopper_id, *window, where.sku]


async def list_orders(
    conn: Conn,
    where: domain.OrderFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[domain.Order]:
    """Up to `limit` orders matching the filter, newest first, after the cursor."""
    sql, args = list_query(where, after, limit)
    async with db.session_setting(conn, *PLAN_FOR_PARAMETERS):
        rows = await conn.fetch(sql, *args)
    return await _assemble(conn, rows)


async def record_progress(
    conn: Conn,
    order_id: str,
    status: str,
    changes: Sequence[domain.LineQuantityChange],
    event: domain.TimelineEvent | None,
    additions: Sequence[domain.LineAddition] = (),
) -> tuple[domain.Order, str]:
    """Apply a lifecycle step: items added, buckets, status and a timeline event; returns the
    order and the status it had before.

    The order's watchers are woken when the caller's transaction commits.
    """
    rows = await conn.fetch(SQL_LOCK_ORDER_LINES, order_id)
    if not rows:
        raise NotFound(f"order {limits.echo(order_id)} not found")
    if additions:
        await _add_items(conn, order_id, additions)
        rows = await conn.fetch(SQL_LOCK_ORDER_LINES, order_id)
    current = {r["id"]: _quantities(r) for r in rows if r["id"] is not None}
    after = domain.apply_line_changes(order_id, current, changes) if changes else {}
    ids = list(after)
    before = await conn.fetchval(
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
        column=1,
    )
    return await get_order(conn, order_id), before


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


async def timeline(conn: Conn, order_id: str) -> list[domain.TimelineEvent]:
    """An order's events, oldest first; NotFound when there is no such order."""
    rows = await conn.fetch(SQL_TIMELINE, order_id)
    if not rows and await conn.fetchval(SQL_ORDER_EXISTS, order_id) is None:
        raise NotFound(f"order {limits.echo(order_id)} not found")
    return [
        domain.TimelineEvent(at=r["at"], kind=r["kind"], summary=r["summary"], actor=r["actor"])
        for r in rows
    ]


@dataclass(frozen=True)
class OrderChanges:
    """What a watcher has not seen yet: the status now and newer events (`last_seq`: the
    newest event's sequence number, to ask from next time)."""

    status: str
    updated_at: datetime
    events: list[domain.TimelineEvent]
    last_seq: int


async def changes_since(conn: Conn, order_id: str, seq: int) -> OrderChanges:
    """The order's status and the events recorded after timeline sequence `seq`."""
    rows = await conn.fetch(SQL_CHANGES_SINCE, order_id, seq)
    if not rows:
        raise NotFound(f"order {limits.echo(order_id)} not found")
    events = [
        domain.TimelineEvent(at=r["at"], kind=r["kind"], summary=r["summary"], actor=r["actor"])
        for r in rows
        if r["seq"] is not None
    ]
    last = max((r["seq"] for r in rows if r["seq"] is not None), default=seq)
    return OrderChanges(
        status=rows[0]["status"], updated_at=rows[0]["updated_at"], events=events, last_seq=last
    )


# ---- rows <-> domain ----------------------------------------------------------------------


def _adjustment_json(adjustment: domain.Adjustment) -> dict[str, Any]:
    return {
        "code": adjustment.code,
        "description": adjustment.description,
        "amount_minor": adjustment.amount_minor,
    }


def _payment_method_json(method: domain.PaymentMethod) -> dict[str, Any]:
    return {
        "type": method.type,
        "token": method.token,
        "preauthorization_ref": method.preauthorization_ref,
    }


def _address_json(address: domain.PostalAddress) -> dict[str, Any]:
    return {
        "line1": address.line1,
        "line2": address.line2,
        "city": address.city,
        "region": address.region,
        "postal_code": address.postal_code,
        "country_code": address.country_code,
    }


def _address(data: dict[str, Any]) -> domain.PostalAddress:
    return domain.PostalAddress(
        line1=data.get("line1", ""),
        line2=data.get("line2", ""),
        city=data.get("city", ""),
        region=data.get("region", ""),
        postal_code=data.get("postal_code", ""),
        country_code=data.get("country_code", ""),
    )


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
                address=domain.PostalAddress(
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
            additional_payment_methods=tuple(
                domain.PaymentMethod(
                    type=m.get("type", ""),
                    token=m.get("token", ""),
                    preauthorization_ref=m.get("preauthorization_ref", ""),
                )
                for m in r["additional_payment_methods"]
            ),
            billing_address=(
                _address(r["billing_address"]) if r["billing_address"] is not None else None
            ),
            fraud_reasons=tuple(r["fraud_reasons"]),
        )
        for r in rows
    ]


# ---- erasure of a shopper's personal data ---------------------------------------------------


@dataclass(frozen=True)
class ErasureRecord:
    """A row of `erasures`."""

    erasure_id: str
    shopper_id: str
    requested_by: str
    requested_at: datetime
    completed_at: datetime | None
    order_ids: tuple[str, ...]
    canceled_count: int


SQL_SHOPPER_BY_ID = "SELECT id, email_normalized FROM shoppers WHERE id = $1"
SQL_SHOPPER_BY_EMAIL = "SELECT id, email_normalized FROM shoppers WHERE email_normalized = $1"
_ERASURE_COLUMNS = (
    "id, shopper_id, requested_by, requested_at, completed_at, order_ids, canceled_count"
)
SQL_ERASURE_OF_SHOPPER = f"SELECT {_ERASURE_COLUMNS} FROM erasures WHERE shopper_id = $1"
SQL_ERASURE_BY_EMAIL = f"""
SELECT {_ERASURE_COLUMNS} FROM erasures WHERE email_sha256 = $1
ORDER BY requested_at DESC LIMIT 1"""
# The first request makes the record; a concurrent or repeated one finds it.
SQL_START_ERASURE = """
INSERT INTO erasures (id, shopper_id, email_sha256, requested_by, order_ids, canceled_count)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (shopper_id) DO NOTHING"""
SQL_COMPLETE_ERASURE = f"""
UPDATE erasures SET completed_at = coalesce(completed_at, now()) WHERE id = $1
RETURNING {_ERASURE_COLUMNS}"""
# Each order with the units of its returns not yet received.
SQL_ERASABLE_ORDERS = """
SELECT o.id, o.status,
       coalesce(sum(greatest(l.quantity_return_initiated - l.quantity_returned, 0)), 0)
           AS open_return_units
FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id
WHERE o.shopper_id = $1
GROUP BY o.id, o.status
ORDER BY o.id"""
# What identifies the shopper, to find wherever free text spells it out.
SQL_IDENTIFYING_TEXT = """
SELECT unnest(ARRAY[s.email_normalized, s.name, s.phone, s.company]) FROM shoppers s WHERE s.id = $1
UNION
SELECT unnest(ARRAY[g.recipient_name, g.line1, g.line2, g.postal_code])
FROM delivery_groups g WHERE g.order_id = ANY($2::text[])
UNION
SELECT unnest(ARRAY[o.billing_address ->> 'line1', o.billing_address ->> 'line2',
                    o.billing_address ->> 'postal_code'])
FROM orders o WHERE o.id = ANY($2::text[]) AND o.billing_address IS NOT NULL"""
# Locks the shopper while its data goes, so no order is matched to them meanwhile.
SQL_ERASE_SHOPPER = """
UPDATE shoppers SET email_normalized = '', name = '', phone = '', company = ''
WHERE id = $1"""
# The channels' own customer ids point at the person; dropped so none finds them again.
SQL_FORGET_CHANNEL_IDS = "DELETE FROM shopper_channel_ids WHERE shopper_id = $1"
SQL_ORDERS_OF_SHOPPER = "SELECT id FROM orders WHERE shopper_id = $1 ORDER BY id"
ERASED_EVENT_KIND = "order.personal_data_erased"
# One timeline event per order, however many times the erasure runs.
SQL_RECORD_ERASED = """
INSERT INTO timeline_events (order_id, kind, summary, actor)
SELECT o.id, $2, $3, $4 FROM unnest($1::text[]) AS o (id)
WHERE NOT EXISTS (SELECT 1 FROM timeline_events e WHERE e.order_id = o.id AND e.kind = $2)"""

# Where capture keeps personal data of an order (the shopper row is erased by id above).
PERSONAL_COLUMNS = (
    erasure.PersonalColumns(
        "delivery_groups",
        blank=("recipient_name", "line1", "line2", "city", "region", "postal_code"),
    ),
    erasure.PersonalColumns(
        "orders",
        scope="id = ANY($1::text[])",
        null=("billing_address",),
        tokens=("payment_token",),
        json=("additional_payment_methods",),
        text=("fraud_reasons",),
    ),
    erasure.PersonalColumns("timeline_events", text=("summary",)),
)


def _erasure(row: Any) -> ErasureRecord:
    return ErasureRecord(
        erasure_id=row["id"],
        shopper_id=row["shopper_id"],
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        completed_at=row["completed_at"],
        order_ids=tuple(row["order_ids"]),
        canceled_count=row["canceled_count"],
    )


async def find_shopper_for_erasure(
    conn: Conn, shopper_id: str, email: str
) -> tuple[str, str] | None:
    """(shopper id, normalized email) of the shopper named by id or email, if any."""
    if shopper_id:
        row = await conn.fetchrow(SQL_SHOPPER_BY_ID, shopper_id)
    else:
        row = await conn.fetchrow(SQL_SHOPPER_BY_EMAIL, email)
    return None if row is None else (row["id"], row["email_normalized"])


async def erasure_of(
    conn: Conn, shopper_id: str = "", email_sha256: bytes = b""
) -> ErasureRecord | None:
    """The erasure of a shopper, found by id or by the digest of their email."""
    if shopper_id:
        row = await conn.fetchrow(SQL_ERASURE_OF_SHOPPER, shopper_id)
    else:
        row = await conn.fetchrow(SQL_ERASURE_BY_EMAIL, email_sha256)
    return None if row is None else _erasure(row)


async def erasable_orders(conn: Conn, shopper_id: str) -> list[domain.ErasableOrder]:
    """The shopper's orders, with what erasure needs to know of each."""
    rows = await conn.fetch(SQL_ERASABLE_ORDERS, shopper_id)
    return [domain.ErasableOrder(r["id"], r["status"], int(r["open_return_units"])) for r in rows]


async def identifying_text(conn: Conn, shopper_id: str, order_ids: Sequence[str]) -> list[str]:
    """Every name, email, phone, address line and postal code of the shopper and orders."""
    rows = await conn.fetch(SQL_IDENTIFYING_TEXT, shopper_id, list(order_ids))
    return sorted({r[0] for r in rows if r[0]})


async def start_erasure(
    conn: Conn,
    shopper_id: str,
    email_sha256: bytes | None,
    requested_by: str,
    order_ids: Sequence[str],
    canceled_count: int,
) -> ErasureRecord:
    """The shopper's erasure record: made now, or the one a previous request made."""
    await conn.execute(
        SQL_START_ERASURE,
        new_id(),
        shopper_id,
        email_sha256,
        requested_by,
        list(order_ids),
        canceled_count,
    )
    found = await erasure_of(conn, shopper_id)
    assert found is not None
    return found


async def erase_shopper_data(
    conn: Conn,
    shopper_id: str,
    order_ids: Sequence[str],
    terms: Sequence[str],
    summary: str,
    actor: str,
) -> list[str]:
    """Erase the shopper and their orders' personal data (caller's transaction); returns the
    shopper's orders as they are now, for the caller to check none arrived meanwhile."""
    await conn.execute(SQL_ERASE_SHOPPER, shopper_id)
    await conn.execute(SQL_FORGET_CHANNEL_IDS, shopper_id)
    now = [r["id"] for r in await conn.fetch(SQL_ORDERS_OF_SHOPPER, shopper_id)]
    await erasure.erase_rows(conn, PERSONAL_COLUMNS, order_ids, terms)
    await erasure.erase_platform_rows(conn, order_ids, [order_workflow_id(o) for o in order_ids])
    await conn.execute(SQL_RECORD_ERASED, list(order_ids), ERASED_EVENT_KIND, summary, actor)
    return now


async def complete_erasure(conn: Conn, erasure_id: str) -> ErasureRecord:
    """Mark the erasure done (once); returns the record."""
    row = await conn.fetchrow(SQL_COMPLETE_ERASURE, erasure_id)
    return _erasure(row)
