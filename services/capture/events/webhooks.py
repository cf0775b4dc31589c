"""Webhooks, the admin side: create, list, change and delete subscriptions, list their
deliveries, send deliveries again. The fan-out and the sender are in `webhooks_delivery`;
the rules (what a url, a type, a secret may be) in `webhooks_rules`; the SQL in
`webhooks_store`.

A subscription's signing secret is needed in clear to sign every delivery, so it cannot be
hashed: it is sealed at rest with the payload codec's active master key (AES-GCM, bound to the
subscription id) and opened only to sign or to answer the call that made it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from oms_platform.codec import MasterKeys, open_secret, seal_secret
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.capture.events import webhooks_rules as rules
from services.capture.events import webhooks_store as store
from services.capture.store import events
from services.capture.store.common import Conn

# The log consumer that fans events out to deliveries (its cursor in event_cursors).
FANOUT_CONSUMER = "webhooks"
# What a sealed secret is bound to, beside its subscription id.
SECRET_KIND = "webhook"


class SecretBox:
    """Seals and opens subscription secrets with the codec's master keys (read on first use:
    capture starts without them, as it does for Temporal)."""

    def __init__(self, keys_path: Path) -> None:
        self._path = keys_path
        self._keys: MasterKeys | None = None

    def _master(self) -> MasterKeys:
        if self._keys is None:
            self._keys = MasterKeys.load(self._path)
        return self._keys

    def seal(self, subscription_id: str, secret: str) -> tuple[str, bytes]:
        """(master key id, sealed secret) for storage."""
        return seal_secret(self._master(), SECRET_KIND, subscription_id, secret.encode())

    def open(self, s: store.Subscription | store.Claimed) -> str:
        """The secret in clear, to sign with."""
        sealed = open_secret(
            self._master(), SECRET_KIND, s.subscription_id, s.secret_key_id, s.secret_sealed
        )
        return sealed.decode()


@dataclass(frozen=True)
class SubscriptionChange:
    """What UpdateWebhookSubscription asks for; None (or False) leaves a part as it is."""

    url: str | None = None
    types: Sequence[str] | None = None
    state: str | None = None
    description: str | None = None
    rotate_secret: bool = False


@dataclass(frozen=True)
class DeliveryPage:
    """One page of a subscription's deliveries, and the sequence the next page starts below
    (0: none)."""

    deliveries: list[store.Delivery]
    next_before_seq: int


class WebhookAdmin:
    """The admin RPCs' use cases, each in one transaction."""

    def __init__(
        self, pool: asyncpg.Pool, box: SecretBox, wake_sender: Callable[[], None] = lambda: None
    ) -> None:
        self._pool = pool
        self._box = box
        # A change that makes deliveries due (resume, redeliver) wakes this process's sender.
        self._wake_sender = wake_sender

    async def create(
        self, conn: Conn, url: str, types: Sequence[str], secret: str, description: str
    ) -> tuple[store.Subscription, str]:
        """A new active subscription and its secret (the one given, or a new one). It receives
        the events sequenced after it was made."""
        rules.check_subscription(url, types, secret)
        secret = secret or rules.new_secret()
        subscription_id = "whs_" + uuid.uuid4().hex
        # The fan-out's cursor is locked first: a fan-out batch in progress finishes before the
        # head is read, so every event after `from_seq` meets this subscription, none before.
        await events.lock_cursor(conn, FANOUT_CONSUMER)
        head = await events.head(conn)
        made = await store.insert_subscription(
            conn,
            subscription_id,
            url,
            rules.normalized_types(types),
            description,
            self._box.seal(subscription_id, secret),
            from_seq=head + 1,
        )
        return made, secret

    async def secret_of(self, subscription_id: str) -> str:
        """A subscription's secret in clear (answering a replayed create)."""
        async with self._pool.acquire() as conn:
            found = await store.subscription(conn, subscription_id)
        if found is None:
            raise NotFound(f"no webhook subscription {subscription_id}")
        return self._box.open(found)

    async def list(self) -> list[store.Subscription]:
        """Every subscription not deleted, oldest first."""
        async with self._pool.acquire() as conn:
            return await store.live_subscriptions(conn)

    async def update(
        self, subscription_id: str, change: SubscriptionChange
    ) -> tuple[store.Subscription, str]:
        """The subscription after `change`, and its new secret when rotated ('' otherwise)."""
        found: list[FieldViolation] = []
        if change.url is not None:
            found += rules.url_violations(change.url)
        if change.types:
            found += rules.types_violations(change.types)
        if found:
            raise InvalidArgument(found)
        async with self._pool.acquire() as conn, conn.transaction():
            current = await store.subscription(conn, subscription_id, lock=True)
            if current is None or current.deleted_at is not None:
                raise NotFound(f"no webhook subscription {subscription_id}")
            secret = rules.new_secret() if change.rotate_secret else ""
            updated = await store.update_subscription(
                conn,
                subscription_id,
                url=change.url,
                types=None if change.types is None else rules.normalized_types(change.types),
                state=change.state,
                description=change.description,
                sealed_secret=self._box.seal(subscription_id, secret) if secret else None,
            )
        if change.state == store.ACTIVE:
            self._wake_sender()
        return updated, secret

    async def delete(self, subscription_id: str) -> None:
        """Delete a subscription: nothing more is sent to it, its pending deliveries are
        dropped, its delivered and dead ones stay listed."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.delete_subscription(conn, subscription_id):
                raise NotFound(f"no webhook subscription {subscription_id}")

    async def deliveries(
        self, subscription_id: str, state: str, before_seq: int, size: int
    ) -> DeliveryPage:
        """A page of `size` of a subscription's deliveries (deleted subscriptions' too), newest
        first."""
        async with self._pool.acquire() as conn:
            if await store.subscription(conn, subscription_id) is None:
                raise NotFound(f"no webhook subscription {subscription_id}")
            rows = await store.list_deliveries(conn, subscription_id, state, before_seq, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return DeliveryPage(rows, rows[-1].seq if more else 0)

    async def redeliver(self, delivery_id: str, subscription_id: str) -> int:
        """Back to pending with a fresh retry budget: one settled delivery, or every dead one of
        a subscription; how many went back."""
        if bool(delivery_id) == bool(subscription_id):
            raise InvalidArgument(
                [FieldViolation("delivery_id", "give exactly one of delivery_id, subscription_id")]
            )
        async with self._pool.acquire() as conn, conn.transaction():
            if delivery_id:
                outcome = await store.redeliver_one(conn, delivery_id)
                if outcome is None:
                    raise NotFound(f"no webhook delivery {delivery_id}")
                moved, deleted = outcome
                if deleted:
                    raise FailedPrecondition(
                        f"webhook delivery {delivery_id} belongs to a deleted subscription"
                    )
            else:
                found = await store.subscription(conn, subscription_id, lock=True)
                if found is None or found.deleted_at is not None:
                    raise NotFound(f"no webhook subscription {subscription_id}")
                moved = await store.redeliver_dead(conn, subscription_id)
        if moved:
            self._wake_sender()
        return moved
