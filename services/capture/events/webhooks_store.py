"""Capture's store for webhooks: subscriptions, deliveries and their attempts (migration
0005_webhooks.sql). Named, parameterised SQL, each function in the caller's transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.capture.store.common import Conn

ACTIVE = "active"
PAUSED = "paused"
PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"

_SUBSCRIPTION = """
subscription_id, url, types, state, description, secret_key_id, secret_sealed, from_seq,
created_at, deleted_at"""

SQL_INSERT_SUBSCRIPTION = f"""
INSERT INTO webhook_subscriptions
    (subscription_id, url, types, state, description, secret_key_id, secret_sealed, from_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING {_SUBSCRIPTION}"""
# Live subscriptions (not deleted), oldest first.
SQL_LIVE_SUBSCRIPTIONS = f"""
SELECT {_SUBSCRIPTION} FROM webhook_subscriptions WHERE deleted_at IS NULL
ORDER BY created_at, subscription_id"""
# One subscription, deleted or not, locked for a change when $2.
SQL_SUBSCRIPTION = f"SELECT {_SUBSCRIPTION} FROM webhook_subscriptions WHERE subscription_id = $1"
SQL_LOCK_SUBSCRIPTION = SQL_SUBSCRIPTION + " FOR UPDATE"
# A change: each NULL leaves its column as it is.
SQL_UPDATE_SUBSCRIPTION = f"""
UPDATE webhook_subscriptions SET
    url = coalesce($2, url),
    types = coalesce($3, types),
    state = coalesce($4, state),
    description = coalesce($5, description),
    secret_key_id = coalesce($6, secret_key_id),
    secret_sealed = coalesce($7, secret_sealed)
WHERE subscription_id = $1
RETURNING {_SUBSCRIPTION}"""
# Deleting keeps the subscription and its settled deliveries (history); its pending ones go.
SQL_DELETE_SUBSCRIPTION = """
UPDATE webhook_subscriptions SET deleted_at = now()
WHERE subscription_id = $1 AND deleted_at IS NULL
RETURNING subscription_id"""
SQL_DROP_PENDING = """
DELETE FROM webhook_deliveries WHERE subscription_id = $1 AND state = 'pending'"""

SQL_INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries
    (delivery_id, subscription_id, seq, event_id, event_type, order_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
ON CONFLICT DO NOTHING"""

# Due pending deliveries of active subscriptions, each the first pending one of its
# (subscription, order) — so an order's events reach a subscription in sequence order, and a
# dead one (no longer pending) blocks nothing — locked so other replicas' senders skip them,
# and leased: due again only if this sender dies before recording the outcome. The statement's
# snapshot sees a delivery another sender leases until that sender commits, so the one behind
# it is never taken while it is in flight.
SQL_CLAIM_DUE = """
WITH due AS (
    SELECT d.delivery_id FROM webhook_deliveries AS d
    JOIN webhook_subscriptions AS s USING (subscription_id)
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      AND s.state = 'active' AND s.deleted_at IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries AS e
          WHERE e.subscription_id = d.subscription_id AND e.order_id = d.order_id
            AND e.state = 'pending' AND e.seq < d.seq)
    ORDER BY d.next_attempt_at, d.seq
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries AS w
SET next_attempt_at = now() + make_interval(secs => $2), lease = $3,
    budget_started_at = coalesce(w.budget_started_at, now())
FROM due, webhook_subscriptions AS s, order_events AS o
WHERE w.delivery_id = due.delivery_id AND s.subscription_id = w.subscription_id
  AND o.seq = w.seq
RETURNING w.delivery_id, w.subscription_id, w.order_id, w.failures, w.budget_started_at,
    now() AS claimed_at, s.url, s.secret_key_id, s.secret_sealed, o.seq, o.recorded_at, o.body"""

# The outcome of an attempt, recorded only by the sender still holding the lease (a sender
# whose lease ran out lost the delivery to another one, whose outcome counts).
SQL_SETTLE_ATTEMPT = """
UPDATE webhook_deliveries SET
    state = $3,
    failures = failures + CASE WHEN $3 = 'delivered' THEN 0 ELSE 1 END,
    next_attempt_at = now() + make_interval(secs => $4),
    settled_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END,
    lease = NULL
WHERE delivery_id = $1 AND lease = $2 AND state = 'pending'
RETURNING delivery_id"""
SQL_INSERT_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, error, latency_ms)
SELECT $1, coalesce(max(attempt), 0) + 1, $2, $3, $4, $5
FROM webhook_attempts WHERE delivery_id = $1"""

# Newest first; $2: a state ('' for all), $3: sequences below this (0: from the newest).
SQL_LIST_DELIVERIES = """
SELECT delivery_id, subscription_id, seq, event_id, event_type, order_id, state,
       next_attempt_at, created_at
