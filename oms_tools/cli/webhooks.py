"""`oms webhook …`: an admin's webhook subscriptions and their deliveries (README "Webhooks")."""

from __future__ import annotations

import argparse
from typing import Any

from oms_platform import auth
from oms_platform.settings import Settings
from oms_tools.cli.common import as_json, enum_name
from oms_tools.cli.orders import caller_token, service_channel


async def cmd_webhook(settings: Settings, args: argparse.Namespace) -> int:
    """`oms webhook …` as an admin."""
    from oms.events.v1 import events_pb2 as pb
    from oms.events.v1 import events_pb2_grpc

    channel = service_channel(settings, "capture", caller_token(settings, auth.ADMIN))
    async with channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)
        command = args.webhook_command
        response: Any
        if command == "add":
            response = await stub.CreateWebhookSubscription(
                pb.CreateWebhookSubscriptionRequest(
                    url=args.url,
                    types=args.type,
                    secret=args.secret,
                    description=args.description,
                    idempotency_key=args.key,
                ),
                timeout=10,
            )
            if not args.json:
                _print_subscription(response.subscription)
                print(f"  secret {response.secret}  (shown only now: keep it to verify)")
        elif command == "list":
            response = await stub.ListWebhookSubscriptions(
                pb.ListWebhookSubscriptionsRequest(), timeout=10
            )
            for s in [] if args.json else response.subscriptions:
                _print_subscription(s)
        elif command in ("pause", "resume"):
            state = (
                pb.WEBHOOK_SUBSCRIPTION_STATE_PAUSED
                if command == "pause"
                else pb.WEBHOOK_SUBSCRIPTION_STATE_ACTIVE
            )
            response = await stub.UpdateWebhookSubscription(
                pb.UpdateWebhookSubscriptionRequest(
                    subscription_id=args.subscription_id, state=state
                ),
                timeout=10,
            )
            if not args.json:
                _print_subscription(response.subscription)
        elif command == "remove":
            response = await stub.DeleteWebhookSubscription(
                pb.DeleteWebhookSubscriptionRequest(subscription_id=args.subscription_id),
                timeout=10,
            )
            if not args.json:
                print(f"removed {args.subscription_id}")
        elif command == "deliveries":
            wanted = (
                pb.WebhookDeliveryState.Value(f"WEBHOOK_DELIVERY_STATE_{args.state.upper()}")
                if args.state
                else pb.WEBHOOK_DELIVERY_STATE_UNSPECIFIED
            )
            response = await stub.ListWebhookDeliveries(
                pb.ListWebhookDeliveriesRequest(
                    subscription_id=args.subscription_id, state=wanted, page_size=args.limit
                ),
                timeout=10,
            )
            for d in [] if args.json else response.deliveries:
                _print_delivery(d)
        else:
            response = await stub.RedeliverWebhook(
                pb.RedeliverWebhookRequest(
                    delivery_id=args.delivery, subscription_id=args.subscription
                ),
                timeout=10,
            )
            if not args.json:
                print(f"{response.redelivered} deliveries back to pending")
    if args.json:
        print(as_json(response))
    return 0


def _print_subscription(s: Any) -> None:
    from oms.events.v1 import events_pb2 as pb

    state = enum_name(pb.WebhookSubscriptionState, s.state, "WEBHOOK_SUBSCRIPTION_STATE_")
    types = ", ".join(s.types) or "every type"
    print(f"{s.subscription_id}  {s.url}  [{state}]  {types}")
    if s.description:
        print(f"  {s.description}")


def _print_delivery(d: Any) -> None:
    from oms.events.v1 import events_pb2 as pb

    state = enum_name(pb.WebhookDeliveryState, d.state, "WEBHOOK_DELIVERY_STATE_")
    print(f"{d.delivery_id}  #{d.sequence} {d.event_type}  {d.order_id}  [{state}]")
    for a in d.attempts:
        outcome = f"HTTP {a.http_status}" if a.http_status else "no answer"
        error = f": {a.error}" if a.error else ""
        print(f"  {a.at.ToDatetime():%Y-%m-%d %H:%M:%S}  {outcome}  {a.latency_ms} ms{error}")
