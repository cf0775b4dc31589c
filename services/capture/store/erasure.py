"""Capture's store, erasure of a shopper's personal data: the erasure record, the shopper's
orders as erasure sees them, and the erasing itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from oms_platform import erasure
from services.capture import domain
from services.capture.store.common import Conn, new_id
from services.capture.store.events import erase_events
from workflows.types import order_workflow_id


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
    # order_events: its bodies are protobuf, erased by `erase_events` (reasons cleared).
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
    # The log's bodies are protobuf, not columns: their free text is erased in Python.
    await erase_events(conn, order_ids, terms)
    await erasure.erase_platform_rows(conn, order_ids, [order_workflow_id(o) for o in order_ids])
    await conn.execute(SQL_RECORD_ERASED, list(order_ids), ERASED_EVENT_KIND, summary, actor)
    return now


async def complete_erasure(conn: Conn, erasure_id: str) -> ErasureRecord:
    """Mark the erasure done (once); returns the record."""
    row = await conn.fetchrow(SQL_COMPLETE_ERASURE, erasure_id)
    return _erasure(row)