FROM webhook_deliveries
WHERE subscription_id = $1 AND ($2 = '' OR state = $2) AND ($3::bigint = 0 OR seq < $3)
ORDER BY seq DESC
LIMIT $4"""
SQL_ATTEMPTS = """
SELECT delivery_id, at, http_status, error, latency_ms FROM webhook_attempts
WHERE delivery_id = ANY($1::text[])
ORDER BY delivery_id, attempt"""

# Back to pending with a fresh budget, due now; only a settled delivery of a live subscription.
SQL_REDELIVER_ONE = """
UPDATE webhook_deliveries AS d SET state = 'pending', failures = 0, budget_started_at = NULL,
    next_attempt_at = now(), settled_at = NULL, lease = NULL
FROM webhook_subscriptions AS s
WHERE d.delivery_id = $1 AND s.subscription_id = d.subscription_id AND s.deleted_at IS NULL
  AND d.state IN ('dead', 'delivered')
RETURNING d.delivery_id"""
SQL_DELIVERY_STATE = """
SELECT s.deleted_at IS NOT NULL AS deleted
FROM webhook_deliveries AS d JOIN webhook_subscriptions AS s USING (subscription_id)
WHERE d.delivery_id = $1"""
SQL_REDELIVER_DEAD = """
UPDATE webhook_deliveries SET state = 'pending', failures = 0, budget_started_at = NULL,
    next_attempt_at = now(), settled_at = NULL, lease = NULL
WHERE subscription_id = $1 AND state = 'dead'"""

SQL_PENDING_COUNT = "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"


@dataclass(frozen=True)
class Subscription:
    """A webhook endpoint as stored (its secret sealed)."""

    subscription_id: str
    url: str
    types: list[str]
    state: str
    description: str
    secret_key_id: str
    secret_sealed: bytes
    from_seq: int
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class Attempt:
    """One POST of a delivery."""

    at: datetime
    http_status: int
    error: str
    latency_ms: int


@dataclass(frozen=True)
class Delivery:
    """One event for one subscription, with its attempts."""

    delivery_id: str
    subscription_id: str
    seq: int
    event_id: str
    event_type: str
    order_id: str
    state: str
    next_attempt_at: datetime
    created_at: datetime
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class Claimed:
    """A delivery a sender has leased: where to, with what secret, which event."""

    delivery_id: str
    subscription_id: str
    order_id: str
    failures: int
    budget_started_at: datetime
    claimed_at: datetime
    url: str
    secret_key_id: str
    secret_sealed: bytes
    seq: int
    recorded_at: datetime
    body: bytes


def delivery_id(subscription_id: str, event_id: str) -> str:
    """The stable id of one event's delivery to one subscription (the webhook-id header)."""
    return "msg_" + hashlib.sha256(f"{subscription_id}:{event_id}".encode()).hexdigest()[:26]


def _subscription(row: object) -> Subscription:
    return Subscription(**dict(row))  # type: ignore[call-overload]


async def insert_subscription(
    conn: Conn,
    subscription_id: str,
    url: str,
    types: list[str],
    description: str,
    sealed_secret: tuple[str, bytes],
    from_seq: int,
) -> Subscription:
    """Store a new active subscription."""
    key_id, sealed = sealed_secret
    row = await conn.fetchrow(
        SQL_INSERT_SUBSCRIPTION,
        subscription_id,
        url,
        types,
        ACTIVE,
        description,
        key_id,
        sealed,
        from_seq,
    )
    return _subscription(row)


async def live_subscriptions(conn: Conn) -> list[Subscription]:
    """Every subscription not deleted, oldest first."""
    return [_subscription(r) for r in await conn.fetch(SQL_LIVE_SUBSCRIPTIONS)]


async def subscription(
    conn: Conn, subscription_id: str, *, lock: bool = False
) -> Subscription | None:
    """One subscription (deleted ones too), locked until the transaction ends when `lock`."""
    row = await conn.fetchrow(SQL_LOCK_SUBSCRIPTION if lock else SQL_SUBSCRIPTION, subscription_id)
    return None if row is None else _subscription(row)


