"""Process exceptions in Postgres (schema `servicing`; the pool's search_path names it)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.servicing.domain import ListQuery, ProcessException

SQL_INSERT_PROCESS_EXCEPTION = """
INSERT INTO process_exceptions
    (id, order_id, category, severity, status, attached_to, message, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id, order_id, category, severity, status, attached_to, message, created_at, updated_at
"""

# Empty filters match everything; ($6, $7) is the keyset cursor (NULL on the first page).
# Newest first, with id breaking ties between exceptions raised in the same microsecond.
SQL_LIST_PROCESS_EXCEPTIONS = """
SELECT id, order_id, category, severity, status, attached_to, message, created_at, updated_at
FROM process_exceptions
WHERE ($1::text = '' OR order_id = $1)
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND (cardinality($3::text[]) = 0 OR category = ANY($3::text[]))
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4::timestamptz, $5::text))
ORDER BY created_at DESC, id DESC
LIMIT $6
"""


class ProcessExceptionStore:
    """Reads and writes process exceptions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(
        self, conn: asyncpg.Connection, exception: ProcessException
    ) -> ProcessException:
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
        )
        assert row is not None
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
    )
