"""Shopper notifications (README "Shopper notifications"): the event log's consumer that turns
an order's events into messages for its shopper, and the sender that mails them.

Two loops, each safe on any number of capture replicas:
- the consumer takes the next events after its cursor ("notifications") and, in ONE
  transaction with moving the cursor, records a notification per event that warrants one:
  pending, or skipped (opted out, no address) — one per (event, template), so an event seen
  again never makes a second;
- the sender takes due pending notifications (SKIP LOCKED, held for a lease), renders and
  sends each outside any transaction, and records it sent, or retries it with back-off until
  the retry period is over, then failed.
Nothing here is on an order's path: the lifecycle never waits for a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jinja2
import structlog
from oms.events.v1 import events_pb2

from oms_platform import auth, metrics
from oms_platform.db import DB_AWAY
from oms_platform.errors import FieldViolation, InvalidArgument, NotFound, check_required
from oms_platform.listen import Listener, subscribed
from oms_platform.money import format_minor
from oms_platform.passes import Pacing, run_passes
from oms_platform.settings import Settings
from services.capture import store as capture_store
from services.capture.domain.notifications import (
    PICKUP_CARRIER,
    gives_up,
    skip_reason,
)
from services.capture.domain.notifications import (
    TEMPLATE_OF as TEMPLATE_OF,
)
from services.capture.domain.notifications import (
    retry_delay as retry_delay,
)
from services.capture.events import notifications_store as store
from services.capture.events.notifications_mail import Message, Notifier, SendFailed
from services.capture.events.notifications_templates import Templates
from services.capture.store import events as log_store

log = structlog.get_logger("oms.notifications")

CONSUMER = "notifications"

STATE_TO_PB = {
    store.PENDING: events_pb2.NOTIFICATION_STATE_PENDING,
    store.SENT: events_pb2.NOTIFICATION_STATE_SENT,
    store.SKIPPED: events_pb2.NOTIFICATION_STATE_SKIPPED,
    store.FAILED: events_pb2.NOTIFICATION_STATE_FAILED,
}

# Postgres or the network being away is waited out; anything else is a bug and is raised
# (the service supervises the task and restarts it).


def params_of(event: events_pb2.Event) -> dict[str, Any] | None:
    """What the message about `event` says beyond the shopper and the order's reference; None
    when the event makes no message."""
    kind = event.WhichOneof("payload")
    if event.type == "order.captured":
        return {}
    if event.type in ("shipment.shipped", "shipment.delivered") and kind == "shipment_changed":
        shipment = event.shipment_changed
        if event.type == "shipment.shipped" and shipment.carrier == PICKUP_CARRIER:
            return None
        return {"carrier": shipment.carrier, "tracking_number": shipment.tracking_number}
    if event.type == "fulfillment.ready_for_pickup" and kind == "fulfillment_order_changed":
        ready = event.fulfillment_order_changed
        return {"store": ready.location_id, "note": ready.reason}
    if event.type == "refund.issued" and kind == "refund_issued":
        amount = event.refund_issued.amount
        return {"amount": format_minor(amount.amount_minor, amount.currency)}
    if event.type == "return.received" and kind == "return_order_changed":
        return {"units": sum(line.quantity for line in event.return_order_changed.lines)}
    return None


@dataclass(frozen=True)
class NotifySettings:
    """The notifier's knobs (settings `notify_*`)."""

    default_locale: str = "en"
    batch_size: int = 100
    poll_seconds: float = 2.0
    lease_seconds: float = 60.0
    retry_first_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    retry_period_seconds: float = 86400.0
    pass_interval_seconds: float = 0.0

    @staticmethod
    def from_settings(s: Settings) -> NotifySettings:
        """From the process's settings."""
        return NotifySettings(
            default_locale=s.notify_default_locale,
            batch_size=s.notify_batch_size,
            poll_seconds=s.notify_poll_seconds,
            lease_seconds=s.notify_lease_seconds,
            retry_first_seconds=s.notify_retry_first_seconds,
            retry_max_seconds=s.notify_retry_max_seconds,
            retry_period_seconds=s.notify_retry_period_seconds,
            pass_interval_seconds=s.events_pass_interval_seconds,
        )