async def update_subscription(
    conn: Conn,
    subscription_id: str,
    *,
    url: str | None = None,
    types: list[str] | None = None,
    state: str | None = None,
    description: str | None = None,
    sealed_secret: tuple[str, bytes] | None = None,
) -> Subscription:
    """Change the given columns of a subscription (None: unchanged)."""
    key_id, sealed = sealed_secret or (None, None)
    row = await conn.fetchrow(
        SQL_UPDATE_SUBSCRIPTION, subscription_id, url, types, state, description, key_id, sealed
    )
    return _subscription(row)


async def delete_subscription(conn: Conn, subscription_id: str) -> bool:
    """Mark a subscription deleted and drop its pending deliveries; False if it was not live."""
    if await conn.fetchval(SQL_DELETE_SUBSCRIPTION, subscription_id) is None:
        return False
    await conn.execute(SQL_DROP_PENDING, subscription_id)
    return True


@dataclass(frozen=True)
class NewDelivery:
    """One event to send to one subscription."""

    subscription_id: str
    seq: int
    event_id: str
    event_type: str
    order_id: str


async def insert_deliveries(conn: Conn, deliveries: Sequence[NewDelivery]) -> None:
    """Queue deliveries (one already queued for the same subscription and sequence is kept)."""
    if not deliveries:
        return
    await conn.execute(
        SQL_INSERT_DELIVERIES,
        [delivery_id(d.subscription_id, d.event_id) for d in deliveries],
        [d.subscription_id for d in deliveries],
        [d.seq for d in deliveries],
        [d.event_id for d in deliveries],
        [d.event_type for d in deliveries],
        [d.order_id for d in deliveries],
    )


async def claim_due(conn: Conn, limit: int, lease: str, lease_seconds: float) -> list[Claimed]:
    """Lease up to `limit` due deliveries (the first pending of each subscription's order)."""
    rows = await conn.fetch(SQL_CLAIM_DUE, limit, lease_seconds, lease)
    return [Claimed(**dict(r)) for r in rows]


async def settle_attempt(
    conn: Conn, claimed: Claimed, lease: str, state: str, retry_in: float, attempt: Attempt
) -> bool:
    """Record an attempt and where the delivery now stands (`state`, due again in `retry_in`
    seconds when pending); False when this sender no longer held the lease (nothing written)."""
    held = await conn.fetchval(SQL_SETTLE_ATTEMPT, claimed.delivery_id, lease, state, retry_in)
    if held is None:
        return False
    await conn.execute(
        SQL_INSERT_ATTEMPT,
        claimed.delivery_id,
        attempt.at,
        attempt.http_status,
        attempt.error,
        attempt.latency_ms,
    )
    return True


async def list_deliveries(
    conn: Conn, subscription_id: str, state: str, before_seq: int, limit: int
) -> list[Delivery]:
    """A subscription's deliveries newest first, in `state` ('' for all), below `before_seq`
    (0: from the newest), with their attempts."""
    rows = await conn.fetch(SQL_LIST_DELIVERIES, subscription_id, state, before_seq, limit)
    attempts: dict[str, list[Attempt]] = {}
    for a in await conn.fetch(SQL_ATTEMPTS, [r["delivery_id"] for r in rows]):
        attempts.setdefault(a["delivery_id"], []).append(
            Attempt(a["at"], a["http_status"], a["error"], a["latency_ms"])
        )
    return [Delivery(**dict(r), attempts=attempts.get(r["delivery_id"], [])) for r in rows]


async def redeliver_one(conn: Conn, delivery_id_: str) -> tuple[int, bool] | None:
    """Put one settled delivery back to pending: (how many went back, whether its subscription
    is deleted); None when there is no such delivery."""
    row = await conn.fetchrow(SQL_DELIVERY_STATE, delivery_id_)
    if row is None:
        return None
    if row["deleted"]:
        return 0, True
    moved = await conn.fetchval(SQL_REDELIVER_ONE, delivery_id_)
    return (0 if moved is None else 1), False


async def redeliver_dead(conn: Conn, subscription_id: str) -> int:
    """Put every dead delivery of a subscription back to pending; how many."""
    status = await conn.execute(SQL_REDELIVER_DEAD, subscription_id)
    return int(status.rsplit(" ", 1)[-1])


async def pending_count(conn: Conn) -> int:
    """Deliveries waiting to be sent (due, backing off, behind another, or paused)."""
    return int(await conn.fetchval(SQL_PENDING_COUNT))
