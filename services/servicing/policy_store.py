"""Return policies, product categories and return labels in Postgres (schema `servicing`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from oms_platform.errors import AlreadyExists, NotFound
from services.servicing.domain import PolicyRule

_RULE_COLUMNS = """id, channel, category, return_days, required_conditions, final_sale,
    restocking_fee_basis_points, description, updated_at, updated_by, fee_on_exchange"""

# Replaces a rule by id; the (channel, category) unique key refuses a second rule for the
# same pair (asyncpg raises UniqueViolationError, told apart from a replaced row by RETURNING).
SQL_UPSERT_RULE = f"""
INSERT INTO return_policy_rules
    (id, channel, category, return_days, required_conditions, final_sale,
     restocking_fee_basis_points, description, updated_at, updated_by, fee_on_exchange)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET
    channel = EXCLUDED.channel, category = EXCLUDED.category,
    return_days = EXCLUDED.return_days, required_conditions = EXCLUDED.required_conditions,
    final_sale = EXCLUDED.final_sale,
    restocking_fee_basis_points = EXCLUDED.restocking_fee_basis_points,
    description = EXCLUDED.description, updated_at = EXCLUDED.updated_at,
    updated_by = EXCLUDED.updated_by, fee_on_exchange = EXCLUDED.fee_on_exchange
