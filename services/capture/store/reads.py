"""Capture's store, reading orders: by id, ListOrders' pages, an order's timeline and what a
watcher has not seen yet; rows assembled into domain orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from oms_platform import db, limits
from oms_platform.errors import NotFound
from services.capture import domain
from services.capture.store.common import Conn

_ORDER_COLUMNS = """
    o.id, o.channel, o.channel_order_ref, o.status, o.shopper_id, o.currency,
    o.subtotal_minor, o.discount_minor, o.tax_minor, o.shipping_minor, o.grand_total_minor,
    o.payment_method_type, o.payment_token, o.payment_preauthorization_ref, o.discounts,
    o.additional_payment_methods, o.billing_address, o.fraud_reasons,
    o.subscription_id, o.subscription_cycle, o.created_at, o.updated_at,
    o.promised_delivery_date,
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

# Which channel an order came from: a storefront reads only its own channels' orders.
SQL_CHANNEL_OF_ORDER = "SELECT channel FROM orders WHERE id = $1"

# ListOrders' filters on an order; empty ones match everything. $6/$7 is the cursor: the
# last row's (created_at, id).
_LIST_FILTERS = """
  (cardinality($1::text[]) = 0 OR o.status = ANY($1::text[]))
  AND ($2::text = '' OR o.channel = $2::text)
  AND ($3::text = '' OR o.shopper_id = $3::text)
  AND ($4::timestamptz IS NULL OR o.created_at >= $4::timestamptz)
  AND ($5::timestamptz IS NULL OR o.created_at < $5::timestamptz)
  AND ($6::timestamptz IS NULL OR (o.created_at, o.id) < ($6::timestamptz, $7::text))"""

# Late orders (the one statement of the rule: ListOrders' page and count and the late-orders
# gauge all filter with it): neither fulfilled nor canceled (written out so that the partial
# index orders_late matches), promised for a day before parameter $n (NULL: any
# order). Planned per request (PLAN_FOR_PARAMETERS), a late listing uses orders_late.
_LATE_FILTER = """
  ($%(n)s::date IS NULL OR (o.status NOT IN ('fulfilled', 'canceled')
                            AND o.promised_delivery_date < $%(n)s::date))"""

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
  AND"""
    + _LATE_FILTER % {"n": 10}
    + """
ORDER BY o.created_at DESC, o.id DESC
LIMIT $8"""
)

# How many orders the filters match over all pages (ListOrders' late count): the list's
# filters without cursor or limit; with `late`, driven by the orders_late index.
SQL_COUNT_ORDERS = (
    "SELECT count(*) FROM orders o\nWHERE"
    + _LIST_FILTERS
    + """
  AND ($8::text = '' OR o.id IN (SELECT l.order_id FROM order_lines l WHERE l.sku = $8::text))
  AND"""
    + _LATE_FILTER % {"n": 9}
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
       country_code, delivery_method, shipping_minor, pickup_location_id,
       promised_delivery_date
FROM delivery_groups WHERE order_id = ANY($1::text[])
ORDER BY order_id, position"""

SQL_LINES_OF_ORDERS = """
SELECT id, order_id, delivery_group_id, sku, name, quantity_ordered, quantity_canceled,
       quantity_allocated, quantity_fulfilled, quantity_return_initiated, quantity_returned,
       unit_price_minor, discounts, taxes, allocated_order_discount_minor, total_minor
FROM order_lines WHERE order_id = ANY($1::text[])
ORDER BY order_id, position"""

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
    if where.sku and not where.shopper_id and where.late_before is None:
        # A shopper's own orders are fewer than a SKU's: then the orders side drives.
        return SQL_LIST_ORDERS_WITH_SKU, [*head, where.sku, *window]
    return SQL_LIST_ORDERS, [*head, where.shopper_id, *window, where.sku, where.late_before]


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


async def count_orders(conn: Conn, where: domain.OrderFilter) -> int:
    """How many orders match the filter, over all pages."""
    async with db.session_setting(conn, *PLAN_FOR_PARAMETERS):
        found: int = await conn.fetchval(
            SQL_COUNT_ORDERS,
            list(where.statuses),
            where.channel,
            where.shopper_id,
            where.created_from,
            where.created_to,
            None,
            "",
            where.sku,
            where.late_before,
        )
    return found


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


# ---- rows -> domain ----------------------------------------------------------------------


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


def line_quantities(row: asyncpg.Record) -> domain.Quantities:
    """The buckets in an order line's row."""
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
                pickup_location_id=g["pickup_location_id"],
                promised_delivery_date=g["promised_delivery_date"],
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
                quantities=line_quantities(line),
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
            subscription_id=r["subscription_id"],
            subscription_cycle=r["subscription_cycle"],
            promised_delivery_date=r["promised_delivery_date"],
        )
        for r in rows
    ]
