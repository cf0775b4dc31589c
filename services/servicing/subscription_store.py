"""Plans, subscriptions, their cycles and changes in Postgres (schema `servicing`), and the
outbox row that starts a subscription's workflow, written with the subscription."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import asyncpg

from oms_platform import db, limits, outbox
from oms_platform.errors import AlreadyExists, NotFound
from services.servicing.domain import subscriptions as sd
from services.servicing.store import Conn
from workflows.subscription_types import (
    SUBSCRIPTION_WORKFLOW,
    CadenceData,
    PlanData,
    PlanItemData,
    SubscriberData,
    SubscriptionInput,
    subscription_workflow_id,
)
from workflows.types import Address, PaymentMethodData

SCHEMA = "servicing"

# ---- plans ------------------------------------------------------------------------------------

_PLAN_COLUMNS = """id, name, items, currency, shipping_minor, tax_minor, cadence_kind,
    cadence_value, at_local_time, timezone, created_at"""

SQL_INSERT_PLAN = """
INSERT INTO plans (id, name, items, currency, shipping_minor, tax_minor, cadence_kind,
                   cadence_value, at_local_time, timezone, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"""
SQL_GET_PLAN = f"SELECT {_PLAN_COLUMNS} FROM plans WHERE id = $1"
SQL_LIST_PLANS = f"SELECT {_PLAN_COLUMNS} FROM plans ORDER BY created_at, id"

# ---- subscriptions ----------------------------------------------------------------------------

_SUBSCRIPTION_COLUMNS = """id, plan_id, channel, email, subscriber_name, phone,
    channel_customer_id, delivery_address, delivery_method, payment_method, status, start_at,
    next_cycle, next_cycle_at, paused_until, skipped_cycles, pending_plan_id,
    pending_plan_from_cycle, cancel_at_period_end, suspended_reason, created_at, updated_at"""

SQL_INSERT_SUBSCRIPTION = """
INSERT INTO subscriptions (id, plan_id, channel, email, email_normalized, subscriber_name, phone,
    channel_customer_id, delivery_address, delivery_method, payment_method, status, start_at,
    created_at, updated_at)
VALUES ($1, $2, $3, $4, lower($4), $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)"""
SQL_GET_SUBSCRIPTION = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"
SQL_LOCK_SUBSCRIPTION = SQL_GET_SUBSCRIPTION + " FOR UPDATE"
# What the workflow says the subscription is now. Who subscribed, on which channel and from
# when is not the workflow's to change; a progress report without an address or payment
# method ($9, $10 NULL) leaves the ones recorded.
SQL_UPDATE_PROJECTION = """
UPDATE subscriptions SET plan_id = $2, status = $3, next_cycle = $4, next_cycle_at = $5,
    paused_until = $6, skipped_cycles = $7, pending_plan_id = $8,
    delivery_address = coalesce($9, delivery_address),
    payment_method = coalesce($10, payment_method),
    delivery_method = coalesce($11, delivery_method),
    pending_plan_from_cycle = $12, cancel_at_period_end = $13, suspended_reason = $14,
    updated_at = $15
WHERE id = $1"""
# Empty filters match everything; $5 NULL: every channel; ($6, $7) the keyset cursor (NULL on
# the first page). Newest first, id breaking ties.
SQL_LIST_SUBSCRIPTIONS = f"""
SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions
WHERE ($1::text = '' OR email_normalized = $1)
  AND ($2::text = '' OR plan_id = $2)
  AND ($3::text = '' OR status = $3)
  AND ($5::text[] IS NULL OR channel = ANY($5::text[]))
  AND ($6::timestamptz IS NULL OR (created_at, id) < ($6::timestamptz, $7::text))
ORDER BY created_at DESC, id DESC
LIMIT $4"""

# ---- cycles and changes -----------------------------------------------------------------------

_CYCLE_COLUMNS = """number, status, due_at, updated_at, order_id, plan_id, amount_minor, currency,
    payment_attempts, next_payment_retry_at, decline_reason"""
SQL_UPSERT_CYCLE = """
INSERT INTO subscription_cycles (subscription_id, number, status, due_at, updated_at, order_id,
    plan_id, amount_minor, currency, payment_attempts, next_payment_retry_at, decline_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (subscription_id, number) DO UPDATE SET status = excluded.status,
    due_at = excluded.due_at, updated_at = excluded.updated_at, order_id = excluded.order_id,
    plan_id = excluded.plan_id, amount_minor = excluded.amount_minor,
    currency = excluded.currency, payment_attempts = excluded.payment_attempts,
    next_payment_retry_at = excluded.next_payment_retry_at,
    decline_reason = excluded.decline_reason"""
SQL_CYCLES = f"""
SELECT {_CYCLE_COLUMNS} FROM subscription_cycles WHERE subscription_id = $1 ORDER BY number"""
# A change is recorded once: the workflow reports it again after a retry.
SQL_INSERT_CHANGE = """
INSERT INTO subscription_changes (id, subscription_id, kind, actor, reason, summary,
    effective_cycle, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO NOTHING"""
SQL_CHANGES = """
SELECT id, kind, actor, reason, summary, effective_cycle, at FROM subscription_changes
WHERE subscription_id = $1 ORDER BY at, recorded"""


class SubscriptionStore:
    """Servicing's records of plans and subscriptions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # plans

    async def insert_plan(self, conn: Conn, plan: sd.Plan) -> None:
        """Store a new plan."""
        p = plan.data
        await conn.execute(
            SQL_INSERT_PLAN,
            p.plan_id,
            p.name,
            [dataclasses.asdict(i) for i in p.items],
            p.currency,
            p.shipping_minor,
            p.tax_minor,
            p.cadence.kind,
            p.cadence.value,
            p.cadence.at_local_time,
            p.timezone,
            plan.created_at,
        )

    async def plan(self, plan_id: str, conn: Conn | None = None) -> sd.Plan | None:
        """One plan; None if there is none."""
        row = await (conn or self.pool).fetchrow(SQL_GET_PLAN, plan_id)
        return None if row is None else _plan(row)

    async def plans(self) -> list[sd.Plan]:
        """Every plan, oldest first."""
        return [_plan(r) for r in await self.pool.fetch(SQL_LIST_PLANS)]

    # subscriptions

    async def insert_subscription(
        self, conn: asyncpg.Connection, subscription: sd.Subscription, start: SubscriptionInput
    ) -> None:
        """Store a new subscription and, in the same transaction, the outbox row that starts
        its workflow: committed together, or neither."""
        s = subscription
        try:
            await conn.execute(
                SQL_INSERT_SUBSCRIPTION,
                s.subscription_id,
                s.plan_id,
                s.channel,
                s.subscriber.email,
                s.subscriber.name,
                s.subscriber.phone,
                s.subscriber.channel_customer_id,
                dataclasses.asdict(s.delivery_address),
                s.delivery_method,
                dataclasses.asdict(s.payment_method),
                s.status,
                s.start_at,
                s.created_at,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                "subscription_id", f"subscription {s.subscription_id} exists already"
            ) from None
        await outbox.enqueue(
            conn,
            SCHEMA,
            outbox.START,
            subscription_workflow_id(s.subscription_id),
            SUBSCRIPTION_WORKFLOW,
            dataclasses.asdict(start),
        )

    async def subscription(
        self, subscription_id: str, conn: Conn | None = None, *, for_update: bool = False
    ) -> sd.Subscription:
        """One subscription; NotFound if there is none."""
        sql = SQL_LOCK_SUBSCRIPTION if for_update else SQL_GET_SUBSCRIPTION
        row = await (conn or self.pool).fetchrow(sql, subscription_id)
        if row is None:
            raise NotFound(f"no subscription {limits.echo(subscription_id)}")
        return _subscription(row)

    async def subscriptions(self, query: sd.ListQuery) -> list[sd.Subscription]:
        """A page of subscriptions and one more (which says another page follows)."""
        after = query.after
        rows = await self.pool.fetch(
            SQL_LIST_SUBSCRIPTIONS,
            query.shopper_email,
            query.plan_id,
            query.status,
            query.page_size + 1,
            None if query.channels is None else list(query.channels),
            after.created_at if after else None,
            after.id if after else None,
        )
        return [_subscription(r) for r in rows]

    async def record_progress(self, conn: Conn, progress: sd.Progress) -> None:
        """Write what the workflow reported: the subscription, its changed cycles, its change
        (in the caller's transaction)."""
        s = progress.subscription
        address = dataclasses.asdict(s.delivery_address) if s.delivery_address.line1 else None
        method = dataclasses.asdict(s.payment_method) if s.payment_method.type else None
        await conn.execute(
            SQL_UPDATE_PROJECTION,
            s.subscription_id,
            s.plan_id,
            s.status,
            s.next_cycle,
            s.next_cycle_at,
            s.paused_until,
            list(s.skipped_cycles),
            s.pending_plan_id,
            address,
            method,
            s.delivery_method if address is not None else None,
            s.pending_plan_from_cycle,
            s.cancel_at_period_end,
            s.suspended_reason,
            s.updated_at,
        )
        for c in progress.cycles:
            await conn.execute(
                SQL_UPSERT_CYCLE,
                s.subscription_id,
                c.number,
                c.status,
                c.due_at,
                c.updated_at,
                c.order_id,
                c.plan_id,
                c.amount_minor,
                c.currency,
                c.payment_attempts,
                c.next_payment_retry_at,
                c.decline_reason,
            )
        if progress.change is not None:
            await self.insert_change(conn, s.subscription_id, progress.change)

    async def insert_change(self, conn: Conn, subscription_id: str, c: sd.ChangeRecord) -> None:
        """Record a change once (its id is the workflow's)."""
        await conn.execute(
            SQL_INSERT_CHANGE,
            c.change_id,
            subscription_id,
            c.kind,
            c.actor,
            c.reason,
            c.summary,
            c.effective_cycle,
            c.at,
        )

    async def history(self, subscription_id: str) -> tuple[list[sd.Cycle], list[sd.ChangeRecord]]:
        """A subscription's cycles (by number) and changes (oldest first)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            cycles = await conn.fetch(SQL_CYCLES, subscription_id)
            changes = await conn.fetch(SQL_CHANGES, subscription_id)
        return (
            [sd.Cycle(**dict(r)) for r in cycles],
            [
                sd.ChangeRecord(
                    change_id=r["id"],
                    kind=r["kind"],
                    actor=r["actor"],
                    summary=r["summary"],
                    effective_cycle=r["effective_cycle"],
                    at=r["at"],
                    reason=r["reason"],
                )
                for r in changes
            ],
        )

    # a change's idempotency, kept apart from its Update (no transaction is held open while
    # the workflow answers)

    async def change_answer(self, key: str, fingerprint: bytes, rpc: str) -> bytes | None:
        """Claim `key` for this request, or find its stored answer: None when the change is
        still to make (first time, or a retry of one that did not answer); AlreadyExists
        when the key was used for a different request."""
        async with self.pool.acquire() as conn:
            if await conn.fetchval(db.SQL_CLAIM_KEY, key, fingerprint, rpc) is not None:
                return None
            row = await conn.fetchrow(db.SQL_STORED_RESPONSE, key)
        if row is None or bytes(row["request_hash"]) != fingerprint or row["rpc"] != rpc:
            raise AlreadyExists(
                "idempotency_key",
                "this idempotency key was already used with a different request",
            )
        return None if row["response"] is None else bytes(row["response"])

    async def keep_answer(self, key: str, response: bytes) -> None:
        """Store the answer a retry of the change gets."""
        await self.pool.execute(db.SQL_STORE_RESPONSE, key, response)


def _plan(row: asyncpg.Record) -> sd.Plan:
    return sd.Plan(
        PlanData(
            plan_id=row["id"],
            name=row["name"],
            items=[PlanItemData(**i) for i in row["items"]],
            currency=row["currency"],
            cadence=CadenceData(row["cadence_kind"], row["cadence_value"], row["at_local_time"]),
            timezone=row["timezone"],
            shipping_minor=row["shipping_minor"],
            tax_minor=row["tax_minor"],
        ),
        row["created_at"],
    )


def _subscription(row: asyncpg.Record) -> sd.Subscription:
    address: dict[str, Any] = row["delivery_address"]
    method: dict[str, Any] = row["payment_method"]
    next_cycle_at: datetime | None = row["next_cycle_at"]
    return sd.Subscription(
        subscription_id=row["id"],
        plan_id=row["plan_id"],
        channel=row["channel"],
        subscriber=SubscriberData(
            email=row["email"],
            name=row["subscriber_name"],
            phone=row["phone"],
            channel_customer_id=row["channel_customer_id"],
        ),
        delivery_address=Address(**address),
        delivery_method=row["delivery_method"],
        payment_method=PaymentMethodData(**method),
        status=row["status"],
        start_at=row["start_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_cycle=row["next_cycle"],
        next_cycle_at=next_cycle_at,
        paused_until=row["paused_until"],
        skipped_cycles=tuple(row["skipped_cycles"]),
        pending_plan_id=row["pending_plan_id"],
        pending_plan_from_cycle=row["pending_plan_from_cycle"],
        cancel_at_period_end=row["cancel_at_period_end"],
        suspended_reason=row["suspended_reason"],
    )
