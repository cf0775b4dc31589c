"""Capture's store, writing captured orders: SubmitOrder's single statement, bulk imports,
and the idempotency keys of captures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import asyncpg
from oms.events.v1 import events_pb2

from oms_platform import limits, tracing
from oms_platform.errors import AlreadyExists
from services.capture import domain
from services.capture.store.common import OUTBOX_CHANNEL, Conn
from services.capture.store.shoppers import shopper_from_row

# Names of the unique constraints a capture can run into.
CHANNEL_ORDER_REF_CONSTRAINT = "orders_channel_channel_order_ref_key"

SHOPPER_EMAIL_CONSTRAINT = "shoppers_email"

# The rows of an order, as JSON documents (one element per order, group, line, event, start),
# shared by SubmitOrder's single statement and the bulk import. {shopper_id} is where the
# order's shopper comes from: the row itself (import) or the shopper matched in the statement.
_ORDER_ROWS = """
    SELECT x.id, x.channel, x.channel_order_ref, x.status, {shopper_id}, x.currency,
           x.subtotal_minor, x.discount_minor, x.tax_minor, x.shipping_minor,
           x.grand_total_minor, x.payment_method_type, x.payment_token,
           x.payment_preauthorization_ref, x.discounts, x.additional_payment_methods,
           x.billing_address, x.fraud_reasons, x.subscription_id, x.subscription_cycle,
           x.created_at, x.created_at
    FROM jsonb_to_recordset($1::jsonb) AS x (
        id text, channel text, channel_order_ref text, status text, shopper_id text,
        currency text, subtotal_minor bigint, discount_minor bigint, tax_minor bigint,
        shipping_minor bigint, grand_total_minor bigint, payment_method_type text,
        payment_token text, payment_preauthorization_ref text, discounts jsonb,
        additional_payment_methods jsonb, billing_address jsonb, fraud_reasons text[],
        subscription_id text, subscription_cycle int, created_at timestamptz
    )"""

_INSERT_ORDERS = """
    INSERT INTO orders (
        id, channel, channel_order_ref, status, shopper_id, currency,
        subtotal_minor, discount_minor, tax_minor, shipping_minor, grand_total_minor,
        payment_method_type, payment_token, payment_preauthorization_ref, discounts,
        additional_payment_methods, billing_address, fraud_reasons, subscription_id,
        subscription_cycle, created_at, updated_at
    )"""

_INSERT_CHILDREN = """
), g AS (
    INSERT INTO delivery_groups (
        id, order_id, position, ref, recipient_name, line1, line2, city, region,
        postal_code, country_code, delivery_method, shipping_minor, pickup_location_id
    )
    SELECT x.id, x.order_id, x.position, x.ref, x.recipient_name, x.line1, x.line2, x.city,
           x.region, x.postal_code, x.country_code, x.delivery_method, x.shipping_minor,
           coalesce(x.pickup_location_id, '')
    FROM jsonb_to_recordset($2::jsonb) AS x (
        id text, order_id text, position int, ref text, recipient_name text, line1 text,
        line2 text, city text, region text, postal_code text, country_code text,
        delivery_method text, shipping_minor bigint, pickup_location_id text
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
    + """, ev AS (
    -- The order.captured event, in the log's outbox (services/capture/store/events.py), its
    -- body given ($20) but for the shopper matched above: appended as the protobuf encoding
    -- of Event{order_captured{shopper_id}} (field 20, then field 4, each length-delimited),
    -- which a parser merges into the payload. Shopper ids are uuids (36 bytes), so each length
    -- is a one-byte varint.
    INSERT INTO order_events (event_id, order_id, type, channel, occurred_at, body)
    SELECT $17, o.id, $18, $9, $19,
           $20::bytea || '\\xa201'::bytea
           || set_byte('\\x00'::bytea, 0, 2 + octet_length(sh.id))
           || '\\x22'::bytea || set_byte('\\x00'::bytea, 0, octet_length(sh.id))
           || convert_to(sh.id, 'UTF8')
    FROM o, sh
    ON CONFLICT (event_id) DO NOTHING
)
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
                "subscription_id": order.subscription_id,
                "subscription_cycle": order.subscription_cycle,
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
                    "pickup_location_id": g.pickup_location_id,
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
    captured: events_pb2.Event,
) -> domain.Shopper | None:
    """Store a captured order under its idempotency key in one statement, matching (or
    creating, as `new_shopper_id`) its shopper from `details`, with its `captured` event for
    the log (the matched shopper's id added to it); returns the shopper. None
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
            captured.event_id,
            captured.type,
            captured.occurred_at.ToDatetime(tzinfo=UTC),
            captured.SerializeToString(),
        )
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == CHANNEL_ORDER_REF_CONSTRAINT:
            raise channel_ref_taken(order.channel, order.channel_order_ref) from error
        if error.constraint_name == SHOPPER_EMAIL_CONSTRAINT:
            raise ShopperTaken(details.email) from error
        raise
    return None if row is None else shopper_from_row(row, channel_id)


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


# ---- domain -> rows ----------------------------------------------------------------------


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
