"""Capture's store, shopper notifications: preferences, and one row per message with what
became of it. Named SQL, run on the caller's connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.capture.store.common import Conn, new_id

PENDING, SENT, SKIPPED, FAILED = "pending", "sent", "skipped", "failed"

# Who an order's messages go to, and whether they want them.
SQL_RECIPIENTS_OF_ORDERS = """
SELECT o.id AS order_id, o.shopper_id, o.channel_order_ref, s.email_normalized AS email, s.name,
       coalesce(p.opted_out, false) AS opted_out, coalesce(p.locale, '') AS locale
FROM orders o
JOIN shoppers s ON s.id = o.shopper_id
LEFT JOIN notification_preferences p ON p.shopper_id = o.shopper_id
WHERE o.id = any($1::text[])"""

# The same, read again when a message is sent: an opt-out or an erasure since it was made
# stops it.
SQL_CONTACTS = """
SELECT s.id, s.email_normalized AS email, s.name, coalesce(p.opted_out, false) AS opted_out
FROM shoppers s LEFT JOIN notification_preferences p ON p.shopper_id = s.id
WHERE s.id = any($1::text[])"""

# One row per (event, template): an event seen again (a replayed cursor) adds nothing.
SQL_ADD = """
INSERT INTO notifications (id, order_id, shopper_id, event_id, event_sequence, template, locale,
                           state, params, error)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::text[], $8::text[], $9::jsonb[], $10::text[])
ON CONFLICT (event_id, template) DO NOTHING
RETURNING event_id, template"""

# Take due messages (SKIP LOCKED: several replicas take different ones) and hold them for a
# lease by moving their next attempt past it, so the send happens outside any transaction.
SQL_CLAIM_DUE = """
UPDATE notifications n SET next_attempt_at = now() + make_interval(secs => $2)
FROM (SELECT id FROM notifications
      WHERE state = 'pending' AND next_attempt_at <= now()
      ORDER BY next_attempt_at, id
      LIMIT $1
      FOR UPDATE SKIP LOCKED) AS due
WHERE n.id = due.id
RETURNING n.id, n.order_id, n.shopper_id, n.template, n.locale, n.params, n.attempts,
          n.created_at"""

SQL_MARK_SENT = """
UPDATE notifications SET state = 'sent', subject = $2, locale = $3, sent_at = now(),
    attempts = attempts + 1, error = ''
WHERE id = $1 AND state = 'pending'"""

SQL_MARK_SKIPPED = """
UPDATE notifications SET state = 'skipped', error = $2 WHERE id = $1 AND state = 'pending'"""

SQL_RETRY_LATER = """
UPDATE notifications SET attempts = attempts + 1, error = $2,
    next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1 AND state = 'pending'"""

SQL_MARK_FAILED = """
UPDATE notifications SET state = 'failed', attempts = attempts + 1, error = $2
WHERE id = $1 AND state = 'pending'"""

SQL_LIST_FOR_ORDER = """
SELECT id, order_id, event_id, template, locale, medium, state, subject, attempts, error,
       created_at, sent_at
FROM notifications WHERE order_id = $1 ORDER BY event_sequence, template"""

SQL_SHOPPER_EXISTS = "SELECT EXISTS (SELECT 1 FROM shoppers WHERE id = $1)"
# A storefront acts only for shoppers who ordered on one of its channels.
SQL_SHOPPER_ORDERED_ON = """
SELECT EXISTS (SELECT 1 FROM orders WHERE shopper_id = $1 AND channel = ANY($2::text[]))"""

# `locale` empty leaves the one recorded.
SQL_SET_PREFERENCE = """
INSERT INTO notification_preferences (shopper_id, opted_out, locale) VALUES ($1, $2, $3)
ON CONFLICT (shopper_id) DO UPDATE SET
    opted_out = excluded.opted_out,
    locale = CASE WHEN excluded.locale = '' THEN notification_preferences.locale
                  ELSE excluded.locale END,
    updated_at = now()
RETURNING opted_out, locale"""


@dataclass(frozen=True)
class Recipient:
    """An order's shopper as notifications see them."""

    shopper_id: str
    order_ref: str
    email: str
    name: str
    opted_out: bool
    locale: str


@dataclass(frozen=True)
class NewNotification:
    """A message an event makes, to record (`add`)."""

    order_id: str
    shopper_id: str
    event_id: str
    event_sequence: int
    template: str
    locale: str
    state: str
    params: dict[str, Any]
    error: str = ""


@dataclass(frozen=True)
class Due:
    """A message taken for sending."""

    notification_id: str
    order_id: str
    shopper_id: str
    template: str
    locale: str
    params: dict[str, Any]
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Contact:
    """Where a shopper's messages go now (email empty once erased)."""

    email: str
    name: str
    opted_out: bool


