"""Capture's store, shoppers: matching an order's shopper by the channel's customer id or by
email, creating and linking them, and what fraud screening's velocity rule reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.capture import domain
from services.capture.store.common import Conn, new_id

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

SQL_COUNT_ORDERS_SINCE = """
SELECT count(*) FROM orders WHERE shopper_id = $1 AND created_at > $2::timestamptz"""


@dataclass(frozen=True)
class ShopperMatch:
    """The shopper an order belongs to; `is_new`: nobody matched, so they are yet to be
    created (with the order)."""

    shopper: domain.Shopper
    is_new: bool


def shopper_from_row(row: Any, channel_id: str) -> domain.Shopper:
    """A shoppers row as the domain's shopper, known to the order's channel as `channel_id`."""
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
    return ShopperMatch(shopper_from_row(row, channel_id), is_new=False)


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
                found[row["i"]] = (shopper_from_row(row, channel_ids[row["i"]]), row["linked"])
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


# Whether an order is the shopper's who claims it: by the channel's own customer id (on the
# order's channel) or by the email it was placed with (empty never matches: an erased shopper
# has none).
SQL_OWNS_ORDER = """
SELECT EXISTS (
    SELECT 1 FROM orders o JOIN shoppers s ON s.id = o.shopper_id
    WHERE o.id = $1
      AND (($2 <> '' AND EXISTS (SELECT 1 FROM shopper_channel_ids c
                                 WHERE c.channel = o.channel AND c.channel_customer_id = $2
                                   AND c.shopper_id = o.shopper_id))
           OR ($3 <> '' AND s.email_normalized = $3)))"""


async def owns_order(conn: Conn, order_id: str, channel_customer_id: str, email: str) -> bool:
    """Whether `order_id` was placed by the shopper with this channel customer id or email."""
    found = await conn.fetchval(
        SQL_OWNS_ORDER, order_id, channel_customer_id, domain.normalize_email(email)
    )
    return bool(found)
