"""Shopper notifications and the shopper's own view of an order, on real Postgres, real gRPC and
a real SMTP server (the dev stack's aiosmtpd sink on localhost): what lands in the shopper's
mailbox for an order's events, in their language; nothing more when the events are seen
again; nothing for a shopper who opted out; retries while the mail server is away, FAILED when
it stays away. GetOrderForShopper answers the shopper's own order and nobody else's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2, events_pb2_grpc

from oms_platform import auth
from oms_platform.outbox import event_id
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.mail_sink import MailSink
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from oms_tools.registry import start_service
from services.capture.store import events as log
from tests.callers import channel_as
from tests.integration.helpers import log_changes
from tests.integration.test_capture_service import (
    isolated_settings,
    order_request,
    own_database,
    unique,
)

pb = capture_pb2
T = TypeVar("T")
# A message that cannot be sent is given up after this long.
RETRY_PERIOD = 4.0


@pytest.fixture(scope="module")
async def sink(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MailSink]:
    mail = MailSink(Path(tmp_path_factory.mktemp("mail")), port=free_port()).start()
    yield mail
    mail.stop()


@pytest.fixture(scope="module")
async def settings(postgres: EmbeddedPostgres, sink: MailSink) -> Settings:
    return isolated_settings(
        await own_database(postgres, "oms_notifications_it"),
        smtp_port=sink.port,
        smtp_timeout_seconds=2.0,
        notify_poll_seconds=0.1,
        notify_retry_first_seconds=0.2,
        notify_retry_max_seconds=0.4,
        notify_retry_period_seconds=RETRY_PERIOD,
        notify_lease_seconds=10.0,
    )


@pytest.fixture(scope="module")
async def service(settings: Settings) -> AsyncIterator[RunningService]:
    running = await start_service("capture", settings, port=0)
    yield running
    await running.stop(0.5)


@pytest.fixture(scope="module")
async def storefront(
    settings: Settings, service: RunningService
) -> AsyncIterator[grpc.aio.Channel]:
    """The web storefront: submits orders, sets its shoppers' preferences, reads their view."""
    async with channel_as(
        settings, f"127.0.0.1:{service.port}", auth.STOREFRONT, channels=["web"]
    ) as channel:
        yield channel


@pytest.fixture(scope="module")
async def agent(settings: Settings, service: RunningService) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_as(settings, f"127.0.0.1:{service.port}", auth.AGENT) as channel:
        yield channel


@pytest.fixture(scope="module")
async def sql(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.dsn, server_settings={"search_path": "capture"})
    yield conn
    await conn.close()


