"""Payments records in Postgres (schema `payments`): named SQL, domain dataclasses out.

Functions take a connection so the servicer can run several in one transaction (the one
`db.idempotent` opens). Every write to an order's money first takes the order's lock
(`lock_order`, a transaction-scoped advisory lock), so captures, refunds, releases and voids
of one order serialize; reads that feed a write also lock their rows (FOR UPDATE).
Records of one order come back in the order they were made (created_at, then sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform.erasure import PersonalColumns
from services.payments.domain import (
    SUCCEEDED,
    AppeasementCredit,
    Authorization,
    Capture,
    CreditMemo,
    CreditMemoLine,
    Invoice,
    InvoiceLine,
    Refund,
    Reversal,
)

# A connection, whether plain or lent by a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# Serializes every write to one order's money until the transaction ends.
SQL_LOCK_ORDER = "SELECT pg_advisory_xact_lock(hashtext('payments:order:' || $1))"

SQL_INSERT_AUTHORIZATION = """
INSERT INTO authorizations (
    id, order_id, payment_method_type, token, amount_minor, currency, captured_minor, status,
    gateway_reference, decline_reason, expires_at, created_at, reversed_minor,
    replaces_authorization_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"""

SQL_AUTHORIZATIONS_OF_ORDER = """
SELECT * FROM authorizations WHERE order_id = $1 ORDER BY created_at, sequence"""

SQL_LOCK_AUTHORIZATIONS_OF_ORDER = """
SELECT * FROM authorizations WHERE order_id = $1 ORDER BY created_at, sequence FOR UPDATE"""

SQL_UPDATE_AUTHORIZATION = """
UPDATE authorizations SET status = $2, captured_minor = $3, reversed_minor = $4 WHERE id = $1"""

SQL_INSERT_INVOICE = """
INSERT INTO invoices (
    id, order_id, fulfillment_order_id, currency, shipping_minor, total_minor, created_at,
    goodwill_minor)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"""

SQL_INSERT_INVOICE_LINE = """
INSERT INTO invoice_lines (
    invoice_id, position, order_line_id, sku, quantity, gross_minor, discount_minor, tax_minor,
    total_minor)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""

SQL_LOCK_INVOICE = "SELECT * FROM invoices WHERE id = $1 FOR UPDATE"

SQL_INVOICES_OF_ORDER = "SELECT * FROM invoices WHERE order_id = $1 ORDER BY created_at, id"

SQL_INVOICE_LINES = """
SELECT * FROM invoice_lines WHERE invoice_id = ANY($1::text[]) ORDER BY invoice_id, position"""

SQL_CAPTURES_OF_INVOICE = """
SELECT * FROM captures WHERE invoice_id = $1 ORDER BY created_at, sequence"""

SQL_CAPTURES_OF_ORDER = """
SELECT c.* FROM captures c JOIN invoices i ON i.id = c.invoice_id
WHERE i.order_id = $1 ORDER BY c.created_at, c.sequence"""

SQL_INSERT_CAPTURE = """
INSERT INTO captures (
    id, invoice_id, authorization_id, status, amount_minor, currency, gateway_reference,
    failure_reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""

SQL_INSERT_CREDIT_MEMO = """
INSERT INTO credit_memos (
    id, order_id, kind, reason, currency, shipping_minor, fee_minor, total_minor, settled,
    created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""

SQL_INSERT_CREDIT_MEMO_LINE = """
INSERT INTO credit_memo_lines (
    credit_memo_id, position, order_line_id, sku, quantity, gross_minor, discount_minor,
    tax_minor, total_minor)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""

SQL_INSERT_CREDIT_MEMO_APPEASEMENT = """
INSERT INTO credit_memo_appeasements (
    credit_memo_id, position, order_line_id, percent_basis_points, amount_minor)
VALUES ($1, $2, $3, $4, $5)"""

# Which order a credit memo gives back for: what a refund locks before it reads the memo (with
# the order's other records) under that lock.
SQL_ORDER_OF_CREDIT_MEMO = "SELECT order_id FROM credit_memos WHERE id = $1"

SQL_CREDIT_MEMOS_OF_ORDER = """
SELECT * FROM credit_memos WHERE order_id = $1 ORDER BY created_at, sequence"""

SQL_CREDIT_MEMO_LINES = """
SELECT * FROM credit_memo_lines WHERE credit_memo_id = ANY($1::text[])
ORDER BY credit_memo_id, position"""

SQL_CREDIT_MEMO_APPEASEMENTS = """
SELECT * FROM credit_memo_appeasements WHERE credit_memo_id = ANY($1::text[])
ORDER BY credit_memo_id, position"""

SQL_SETTLE_CREDIT_MEMO = "UPDATE credit_memos SET settled = true WHERE id = $1"

SQL_INSERT_REFUND = """
INSERT INTO refunds (
    id, order_id, credit_memo_id, capture_id, status, amount_minor, currency, reason,
    gateway_reference, failure_reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"""

SQL_REFUNDS_OF_ORDER = """
SELECT * FROM refunds WHERE order_id = $1 ORDER BY created_at, sequence"""

SQL_INSERT_REVERSAL = """
INSERT INTO authorization_reversals (
    id, order_id, credit_memo_id, authorization_id, status, amount_minor, currency, voided,
    gateway_reference, failure_reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"""

SQL_REVERSALS_OF_ORDER = """
SELECT * FROM authorization_reversals WHERE order_id = $1 ORDER BY created_at, sequence"""


# ---- rows -> domain ------------------------------------------------------------------------


def _authorization(row: asyncpg.Record) -> Authorization:
    return Authorization(
        authorization_id=row["id"],
        order_id=row["order_id"],
        payment_method_type=row["payment_method_type"],
        token=row["token"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        captured_minor=row["captured_minor"],
        status=row["status"],
        gateway_reference=row["gateway_reference"],
        decline_reason=row["decline_reason"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        reversed_minor=row["reversed_minor"],
        replaces_authorization_id=row["replaces_authorization_id"] or "",
    )


def _capture(row: asyncpg.Record) -> Capture:
    return Capture(
        capture_id=row["id"],
        invoice_id=row["invoice_id"],
        authorization_id=row["authorization_id"] or "",
        status=row["status"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        gateway_reference=row["gateway_reference"],
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
    )


def _invoice_line(row: asyncpg.Record) -> InvoiceLine:
    return InvoiceLine(
        order_line_id=row["order_line_id"],
        sku=row["sku"],
        quantity=row["quantity"],
        gross_minor=row["gross_minor"],
        discount_minor=row["discount_minor"],
        tax_minor=row["tax_minor"],
        total_minor=row["total_minor"],
    )


async def _invoices(
    conn: Conn, rows: Sequence[asyncpg.Record], captures: Sequence[Capture]
) -> list[Invoice]:
    ids = [row["id"] for row in rows]
    lines: dict[str, list[InvoiceLine]] = {i: [] for i in ids}
    for line in await conn.fetch(SQL_INVOICE_LINES, ids):
        lines[line["invoice_id"]].append(_invoice_line(line))
    captured: dict[str, int] = {i: 0 for i in ids}
    for capture in captures:
        if capture.status == SUCCEEDED and capture.invoice_id in captured:
            captured[capture.invoice_id] += capture.amount_minor
    return [
        Invoice(
            invoice_id=row["id"],
            order_id=row["order_id"],
            fulfillment_order_id=row["fulfillment_order_id"],
            currency=row["currency"],
            lines=lines[row["id"]],
            shipping_minor=row["shipping_minor"],
            total_minor=row["total_minor"],
            captured_minor=captured[row["id"]],
            created_at=row["created_at"],
            goodwill_minor=row["goodwill_minor"],
        )
        for row in rows
    ]


def _refund(row: asyncpg.Record) -> Refund:
    return Refund(
        refund_id=row["id"],
        order_id=row["order_id"],
        credit_memo_id=row["credit_memo_id"] or "",
        capture_id=row["capture_id"],
        status=row["status"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        gateway_reference=row["gateway_reference"],
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
    )


def _reversal(row: asyncpg.Record) -> Reversal:
    return Reversal(
        reversal_id=row["id"],
        order_id=row["order_id"],
        credit_memo_id=row["credit_memo_id"],
        authorization_id=row["authorization_id"],
        status=row["status"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        voided=row["voided"],
        gateway_reference=row["gateway_reference"],
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
    )


async def _credit_memos(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[CreditMemo]:
    ids = [row["id"] for row in rows]
    lines: dict[str, list[CreditMemoLine]] = {i: [] for i in ids}
    for line in await conn.fetch(SQL_CREDIT_MEMO_LINES, ids):
        lines[line["credit_memo_id"]].append(
            CreditMemoLine(
                order_line_id=line["order_line_id"],
                sku=line["sku"],
                quantity=line["quantity"],
                gross_minor=line["gross_minor"],
                discount_minor=line["discount_minor"],
                tax_minor=line["tax_minor"],
                total_minor=line["total_minor"],
            )
        )
    appeasements: dict[str, list[AppeasementCredit]] = {i: [] for i in ids}
    for a in await conn.fetch(SQL_CREDIT_MEMO_APPEASEMENTS, ids):
        appeasements[a["credit_memo_id"]].append(
            AppeasementCredit(a["order_line_id"], a["percent_basis_points"], a["amount_minor"])
        )
    return [
        CreditMemo(
            credit_memo_id=row["id"],
            order_id=row["order_id"],
            kind=row["kind"],
            reason=row["reason"],
            currency=row["currency"],
            lines=lines[row["id"]],
            shipping_minor=row["shipping_minor"],
            fee_minor=row["fee_minor"],
            appeasements=appeasements[row["id"]],
            total_minor=row["total_minor"],
            created_at=row["created_at"],
            settled=row["settled"],
        )
        for row in rows
    ]


# ---- the order lock ------------------------------------------------------------------------


async def lock_order(conn: Conn, order_id: str) -> None:
    """Hold the order's lock until the transaction ends: one writer of its money at a time."""
    await conn.execute(SQL_LOCK_ORDER, order_id)


# ---- authorizations ------------------------------------------------------------------------


async def insert_authorization(conn: Conn, a: Authorization) -> None:
    """Store a new authorization (approved or declined)."""
    await conn.execute(
        SQL_INSERT_AUTHORIZATION,
        a.authorization_id, a.order_id, a.payment_method_type, a.token, a.amount_minor,
        a.currency, a.captured_minor, a.status, a.gateway_reference, a.decline_reason,
        a.expires_at, a.created_at, a.reversed_minor, a.replaces_authorization_id or None,
    )  # fmt: skip


async def authorizations_of_order(
    conn: Conn, order_id: str, *, lock: bool = False
) -> list[Authorization]:
    """An order's authorizations, oldest first; `lock` holds them until the transaction ends."""
    sql = SQL_LOCK_AUTHORIZATIONS_OF_ORDER if lock else SQL_AUTHORIZATIONS_OF_ORDER
    return [_authorization(row) for row in await conn.fetch(sql, order_id)]


async def update_authorization(conn: Conn, a: Authorization) -> None:
    """Store an authorization's new status, captured and reversed amounts."""
    await conn.execute(
        SQL_UPDATE_AUTHORIZATION, a.authorization_id, a.status, a.captured_minor, a.reversed_minor
    )


# ---- invoices ------------------------------------------------------------------------------


async def insert_invoice(conn: Conn, invoice: Invoice) -> None:
    """Store a new invoice and its lines."""
    await conn.execute(
        SQL_INSERT_INVOICE,
        invoice.invoice_id, invoice.order_id, invoice.fulfillment_order_id, invoice.currency,
        invoice.shipping_minor, invoice.total_minor, invoice.created_at, invoice.goodwill_minor,
    )  # fmt: skip
    rows = [
        (invoice.invoice_id, position, line.order_line_id, line.sku, line.quantity,
         line.gross_minor, line.discount_minor, line.tax_minor, line.total_minor)
        for position, line in enumerate(invoice.lines)
    ]  # fmt: skip
    await conn.executemany(SQL_INSERT_INVOICE_LINE, rows)


async def lock_invoice(conn: Conn, invoice_id: str) -> tuple[Invoice, list[Capture]] | None:
    """An invoice (locked until the transaction ends) with its captures; None if unknown."""
    row = await conn.fetchrow(SQL_LOCK_INVOICE, invoice_id)
    if row is None:
        return None
    captures = [_capture(r) for r in await conn.fetch(SQL_CAPTURES_OF_INVOICE, invoice_id)]
    (invoice,) = await _invoices(conn, [row], captures)
    return invoice, captures


# ---- captures ------------------------------------------------------------------------------


async def insert_capture(conn: Conn, c: Capture) -> None:
    """Store a capture, succeeded or failed."""
    await conn.execute(
        SQL_INSERT_CAPTURE,
        c.capture_id, c.invoice_id, c.authorization_id or None, c.status, c.amount_minor,
        c.currency, c.gateway_reference, c.failure_reason, c.created_at,
    )  # fmt: skip


# ---- credit memos, refunds, releases -------------------------------------------------------


async def insert_credit_memo(conn: Conn, memo: CreditMemo) -> None:
    """Store a new credit memo, its lines and appeasements."""
    await conn.execute(
        SQL_INSERT_CREDIT_MEMO,
        memo.credit_memo_id, memo.order_id, memo.kind, memo.reason, memo.currency,
        memo.shipping_minor, memo.fee_minor, memo.total_minor, memo.settled, memo.created_at,
    )  # fmt: skip
    await conn.executemany(
        SQL_INSERT_CREDIT_MEMO_LINE,
        [
            (memo.credit_memo_id, position, line.order_line_id, line.sku, line.quantity,
             line.gross_minor, line.discount_minor, line.tax_minor, line.total_minor)
            for position, line in enumerate(memo.lines)
        ],
    )  # fmt: skip
    await conn.executemany(
        SQL_INSERT_CREDIT_MEMO_APPEASEMENT,
        [
            (memo.credit_memo_id, position, a.order_line_id, a.percent_basis_points,
             a.amount_minor)
            for position, a in enumerate(memo.appeasements)
        ],
    )  # fmt: skip


async def order_of_credit_memo(conn: Conn, credit_memo_id: str) -> str | None:
    """The order a credit memo belongs to; None if the memo is unknown."""
    order_id: str | None = await conn.fetchval(SQL_ORDER_OF_CREDIT_MEMO, credit_memo_id)
    return order_id


async def settle_credit_memo(conn: Conn, credit_memo_id: str) -> None:
    """Mark a cancel's release done."""
    await conn.execute(SQL_SETTLE_CREDIT_MEMO, credit_memo_id)


async def insert_refund(conn: Conn, r: Refund) -> None:
    """Store a refund, succeeded or failed."""
    await conn.execute(
        SQL_INSERT_REFUND,
        r.refund_id, r.order_id, r.credit_memo_id, r.capture_id, r.status, r.amount_minor,
        r.currency, r.credit_memo_id, r.gateway_reference, r.failure_reason, r.created_at,
    )  # fmt: skip


async def insert_reversal(conn: Conn, r: Reversal) -> None:
    """Store a release of an authorization's hold, succeeded or failed."""
    await conn.execute(
        SQL_INSERT_REVERSAL,
        r.reversal_id, r.order_id, r.credit_memo_id, r.authorization_id, r.status,
        r.amount_minor, r.currency, r.voided, r.gateway_reference, r.failure_reason, r.created_at,
    )  # fmt: skip


# ---- the order's records -------------------------------------------------------------------


@dataclass
class OrderRecords:
    """Every payments record of one order, each list oldest first."""

    authorizations: list[Authorization] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    credit_memos: list[CreditMemo] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    reversals: list[Reversal] = field(default_factory=list)


async def invoices_of_order(conn: Conn, order_id: str) -> list[Invoice]:
    """An order's invoices (with what was captured of each): all a new credit memo is checked
    against, without the order's other records."""
    captures = [_capture(r) for r in await conn.fetch(SQL_CAPTURES_OF_ORDER, order_id)]
    return await _invoices(conn, await conn.fetch(SQL_INVOICES_OF_ORDER, order_id), captures)


async def load_order(
    conn: Conn, order_id: str, *, lock: bool = False, invoices: bool = True
) -> OrderRecords:
    """Every record of an order; `lock` also locks its authorizations for the transaction.
    With `invoices` False its invoices are not read (left empty), for a step that uses none."""
    authorizations = await authorizations_of_order(conn, order_id, lock=lock)
    captures = [_capture(r) for r in await conn.fetch(SQL_CAPTURES_OF_ORDER, order_id)]
    invoiced = (
        await _invoices(conn, await conn.fetch(SQL_INVOICES_OF_ORDER, order_id), captures)
        if invoices
        else []
    )
    memos = await _credit_memos(conn, await conn.fetch(SQL_CREDIT_MEMOS_OF_ORDER, order_id))
    refunds = [_refund(r) for r in await conn.fetch(SQL_REFUNDS_OF_ORDER, order_id)]
    reversals = [_reversal(r) for r in await conn.fetch(SQL_REVERSALS_OF_ORDER, order_id)]
    return OrderRecords(authorizations, captures, invoiced, memos, refunds, reversals)


async def records_of_order(pool: asyncpg.Pool, order_id: str) -> OrderRecords:
    """Every record of an order, as of one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return await load_order(conn, order_id)


# ---- personal data -----------------------------------------------------------------------------

# Where payments keeps something of the payer: the instrument's token on each authorization
# (cut to its last four on erasure; captures and refunds go by gateway reference), and free
# text that may name them. No billing details are kept here (capture has the billing address).
PERSONAL_COLUMNS = (
    PersonalColumns("authorizations", tokens=("token",), text=("decline_reason",)),
    PersonalColumns("credit_memos", text=("reason",)),
    PersonalColumns("refunds", text=("reason", "failure_reason")),
    PersonalColumns(
        "captures",
        scope="invoice_id IN (SELECT id FROM invoices WHERE order_id = ANY($1::text[]))",
        text=("failure_reason",),
    ),
    PersonalColumns("authorization_reversals", text=("failure_reason",)),
)
