"""The consumers `oms bench events` puts on the event log: SubscribeEvents streams following the
whole log, and a local webhook receiver. Each records what arrived and when, and checks what a
real integration relies on: streams see every sequence once, in order (no gaps); the receiver
gets every event of its subscription, signed.

Lag is the time from an event's `occurred_at` to its arrival here, on the same machine's clock
as the services that stamped it. Only events from `measure_from` on are timed (the bench sets
it to the log's head before the measured run), so history read while catching up is not.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from oms.events.v1 import events_pb2, events_pb2_grpc
from standardwebhooks import Webhook, WebhookVerificationError

from oms_platform import auth, grpcutil, limits
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from oms_tools.bench.common import bench_caller

# A stream started past any sequence ends at once with the head (`stop_at_head`): how the bench
# reads where the log stands through the public API.
BEYOND_ANY_SEQUENCE = limits.SEQUENCE.maximum
# The receiver verifies the signature of the first delivery of each subscription and of every
# this-many-th after it: the check is what a receiver does, sampling keeps its CPU out of the run.
VERIFY_EVERY = 10


@dataclass
class Arrivals:
    """What one consumer received from `measure_from` on: when (wall clock), how late, which
    order (event_id → order_id is kept for events per order)."""

    # The last sequence before the measured run; 0 until the bench sets it (nothing timed).
    measure_from: int = 0
    at: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    per_order: Counter[str] = field(default_factory=Counter)

    def take(self, sequence: int, occurred_at: float, order_id: str, now: float) -> None:
        """Record one arrival, if it is in the measured part of the log."""
        if self.measure_from and sequence > self.measure_from:
            self.at.append(now)
            self.lags.append(now - occurred_at)
            self.per_order[order_id] += 1

    def between(self, began: float, ended: float) -> int:
        """How many arrived in [began, ended] (wall clock)."""
        return sum(1 for t in self.at if began <= t <= ended)


class StreamFollower:
    """One SubscribeEvents stream from sequence 1, as `role`, counting events and checking that
    each sequence follows the last. Resumes after the last sequence seen when the server ends
    the stream (its `events_stream_max_seconds`), as any long-lived reader does."""

    def __init__(self, settings: Settings, role: str) -> None:
        self._settings = settings
        self._role = role
        self.last_sequence = 0
        self.received = 0
        self.gaps: list[str] = []
        self.arrivals = Arrivals()

    async def run(self) -> None:
        """Follow the log until cancelled."""
        caller = bench_caller(self._settings, self._role)
        tls = TLSConfig.from_settings(self._settings)
        async with grpcutil.channel(self._settings.address_of("capture"), caller, tls=tls) as ch:
            stub = events_pb2_grpc.EventsServiceStub(ch)
            while True:
                request = events_pb2.SubscribeEventsRequest(from_sequence=self.last_sequence + 1)
                response: events_pb2.SubscribeEventsResponse
                async for response in stub.SubscribeEvents(request):
                    now = time.time()
                    for event in response.events:
                        self._take(event, now)

    def _take(self, event: events_pb2.Event, now: float) -> None:
        if event.sequence != self.last_sequence + 1:
            self.gaps.append(f"{self.last_sequence} then {event.sequence}")
        self.last_sequence = event.sequence
        self.received += 1
        occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
        self.arrivals.take(event.sequence, occurred, event.order_id, now)


@dataclass
class Hook:
    """One webhook subscription as the receiver sees it."""

    subscription_id: str
    secret: str
    from_sequence: int
    sequences: set[int] = field(default_factory=set)
    delivery_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    verified: int = 0
    bad_signatures: int = 0
    arrivals: Arrivals = field(default_factory=Arrivals)

    def missing(self, upto: int) -> int:
        """Events from this subscription's first sequence through `upto` not received."""
        return sum(1 for s in range(self.from_sequence, upto + 1) if s not in self.sequences)


class WebhookReceiver:
    """A local HTTP endpoint per subscription (`/hooks/<n>`) answering 200 and recording each
    delivery (once per webhook-id: deliveries are at least once)."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/hooks/{n}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, n: int) -> str:
        """Where subscription number `n` delivers."""
        return f"{self.base_url}/hooks/{n}"

    async def _receive(self, request: web.Request) -> web.Response:
        now = time.time()
        hook = self.hooks[int(request.match_info["n"])]
        body = await request.read()
        delivery_id = request.headers.get("webhook-id", "")
        if len(hook.delivery_ids) % VERIFY_EVERY == 0:
            try:
                Webhook(hook.secret).verify(body, dict(request.headers))
            except WebhookVerificationError:
                hook.bad_signatures += 1
                return web.Response(status=401)
            hook.verified += 1
        if delivery_id in hook.delivery_ids:
            hook.duplicates += 1
            return web.Response()
        hook.delivery_ids.add(delivery_id)
        event = json.loads(body)
        # proto3 JSON: int64 as a string, timestamps as RFC 3339 in UTC ("…Z").
        sequence = int(event["sequence"])
        hook.sequences.add(sequence)
        occurred = datetime.fromisoformat(event["occurred_at"]).timestamp()
        hook.arrivals.take(sequence, occurred, event.get("order_id", ""), now)
        return web.Response()


async def log_head(settings: Settings) -> int:
    """The log's head (the highest sequence), read as an agent would."""
    caller = bench_caller(settings, auth.AGENT)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("capture"), caller, tls=tls) as channel:
        request = events_pb2.SubscribeEventsRequest(
            from_sequence=BEYOND_ANY_SEQUENCE, stop_at_head=True
        )
        head = 0
        response: events_pb2.SubscribeEventsResponse
        async for response in events_pb2_grpc.EventsServiceStub(channel).SubscribeEvents(
            request, timeout=30
        ):
            head = response.head_sequence
        return head


async def settled_head(settings: Settings, quiet_seconds: float) -> int:
    """The log's head once it has not moved for `quiet_seconds` (events of finished orders
    are sequenced a moment after their commit)."""
    head = await log_head(settings)
    while True:
        await asyncio.sleep(quiet_seconds)
        now = await log_head(settings)
        if now == head:
            return head
        head = now


async def add_webhooks(settings: Settings, receiver: WebhookReceiver, count: int) -> None:
    """`count` subscriptions to every event type, delivering to `receiver`, made as an admin."""
    caller = bench_caller(settings, auth.ADMIN)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("capture"), caller, tls=tls) as channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)
        for n in range(count):
            made = await stub.CreateWebhookSubscription(
                events_pb2.CreateWebhookSubscriptionRequest(
                    url=receiver.url(n), description=f"oms bench events #{n}"
                ),
                timeout=30,
            )
            subscription = made.subscription
            receiver.hooks.append(
                Hook(subscription.subscription_id, made.secret, subscription.from_sequence)
            )


async def remove_webhooks(settings: Settings, receiver: WebhookReceiver) -> None:
    """Delete the receiver's subscriptions, so the next run has no consumers."""
    caller = bench_caller(settings, auth.ADMIN)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("capture"), caller, tls=tls) as channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)
        for hook in receiver.hooks:
            await stub.DeleteWebhookSubscription(
                events_pb2.DeleteWebhookSubscriptionRequest(subscription_id=hook.subscription_id),
                timeout=30,
            )
