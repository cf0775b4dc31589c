"""Erasing a shopper's personal data from one service's tables, the same way in every service.

Each service lists where it keeps personal data (`PersonalColumns`): columns that are
personal through and through (names, address lines: blanked), payment tokens (cut to their
last four), free text that may spell the shopper out (reasons, notes, summaries: identifying
text and emails, phones and tokens removed) and JSON documents (redacted by key and value).
`erase_rows` rewrites the rows of the erased orders and nothing else; ids, quantities and
money are never listed, so they stay. Running it again changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.redaction import erase, erase_text, mask_token

log = structlog.get_logger("oms.erasure")

# Most orders one ErasePersonalData call takes (a shopper with more is erased in several).
MAX_ORDERS_PER_CALL = 10_000


def check_order_ids(order_ids: Sequence[str]) -> None:
    """Raise InvalidArgument unless `order_ids` is 1..MAX_ORDERS_PER_CALL non-empty ids."""
    violations: list[FieldViolation] = []
    if not order_ids:
        violations.append(FieldViolation("order_ids", "at least one order is required"))
    elif len(order_ids) > MAX_ORDERS_PER_CALL:
        violations.append(
            FieldViolation("order_ids", f"must be at most {MAX_ORDERS_PER_CALL} orders")
        )
    violations += [
        FieldViolation(f"order_ids[{i}]", "must not be empty")
        for i, order_id in enumerate(order_ids)
        if not order_id.strip()
    ]
    if violations:
        raise InvalidArgument(violations)


async def erase_orders(
    pool: Any,
    specs: Sequence[PersonalColumns],
    order_ids: Sequence[str],
    workflow_ids: Sequence[str],
    terms: Sequence[str],
) -> int:
    """One service's ErasePersonalData: its tables and the platform's, in one transaction;
    returns how many rows changed (0 when repeated)."""
    check_order_ids(order_ids)
    async with pool.acquire() as conn, conn.transaction():
        changed = await erase_rows(conn, specs, order_ids, terms)
        changed += await erase_platform_rows(conn, order_ids, workflow_ids)
    log.info("personal data erased", orders=len(order_ids), records=changed)
    return changed


@dataclass(frozen=True)
class PersonalColumns:
    """Where one table keeps personal data, and which of its rows belong to the orders
    being erased (`scope`, a condition on `$1`, the order ids)."""

    table: str
    scope: str = "order_id = ANY($1::text[])"
    # Personal through and through (names, address lines): emptied.
    blank: tuple[str, ...] = ()
    # Set to NULL (an optional document that is all personal, e.g. a billing address).
    null: tuple[str, ...] = ()
    # Payment tokens: cut to their last four.
    tokens: tuple[str, ...] = ()
    # Free text (text or text[]) that may spell the shopper out.
    text: tuple[str, ...] = ()
    # JSON documents (jsonb), redacted by key and value.
    json: tuple[str, ...] = ()
    # JSON documents stored as text (e.g. a step's input).
    json_text: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column read and possibly rewritten."""
        return self.blank + self.null + self.tokens + self.text + self.json + self.json_text

    def select_sql(self) -> str:
        """The rows of the erased orders, locked (identifiers are this module's constants)."""
        return (
            f"SELECT ctid, {', '.join(self.columns)} FROM {self.table} "
            f"WHERE {self.scope} FOR UPDATE"
        )

    def update_sql(self, changed: Sequence[str]) -> str:
        """Rewrite `changed` columns of one row, found by its ctid (locked above)."""
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(changed))
        return f"UPDATE {self.table} SET {sets} WHERE ctid = $1"


def erased_row(
    spec: PersonalColumns, row: Mapping[str, Any], terms: Sequence[str]
) -> dict[str, Any]:
    """The columns of one row that erasure changes, with their new values (empty when the row
    holds no personal data any more)."""
    new: dict[str, Any] = {}
    for column in spec.blank:
        new[column] = "" if row[column] is not None else None
    for column in spec.null:
        new[column] = None
    for column in spec.tokens:
        new[column] = mask_token(row[column] or "")
    for column in spec.text:
        value = row[column]
        if isinstance(value, list):
            new[column] = [erase_text(v, terms) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str):
            new[column] = erase_text(value, terms)
    for column in spec.json:
        if row[column] is not None:
            new[column] = erase(row[column], terms)
    for column in spec.json_text:
        new[column] = _erase_json_text(row[column] or "", terms)
    return {c: v for c, v in new.items() if v != row[c]}


def _erase_json_text(text: str, terms: Sequence[str]) -> str:
    if not text:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return erase_text(text, terms)
    erased = erase(data, terms)
    if erased == data:
        return text  # unchanged: keep its spelling, so a repeat changes nothing
    return json.dumps(erased, sort_keys=True, ensure_ascii=False)


# Stored answers of the erased orders' idempotency keys (every key the workflow derives names
# its order) may repeat personal data (e.g. capture's order after a progress report): the
# answer is dropped and the key kept, so a late retry is refused as "in use" rather than
# acting twice. The request's hash stays; it reveals nothing by itself.
SQL_FORGET_ANSWERS = """
UPDATE idempotency_keys SET response = NULL
WHERE response IS NOT NULL
  AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS o (id) WHERE strpos(key, o.id) > 0)"""
# Deliveries still waiting for the erased orders' workflows (which are ended first) would carry
# their payloads to nobody.
SQL_DROP_DELIVERIES = "DELETE FROM outbox WHERE workflow_id = ANY($1::text[])"
# So would their dead letters, and an operator must not read the payloads afterwards.
SQL_DROP_DEAD_LETTERS = "DELETE FROM outbox_dead_letters WHERE workflow_id = ANY($1::text[])"


async def erase_platform_rows(
    conn: Any, order_ids: Sequence[str], workflow_ids: Sequence[str]
) -> int:
    """Forget the erased orders in the tables every schema has (idempotency keys, and the
    outbox and its dead letters of their lifecycle workflows `workflow_ids`); returns how many
    rows changed."""
    answers = await conn.execute(SQL_FORGET_ANSWERS, list(order_ids))
    deliveries = await conn.execute(SQL_DROP_DELIVERIES, list(workflow_ids))
    dead = await conn.execute(SQL_DROP_DEAD_LETTERS, list(workflow_ids))
    return _count(answers) + _count(deliveries) + _count(dead)


def _count(status: str) -> int:
    # asyncpg answers "UPDATE 3" / "DELETE 0".
    return int(status.rsplit(" ", 1)[-1])


async def erase_rows(
    conn: Any, specs: Sequence[PersonalColumns], order_ids: Sequence[str], terms: Sequence[str]
) -> int:
    """Erase the personal data of `order_ids` from every listed table, in the caller's
    transaction; returns how many rows changed."""
    changed_rows = 0
    ids = list(order_ids)
    for spec in specs:
        for row in await conn.fetch(spec.select_sql(), ids):
            changes = erased_row(spec, row, terms)
            if changes:
                columns = list(changes)
                await conn.execute(
                    spec.update_sql(columns), row["ctid"], *(changes[c] for c in columns)
                )
                changed_rows += 1
    return changed_rows
