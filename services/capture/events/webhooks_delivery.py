"""Webhooks, the background side: the fan-out turns the event log into deliveries, the sender
POSTs them. Both run in every capture replica, off the log: a slow or failing receiver never
holds up an order.

Fan-out: a consumer of the log (cursor "webhooks"); one replica at a time takes the next batch
of events and, in the same transaction, queues one delivery per (matching subscription, event)
and moves the cursor, so each event is fanned out exactly once.

Sender: leases due deliveries (FOR UPDATE SKIP LOCKED, so replicas share them), never one while
an earlier delivery of the same order is pending for the same subscription, POSTs each signed
per Standard Webhooks, and records the attempt. The lease (a time the delivery is not due
before) is taken in a short transaction, not held across the HTTP call; a sender that dies
mid-call leaves the delivery due again when its lease runs out, and another sends it with the
same webhook-id (at least once).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
import asyncpg
import structlog
from google.protobuf import json_format
from standardwebhooks import Webhook

from oms_platform import metrics
from oms_platform.backoff import Backoff
from oms_platform.codec import CodecError
from oms_platform.db import DB_AWAY
from oms_platform.errors import clip
from oms_platform.listen import Listener, subscribed, woken
from oms_platform.passes import Pacing, run_passes
from services.capture.events import webhooks_rules as rules
from services.capture.events import webhooks_store as store
from services.capture.events.webhooks import FANOUT_CONSUMER, SecretBox
from services.capture.store import events

log = structlog.get_logger("oms.webhooks")

# Postgres being away: what a pass waits on before the loop backs off and tries again.
# The longest either loop waits between tries while Postgres is away.
RETRY_CAP_SECONDS = 5.0
# An attempt's error as kept (and listed) is cut to this length.
MAX_ERROR_LENGTH = 500
# A lease outlives the attempt's timeout by this much (recording the outcome included).
LEASE_MARGIN_SECONDS = 30.0
USER_AGENT = "oms-webhooks/1"


def render(claimed: store.Claimed) -> bytes:
    """The body POSTed: the Event as proto3 JSON with the proto's own (snake_case) field names,
    keys sorted, int64 fields as strings (proto3 JSON's rule), unset fields left out."""
    event = events.event_of(claimed.body, claimed.seq, claimed.recorded_at)
    text = json_format.MessageToJson(
        event, preserving_proto_field_name=True, indent=None, sort_keys=True
    )
    return text.encode()


class WebhookFanOut:
    """Queues a delivery per (matching subscription, event) from the log, once per event."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_size: int,
        poll_seconds: float,
        on_queued: Callable[[], None] = lambda: None,
        listener: Listener | None = None,
        pass_interval_seconds: float = 0.0,
    ) -> None:
        self._pool = pool
        # The process's LISTEN connection: the sequencer's NOTIFY (any replica's) wakes the
        # fan-out; without one it polls.
        self._listener = listener
        self._batch_size = batch_size
        self._pacing = Pacing(
            poll_seconds, retry_cap_seconds=RETRY_CAP_SECONDS,
            min_interval_seconds=pass_interval_seconds,
        )  # fmt: skip
        # Wakes this process's sender when deliveries were queued.
        self._on_queued = on_queued
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the log now (events were sequenced)."""
        self._wake.set()

    async def fan_out_once(self) -> tuple[int, bool]:
        """One batch: (deliveries queued, whether the log may hold more)."""
        async with self._pool.acquire() as conn, conn.transaction():
            batch = await events.next_batch(
                conn, FANOUT_CONSUMER, events.LogFilter(), self._batch_size
            )
            if not batch.events:
                return 0, False
            subscriptions = await store.live_subscriptions(conn)
            queued = [
                store.NewDelivery(s.subscription_id, e.sequence, e.event_id, e.type, e.order_id)
                for e in batch.events
                for s in subscriptions
                if s.from_seq <= e.sequence and rules.matches(s.types, e.type)
            ]
            await store.insert_deliveries(conn, queued)
            await events.move_cursor(conn, FANOUT_CONSUMER, batch.upto)
        if queued:
            self._on_queued()
        return len(queued), len(batch.events) >= self._batch_size

    async def run(self) -> None:
        """Fan out for ever, woken by the sequencer's NOTIFY or every poll interval; Postgres
        being away is waited out here."""
        with subscribed(self._listener, events.EVENTS_SEQUENCED_CHANNEL, lambda _: self.wake()):
            await run_passes("webhook fan-out", self._more, self._wake, self._pacing, DB_AWAY)

    async def _more(self) -> bool:
        return (await self.fan_out_once())[1]


class WebhookSender:
    """POSTs due deliveries, at most `concurrency` at once, each order's in sequence order."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: SecretBox,
        policy: rules.RetryPolicy,
        *,
        timeout_seconds: float,
        concurrency: int,
        poll_seconds: float,
    ) -> None:
        self._pool = pool
        self._box = box
        self._policy = policy
        self._timeout = timeout_seconds
        self._concurrency = max(1, concurrency)
        self._poll_seconds = poll_seconds
        self._lease_seconds = timeout_seconds + LEASE_MARGIN_SECONDS
        # Each process's sender signs its leases apart from other replicas'.
        self._lease = f"lease_{uuid.uuid4().hex}"
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due deliveries now (some were queued, resumed or redelivered)."""
        self._wake.set()

    async def run(self) -> None:
        """Send for ever with one HTTP session; Postgres being away is waited out here (the
        deliveries wait in the table)."""
        backoff = Backoff(initial=self._poll_seconds, cap=RETRY_CAP_SECONDS)
        in_flight: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=self._concurrency)
        async with aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT}
        ) as session:
            try:
                while True:
                    self._wake.clear()
                    room = self._concurrency - len(in_flight)
                    if room > 0:
                        try:
                            async with self._pool.acquire() as conn, conn.transaction():
                                claimed = await store.claim_due(
                                    conn, room, self._lease, self._lease_seconds
                                )
                            backoff.reset()
                        except DB_AWAY as error:
                            delay = backoff.delay_after(0.0)
                            log.warning("webhook claim failed", error=str(error), retry_in=delay)
                            await asyncio.sleep(delay)
                            continue
                        for delivery in claimed:
                            task = asyncio.create_task(self._send(session, delivery))
                            in_flight.add(task)
                            task.add_done_callback(self._finished(in_flight))
                    # A finished send wakes the loop (the next delivery of its order is due).
                    await woken(self._wake, self._poll_seconds)
            finally:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    def _finished(self, in_flight: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("webhook send failed", exc_info=task.exception())
            self._wake.set()

        return done

    async def _send(self, session: aiohttp.ClientSession, claimed: store.Claimed) -> None:
        at = datetime.now(UTC)
        started = time.perf_counter()
        status, error = await self._post(session, claimed, at)
        seconds = time.perf_counter() - started
        metrics.WEBHOOK_ATTEMPT_SECONDS.observe(seconds)
        attempt = store.Attempt(at, status, clip(error, MAX_ERROR_LENGTH), round(seconds * 1000))
        if 200 <= status < 300:
            state, retry_in = store.DELIVERED, 0.0
        else:
            failures = claimed.failures + 1
            failing_for = (claimed.claimed_at - claimed.budget_started_at).total_seconds()
            dead = self._policy.is_dead(failing_for + seconds)
            state = store.DEAD if dead else store.PENDING
            retry_in = 0.0 if dead else self._policy.delay(failures)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                held = await store.settle_attempt(
                    conn, claimed, self._lease, state, retry_in, attempt
                )
        except DB_AWAY as away:
            # The lease runs out and the delivery is sent again (same webhook-id).
            log.warning(
                "webhook outcome not recorded", delivery_id=claimed.delivery_id, error=str(away)
            )
            return
        if not held:
            return
        if state == store.DELIVERED:
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            return
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        if state == store.DEAD:
            metrics.WEBHOOK_DELIVERIES.labels("dead").inc()
            log.warning(
                "webhook delivery dead",
                delivery_id=claimed.delivery_id,
                subscription_id=claimed.subscription_id,
                error=attempt.error,
            )

    async def _post(
        self, session: aiohttp.ClientSession, claimed: store.Claimed, at: datetime
    ) -> tuple[int, str]:
        """(HTTP status, error): status 0 when there was no answer."""
        try:
            secret = self._box.open(claimed)
        except CodecError as error:
            return 0, f"the signing secret cannot be opened: {error}"
        body = render(claimed)
        headers = {
            "webhook-id": claimed.delivery_id,
            "webhook-timestamp": str(math.floor(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(claimed.delivery_id, at, body),
            "Content-Type": "application/json",
        }
        try:
            async with session.post(
                claimed.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                # A redirect is not followed: the signed body goes only where it was sent.
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return response.status, ""
                text = await response.content.read(MAX_ERROR_LENGTH)
                return response.status, f"HTTP {response.status}: {text.decode(errors='replace')}"
        except TimeoutError:
            return 0, f"no answer within {self._timeout:g}s"
        except aiohttp.ClientError as error:
            return 0, f"{type(error).__name__}: {error}"


def pending_gauge(pool: asyncpg.Pool) -> Callable[[], Awaitable[None]]:
    """A read of the deliveries waiting to be sent, for the metrics refresher."""

    async def read() -> None:
        async with pool.acquire() as conn:
            metrics.WEBHOOK_PENDING.set(await store.pending_count(conn))

    return read
