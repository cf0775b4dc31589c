"""Servicing's records in Postgres (schema `servicing`; the pool's search_path names it):
process exceptions, return orders and changes."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform import limits
from oms_platform.erasure import PersonalColumns
from oms_platform.errors import NotFound
from services.servicing.domain import (
    CLOSED_STATUSES,
    Change,
    ChangeOrder,
    ChangeOutcome,
    Item,
    ListQuery,
    ProcessException,
    ReturnOrder,
    ReturnOrderLine,
)

# A connection, from the pool or not (the caller's transaction).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# ---- process exceptions ----------------------------------------------------------------------

_EXCEPTION_COLUMNS = """id, order_id, category, severity, status, attached_to, message, created_at,
    updated_at, resolution_action, resolution_note, resolved_by, resolved_at, order_status,
    escalated_at, note, updated_by, step_input"""

SQL_INSERT_PROCESS_EXCEPTION = f"""
INSERT INTO process_exceptions
    (id, order_id, category, severity, status, attached_to, message, created_at, updated_at,
     step_input)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING {_EXCEPTION_COLUMNS}
"""

SQL_GET_PROCESS_EXCEPTION = f"""
SELECT {_EXCEPTION_COLUMNS} FROM process_exceptions WHERE id = $1
"""

SQL_GET_PROCESS_EXCEPTION_FOR_UPDATE = SQL_GET_PROCESS_EXCEPTION + "FOR UPDATE\n"

# Writes everything an agent or the workflow can change after an exception is raised.
SQL_UPDATE_PROCESS_EXCEPTION = f"""
UPDATE process_exceptions
SET severity = $2, status = $3, message = $4, updated_at = $5, resolution_action = $6,
    resolution_note = $7, resolved_by = $8, resolved_at = $9, order_status = $10,
    escalated_at = $11, note = $12, updated_by = $13
WHERE id = $1
RETURNING {_EXCEPTION_COLUMNS}
"""

# Records a resolution unless one is recorded already (the first writer wins).
SQL_RESOLVE_PROCESS_EXCEPTION = f"""
UPDATE process_exceptions
SET status = 'resolved', resolution_action = $2, resolution_note = $3, resolved_by = $4,
    resolved_at = $5, order_status = $6, updated_at = $5, updated_by = $4
WHERE id = $1 AND status <> 'resolved'
RETURNING {_EXCEPTION_COLUMNS}
"""

# Empty filters match everything; ($6, $7) is the keyset cursor (NULL on the first page).
# Newest first, with id breaking ties between exceptions raised in the same microsecond.
SQL_LIST_PROCESS_EXCEPTIONS = f"""
SELECT {_EXCEPTION_COLUMNS}
FROM process_exceptions
WHERE ($1::text = '' OR order_id = $1)
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND (cardinality($3::text[]) = 0 OR category = ANY($3::text[]))
  AND (cardinality($4::text[]) = 0 OR severity = ANY($4::text[]))
  AND ($5::timestamptz IS NULL OR created_at < $5::timestamptz)
  AND ($6::timestamptz IS NULL OR (created_at, id) < ($6::timestamptz, $7::text))
