"""Webhooks end to end inside capture: real Postgres, real gRPC (as an admin), a real HTTP
receiver (aiohttp on localhost) that verifies every signature with `standardwebhooks`.

Events are written to the log the way capture's changes write them (`append_events`) and
numbered with the sequencer's own pass (`sequence_pending`); the fan-out and the sender are
capture's background tasks."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
from aiohttp import web
from oms.events.v1 import events_pb2 as pb
from oms.events.v1 import events_pb2_grpc
from standardwebhooks import Webhook

from oms_platform import auth, db
from oms_platform.grpcutil import field_violations
from oms_platform.outbox import event_id
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from services.capture import bootstrap
from tests.callers import channel_as, oms_cli
from tests.integration.helpers import log_changes
from tests.integration.test_capture_service import isolated_settings, own_database

ORDERS = [f"ord-hook-{i}" for i in range(5)]
TYPES = ["order.captured", "payment.authorized", "fulfillment.allocated", "shipment.shipped",
         "shipment.delivered", "refund.issued"]  # fmt: skip


@dataclass
class Received:
    """One request the receiver answered 2xx, its signature verified."""

    webhook_id: str
    event: dict[str, Any]


@dataclass
class Receiver:
    """An HTTP endpoint per path, each verifying with its subscription's secret."""

    secrets: dict[str, str] = field(default_factory=dict)
    accepted: dict[str, list[Received]] = field(default_factory=dict)
    # path -> (request number) -> "ok" | "fail" | "slow"
    behaviour: dict[str, Callable[[int], str]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0
    slow_seconds: float = 1.0
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        n = self.requests.get(path, 0)
        self.requests[path] = n + 1
        try:
            event = Webhook(self.secrets[path]).verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400)
        assert request.headers["Content-Type"] == "application/json"
        mode = self.behaviour.get(path, lambda _: "ok")(n)
        if mode == "fail":
            return web.Response(status=500, text="receiver says no")
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        self.accepted.setdefault(path, []).append(Received(request.headers["webhook-id"], event))
        return web.Response(status=204)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def event_ids(self, path: str) -> set[str]:
        return {r.event["event_id"] for r in self.accepted.get(path, [])}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/{path}", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hooks.base = f"http://127.0.0.1:{port}"
    yield hooks
    await runner.cleanup()


@dataclass
class Capture:
    settings: Settings
    service: RunningService
    pool: asyncpg.Pool
    admin: events_pb2_grpc.EventsServiceStub
    storefront: events_pb2_grpc.EventsServiceStub
    written: int = 0

    async def write(self, *specs: tuple[str, str]) -> list[str]:
        """Write events (order id, type) as one change each, sequence them; their ids."""
        events = []
        for order_id, kind in specs:
            self.written += 1
            e = pb.Event(
                event_id=event_id(f"{os.getpid()}:{self.written}:{time.time_ns()}"),
                type=kind,
                order_id=order_id,
                channel="web",
                actor="workflow",
            )
            e.occurred_at.FromDatetime(datetime.now(UTC))
            e.shipment_changed.shipment_id = f"shp-{self.written}"
            events.append(e)
        async with self.pool.acquire() as conn:
            await log_changes(conn, *([e] for e in events))
        return [e.event_id for e in events]

    async def subscribe(
        self, receiver: Receiver, path: str, **fields: Any
    ) -> pb.WebhookSubscription:
        made = await self.admin.CreateWebhookSubscription(
            pb.CreateWebhookSubscriptionRequest(url=receiver.url(path), **fields), timeout=10
        )
        receiver.secrets[path] = made.secret
        return made.subscription

    async def deliveries(self, subscription_id: str, state: int = 0) -> list[pb.WebhookDelivery]:
        out: list[pb.WebhookDelivery] = []
        token = ""
        while True:
            page = await self.admin.ListWebhookDeliveries(
                pb.ListWebhookDeliveriesRequest(
                    subscription_id=subscription_id, state=state, page_size=7, page_token=token
                ),
                timeout=10,
            )
            out += page.deliveries
            token = page.next_page_token
            if not token:
                return out


