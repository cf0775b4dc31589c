"""`oms plan create|list` and `oms subscription create|show|list|pause|resume|skip|change|
cancel`: recurring orders, as a merchandiser (plans) and an agent (subscriptions)."""

from __future__ import annotations

import argparse
import uuid
from datetime import datetime
from typing import Any

import grpc

from oms_platform import auth
from oms_platform.money import format_minor
from oms_platform.settings import Settings
from oms_tools.cli.common import as_json, enum_name
from oms_tools.cli.orders import caller_token, service_channel
from services.servicing.domain.subscriptions import STATUSES
from workflows.subscription_types import PAYMENT_METHOD_TYPES


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


def subscription_parsers(sub: Any) -> None:
    """The `plan` and `subscription` commands."""
    plan = sub.add_parser("plan", help="plans: what ships each cycle, at what price, how often")
    psub = plan.add_subparsers(dest="plan_command", required=True)
    create = psub.add_parser("create", help="define a plan (as a merchandiser)")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--item", action="append", required=True, help="SKU,QTY,UNIT_PRICE[,NAME] (repeatable)"
    )
    create.add_argument("--currency", default="USD")
    create.add_argument("--shipping", type=int, default=0, help="shipping per cycle, minor units")
    create.add_argument("--tax", type=int, default=0, help="tax per cycle, minor units")
    every = create.add_mutually_exclusive_group(required=True)
    every.add_argument("--monthly", type=int, metavar="DAY", help="day 1-28, or 31 (the last)")
    every.add_argument("--weeks", type=int, metavar="N", help="every N weeks (1-52)")
    every.add_argument(
        "--minutes", type=int, metavar="N", help="every N minutes (demos; `oms dev` allows it)"
    )
    create.add_argument("--at", default="00:00", help="local time of day, HH:MM")
    create.add_argument("--timezone", default="UTC", help="IANA timezone, e.g. Europe/Berlin")
    create.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
    psub.add_parser("list", help="every plan, oldest first")

    subscription = sub.add_parser("subscription", help="subscriptions and their changes")
    ssub = subscription.add_subparsers(dest="subscription_command", required=True)
    new = ssub.add_parser("create", help="subscribe a shopper to a plan")
    new.add_argument("--plan", required=True)
    new.add_argument("--channel", default="web", choices=auth.ALL_CHANNELS)
    new.add_argument("--email", required=True)
    new.add_argument("--name", default="")
    new.add_argument(
        "--address",
        default="1 Main St,Springfield,12345,US",
        help="LINE1,CITY,POSTAL_CODE,COUNTRY[,REGION]",
    )
    new.add_argument("--method", default="standard", help="delivery method")
    new.add_argument("--token", default="tok_visa", help="payment token")
    new.add_argument("--payment-type", default="card", choices=PAYMENT_METHOD_TYPES)
    new.add_argument("--start", default="", help="earliest first cycle, ISO 8601 (default: now)")
    new.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
    show = ssub.add_parser("show", help="a subscription with its cycles and changes")
    show.add_argument("subscription_id")
    listing = ssub.add_parser("list", help="subscriptions, newest first")
    listing.add_argument("--email", default="")
    listing.add_argument("--plan", default="")
    listing.add_argument("--status", default="", choices=["", *STATUSES])
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--page-token", default="")

    def change_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("subscription_id")
        p.add_argument(
            "--preview", action="store_true", help="say what it would do; change nothing"
        )
        p.add_argument("--reason", default="", help="why (kept with the change)")
        p.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
        p.add_argument("--timeout", type=float, default=60.0)

    pause = ssub.add_parser("pause", help="no cycles until resumed (or --until)")
    change_args(pause)
    pause.add_argument("--until", default="", help="resume by itself then, ISO 8601")
    change_args(ssub.add_parser("resume", help="cycles come again"))
    skip = ssub.add_parser("skip", help="skip one cycle")
    change_args(skip)
    skip.add_argument("--cycle", type=int, default=0, help="cycle number (default: the next)")
    change = ssub.add_parser(
        "change", help="change the plan, address, payment method or cycle day (from next cycle)"
    )
    change_args(change)
    what = change.add_mutually_exclusive_group(required=True)
    what.add_argument("--plan", default="", help="another plan, from the next cycle")
    what.add_argument("--address", default="", help="LINE1,CITY,POSTAL_CODE,COUNTRY[,REGION]")
    what.add_argument("--token", default="", help="a new payment token")
    what.add_argument("--day", type=int, default=None, help="monthly cycle day (1-28, or 31)")
    change.add_argument("--method", default="standard", help="delivery method (with --address)")
    change.add_argument("--payment-type", default="card", choices=PAYMENT_METHOD_TYPES)
    cancel = ssub.add_parser("cancel", help="end the subscription")
    change_args(cancel)
    cancel.add_argument(
        "--at-period-end", action="store_true", help="once the cycle paid for is placed"
    )
    for p in [*psub.choices.values(), *ssub.choices.values()]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