class Notifications:
    """The consumer of the log and the sender of messages, for one capture process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        notifier: Notifier,
        settings: NotifySettings,
        listener: Listener | None = None,
    ) -> None:
        self._pool = pool
        # The process's LISTEN connection: the sequencer's NOTIFY (any replica's) wakes the
        # consumer; without one it polls.
        self._listener = listener
        self._notifier = notifier
        self._settings = settings
        self._templates = Templates(settings.default_locale)
        self._events = asyncio.Event()  # the log moved on
        self._due = asyncio.Event()  # this process recorded pending notifications

    # --- the consumer: events → notification rows ---

    async def take_events(self) -> int:
        """One pass: record the notifications of the next events after the cursor, and move
        it, in one transaction. The events' shoppers are read in one statement and their
        notifications written in one. Returns how many sequences it moved past."""
        async with self._pool.acquire() as conn, conn.transaction():
            batch = await log_store.next_batch(
                conn, CONSUMER, log_store.LogFilter(types=list(TEMPLATE_OF)),
                self._settings.batch_size,
            )  # fmt: skip
            messaging = [
                (event, template, params)
                for event in batch.events
                if (template := TEMPLATE_OF.get(event.type)) is not None
                and (params := params_of(event)) is not None
            ]
            order_ids = {event.order_id for event, _, _ in messaging}
            recipients = await store.recipients_of_orders(conn, order_ids) if order_ids else {}
            notifications = [
                notification
                for event, template, params in messaging
                if (notification := self._notification(event, template, params, recipients))
            ]
            recorded = await store.add(conn, notifications)
            await log_store.move_cursor(conn, CONSUMER, batch.upto)
        for one in notifications:  # counted once committed
            if (one.event_id, one.template) not in recorded:
                continue
            if one.state == store.SKIPPED:
                metrics.NOTIFICATIONS.labels(one.template, "skipped").inc()
            else:
                self._due.set()
        return batch.upto - batch.after

    def _notification(
        self,
        event: events_pb2.Event,
        template: str,
        params: dict[str, Any],
        recipients: dict[str, store.Recipient],
    ) -> store.NewNotification | None:
        recipient = recipients.get(event.order_id)
        if recipient is None:
            log.warning("notification for an unknown order", order_id=event.order_id)
            return None
        why = skip_reason(recipient.opted_out, recipient.email)
        return store.NewNotification(
            order_id=event.order_id,
            shopper_id=recipient.shopper_id,
            event_id=event.event_id,
            event_sequence=event.sequence,
            template=template,
            locale=self._templates.locale_for(recipient.locale, template),
            state=store.SKIPPED if why else store.PENDING,
            params={**params, "order_ref": recipient.order_ref},
            error=why,
        )

    async def run_consumer(self) -> None:
        """Take events for ever: woken when the log moves on, else every poll interval."""
        with subscribed(
            self._listener, log_store.EVENTS_SEQUENCED_CHANNEL, lambda _: self._events.set()
        ):
            await self._loop("notifications consumer", self.take_events, self._events)

    # --- the sender: pending rows → mail ---

    async def send_due(self) -> int:
        """One pass: take due notifications and send each; returns how many were taken. A
        pass that finds nothing due lets go of the notifier's connection."""
        async with self._pool.acquire() as conn:
            due = await store.claim_due(
                conn, self._settings.batch_size, self._settings.lease_seconds
            )
            contacts = await store.contacts(conn, [one.shopper_id for one in due]) if due else {}
        if not due:
            await self._notifier.release()
        for one in due:
            await self._send(one, contacts.get(one.shopper_id, store.NO_CONTACT))
        return len(due)

    async def _send(self, due: store.Due, contact: store.Contact) -> None:
        why = skip_reason(contact.opted_out, contact.email)
        if why:
            async with self._pool.acquire() as conn:
                await store.mark_skipped(conn, due.notification_id, why)
            metrics.NOTIFICATIONS.labels(due.template, "skipped").inc()
            return
        try:
            rendered = self._templates.render(
                due.template, due.locale, {**due.params, "name": contact.name}
            )
        except jinja2.TemplateError as error:
            # A template that cannot render will not render on a retry either.
            log.error("notification template failed", template=due.template, exc_info=error)
            await self._failed(due, f"template: {error}"[:500], retryable=False)
            return
        message = Message(
            to=contact.email,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            # The same id on every attempt: a mail system that got a message twice (a lease
            # that ran out mid-send) can tell.
            headers={"Message-ID": f"<{due.notification_id}@oms.notifications>"},
        )
        try:
            await self._notifier.send(message)
        except SendFailed as error:
            await self._failed(due, str(error))
            return
        async with self._pool.acquire() as conn:
            await store.mark_sent(conn, due.notification_id, rendered.subject, rendered.locale)
        metrics.NOTIFICATIONS.labels(due.template, "sent").inc()
        log.info("notification sent", notification_id=due.notification_id, template=due.template)

    async def _failed(self, due: store.Due, error: str, retryable: bool = True) -> None:
        s = self._settings
        attempts = due.attempts + 1
        delay = retry_delay(attempts, s.retry_first_seconds, s.retry_max_seconds)
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            if not retryable or gives_up(now, due.created_at, delay, s.retry_period_seconds):
                await store.mark_failed(conn, due.notification_id, error)
                metrics.NOTIFICATIONS.labels(due.template, "failed").inc()
                log.warning("notification failed", notification_id=due.notification_id, error=error)
                return
            await store.retry_later(conn, due.notification_id, error, delay)
        metrics.NOTIFICATIONS.labels(due.template, "failed_attempt").inc()
        log.info(
            "notification retried later",
            notification_id=due.notification_id,
            error=error,
            retry_in=delay,
        )

    async def run_sender(self) -> None:
        """Send for ever: woken when this process recorded notifications, else every poll
        interval (what other replicas recorded, retries falling due)."""
        await self._loop("notifications sender", self.send_due, self._due)

    # --- shared ---

    async def _loop(
        self, name: str, one_pass: Callable[[], Awaitable[int]], wake: asyncio.Event
    ) -> None:
        s = self._settings
        pacing = Pacing(s.poll_seconds, min_interval_seconds=s.pass_interval_seconds)

        async def more() -> bool:  # a full batch: there may be more
            return await one_pass() >= s.batch_size

        await run_passes(name, more, wake, pacing, DB_AWAY)


