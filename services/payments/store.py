"""Payments records in Postgres (schema `payments`): named SQL, domain dataclasses out.

Functions take a connection so the servicer can run several in one transaction (the one
`db.idempotent` opens). Reads that feed a write lock the rows they read (FOR UPDATE), so two
captures of one invoice, or a capture and a void of one order, serialize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.payments.domain import SUCCEEDED, Authorization, Capture, Invoice, InvoiceLine

# A connection, whether plain or lent by a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

SQL_INSERT_AUTHORIZATION = """
INSERT INTO authorizations (
    id, order_id, payment_method_type, token, amount_minor, currency, captured_minor, status,
    gateway_reference, decline_reason, expires_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""

SQL_AUTHORIZATIONS_OF_ORDER = """
SELECT * FROM authorizations WHERE order_id = $1 ORDER BY created_at, id"""

SQL_LOCK_AUTHORIZATIONS_OF_ORDER = """
SELECT * FROM authorizations WHERE order_id = $1 ORDER BY created_at, id FOR UPDATE"""

SQL_UPDATE_AUTHORIZATION = """
UPDATE authorizations SET status = $2, captured_minor = $3 WHERE id = $1"""

SQL_INSERT_INVOICE = """
INSERT INTO invoices (
    id, order_id, fulfillment_order_id, currency, shipping_minor, total_minor, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""

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
SELECT * FROM captures WHERE invoice_id = $1 ORDER BY created_at, id"""

SQL_CAPTURES_OF_ORDER = """
SELECT c.* FROM captures c JOIN invoices i ON i.id = c.invoice_id
WHERE i.order_id = $1 ORDER BY c.created_at, c.id"""

SQL_INSERT_CAPTURE = """
INSERT INTO captures (
    id, invoice_id, authorization_id, status, amount_minor, currency, gateway_reference,
    failure_reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""


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
        )
        for row in rows
    ]


# ---- authorizations ------------------------------------------------------------------------


async def insert_authorization(conn: Conn, a: Authorization) -> None:
    """Store a new authorization (approved or declined)."""
    await conn.execute(
        SQL_INSERT_AUTHORIZATION,
        a.authorization_id, a.order_id, a.payment_method_type, a.token, a.amount_minor,
        a.currency, a.captured_minor, a.status, a.gateway_reference, a.decline_reason,
        a.expires_at, a.created_at,
    )  # fmt: skip


async def authorizations_of_order(
    conn: Conn, order_id: str, *, lock: bool = False
) -> list[Authorization]:
    """An order's authorizations, oldest first; `lock` holds them until the transaction ends."""
    sql = SQL_LOCK_AUTHORIZATIONS_OF_ORDER if lock else SQL_AUTHORIZATIONS_OF_ORDER
    return [_authorization(row) for row in await conn.fetch(sql, order_id)]


async def update_authorization(conn: Conn, a: Authorization) -> None:
    """Store an authorization's new status and captured amount."""
    await conn.execute(SQL_UPDATE_AUTHORIZATION, a.authorization_id, a.status, a.captured_minor)


# ---- invoices ------------------------------------------------------------------------------


async def insert_invoice(conn: Conn, invoice: Invoice) -> None:
    """Store a new invoice and its lines."""
    await conn.execute(
        SQL_INSERT_INVOICE,
        invoice.invoice_id, invoice.order_id, invoice.fulfillment_order_id, invoice.currency,
        invoice.shipping_minor, invoice.total_minor, invoice.created_at,
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


# ---- the order's records -------------------------------------------------------------------


async def records_of_order(
    pool: asyncpg.Pool, order_id: str
) -> tuple[list[Authorization], list[Capture], list[Invoice]]:
    """Every authorization, capture and invoice of an order, oldest first, as of one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        authorizations = await authorizations_of_order(conn, order_id)
        captures = [_capture(r) for r in await conn.fetch(SQL_CAPTURES_OF_ORDER, order_id)]
        invoices = await _invoices(
            conn, await conn.fetch(SQL_INVOICES_OF_ORDER, order_id), captures
        )
    return authorizations, captures, invoices