async def start_capture(postgres: EmbeddedPostgres, name: str, **overrides: Any) -> Capture:
    dsn = await own_database(postgres, name)
    quick = {
        "webhook_timeout_seconds": 0.5,
        "webhook_retry_first_seconds": 0.05,
        "webhook_retry_max_seconds": 0.3,
        "webhook_poll_seconds": 0.2,
    }
    settings = isolated_settings(dsn, **{**quick, **overrides})
    service = await start_service("capture", settings, port=0)
    address = f"127.0.0.1:{service.port}"
    pool = await db.create_pool(dsn, bootstrap.SCHEMA, min_size=1, max_size=3)
    return Capture(
        settings,
        service,
        pool,
        events_pb2_grpc.EventsServiceStub(channel_as(settings, address, auth.ADMIN)),
        events_pb2_grpc.EventsServiceStub(channel_as(settings, address, auth.STOREFRONT)),
    )


@pytest.fixture(scope="module")
async def capture(postgres: EmbeddedPostgres) -> AsyncIterator[Capture]:
    running = await start_capture(postgres, "oms_webhooks_it", webhook_retry_period_seconds=600)
    yield running
    await running.pool.close()
    await running.service.stop(0.5)


async def until(check: Callable[[], Any], seconds: float = 60, what: str = "") -> None:
    """Wait until `check()` (or its awaited result) is true."""
    deadline = time.monotonic() + seconds
    while True:
        done = check()
        if asyncio.iscoroutine(done):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.05)


async def test_a_flaky_slow_receiver_gets_every_event_of_its_types_verified_in_order_per_order(
    capture: Capture, receiver: Receiver
) -> None:
    pattern = random.Random(16)
    draws = [pattern.random() for _ in range(1000)]
    # About 30% refused with a 500, about 8% answered after the sender's timeout.
    receiver.behaviour["all"] = lambda n: (
        "fail" if draws[n] < 0.3 else "slow" if draws[n] > 0.92 else "ok"
    )
    receiver.slow_seconds = 0.8
    everything = await capture.subscribe(receiver, "all", description="everything")
    shipments = await capture.subscribe(receiver, "ships", types=["shipment.*"])
    rng = random.Random(7)
    specs = [(rng.choice(ORDERS), rng.choice(TYPES)) for _ in range(40)]
    ids = await capture.write(*specs)
    shipment_ids = {i for i, (_, kind) in zip(ids, specs, strict=True) if kind.startswith("ship")}

    await until(lambda: receiver.event_ids("all") >= set(ids), what="every event")
    await until(lambda: receiver.event_ids("ships") >= shipment_ids, what="every shipment")

    assert receiver.bad_signatures == 0
    assert receiver.event_ids("all") == set(ids)
    assert receiver.event_ids("ships") == shipment_ids
    assert {r.event["type"] for r in receiver.accepted["ships"]} <= {
        "shipment.shipped",
        "shipment.delivered",
    }
    # Receivers deduplicate on webhook-id: one id per event, the same on every attempt.
    for path in ("all", "ships"):
        by_id: dict[str, set[str]] = {}
        for r in receiver.accepted[path]:
            by_id.setdefault(r.webhook_id, set()).add(r.event["event_id"])
        assert all(len(v) == 1 for v in by_id.values())
        assert len(by_id) == len(receiver.event_ids(path))
    # Each order's events arrived in sequence order (first arrival of each).
    for order_id in ORDERS:
        seen: list[int] = []
        for r in receiver.accepted["all"]:
            seq = int(r.event["sequence"])
            if r.event["order_id"] == order_id and seq not in seen:
                seen.append(seq)
        assert seen == sorted(seen), order_id
    # The body is the Event in proto3 JSON with the proto's field names.
    sample = receiver.accepted["ships"][0].event
    assert {"event_id", "sequence", "type", "order_id", "occurred_at", "recorded_at"} <= set(sample)
    assert "shipment_changed" in sample
    # Retries happened and are listed as attempts; everything ends delivered.
    listed: list[pb.WebhookDelivery] = []

    async def all_delivered() -> bool:
        listed[:] = await capture.deliveries(everything.subscription_id)
        return all(d.state == pb.WEBHOOK_DELIVERY_STATE_DELIVERED for d in listed)

    await until(all_delivered, what="every delivery recorded as delivered")
    assert len(listed) == 40
    assert [d.sequence for d in listed] == sorted((d.sequence for d in listed), reverse=True)
    failed = [a for d in listed for a in d.attempts if a.http_status != 204]
    assert failed, "the pattern fails some requests"
    assert {a.http_status for a in failed} <= {0, 500}
    assert any("receiver says no" in a.error for a in failed)
    assert any("no answer within" in a.error for a in failed if a.http_status == 0)
    assert len(await capture.deliveries(shipments.subscription_id)) == len(shipment_ids)