# --- RPCs (EventsService) ---


async def set_preference(
    pool: asyncpg.Pool, request: events_pb2.SetNotificationPreferenceRequest
) -> events_pb2.SetNotificationPreferenceResponse:
    """Turn a shopper's notifications off or on (and choose their language). NOT_FOUND for an
    unknown shopper, and for a storefront, for one who never ordered on its channels."""
    check_required({"shopper_id": request.shopper_id})
    locale = request.locale.strip()
    if locale and not _plain_locale(locale):
        raise InvalidArgument(
            [FieldViolation("locale", 'must be a language tag such as "de" or "de-AT"')]
        )
    principal = auth.current_principal()
    channels = None if principal.sees_every_channel() else sorted(principal.channels)
    async with pool.acquire() as conn, conn.transaction():
        if not await store.shopper_exists(conn, request.shopper_id, channels):
            raise NotFound(f"shopper {request.shopper_id[:64]!r} not found")
        opted_out, recorded = await store.set_preference(
            conn, request.shopper_id, request.opted_out, locale
        )
    return events_pb2.SetNotificationPreferenceResponse(
        shopper_id=request.shopper_id, opted_out=opted_out, locale=recorded
    )


async def list_notifications(
    pool: asyncpg.Pool, request: events_pb2.ListNotificationsRequest
) -> events_pb2.ListNotificationsResponse:
    """What was sent, skipped or failed to the shopper of an order, oldest first."""
    check_required({"order_id": request.order_id})
    async with pool.acquire() as conn:
        channel = await capture_store.channel_of(conn, request.order_id)
        auth.require_channel(channel, f"order {request.order_id}")
        records = await store.list_for_order(conn, request.order_id)
    return events_pb2.ListNotificationsResponse(notifications=[_to_pb(r) for r in records])


def _to_pb(r: store.Record) -> events_pb2.Notification:
    out = events_pb2.Notification(
        notification_id=r.notification_id,
        order_id=r.order_id,
        event_id=r.event_id,
        template=r.template,
        locale=r.locale,
        medium=r.medium,
        state=STATE_TO_PB[r.state],
        subject=r.subject,
        attempts=r.attempts,
        error=r.error,
    )
    out.created_at.FromDatetime(r.created_at)
    if r.sent_at is not None:
        out.sent_at.FromDatetime(r.sent_at)
    return out


def _plain_locale(tag: str) -> bool:
    parts = tag.replace("_", "-").split("-")
    return (
        len(tag) <= 35
        and 2 <= len(parts[0]) <= 8
        and parts[0].isalpha()
        and all(p.isalnum() and 1 <= len(p) <= 8 and p.isascii() for p in parts)
    )