ORDER BY created_at DESC, id DESC
LIMIT $8
"""


SQL_OPEN_BY_CATEGORY = """
SELECT category, count(*) AS open FROM process_exceptions
WHERE status <> ALL($1::text[]) GROUP BY category"""


class ProcessExceptionStore:
    """Reads and writes process exceptions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def open_by_category(self) -> dict[str, int]:
        """How many exceptions are not closed yet (resolved, ignored, voided), per category."""
        rows = await self.pool.fetch(SQL_OPEN_BY_CATEGORY, list(CLOSED_STATUSES))
        return {row["category"]: row["open"] for row in rows}

    async def insert(self, conn: Conn, exception: ProcessException) -> ProcessException:
        """Store a new exception on `conn` (the caller's transaction); returns it as stored."""
        row = await conn.fetchrow(
            SQL_INSERT_PROCESS_EXCEPTION,
            exception.id,
            exception.order_id,
            exception.category,
            exception.severity,
            exception.status,
            exception.attached_to,
            exception.message,
            exception.created_at,
            exception.updated_at,
            exception.step_input,
        )
        assert row is not None
        return _process_exception(row)

    async def get(
        self,
        process_exception_id: str,
        conn: Conn | None = None,
        *,
        for_update: bool = False,
    ) -> ProcessException:
        """The exception; NotFound if there is none. `for_update` locks it in `conn`'s
        transaction."""
        sql = SQL_GET_PROCESS_EXCEPTION_FOR_UPDATE if for_update else SQL_GET_PROCESS_EXCEPTION
        row = await (conn or self.pool).fetchrow(sql, process_exception_id)
        if row is None:
            raise NotFound(f"no process exception {limits.echo(process_exception_id)}")
        return _process_exception(row)

    async def update(self, conn: Conn, exception: ProcessException) -> ProcessException:
        """Write `exception`'s changeable fields; returns it as stored."""
        row = await conn.fetchrow(
            SQL_UPDATE_PROCESS_EXCEPTION,
            exception.id,
            exception.severity,
            exception.status,
            exception.message,
            exception.updated_at,
            exception.resolution_action,
            exception.resolution_note,
            exception.resolved_by,
            exception.resolved_at,
            exception.order_status,
            exception.escalated_at,
            exception.note,
            exception.updated_by,
        )
        assert row is not None
        return _process_exception(row)

    async def record_resolution(self, exception: ProcessException) -> ProcessException:
        """Store `exception`'s resolution unless another was stored first; returns what is
        stored either way."""
        row = await self.pool.fetchrow(
            SQL_RESOLVE_PROCESS_EXCEPTION,
            exception.id,
            exception.resolution_action,
            exception.resolution_note,
            exception.resolved_by,
            exception.resolved_at,
            exception.order_status,
        )
        if row is None:
            return await self.get(exception.id)
        return _process_exception(row)

    async def list(self, query: ListQuery) -> list[ProcessException]:
        """Up to page_size + 1 exceptions matching `query`, newest first, after its cursor."""
        after_created: datetime | None = query.after.created_at if query.after else None
        after_id = query.after.id if query.after else ""
        rows = await self.pool.fetch(
            SQL_LIST_PROCESS_EXCEPTIONS,
            query.order_id,
            list(query.statuses),
            list(query.categories),
            list(query.severities),
            query.created_before,
            after_created,
            after_id,
            query.page_size + 1,
        )
        return [_process_exception(row) for row in rows]


def _process_exception(row: asyncpg.Record) -> ProcessException:
    return ProcessException(
        id=row["id"],
        order_id=row["order_id"],
        category=row["category"],
        severity=row["severity"],
        status=row["status"],
        attached_to=row["attached_to"],
        message=row["message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        resolution_action=row["resolution_action"],
        resolution_note=row["resolution_note"],
        resolved_by=row["resolved_by"],
        resolved_at=row["resolved_at"],
        order_status=row["order_status"],
        escalated_at=row["escalated_at"],
        note=row["note"],
        updated_by=row["updated_by"],
        step_input=row["step_input"],
    )


# ---- return orders ---------------------------------------------------------------------------

SQL_INSERT_RETURN_ORDER = """
INSERT INTO return_orders (id, order_id, reason, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

SQL_INSERT_RETURN_ORDER_LINES = """
INSERT INTO return_order_lines
    (return_order_id, order_line_id, position, quantity_expected, quantity_accepted,
     quantity_rejected, reason, condition, rejection_reason)
SELECT $1, l.order_line_id, l.position, l.expected, l.accepted, l.rejected, l.reason,
       l.condition, l.rejection_reason
FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[],
            $8::text[], $9::text[])
     AS l(order_line_id, position, expected, accepted, rejected, reason, condition,
          rejection_reason)