async def test_a_paused_subscription_queues_and_sends_on_resume_and_a_deleted_one_gets_nothing(
    capture: Capture, receiver: Receiver
) -> None:
    await capture.write((ORDERS[0], "order.captured"))  # before it exists: never sent to it
    sub = await capture.subscribe(receiver, "paused")
    paused = await capture.admin.UpdateWebhookSubscription(
        pb.UpdateWebhookSubscriptionRequest(
            subscription_id=sub.subscription_id, state=pb.WEBHOOK_SUBSCRIPTION_STATE_PAUSED
        ),
        timeout=10,
    )
    ids = await capture.write(*((ORDERS[1], t) for t in TYPES[:3]))
    queued: list[pb.WebhookDelivery] = []

    async def queued_all() -> bool:
        queued[:] = await capture.deliveries(sub.subscription_id)
        return len(queued) == 3

    await until(queued_all, what="queued deliveries")
    await asyncio.sleep(0.5)
    assert paused.subscription.state == pb.WEBHOOK_SUBSCRIPTION_STATE_PAUSED
    assert all(d.state == pb.WEBHOOK_DELIVERY_STATE_PENDING for d in queued)
    assert receiver.requests.get("paused", 0) == 0

    await capture.admin.UpdateWebhookSubscription(
        pb.UpdateWebhookSubscriptionRequest(
            subscription_id=sub.subscription_id, state=pb.WEBHOOK_SUBSCRIPTION_STATE_ACTIVE
        ),
        timeout=10,
    )
    await until(lambda: len(receiver.accepted.get("paused", [])) == 3, what="resumed sends")
    assert [r.event["event_id"] for r in receiver.accepted["paused"]] == ids

    await capture.admin.DeleteWebhookSubscription(
        pb.DeleteWebhookSubscriptionRequest(subscription_id=sub.subscription_id), timeout=10
    )
    await capture.write((ORDERS[1], "order.closed"))
    await asyncio.sleep(1.0)
    listed = await capture.admin.ListWebhookSubscriptions(
        pb.ListWebhookSubscriptionsRequest(), timeout=10
    )
    history = await capture.deliveries(sub.subscription_id)
    assert len(receiver.accepted["paused"]) == 3
    assert sub.subscription_id not in {s.subscription_id for s in listed.subscriptions}
    assert [d.state for d in history] == [pb.WEBHOOK_DELIVERY_STATE_DELIVERED] * 3
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await capture.admin.DeleteWebhookSubscription(
            pb.DeleteWebhookSubscriptionRequest(subscription_id=sub.subscription_id), timeout=10
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_delivery_failing_for_the_whole_retry_period_is_dead_until_redelivered(
    postgres: EmbeddedPostgres, receiver: Receiver
) -> None:
    capture = await start_capture(postgres, "oms_webhooks_dead_it", webhook_retry_period_seconds=1)
    try:
        failing = {"on": True}
        receiver.behaviour["down"] = lambda _: "fail" if failing["on"] else "ok"
        sub = await capture.subscribe(receiver, "down", types=["shipment.shipped"])
        first, second = await capture.write(
            (ORDERS[2], "shipment.shipped"), (ORDERS[2], "shipment.shipped")
        )
        dead: list[pb.WebhookDelivery] = []

        async def both_dead() -> bool:
            dead[:] = await capture.deliveries(sub.subscription_id, pb.WEBHOOK_DELIVERY_STATE_DEAD)
            return len(dead) == 2

        # The first dead one does not hold back the second of the same order.
        await until(both_dead, what="dead deliveries")
        assert [d.event_id for d in dead] == [second, first]
        for d in dead:
            assert len(d.attempts) >= 2
            assert all(a.http_status == 500 and "receiver says no" in a.error for a in d.attempts)
            assert all(a.latency_ms >= 0 and a.at.seconds > 0 for a in d.attempts)
        assert not receiver.accepted.get("down")

        failing["on"] = False
        again = await capture.admin.RedeliverWebhook(
            pb.RedeliverWebhookRequest(subscription_id=sub.subscription_id), timeout=10
        )
        assert again.redelivered == 2
        await until(lambda: len(receiver.accepted.get("down", [])) == 2, what="redelivered")
        assert [r.event["event_id"] for r in receiver.accepted["down"]] == [first, second]
        assert {r.webhook_id for r in receiver.accepted["down"]} == {d.delivery_id for d in dead}

        # One delivered delivery sent again, by its id.
        one = await capture.admin.RedeliverWebhook(
            pb.RedeliverWebhookRequest(delivery_id=dead[0].delivery_id), timeout=10
        )
        assert one.redelivered == 1
        await until(lambda: len(receiver.accepted["down"]) == 3, what="one redelivered")
        delivered = await capture.deliveries(
            sub.subscription_id, pb.WEBHOOK_DELIVERY_STATE_DELIVERED
        )
        assert len(delivered) == 2
    finally:
        await capture.pool.close()
        await capture.service.stop(0.5)


async def test_two_capture_replicas_share_the_work_and_send_each_event_once(
    postgres: EmbeddedPostgres, receiver: Receiver
) -> None:
    # A sender's timeout long enough that no delivery is retried for taking long on a busy
    # machine (delivery is at least once): an event sent twice here was sent by both replicas.
    capture = await start_capture(
        postgres, "oms_webhooks_replicas", webhook_timeout_seconds=10,
        webhook_retry_period_seconds=600,
    )  # fmt: skip
    second = await start_service("capture", capture.settings, port=0)
    try:
        await capture.subscribe(receiver, "replicas")
        ids = await capture.write(*((ORDERS[i % 5], TYPES[i % 6]) for i in range(60)))
        await until(lambda: receiver.event_ids("replicas") == set(ids), what="every event")
        await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
        got = [r.event["event_id"] for r in receiver.accepted["replicas"]]
        assert sorted(got) == sorted(ids)  # a receiver that never fails gets each once
        for order_id in ORDERS:
            mine = [int(r.event["sequence"]) for r in receiver.accepted["replicas"]
                    if r.event["order_id"] == order_id]  # fmt: skip
            assert mine == sorted(mine)
    finally:
        await second.stop(0.5)
        await capture.pool.close()
        await capture.service.stop(0.5)


async def test_bad_subscriptions_are_refused_naming_the_field_and_only_admins_manage_them(
    capture: Capture,
) -> None:
    cases = {
        "ftp://example.com/hook": ("url", {}),
        "http://example.com/hook": ("url", {}),
        "https://user:pw@example.com/hook": ("url", {}),
        "https://example.com/a": ("types[1]", {"types": ["shipment.*", "shipment.lost"]}),
        "https://example.com/b": ("secret", {"secret": "whsec_c2hvcnQ="}),
        "https://example.com/c": ("secret", {"secret": "not-a-secret"}),
    }
    for url, (name, extra) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await capture.admin.CreateWebhookSubscription(
                pb.CreateWebhookSubscriptionRequest(url=url, **extra), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url
        assert name in {f for f, _ in field_violations(refused.value)}, url
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await capture.storefront.CreateWebhookSubscription(
            pb.CreateWebhookSubscriptionRequest(url="https://example.com/hook"), timeout=10
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as denied_list:
        await capture.storefront.ListWebhookSubscriptions(
            pb.ListWebhookSubscriptionsRequest(), timeout=10
        )
    assert denied_list.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Idempotent by key: the same subscription and secret again; a given secret is kept.
    secret = "whsec_" + "A" * 43 + "="
    request = pb.CreateWebhookSubscriptionRequest(
        url="https://example.com/keyed", secret=secret, idempotency_key="hook-key-1"
    )
    first = await capture.admin.CreateWebhookSubscription(request, timeout=10)
    again = await capture.admin.CreateWebhookSubscription(request, timeout=10)
    assert again == first and first.secret == secret
    listed = await capture.admin.ListWebhookSubscriptions(
        pb.ListWebhookSubscriptionsRequest(), timeout=10
    )
    keyed = [s for s in listed.subscriptions if s.url == "https://example.com/keyed"]
    assert len(keyed) == 1
    # Rotating gives a new secret, once; the secret is stored sealed, not in clear.
    rotated = await capture.admin.UpdateWebhookSubscription(
        pb.UpdateWebhookSubscriptionRequest(
            subscription_id=first.subscription.subscription_id, rotate_secret=True
        ),
        timeout=10,
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != secret
    async with capture.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT secret_sealed FROM webhook_subscriptions WHERE subscription_id = $1",
            first.subscription.subscription_id,
        )
    assert rotated.secret.encode() not in bytes(stored)


async def test_the_cli_adds_lists_and_shows_deliveries(
    capture: Capture, receiver: Receiver
) -> None:
    settings = replace(capture.settings, capture_address=f"127.0.0.1:{capture.service.port}")

    async def oms(*args: str) -> tuple[int, str, str]:
        return await oms_cli(settings, "webhook", *args)

    code, added, err = await oms(
        "add", receiver.url("cli"), "--type", "refund.*", "--description", "books", "--json"
    )
    assert (code, err) == (0, "")
    made = json.loads(added)
    subscription_id = made["subscription"]["subscription_id"]
    receiver.secrets["cli"] = made["secret"]
    [event_id] = await capture.write((ORDERS[3], "refund.issued"))
    await until(lambda: receiver.event_ids("cli") == {event_id}, what="the CLI's subscription")

    listed_code, listed, _ = await oms("list")
    shown_code, shown, _ = await oms("deliveries", subscription_id)
    json_code, as_json, _ = await oms("deliveries", subscription_id, "--json")
    assert json_code == 0
    refused_code, _, refused = await oms("add", "ftp://example.com/x")

    assert listed_code == 0
    assert f"{subscription_id}  {receiver.url('cli')}  [active]  refund.*" in listed
    assert shown_code == 0 and "refund.issued" in shown and "[delivered]" in shown
    assert "HTTP 204" in shown
    [delivery] = json.loads(as_json)["deliveries"]
    assert (delivery["event_id"], delivery["state"]) == (
        event_id,
        "WEBHOOK_DELIVERY_STATE_DELIVERED",
    )
    assert refused_code == 1 and "INVALID_ARGUMENT" in refused and "url:" in refused


async def test_fan_out_and_sender_carry_on_after_capture_loses_its_database_connections(
    capture: Capture, receiver: Receiver
) -> None:
    await capture.subscribe(receiver, "outage")
    async with capture.pool.acquire() as conn:
        # Every connection to the database but this one: capture's pool, its listeners.
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert killed >= 2
    await capture.pool.expire_connections()
    ids = await capture.write(*((ORDERS[4], t) for t in TYPES[:3]))
    await until(lambda: receiver.event_ids("outage") == set(ids), what="sent after the outage")
    assert [r.event["event_id"] for r in receiver.accepted["outage"]] == ids