@dataclass(frozen=True)
class Record:
    """One notification as ListNotifications shows it."""

    notification_id: str
    order_id: str
    event_id: str
    template: str
    locale: str
    medium: str
    state: str
    subject: str
    attempts: int
    error: str
    created_at: datetime
    sent_at: datetime | None


async def recipients_of_orders(conn: Conn, order_ids: Iterable[str]) -> dict[str, Recipient]:
    """Each order's shopper, their address and preference, by order id; an unknown order is
    not among them."""
    rows = await conn.fetch(SQL_RECIPIENTS_OF_ORDERS, list(order_ids))
    return {
        row["order_id"]: Recipient(
            row["shopper_id"],
            row["channel_order_ref"],
            row["email"],
            row["name"],
            row["opted_out"],
            row["locale"],
        )
        for row in rows
    }


async def add(conn: Conn, notifications: Sequence[NewNotification]) -> set[tuple[str, str]]:
    """Record notifications in one statement; the (event id, template) of those recorded now,
    leaving out any an event already made."""
    if not notifications:
        return set()
    rows = await conn.fetch(
        SQL_ADD,
        [new_id() for _ in notifications],
        [one.order_id for one in notifications],
        [one.shopper_id for one in notifications],
        [one.event_id for one in notifications],
        [one.event_sequence for one in notifications],
        [one.template for one in notifications],
        [one.locale for one in notifications],
        [one.state for one in notifications],
        [one.params for one in notifications],
        [one.error for one in notifications],
    )
    return {(row["event_id"], row["template"]) for row in rows}


async def claim_due(conn: Conn, limit: int, lease_seconds: float) -> list[Due]:
    """Take up to `limit` due messages, held for `lease_seconds`."""
    rows = await conn.fetch(SQL_CLAIM_DUE, limit, lease_seconds)
    return [
        Due(
            r["id"],
            r["order_id"],
            r["shopper_id"],
            r["template"],
            r["locale"],
            r["params"],
            r["attempts"],
            r["created_at"],
        )
        for r in rows
    ]


NO_CONTACT = Contact("", "", False)


async def contacts(conn: Conn, shopper_ids: Sequence[str]) -> dict[str, Contact]:
    """Each shopper's address and preference now (one read for a batch); a shopper who is
    not there is left out."""
    rows = await conn.fetch(SQL_CONTACTS, sorted(set(shopper_ids)))
    return {r["id"]: Contact(r["email"], r["name"], r["opted_out"]) for r in rows}


async def mark_sent(conn: Conn, notification_id: str, subject: str, locale: str) -> None:
    """The message was accepted by the mail server."""
    await conn.execute(SQL_MARK_SENT, notification_id, subject, locale)


async def mark_skipped(conn: Conn, notification_id: str, why: str) -> None:
    """Not sent, on purpose (opted out, no address)."""
    await conn.execute(SQL_MARK_SKIPPED, notification_id, why)


async def retry_later(conn: Conn, notification_id: str, error: str, delay: float) -> None:
    """An attempt failed; try again in `delay` seconds."""
    await conn.execute(SQL_RETRY_LATER, notification_id, error, delay)


async def mark_failed(conn: Conn, notification_id: str, error: str) -> None:
    """An attempt failed and the retry period is over."""
    await conn.execute(SQL_MARK_FAILED, notification_id, error)


async def list_for_order(conn: Conn, order_id: str) -> list[Record]:
    """The order's notifications, oldest first."""
    rows = await conn.fetch(SQL_LIST_FOR_ORDER, order_id)
    return [
        Record(
            r["id"],
            r["order_id"],
            r["event_id"],
            r["template"],
            r["locale"],
            r["medium"],
            r["state"],
            r["subject"],
            r["attempts"],
            r["error"],
            r["created_at"],
            r["sent_at"],
        )
        for r in rows
    ]


async def shopper_exists(conn: Conn, shopper_id: str, channels: Sequence[str] | None) -> bool:
    """Whether the shopper exists (and, given `channels`, ordered on one of them)."""
    if channels is None:
        return bool(await conn.fetchval(SQL_SHOPPER_EXISTS, shopper_id))
    return bool(await conn.fetchval(SQL_SHOPPER_ORDERED_ON, shopper_id, list(channels)))


async def set_preference(
    conn: Conn, shopper_id: str, opted_out: bool, locale: str
) -> tuple[bool, str]:
    """Record the shopper's preference; returns it as now recorded."""
    row = await conn.fetchrow(SQL_SET_PREFERENCE, shopper_id, opted_out, locale)
    assert row is not None  # an upsert always returns its row
    return bool(row["opted_out"]), str(row["locale"])