"""

SQL_UPDATE_RETURN_ORDER = """
UPDATE return_orders SET updated_at = $2 WHERE id = $1
"""

SQL_UPDATE_RETURN_ORDER_LINES = """
UPDATE return_order_lines AS r
SET quantity_accepted = l.accepted, quantity_rejected = l.rejected, reason = l.reason,
    condition = l.condition, rejection_reason = l.rejection_reason
FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[])
     AS l(order_line_id, accepted, rejected, reason, condition, rejection_reason)
WHERE r.return_order_id = $1 AND r.order_line_id = l.order_line_id
"""

_RETURN_ORDER_SELECT = """
SELECT r.id, r.order_id, r.reason, r.created_at, r.updated_at,
       coalesce(
           jsonb_agg(
               jsonb_build_object(
                   'order_line_id', l.order_line_id,
                   'expected', l.quantity_expected,
                   'accepted', l.quantity_accepted,
                   'rejected', l.quantity_rejected,
                   'reason', l.reason,
                   'condition', l.condition,
                   'rejection_reason', l.rejection_reason
               ) ORDER BY l.position
           ) FILTER (WHERE l.order_line_id IS NOT NULL),
           '[]'::jsonb
       ) AS lines
FROM return_orders r
LEFT JOIN return_order_lines l ON l.return_order_id = r.id
"""

SQL_GET_RETURN_ORDER = _RETURN_ORDER_SELECT + "WHERE r.id = $1\nGROUP BY r.id\n"

SQL_LOCK_RETURN_ORDER = "SELECT id FROM return_orders WHERE id = $1 FOR UPDATE"

SQL_LIST_RETURN_ORDERS = (
    _RETURN_ORDER_SELECT + "WHERE r.order_id = $1\nGROUP BY r.id\nORDER BY r.created_at, r.id\n"
)


class ReturnOrderStore:
    """Reads and writes return orders and their lines."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(self, conn: Conn, rma: ReturnOrder) -> bool:
        """Store a new return order on `conn`; False if one with its id exists already."""
        inserted = await conn.fetchval(
            SQL_INSERT_RETURN_ORDER,
            rma.id,
            rma.order_id,
            rma.reason,
            rma.created_at,
            rma.updated_at,
        )
        if inserted is None:
            return False
        lines = rma.lines
        await conn.execute(
            SQL_INSERT_RETURN_ORDER_LINES,
            rma.id,
            [line.order_line_id for line in lines],
            list(range(len(lines))),
            [line.expected for line in lines],
            [line.accepted for line in lines],
            [line.rejected for line in lines],
            [line.reason for line in lines],
            [line.condition for line in lines],
            [line.rejection_reason for line in lines],
        )
        return True

    async def get(
        self,
        return_order_id: str,
        conn: Conn | None = None,
        *,
        for_update: bool = False,
    ) -> ReturnOrder:
        """The return order; NotFound if there is none. `for_update` locks it in `conn`'s
        transaction (receipts of one return order apply one at a time)."""
        db = conn or self.pool
        if for_update:
            await db.fetchval(SQL_LOCK_RETURN_ORDER, return_order_id)
        row = await db.fetchrow(SQL_GET_RETURN_ORDER, return_order_id)
        if row is None:
            raise NotFound(f"no return order {limits.echo(return_order_id)}")
        return _return_order(row)

    async def save(self, conn: Conn, rma: ReturnOrder) -> None:
        """Write the quantities and notes of `rma`'s lines."""
        lines = rma.lines
        await conn.execute(SQL_UPDATE_RETURN_ORDER, rma.id, rma.updated_at)
        await conn.execute(
            SQL_UPDATE_RETURN_ORDER_LINES,
            rma.id,
            [line.order_line_id for line in lines],
            [line.accepted for line in lines],
            [line.rejected for line in lines],
            [line.reason for line in lines],
            [line.condition for line in lines],
            [line.rejection_reason for line in lines],
        )

    async def list(self, order_id: str) -> list[ReturnOrder]:
        """The order's return orders, oldest first."""
        rows = await self.pool.fetch(SQL_LIST_RETURN_ORDERS, order_id)
        return [_return_order(row) for row in rows]


