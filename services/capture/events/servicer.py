"""EventsService over gRPC: one servicer, each RPC handed to the part that owns it (the log's
streams, webhooks, notifications)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
from oms.events.v1 import events_pb2, events_pb2_grpc

from oms_platform import db, limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument, check_required
from services.capture.domain.reads import page_size
from services.capture.events import notifications, stream, webhooks, webhooks_store


class EventsServicer(events_pb2_grpc.EventsServiceServicer):
    """Follow the event log; manage webhooks; shopper notification preferences and records."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        log_hub: stream.LogHub | None = None,
        stream_limits: stream.StreamLimits | None = None,
        *,
        webhook_admin: webhooks.WebhookAdmin | None = None,
    ) -> None:
        self._pool = pool
        self._log_hub = log_hub
        self._stream_limits = stream_limits
        self._webhook_admin = webhook_admin

    # --- the log: SubscribeEvents ---

    async def SubscribeEvents(
        self, request: events_pb2.SubscribeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.SubscribeEventsResponse]:
        assert self._log_hub is not None, "SubscribeEvents needs the process's log hub"
        assert self._stream_limits is not None
        # Refusals (bad filters, another storefront's channel, too many streams) are raised as
        # domain errors; the gate maps them for streaming RPCs as for unary ones.
        subscription = stream.subscription_from_pb(request)
        async for response in stream.follow(
            self._pool, self._log_hub, subscription, self._stream_limits
        ):
            yield response

    # --- webhooks (services/capture/events/webhooks*.py) ---

    async def CreateWebhookSubscription(
        self,
        request: events_pb2.CreateWebhookSubscriptionRequest,
        context: grpc.aio.ServicerContext,
    ) -> events_pb2.CreateWebhookSubscriptionResponse:
        hooks = self._webhooks()

        async def create(conn: Any) -> tuple[webhooks_store.Subscription, str]:
            return await hooks.create(
                conn, request.url, list(request.types), request.secret, request.description
            )

        def answer(
            made: tuple[webhooks_store.Subscription, str],
        ) -> events_pb2.CreateWebhookSubscriptionResponse:
            # Kept as the key's answer without the secret: stored responses are not sealed.
            return events_pb2.CreateWebhookSubscriptionResponse(
                subscription=webhook_subscription_pb(made[0])
            )

        if not request.idempotency_key:
            async with self._pool.acquire() as conn, conn.transaction():
                made = await create(conn)
            return events_pb2.CreateWebhookSubscriptionResponse(
                subscription=webhook_subscription_pb(made[0]), secret=made[1]
            )
        outcome = await db.idempotent(
            self._pool,
            request.idempotency_key,
            request,
            events_pb2.CreateWebhookSubscriptionResponse,
            create,
            answer,
        )
        response, value = outcome  # value is None for a replay
        # A replay answers what the first call answered, the secret included (opened again).
        response.secret = (
            value[1]
            if value is not None
            else await hooks.secret_of(response.subscription.subscription_id)
        )
        return response

    async def ListWebhookSubscriptions(
        self, request: events_pb2.ListWebhookSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.ListWebhookSubscriptionsResponse:
        listed = await self._webhooks().list()
        return events_pb2.ListWebhookSubscriptionsResponse(
            subscriptions=[webhook_subscription_pb(s) for s in listed]
        )

    async def UpdateWebhookSubscription(
        self,
        request: events_pb2.UpdateWebhookSubscriptionRequest,
        context: grpc.aio.ServicerContext,
    ) -> events_pb2.UpdateWebhookSubscriptionResponse:
        check_required({"subscription_id": request.subscription_id})
        if request.all_types and request.types:
            raise InvalidArgument(
                [FieldViolation("all_types", "give either types or all_types, not both")]
            )
        if request.state and request.state not in _SUBSCRIPTION_STATES:
            raise InvalidArgument([FieldViolation("state", "is not a subscription state")])
        types: list[str] | None = list(request.types) or None
        change = webhooks.SubscriptionChange(
            url=request.url or None,
            types=[] if request.all_types else types,
            state=_SUBSCRIPTION_STATES.get(request.state),
            description=request.description or None,
            rotate_secret=request.rotate_secret,
        )
        updated, secret = await self._webhooks().update(request.subscription_id, change)
        return events_pb2.UpdateWebhookSubscriptionResponse(
            subscription=webhook_subscription_pb(updated), secret=secret
        )

    async def DeleteWebhookSubscription(
        self,
        request: events_pb2.DeleteWebhookSubscriptionRequest,
        context: grpc.aio.ServicerContext,
    ) -> events_pb2.DeleteWebhookSubscriptionResponse:
        check_required({"subscription_id": request.subscription_id})
        await self._webhooks().delete(request.subscription_id)
        return events_pb2.DeleteWebhookSubscriptionResponse()

    async def ListWebhookDeliveries(
        self, request: events_pb2.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.ListWebhookDeliveriesResponse:
        check_required({"subscription_id": request.subscription_id})
        size = page_size(request.page_size)
        if request.state and request.state not in _DELIVERY_STATES:
            raise InvalidArgument([FieldViolation("state", "is not a delivery state")])
        before = 0
        if request.page_token:
            before = limits.token_int(limits.decode_page_token(request.page_token), "before_seq")
        page = await self._webhooks().deliveries(
            request.subscription_id, _DELIVERY_STATES.get(request.state, ""), before, size
        )
        return events_pb2.ListWebhookDeliveriesResponse(
            deliveries=[webhook_delivery_pb(d) for d in page.deliveries],
            next_page_token=(
                limits.encode_page_token({"before_seq": page.next_before_seq})
                if page.next_before_seq
                else ""
            ),
        )

    async def RedeliverWebhook(
        self, request: events_pb2.RedeliverWebhookRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.RedeliverWebhookResponse:
        moved = await self._webhooks().redeliver(request.delivery_id, request.subscription_id)
        return events_pb2.RedeliverWebhookResponse(redelivered=moved)

    def _webhooks(self) -> webhooks.WebhookAdmin:
        if self._webhook_admin is None:
            raise FailedPrecondition("webhooks are not set up in this process")
        return self._webhook_admin

    # --- notifications ---

    async def SetNotificationPreference(
        self,
        request: events_pb2.SetNotificationPreferenceRequest,
        context: grpc.aio.ServicerContext,
    ) -> events_pb2.SetNotificationPreferenceResponse:
        return await notifications.set_preference(self._pool, request)

    async def ListNotifications(
        self, request: events_pb2.ListNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.ListNotificationsResponse:
        return await notifications.list_notifications(self._pool, request)


# ---- webhooks: wire types <-> stored records ------------------------------------------------

_SUBSCRIPTION_STATES = {
    events_pb2.WEBHOOK_SUBSCRIPTION_STATE_ACTIVE: webhooks_store.ACTIVE,
    events_pb2.WEBHOOK_SUBSCRIPTION_STATE_PAUSED: webhooks_store.PAUSED,
}
_SUBSCRIPTION_STATES_PB = {v: k for k, v in _SUBSCRIPTION_STATES.items()}
_DELIVERY_STATES = {
    events_pb2.WEBHOOK_DELIVERY_STATE_PENDING: webhooks_store.PENDING,
    events_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED: webhooks_store.DELIVERED,
    events_pb2.WEBHOOK_DELIVERY_STATE_DEAD: webhooks_store.DEAD,
}
_DELIVERY_STATES_PB = {v: k for k, v in _DELIVERY_STATES.items()}


def webhook_subscription_pb(s: webhooks_store.Subscription) -> events_pb2.WebhookSubscription:
    """A stored subscription as the API shows it (never its secret)."""
    out = events_pb2.WebhookSubscription(
        subscription_id=s.subscription_id,
        url=s.url,
        types=s.types,
        state=_SUBSCRIPTION_STATES_PB[s.state],
        description=s.description,
        from_sequence=s.from_seq,
    )
    out.created_at.FromDatetime(s.created_at)
    return out


def webhook_delivery_pb(d: webhooks_store.Delivery) -> events_pb2.WebhookDelivery:
    """A stored delivery and its attempts as the API shows them."""
    out = events_pb2.WebhookDelivery(
        delivery_id=d.delivery_id,
        subscription_id=d.subscription_id,
        event_id=d.event_id,
        sequence=d.seq,
        event_type=d.event_type,
        order_id=d.order_id,
        state=_DELIVERY_STATES_PB[d.state],
    )
    out.created_at.FromDatetime(d.created_at)
    if d.state == webhooks_store.PENDING:
        out.next_attempt_at.FromDatetime(d.next_attempt_at)
    for a in d.attempts:
        attempt = out.attempts.add(
            http_status=a.http_status, error=a.error, latency_ms=a.latency_ms
        )
        attempt.at.FromDatetime(a.at)
    return out