async def eventually(check: Callable[[], Awaitable[T | None]], seconds: float = 15.0) -> T:
    """Poll `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds}s (last: {value!r})")
        await asyncio.sleep(0.05)


async def submit(channel: grpc.aio.Channel, email: str) -> pb.Order:
    stub = capture_pb2_grpc.CaptureServiceStub(channel)
    return (await stub.SubmitOrder(order_request(email=email))).order


def an_event(order: pb.Order, kind: str, n: int, **payload: Any) -> events_pb2.Event:
    event = events_pb2.Event(
        event_id=event_id(f"test:{order.order_id}:{kind}:{n}"),
        type=kind,
        order_id=order.order_id,
        channel="web",
        actor="test",
    )
    event.occurred_at.FromDatetime(datetime.now(UTC))
    for field, value in payload.items():
        getattr(event, field).CopyFrom(value)
    return event


def shipment(carrier: str, tracking: str) -> events_pb2.ShipmentChanged:
    return events_pb2.ShipmentChanged(
        shipment_id=unique("shp"), carrier=carrier, tracking_number=tracking
    )


async def record(sql: asyncpg.Connection, events: list[events_pb2.Event]) -> None:
    """Write events as one change would, and sequence them (the service's sequencer may too).
    An order.captured capture already wrote for the order is not written twice."""
    wanted = []
    for event in events:
        if event.type == "order.captured" and await sql.fetchval(
            "SELECT 1 FROM order_events WHERE order_id = $1 AND type = 'order.captured'",
            event.order_id,
        ):
            continue
        wanted.append(event)
    await log_changes(sql, wanted)


def to(sink: MailSink, address: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if m["To"] == address]


def body(message: EmailMessage, kind: str = "plain") -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None
    # SMTP carries CRLF line ends; compare as text.
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


async def notifications_of(agent: grpc.aio.Channel, order_id: str) -> list[events_pb2.Notification]:
    stub = events_pb2_grpc.EventsServiceStub(agent)
    answer = await stub.ListNotifications(events_pb2.ListNotificationsRequest(order_id=order_id))
    return list(answer.notifications)


async def test_an_orders_events_mail_its_shopper_once_each_in_their_language(
    storefront: grpc.aio.Channel, agent: grpc.aio.Channel, sql: asyncpg.Connection, sink: MailSink
) -> None:
    ada, bert = f"{unique('ada')}@example.com", f"{unique('bert')}@example.com"
    order_a, order_b = await submit(storefront, ada), await submit(storefront, bert)
    events = events_pb2_grpc.EventsServiceStub(storefront)
    chosen = await events.SetNotificationPreference(
        events_pb2.SetNotificationPreferenceRequest(
            shopper_id=order_b.shopper.shopper_id, locale="de-DE"
        )
    )
    assert (chosen.opted_out, chosen.locale) == (False, "de-DE")
    for order, tracking in ((order_a, "1ZA"), (order_b, "1ZB")):
        await record(
            sql,
            [
                an_event(order, "order.captured", 1),
                an_event(order, "payment.authorized", 2),
                an_event(order, "shipment.shipped", 3, shipment_changed=shipment("A&B", tracking)),
                an_event(
                    order, "shipment.delivered", 4, shipment_changed=shipment("A&B", tracking)
                ),
            ],
        )
    await record(
        sql,
        [
            an_event(
                order_a,
                "refund.issued",
                5,
                refund_issued=events_pb2.RefundIssued(
                    amount=common_pb2.Money(amount_minor=1205, currency="USD")
                ),
            )
        ],
    )

    mails_a = await eventually(lambda: _at_least(to(sink, ada), 4))
    ref = order_a.channel_order_ref
    assert [m["Subject"] for m in mails_a] == [
        f"Your order {ref} is confirmed",
        f"Your order {ref} has shipped",
        f"Your order {ref} has been delivered",
        f"A refund of 12.05 USD for your order {ref}",
    ]
    confirmed, shipped, delivered, refunded = mails_a
    assert "Hello Ada Lovelace," in body(confirmed)
    assert "is on its way with A&B.\nTracking number: 1ZA" in body(shipped)
    assert "with A&amp;B." in body(shipped, "html")  # HTML is escaped, text is not
    assert "tracked as 1ZA has been delivered" in body(delivered)
    assert "we have refunded 12.05 USD" in body(refunded)

    mails_b = await eventually(lambda: _at_least(to(sink, bert), 3))
    ref_b = order_b.channel_order_ref
    assert [m["Subject"] for m in mails_b] == [
        f"Ihre Bestellung {ref_b} ist bestätigt",
        f"Ihre Bestellung {ref_b} wurde versandt",
        f"Ihre Bestellung {ref_b} wurde zugestellt",
    ]
    assert "Sendungsnummer: 1ZB" in body(mails_b[1])

    recorded = await eventually(lambda: _all_settled(agent, order_a.order_id, 4))
    assert [(n.template, n.state, n.locale, n.subject) for n in recorded] == [
        ("order_confirmed", events_pb2.NOTIFICATION_STATE_SENT, "en", mails_a[0]["Subject"]),
        ("order_shipped", events_pb2.NOTIFICATION_STATE_SENT, "en", mails_a[1]["Subject"]),
        ("order_delivered", events_pb2.NOTIFICATION_STATE_SENT, "en", mails_a[2]["Subject"]),
        ("refund_issued", events_pb2.NOTIFICATION_STATE_SENT, "en", mails_a[3]["Subject"]),
    ]
    assert all(n.sent_at.seconds and n.attempts == 1 for n in recorded)

    # The whole log seen again from the start: the notifier catches up and mails nothing more.
    head = await log.head(sql)
    await sql.execute("UPDATE event_cursors SET seq = 0 WHERE consumer = 'notifications'")
    await eventually(
        lambda: sql.fetchval(
            "SELECT seq >= $1 FROM event_cursors WHERE consumer = 'notifications'", head
        )
    )
    await asyncio.sleep(0.5)  # a sender pass or more
    assert len(to(sink, ada)) == 4 and len(to(sink, bert)) == 3
    assert len(await notifications_of(agent, order_a.order_id)) == 4


async def _at_least(mails: list[EmailMessage], n: int) -> list[EmailMessage] | None:
    return mails if len(mails) >= n else None


async def _all_settled(
    agent: grpc.aio.Channel, order_id: str, n: int
) -> list[events_pb2.Notification] | None:
    found = await notifications_of(agent, order_id)
    settled = [n for n in found if n.state != events_pb2.NOTIFICATION_STATE_PENDING]
    return found if len(found) == n and len(settled) == n else None


async def test_a_shopper_who_opted_out_is_skipped_and_gets_no_mail(
    storefront: grpc.aio.Channel, agent: grpc.aio.Channel, sql: asyncpg.Connection, sink: MailSink
) -> None:
    email = f"{unique('quiet')}@example.com"
    order = await submit(storefront, email)
    events = events_pb2_grpc.EventsServiceStub(storefront)
    await events.SetNotificationPreference(
        events_pb2.SetNotificationPreferenceRequest(
            shopper_id=order.shopper.shopper_id, opted_out=True
        )
    )
    await record(sql, [an_event(order, "order.captured", 1)])
    [skipped] = await eventually(lambda: _all_settled(agent, order.order_id, 1))
    assert skipped.state == events_pb2.NOTIFICATION_STATE_SKIPPED
    assert skipped.error == "the shopper opted out" and not skipped.subject
    await asyncio.sleep(0.3)
    assert to(sink, email) == []

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await events.SetNotificationPreference(
            events_pb2.SetNotificationPreferenceRequest(shopper_id="no-such-shopper")
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_mail_waits_out_a_mail_server_that_is_away_for_a_while(
    storefront: grpc.aio.Channel, agent: grpc.aio.Channel, sql: asyncpg.Connection, sink: MailSink
) -> None:
    email = f"{unique('patient')}@example.com"
    order = await submit(storefront, email)
    sink.stop()
    try:
        await record(sql, [an_event(order, "order.captured", 1)])

        async def failed_once() -> bool:
            found = await notifications_of(agent, order.order_id)
            return bool(found) and found[0].attempts >= 1

        await eventually(failed_once)
        [waiting] = await notifications_of(agent, order.order_id)
        assert waiting.state == events_pb2.NOTIFICATION_STATE_PENDING and waiting.error
    finally:
        sink.start()
    [sent] = await eventually(lambda: _all_settled(agent, order.order_id, 1))
    assert sent.state == events_pb2.NOTIFICATION_STATE_SENT and sent.attempts >= 2
    assert [m["Subject"] for m in to(sink, email)] == [
        f"Your order {order.channel_order_ref} is confirmed"
    ]


async def test_mail_that_cannot_be_sent_for_the_whole_retry_period_is_failed(
    storefront: grpc.aio.Channel, agent: grpc.aio.Channel, sql: asyncpg.Connection, sink: MailSink
) -> None:
    email = f"{unique('unlucky')}@example.com"
    order = await submit(storefront, email)
    sink.stop()
    try:
        await record(sql, [an_event(order, "order.captured", 1)])
        [failed] = await eventually(
            lambda: _all_settled(agent, order.order_id, 1), seconds=RETRY_PERIOD + 10
        )
    finally:
        sink.start()
    assert failed.state == events_pb2.NOTIFICATION_STATE_FAILED
    assert failed.attempts >= 3 and failed.error
    await asyncio.sleep(0.5)
    assert to(sink, email) == []


# ---- GetOrderForShopper ---------------------------------------------------------------------


async def test_a_shopper_reads_their_own_order_without_internal_ids(
    settings: Settings, service: RunningService, storefront: grpc.aio.Channel
) -> None:
    email = f"{unique('reader')}@example.com"
    stub = capture_pb2_grpc.CaptureServiceStub(storefront)
    submitted = (
        await stub.SubmitOrder(order_request(email=email, channel_customer_id=unique("cust")))
    ).order
    by_email = await stub.GetOrderForShopper(
        pb.GetOrderForShopperRequest(order_id=submitted.order_id, email=email.upper())
    )
    view = by_email.order
    assert (view.order_id, view.channel_order_ref) == (
        submitted.order_id,
        submitted.channel_order_ref,
    )
    assert view.status == pb.ORDER_STATUS_PENDING
    assert [(line.sku, line.quantities.ordered) for line in view.lines] == [
        ("MUG-1", 2),
        ("TEA-1", 1),
    ]
    assert view.totals.grand_total.amount_minor == 2859
    # Fulfillment, payments and servicing are not running here: their sections are missing.
    assert set(by_email.missing_sections) == {"shipments", "refunds", "returns"}
    wire = by_email.SerializeToString()
    for internal in (
        submitted.shopper.shopper_id,
        submitted.delivery_groups[0].delivery_group_id,
        "tok_visa",
        email,
    ):
        assert internal.encode() not in wire

    by_account = await stub.GetOrderForShopper(
        pb.GetOrderForShopperRequest(
            order_id=submitted.order_id,
            channel_customer_id=submitted.shopper.channel_customer_id,
        )
    )
    assert by_account.order == view


async def test_another_shoppers_order_is_not_found_like_a_missing_one_and_other_channels_refused(
    settings: Settings, service: RunningService, storefront: grpc.aio.Channel
) -> None:
    stub = capture_pb2_grpc.CaptureServiceStub(storefront)
    theirs = await submit(storefront, f"{unique('owner')}@example.com")
    me = f"{unique('prober')}@example.com"
    await submit(storefront, me)

    async def refusal(request: pb.GetOrderForShopperRequest) -> tuple[Any, str]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetOrderForShopper(request)
        details = (refused.value.details() or "").replace(request.order_id, "<id>")
        return refused.value.code(), details

    someone_elses = await refusal(pb.GetOrderForShopperRequest(order_id=theirs.order_id, email=me))
    missing = await refusal(pb.GetOrderForShopperRequest(order_id=unique("ord"), email=me))
    assert someone_elses == missing
    assert someone_elses[0] == grpc.StatusCode.NOT_FOUND
    no_shopper = await refusal(pb.GetOrderForShopperRequest(order_id=theirs.order_id))
    assert no_shopper[0] == grpc.StatusCode.INVALID_ARGUMENT

    owner = theirs.shopper.email
    async with channel_as(
        settings, f"127.0.0.1:{service.port}", auth.STOREFRONT, channels=["marketplace"]
    ) as other:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await capture_pb2_grpc.CaptureServiceStub(other).GetOrderForShopper(
                pb.GetOrderForShopperRequest(order_id=theirs.order_id, email=owner)
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