def _return_order(row: asyncpg.Record) -> ReturnOrder:
    return ReturnOrder(
        id=row["id"],
        order_id=row["order_id"],
        reason=row["reason"],
        lines=tuple(
            ReturnOrderLine(
                order_line_id=line["order_line_id"],
                expected=line["expected"],
                accepted=line["accepted"],
                rejected=line["rejected"],
                reason=line["reason"],
                condition=line["condition"],
                rejection_reason=line["rejection_reason"],
            )
            for line in row["lines"]
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# ---- changes ---------------------------------------------------------------------------------

_CHANGE_COLUMNS = """change_id, order_id, kind, status, idempotency_key, request_hash, actor,
    reason, requested_lines, summary, outcome_lines, credit_memo_id, credited_minor,
    refunded_minor, released_minor, charged_minor, fulfillment_order_ids, return_order_id,
    order_status, refusal_code, refusal_message, created_at, completed_at, authorized_minor,
    grand_total_minor, rerouted, location_ids"""

# A change is recorded once; a retry finds the first record (and its request's hash).
SQL_CLAIM_CHANGE = f"""
WITH inserted AS (
    INSERT INTO changes
        (change_id, order_id, kind, status, idempotency_key, request_hash, actor, reason,
         request, requested_lines, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
    ON CONFLICT (change_id) DO NOTHING
    RETURNING {_CHANGE_COLUMNS}
)
SELECT {_CHANGE_COLUMNS} FROM inserted
UNION ALL
SELECT {_CHANGE_COLUMNS} FROM changes WHERE change_id = $1
LIMIT 1
"""

SQL_SAVE_CHANGE = f"""
UPDATE changes
SET status = $2, summary = $3, outcome_lines = $4, credit_memo_id = $5, credited_minor = $6,
    refunded_minor = $7, released_minor = $8, charged_minor = $9, fulfillment_order_ids = $10,
    return_order_id = $11, order_status = $12, refusal_code = $13, refusal_message = $14,
    completed_at = $15, authorized_minor = $16, grand_total_minor = $17, rerouted = $18,
    location_ids = $19, updated_at = now()
WHERE change_id = $1 AND status <> 'completed'
RETURNING {_CHANGE_COLUMNS}
"""

SQL_GET_CHANGE = f"SELECT {_CHANGE_COLUMNS} FROM changes WHERE change_id = $1"

SQL_LIST_CHANGES = f"""
SELECT {_CHANGE_COLUMNS} FROM changes WHERE order_id = $1 ORDER BY created_at, change_id
"""


class ChangeStore:
    """Reads and writes changes to orders."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(
        self, change: Change, order: ChangeOrder, request_hash: bytes
    ) -> tuple[Change, bytes]:
        """Record `change` (asked for as `order`) unless it is recorded already; returns the
        stored change and the hash of the request that first asked for it."""
        row = await self.pool.fetchrow(
            SQL_CLAIM_CHANGE,
            change.change_id,
            change.order_id,
            change.kind,
            change.status,
            change.idempotency_key,
            request_hash,
            change.actor,
            change.reason,
            dataclasses.asdict(order),
            _items_json(change.requested_lines),
            change.created_at,
        )
        if row is None:  # inserted concurrently, after this statement's snapshot
            row = await self.pool.fetchrow(SQL_GET_CHANGE, change.change_id)
            assert row is not None
        return _change(row), bytes(row["request_hash"])

    async def save(self, change: Change) -> Change:
        """Write `change`'s status and outcome; a completed change is never overwritten (a
        concurrent retry may have stored the same answer first). Returns what is stored."""
        outcome = change.outcome or ChangeOutcome(summary="")
        row = await self.pool.fetchrow(
            SQL_SAVE_CHANGE,
            change.change_id,
            change.status,
            outcome.summary,
            _items_json(outcome.lines),
            outcome.credit_memo_id,
            outcome.credited_minor,
            outcome.refunded_minor,
            outcome.released_minor,
            outcome.charged_minor,
            list(outcome.fulfillment_order_ids),
            outcome.return_order_id,
            outcome.order_status,
            change.refusal_code,
            change.refusal_message,
            change.completed_at,
            outcome.authorized_minor,
            outcome.grand_total_minor,
            outcome.rerouted,
            list(outcome.location_ids),
        )
        if row is None:
            row = await self.pool.fetchrow(SQL_GET_CHANGE, change.change_id)
            assert row is not None
        return _change(row)

    async def find(self, change_id: str) -> Change | None:
        """The change, or None when it was never asked for."""
        row = await self.pool.fetchrow(SQL_GET_CHANGE, change_id)
        return None if row is None else _change(row)

    async def list(self, order_id: str) -> list[Change]:
        """The order's changes, oldest first."""
        return [_change(row) for row in await self.pool.fetch(SQL_LIST_CHANGES, order_id)]


def _items_json(items: tuple[Item, ...]) -> list[dict[str, Any]]:
    return [{"order_line_id": i.order_line_id, "quantity": i.quantity} for i in items]


def _items(value: list[dict[str, Any]]) -> tuple[Item, ...]:
    return tuple(Item(i["order_line_id"], int(i["quantity"])) for i in value)


def _change(row: asyncpg.Record) -> Change:
    outcome = None
    if row["status"] == "completed":
        outcome = ChangeOutcome(
            summary=row["summary"],
            lines=_items(row["outcome_lines"]),
            credit_memo_id=row["credit_memo_id"],
            credited_minor=row["credited_minor"],
            refunded_minor=row["refunded_minor"],
            released_minor=row["released_minor"],
            charged_minor=row["charged_minor"],
            fulfillment_order_ids=tuple(row["fulfillment_order_ids"]),
            return_order_id=row["return_order_id"],
            order_status=row["order_status"],
            authorized_minor=row["authorized_minor"],
            grand_total_minor=row["grand_total_minor"],
            rerouted=row["rerouted"],
            location_ids=tuple(row["location_ids"]),
        )
    return Change(
        change_id=row["change_id"],
        order_id=row["order_id"],
        kind=row["kind"],
        status=row["status"],
        idempotency_key=row["idempotency_key"],
        actor=row["actor"],
        reason=row["reason"],
        requested_lines=_items(row["requested_lines"]),
        created_at=row["created_at"],
        outcome=outcome,
        refusal_code=row["refusal_code"],
        refusal_message=row["refusal_message"],
        completed_at=row["completed_at"],
    )


# ---- personal data -----------------------------------------------------------------------------

_RETURN_ORDERS_OF_ORDERS = (
    "return_order_id IN (SELECT id FROM return_orders WHERE order_id = ANY($1::text[]))"
)

# Where servicing may hold a shopper's personal data: what a failed step was asked (redacted
# when recorded, redacted again here for rows recorded before), and everything typed by
# agents and shoppers' requests: reasons, notes, messages, the requests of changes.
PERSONAL_COLUMNS = (
    PersonalColumns(
        "process_exceptions",
        text=("message", "note", "resolution_note"),
        json_text=("step_input",),
    ),
    PersonalColumns("return_orders", text=("reason",)),
    PersonalColumns(
        "return_order_lines", scope=_RETURN_ORDERS_OF_ORDERS, text=("reason", "rejection_reason")
    ),
    PersonalColumns(
        "changes",
        text=("reason", "summary", "refusal_message"),
        json=("request", "requested_lines", "outcome_lines"),
    ),
)