RETURNING {_RULE_COLUMNS}
"""

# Every rule: the policy is small (a few rules per channel and category), read whole.
SQL_LIST_RULES = f"SELECT {_RULE_COLUMNS} FROM return_policy_rules ORDER BY id"

SQL_DELETE_RULE = "DELETE FROM return_policy_rules WHERE id = $1 RETURNING id"

SQL_SET_CATEGORIES = """
INSERT INTO sku_categories (sku, category, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (sku) DO UPDATE SET category = EXCLUDED.category, updated_at = EXCLUDED.updated_at
"""

SQL_REMOVE_CATEGORIES = "DELETE FROM sku_categories WHERE sku = ANY($1::text[])"

SQL_CATEGORIES_OF = "SELECT sku, category FROM sku_categories WHERE sku = ANY($1::text[])"

SQL_LIST_CATEGORIES = """
SELECT sku, category FROM sku_categories WHERE ($1::text = '' OR category = $1) ORDER BY sku
"""

_LABEL_COLUMNS = """return_order_id, order_id, carrier, tracking_number, pdf, tracking_status,
    created_at, updated_at"""

# The first label issued for a return order stays its label (a retry issues none again).
SQL_INSERT_LABEL = f"""
INSERT INTO return_labels
    (return_order_id, order_id, carrier, tracking_number, pdf, tracking_status, created_at,
     updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
ON CONFLICT (return_order_id) DO NOTHING
RETURNING {_LABEL_COLUMNS}
"""

SQL_GET_LABEL = f"SELECT {_LABEL_COLUMNS} FROM return_labels WHERE return_order_id = $1"

SQL_SET_LABEL_STATUS = f"""
UPDATE return_labels SET tracking_status = $2, updated_at = $3
WHERE return_order_id = $1 AND tracking_status <> $2
RETURNING {_LABEL_COLUMNS}
"""


@dataclass(frozen=True)
class StoredRule:
    """A rule with who set it last and when."""

    rule: PolicyRule
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class ReturnLabel:
    """A carrier's label for a return order, as servicing keeps it."""

    return_order_id: str
    order_id: str
    carrier: str
    tracking_number: str
    pdf: bytes
    tracking_status: str
    created_at: datetime
    updated_at: datetime


def _rule(row: Any) -> StoredRule:
    return StoredRule(
        PolicyRule(
            id=row["id"],
            channel=row["channel"],
            category=row["category"],
            return_days=row["return_days"],
            required_conditions=tuple(row["required_conditions"]),
            final_sale=row["final_sale"],
            restocking_fee_basis_points=row["restocking_fee_basis_points"],
            description=row["description"],
            fee_on_exchange=row["fee_on_exchange"],
        ),
        row["updated_at"],
        row["updated_by"],
    )


def _label(row: Any) -> ReturnLabel:
    return ReturnLabel(**{key: row[key] for key in row.keys()})  # noqa: SIM118


class ReturnPolicyStore:
    """Reads and writes return policy rules and SKUs' product categories."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def upsert(self, rule: PolicyRule, now: datetime, actor: str) -> StoredRule:
        """Create or replace `rule`; AlreadyExists when another rule has its channel and
        category."""
        try:
            row = await self.pool.fetchrow(
                SQL_UPSERT_RULE,
                rule.id,
                rule.channel,
                rule.category,
                rule.return_days,
                list(rule.required_conditions),
                rule.final_sale,
                rule.restocking_fee_basis_points,
                rule.description,
                now,
                actor,
                rule.fee_on_exchange,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                "rule",
                f"another rule already applies to channel {rule.channel or 'any'} and "
                f"category {rule.category or 'any'}",
            ) from None
        return _rule(row)

    async def rules(self) -> list[StoredRule]:
        """Every rule, by id."""
        return [_rule(row) for row in await self.pool.fetch(SQL_LIST_RULES)]

    async def delete(self, rule_id: str) -> bool:
        """Delete a rule; False when there was none."""
        return await self.pool.fetchval(SQL_DELETE_RULE, rule_id) is not None

    async def set_categories(self, categories: dict[str, str], now: datetime) -> int:
        """Set each SKU's category ("" removes it), all in one transaction."""
        kept = {sku: c for sku, c in categories.items() if c}
        removed = [sku for sku, c in categories.items() if not c]
        async with self.pool.acquire() as conn, conn.transaction():
            if kept:
                await conn.execute(
                    SQL_SET_CATEGORIES, list(kept), list(kept.values()), [now] * len(kept)
                )
            if removed:
                await conn.execute(SQL_REMOVE_CATEGORIES, removed)
        return len(categories)

    async def categories_of(self, skus: list[str]) -> dict[str, str]:
        """The category of each of `skus` that has one."""
        rows = await self.pool.fetch(SQL_CATEGORIES_OF, skus)
        return {row["sku"]: row["category"] for row in rows}

    async def categories(self, category: str = "") -> list[tuple[str, str]]:
        """(sku, category) pairs, by SKU; only `category`'s when given."""
        return [
            (row["sku"], row["category"])
            for row in await self.pool.fetch(SQL_LIST_CATEGORIES, category)
        ]


class ReturnLabelStore:
    """Reads and writes return orders' labels."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(self, label: ReturnLabel) -> ReturnLabel:
        """Keep `label` unless the return order has one already; answers the one kept."""
        row = await self.pool.fetchrow(
            SQL_INSERT_LABEL,
            label.return_order_id,
            label.order_id,
            label.carrier,
            label.tracking_number,
            label.pdf,
            label.tracking_status,
            label.created_at,
        )
        if row is None:
            return await self.get(label.return_order_id)
        return _label(row)

    async def find(self, return_order_id: str) -> ReturnLabel | None:
        """The return order's label, or None."""
        row = await self.pool.fetchrow(SQL_GET_LABEL, return_order_id)
        return None if row is None else _label(row)

    async def get(self, return_order_id: str) -> ReturnLabel:
        """The return order's label; NotFound when none was issued."""
        label = await self.find(return_order_id)
        if label is None:
            raise NotFound(f"no return label for return order {return_order_id}")
        return label

    async def set_status(self, return_order_id: str, status: str, now: datetime) -> ReturnLabel:
        """Record where the parcel is (unchanged when it is there already)."""
        row = await self.pool.fetchrow(SQL_SET_LABEL_STATUS, return_order_id, status, now)
        if row is None:
            return await self.get(return_order_id)
        return _label(row)
