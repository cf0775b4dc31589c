"""`oms plan create|list` and `oms subscription create|show|list|pause|resume|skip|change|
cancel`: recurring orders, as a merchandiser (plans) and an agent (subscriptions)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import grpc

from oms_platform import auth
from oms_platform.money import format_minor
from oms_platform.settings import Settings
from oms_tools.cli.common import as_json, enum_name
from oms_tools.cli.orders import caller_token, service_channel


def _stub(settings: Settings, role: str) -> tuple[grpc.aio.Channel, Any]:
    from oms.subscriptions.v1 import subscriptions_pb2_grpc

    channel = service_channel(settings, "servicing", caller_token(settings, role))
    return channel, subscriptions_pb2_grpc.SubscriptionsServiceStub(channel)


def _timestamp(text: str, option: str) -> Any:
    """An ISO 8601 time (UTC unless it says otherwise) as a protobuf Timestamp."""
    from datetime import UTC

    from google.protobuf.timestamp_pb2 import Timestamp

    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: {option} {text!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _when(stamp: Any) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M UTC") if stamp.seconds else "-"


def _cadence_text(cadence: Any) -> str:
    which = cadence.WhichOneof("every")
    if which == "monthly_on_day":
        day = "last day" if cadence.monthly_on_day == 31 else f"day {cadence.monthly_on_day}"
        return f"monthly on the {day} at {cadence.at_local_time}"
    if which == "weeks":
        return f"every {cadence.weeks} week(s) at {cadence.at_local_time}"
    return f"every {cadence.minutes} minute(s)"


def _print_plan(plan: Any) -> None:
    price = format_minor(plan.price_per_cycle.amount_minor, plan.currency)
    print(f"{plan.plan_id}  {plan.name}  {price} per cycle  {_cadence_text(plan.cadence)} "
          f"({plan.timezone})")  # fmt: skip
    for item in plan.items:
        unit = format_minor(item.unit_price_minor, plan.currency)
        print(f"  {item.quantity} x {item.sku} {item.name} at {unit}".rstrip())


def _print_subscription(s: Any) -> None:
    from oms.subscriptions.v1 import subscriptions_pb2 as pb

    status = enum_name(pb.SubscriptionStatus, s.status, "SUBSCRIPTION_STATUS_")
    print(f"subscription {s.subscription_id} [{status}]  plan {s.plan_id}  {s.channel}  "
          f"{s.subscriber.email}")  # fmt: skip
    print(f"  next cycle {s.next_cycle} at {_when(s.next_cycle_at)}")
    a = s.delivery_address
    print(f"  ships to {a.line1}, {a.postal_code} {a.city}, {a.country_code} "
          f"({s.delivery_method or 'standard'}); pays with {s.payment_method.token}")  # fmt: skip
    if s.HasField("paused_until"):
        print(f"  paused until {_when(s.paused_until)}")
    if s.skipped_cycles:
        print(f"  skipping cycles {', '.join(str(c) for c in s.skipped_cycles)}")
    if s.pending_plan_id:
        print(f"  plan {s.pending_plan_id} from cycle {s.pending_plan_from_cycle}")
    if s.cancel_at_period_end:
        print("  cancels at the end of the period")
    if s.suspended_reason:
        print(f"  suspended: {s.suspended_reason}")


async def cmd_plan(settings: Settings, args: argparse.Namespace) -> int:
    """`oms plan create` (as a merchandiser) and `oms plan list`."""
    from oms.subscriptions.v1 import subscriptions_pb2 as pb

    if args.plan_command == "list":
        channel, stub = _stub(settings, auth.AGENT)
        async with channel:
            listing = await stub.ListPlans(pb.ListPlansRequest(), timeout=10)
        if args.json:
            print(as_json(listing))
        for plan in [] if args.json else listing.plans:
            _print_plan(plan)
        return 0
    cadence = pb.Cadence(at_local_time=args.at)
    if args.monthly is not None:
        cadence.monthly_on_day = args.monthly
    elif args.weeks is not None:
        cadence.weeks = args.weeks
    else:
        cadence.minutes = args.minutes
    request = pb.CreatePlanRequest(
        idempotency_key=args.key,
        name=args.name,
        items=[_item(spec) for spec in args.item],
        currency=args.currency,
        shipping_minor=args.shipping,
        tax_minor=args.tax,
        cadence=cadence,
        timezone=args.timezone,
    )
    channel, stub = _stub(settings, auth.MERCHANDISER)
    async with channel:
        response = await stub.CreatePlan(request, timeout=10)
    if args.json:
        print(as_json(response))
    else:
        _print_plan(response.plan)
    return 0


def _item(spec: str) -> Any:
    """--item SKU,QTY,UNIT_PRICE[,NAME]"""
    from oms.subscriptions.v1 import subscriptions_pb2 as pb

    parts = [p.strip() for p in spec.split(",", 3)]
    if len(parts) < 3:
        raise SystemExit(f"error: --item {spec!r}: give SKU,QTY,UNIT_PRICE[,NAME]")
    try:
        quantity, price = int(parts[1]), int(parts[2])
    except ValueError:
        raise SystemExit(f"error: --item {spec!r}: QTY and UNIT_PRICE are whole numbers") from None
    name = parts[3] if len(parts) > 3 else ""
    return pb.PlanItem(sku=parts[0], name=name, quantity=quantity, unit_price_minor=price)


def _address(spec: str) -> Any:
    """--address LINE1,CITY,POSTAL_CODE,COUNTRY[,REGION]"""
    from oms.common.v1 import common_pb2

    parts = [p.strip() for p in spec.split(",")]
    if not 4 <= len(parts) <= 5:
        raise SystemExit(f"error: --address {spec!r}: give LINE1,CITY,POSTAL_CODE,COUNTRY[,REGION]")
    line1, city, postal_code, country = parts[:4]
    return common_pb2.PostalAddress(
        line1=line1,
        city=city,
        postal_code=postal_code,
        country_code=country,
        region=parts[4] if len(parts) > 4 else "",
    )


def _payment_method(kind: str, token: str) -> Any:
    from oms.payments.v1 import payments_pb2

    return payments_pb2.PaymentMethod(
        type=payments_pb2.PaymentMethodType.Value(f"PAYMENT_METHOD_TYPE_{kind.upper()}"),
        token=token,
    )


async def cmd_subscription(settings: Settings, args: argparse.Namespace) -> int:
    """Every `oms subscription` command, as an agent."""
    from oms.subscriptions.v1 import subscriptions_pb2 as pb

    command = args.subscription_command
    channel, stub = _stub(settings, auth.AGENT)
    async with channel:
        if command == "create":
            request = pb.CreateSubscriptionRequest(
                idempotency_key=args.key,
                plan_id=args.plan,
                channel=args.channel,
                subscriber=pb.Subscriber(email=args.email, name=args.name),
                delivery_address=_address(args.address),
                delivery_method=args.method,
                payment_method=_payment_method(args.payment_type, args.token),
            )
            if args.start:
                request.start_at.CopyFrom(_timestamp(args.start, "--start"))
            response: Any = await stub.CreateSubscription(request, timeout=10)
            if not args.json:
                _print_subscription(response.subscription)
        elif command == "show":
            response = await stub.GetSubscription(
                pb.GetSubscriptionRequest(subscription_id=args.subscription_id), timeout=10
            )
            if not args.json:
                _print_history(response)
        elif command == "list":
            status = pb.SubscriptionStatus.Value(
                f"SUBSCRIPTION_STATUS_{(args.status or 'unspecified').upper()}"
            )
            response = await stub.ListSubscriptions(
                pb.ListSubscriptionsRequest(
                    shopper_email=args.email,
                    plan_id=args.plan,
                    status=status,
                    page_size=args.limit,
                    page_token=args.page_token,
                ),
                timeout=10,
            )
            for s in [] if args.json else response.subscriptions:
                _print_subscription(s)
            if response.next_page_token and not args.json:
                print(f"more: --page-token {response.next_page_token}")
        else:
            response = await stub.ChangeSubscription(_change(args), timeout=args.timeout)
            if not args.json:
                print(("(preview) " if args.preview else "") + response.summary)
                if response.effective_cycle:
                    amount = response.next_cycle_amount
                    print(f"  from cycle {response.effective_cycle}; the next cycle costs "
                          f"{format_minor(amount.amount_minor, amount.currency)}")  # fmt: skip
                _print_subscription(response.subscription)
    if args.json:
        print(as_json(response))
    return 0


def _change(args: argparse.Namespace) -> Any:
    """The ChangeSubscription request of a change command."""
    from oms.subscriptions.v1 import subscriptions_pb2 as pb

    request = pb.ChangeSubscriptionRequest(
        subscription_id=args.subscription_id,
        idempotency_key="" if args.preview else args.key,
        preview=args.preview,
        reason=args.reason,
    )
    command = args.subscription_command
    if command == "pause":
        request.pause.SetInParent()
        if args.until:
            request.pause.until.CopyFrom(_timestamp(args.until, "--until"))
    elif command == "resume":
        request.resume.SetInParent()
    elif command == "skip":
        request.skip.cycle = args.cycle
    elif command == "cancel":
        request.cancel.at_period_end = args.at_period_end
    elif args.plan:
        request.change_plan.plan_id = args.plan
    elif args.address:
        request.change_address.delivery_address.CopyFrom(_address(args.address))
        request.change_address.delivery_method = args.method
    elif args.token:
        request.change_payment_method.payment_method.CopyFrom(
            _payment_method(args.payment_type, args.token)
        )
    elif args.day is not None:
        request.change_cycle_day.day = args.day
    else:
        raise SystemExit("error: give one of --plan, --address, --token or --day")
    return request


def _print_history(view: Any) -> None:
    from oms.subscriptions.v1 import subscriptions_pb2 as pb

    _print_subscription(view.subscription)
    if view.HasField("plan"):
        print("plan:")
        _print_plan(view.plan)
    if view.cycles:
        print("cycles:")
    for c in view.cycles:
        status = enum_name(pb.CycleStatus, c.status, "CYCLE_STATUS_")
        amount = format_minor(c.amount.amount_minor, c.amount.currency) if c.amount.currency else ""
        order = f"order {c.order_id}" if c.order_id else ""
        print(f"  {c.number}  {_when(c.due_at)}  [{status}]  {order}  {amount}".rstrip())
        if c.decline_reason:
            retry = (
                f"; retry {_when(c.next_payment_retry_at)}"
                if c.next_payment_retry_at.seconds
                else ""
            )
            print(f"     declined ({c.payment_attempts} attempt(s)): {c.decline_reason}{retry}")
    if view.changes:
        print("changes:")
    for change in view.changes:
        why = f" ({change.reason})" if change.reason else ""
        print(f"  {_when(change.at)}  {change.kind} by {change.actor}: {change.summary}{why}")
