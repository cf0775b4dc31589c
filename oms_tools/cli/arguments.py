"""The `oms` command line's grammar: every command's arguments, and nothing the commands run.

Building the parser imports no more than argparse and the settings, so `oms --help` and every
command start without the Temporal SDK, the gRPC stubs, asyncpg or the benches: a command's
module is imported when it runs (oms_tools/cli/__init__.py). Arguments whose choices come from
those modules are added by `defer`, when their subcommand is the one being parsed.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from oms_platform.settings import SERVICES

DESCRIPTION = """`oms`: run the system, submit and follow orders, play the warehouse, benchmark.

Readable output for people; `--json` for scripts.
"""

# Choices only the command line defines (the commands pass the chosen value on as it is).
OUTBOX_OWNERS = ("capture", "fulfillment", "servicing")
DELIVERY_STATES = ("pending", "delivered", "dead")


class Parser(argparse.ArgumentParser):
    """An argument parser that adds its deferred arguments (`defer`) when it parses: only
    the chosen subcommand's parser ever parses, so only its builders run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: list[Callable[[argparse.ArgumentParser], object]] = []

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        while self.deferred:
            self.deferred.pop(0)(self)
        return super().parse_known_args(*args, **kwargs)


def defer(
    parser: argparse.ArgumentParser, build: Callable[[argparse.ArgumentParser], object]
) -> None:
    """Add `build`'s arguments to `parser` when it parses (at once if it is not a `Parser`):
    for arguments whose choices live in modules only that command needs."""
    if isinstance(parser, Parser):
        parser.deferred.append(build)
    else:
        build(parser)


def add_later(
    parser: argparse.ArgumentParser,
    *flags: str,
    choices: Callable[[], Sequence[str]],
    **kwargs: Any,
) -> None:
    """`parser.add_argument(*flags, choices=choices(), **kwargs)`, deferred (`defer`)."""
    defer(parser, lambda p: p.add_argument(*flags, choices=choices(), **kwargs))


def _channels() -> Sequence[str]:
    from oms_platform import auth

    return auth.ALL_CHANNELS


def _external_roles() -> Sequence[str]:
    from oms_platform import auth

    return sorted(auth.EXTERNAL_ROLES)


def _fulfillment_order_statuses() -> Sequence[str]:
    from services.fulfillment.domain.fulfillment_orders import FULFILLMENT_ORDER_STATUSES

    return FULFILLMENT_ORDER_STATUSES


def _supply_statuses() -> Sequence[str]:
    from services.fulfillment.domain.supply import SUPPLY_STATUSES

    return SUPPLY_STATUSES


def _supply_kinds() -> Sequence[str]:
    from services.fulfillment.domain.supply import SUPPLY_KINDS

    return SUPPLY_KINDS


def _subscription_statuses() -> Sequence[str]:
    from services.servicing.domain.subscriptions import STATUSES

    return ["", *STATUSES]


def _payment_method_types() -> Sequence[str]:
    from workflows.subscription_types import PAYMENT_METHOD_TYPES

    return PAYMENT_METHOD_TYPES


def _conditions() -> Sequence[str]:
    """The units' conditions returns take, as servicing's domain names them."""
    from services.servicing.domain.return_orders import CONDITIONS

    return CONDITIONS


def _postal_datasets() -> Sequence[str]:
    from oms_tools.cli.postal import DATASETS

    return sorted(DATASETS)


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from oms_tools.bench import command as bench

    bench.add_arguments(parser)


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="oms", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="run the whole system on embedded defaults (what `make dev` runs)"
    )
    dev.add_argument(
        "--tls",
        action="store_true",
        help="encrypt every connection with a local CA's certificates (also OMS_DEV_TLS=1)",
    )
    dev.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="run N replicas of every service and N workers (also OMS_DEV_REPLICAS; default 1)",
    )
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    sub.add_parser("worker", help="run the order workflow worker")
    sub.add_parser("simulator", help="run the warehouse-and-carrier simulator")
    sub.add_parser("migrate", help="apply every service's migrations")
    sub.add_parser(
        "codec-server", help="serve /encode and /decode for the Temporal UI and CLI (admins)"
    )
    codec_parser = sub.add_parser("codec", help="master keys of the Temporal payload codec")
    csub = codec_parser.add_subparsers(dest="codec_command", required=True)
    new_key = csub.add_parser("new-key", help="print a new master key line for the keys file")
    new_key.add_argument("--id", default="", help="key id (default: k<UTC timestamp>)")
    csub.add_parser(
        "rewrap", help="re-wrap every order's data key under the active (first) master key"
    )

    keys = sub.add_parser("keys", help="keys for a single-host deployment (compose)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kinit = ksub.add_parser(
        "init",
        help="create the dev issuer's key and JWKS, the internal secret and the codec keys "
        "in a directory unless they exist",
    )
    kinit.add_argument("--dir", default="", help="where (default: <OMS_DATA_DIR>/keys)")
    health_parser = sub.add_parser("health", help="ask a service's gRPC health service")
    health_parser.add_argument("service", choices=SERVICES)
    health_parser.add_argument(
        "--address", default="", help="host:port (default: 127.0.0.1 and the service's port)"
    )
    health_parser.add_argument("--timeout", type=float, default=3.0)
    temporal_parser = sub.add_parser("temporal", help="prepare a Temporal namespace for oms")
    tsub_ = temporal_parser.add_subparsers(dest="temporal_command", required=True)
    tsub_.add_parser(
        "search-attributes",
        help="register the search attributes the order workflow sets (once per namespace)",
    )

    order = sub.add_parser("order", aliases=["orders"], help="submit, show, watch and list orders")
    osub = order.add_subparsers(dest="order_command", required=True)
    submit = osub.add_parser("submit", help="submit an order")
    submit.add_argument("--sample", action="store_true", help="a two-line sample order")
    add_later(submit, "--channel", default="web", choices=_channels)
    submit.add_argument("--token", default="tok_visa", help="card token (tok_decline declines)")
    submit.add_argument("--email", default="ada@example.com")
    show = osub.add_parser("show", help="the 360° view of an order")
    show.add_argument("order_id")
    watch = osub.add_parser("watch", help="follow an order until it settles")
    watch.add_argument("order_id")
    watch.add_argument("--timeout", type=float, default=300.0)
    watch.add_argument("--interval", type=float, default=0.5)
    listing = osub.add_parser("list", help="the newest orders")
    listing.add_argument("--limit", type=int, default=20)
    late = osub.add_parser(
        "late", help="orders past their promised delivery date, not delivered nor canceled"
    )
    late.add_argument("--as-of", default="", help="YYYY-MM-DD (default: today, UTC)")
    late.add_argument("--limit", type=int, default=20)
    servicing_parsers(sub, osub)
    outbox_parsers(sub)
    events_parsers(sub)
    webhook_parsers(sub)
    subscription_parsers(sub)
    postal_parsers(sub)
    fulfillment_parsers(sub)

    fo = sub.add_parser("fo", help="play the warehouse: fulfillment orders and shipments")
    fo.add_argument(
        "--location",
        action="append",
        default=[],
        help="act for this location (repeatable; default: every location)",
    )
    fsub = fo.add_subparsers(dest="fo_command", required=True)
    fl = fsub.add_parser("list", help="list fulfillment orders")
    fl.add_argument("--order", default="")
    add_later(fl, "--status", action="append", default=[], choices=_fulfillment_order_statuses)
    fl.add_argument("--limit", type=int, default=50)
    for step in ("accept", "pick", "pack"):
        fsub.add_parser(step, help=f"{step} a fulfillment order").add_argument(
            "fulfillment_order_id"
        )
    ship = fsub.add_parser("ship", help="confirm a shipment with a tracking number")
    ship.add_argument("fulfillment_order_id")
    ship.add_argument("--carrier", default="UPS")
    ship.add_argument("--service", default="ground")
    ship.add_argument("--tracking", required=True)
    ship.add_argument(
        "--key", default="", help="idempotency key (default: from the tracking number)"
    )
    deliver = fsub.add_parser("deliver", help="confirm a shipment delivered")
    deliver.add_argument("shipment_id")

    token = sub.add_parser("token", help="development tokens signed with the dev stack's key")
    tsub = token.add_subparsers(dest="token_command", required=True)
    issue = tsub.add_parser("issue", help="print a bearer token for a role")
    add_later(issue, "--role", required=True, choices=_external_roles)
    issue.add_argument("--subject", default="", help="who (default: <role>@dev)")
    issue.add_argument(
        "--location", action="append", default=[], help="a warehouse's location (repeatable)"
    )
    add_later(
        issue,
        "--channel",
        action="append",
        default=[],
        choices=_channels,
        help="a storefront's channel (repeatable; default: web)",
    )
    issue.add_argument("--ttl", default="8h", help="how long it is valid, e.g. 15m, 8h, 2d")

    fuzz_parser = sub.add_parser(
        "fuzz",
        help="hostile requests at every RPC of a running dev stack (writes junk into its data)",
        description="Generate hostile requests from the API's message descriptors, send them "
        "to the running stack with a token of a role allowed for each RPC, and report the "
        "codes seen and every answer that is not OK or a client error.",
    )
    fuzz_parser.add_argument("--minutes", type=float, default=1.0, help="how long to run")
    fuzz_parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    fuzz_parser.add_argument(
        "--service",
        action="append",
        default=[],
        choices=SERVICES,
        help="fuzz this service only (repeatable; default: all)",
    )
    fuzz_parser.add_argument(
        "--examples",
        type=int,
        default=5,
        help="drawn requests per RPC per round (a round visits every RPC; the first also "
        "sends each RPC's ten probes)",
    )
    fuzz_parser.add_argument(
        "--seed-orders",
        type=int,
        default=3,
        help="sample orders to submit first, so real ids are mixed in (0: use what is there)",
    )
    fuzz_parser.add_argument(
        "--seed-wait", type=float, default=20.0, help="seconds to wait for them to ship"
    )

    bench_parser = sub.add_parser("bench", help="benchmarks (start their own stack)")
    defer(bench_parser, _bench_arguments)

    for p in [
        top,
        # An alias names its parser twice: each gets the option once.
        *dict.fromkeys(sub.choices.values()),
        *osub.choices.values(),
        *fsub.choices.values(),
    ]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    return top


def servicing_parsers(sub: Any, osub: Any) -> None:
    """`oms order cancel|return|exchange|reship|appease|add-items|changes`, `oms return ...`,
    `oms exception ...`."""

    def change_args(
        p: argparse.ArgumentParser, *, lines: bool = True, preview_or_submit: bool = False
    ) -> None:
        p.add_argument("order_id")
        if lines:
            p.add_argument("--line", action="append", default=[], help="order line id")
            p.add_argument(
                "--qty", action="append", type=int, default=[], help="units (1 per --line)"
            )
        p.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
        p.add_argument("--timeout", type=float, default=60.0)
        # Submitting is the default, unless the command asks which one is meant.
        which = p.add_mutually_exclusive_group(required=preview_or_submit)
        which.add_argument(
            "--preview", action="store_true", help="say what it would do; record nothing"
        )
        if preview_or_submit:
            which.add_argument("--submit", action="store_true", help="make the change")

    cancel = osub.add_parser("cancel", help="cancel units not shipped (no --line: everything)")
    change_args(cancel)
    cancel.add_argument("--reason", required=True)
    ret = osub.add_parser("return", help="open a return order for delivered units")
    change_args(ret)
    ret.add_argument("--reason", required=True)
    add_later(ret, "--condition", choices=_conditions, default=None)
    ret.add_argument("--fee", type=int, default=0, help="return fee, minor units")
    ret.add_argument(
        "--no-return", action="store_true", help="refund now, without the items coming back"
    )
    exchange = osub.add_parser("exchange", help="exchange delivered units for another SKU")
    change_args(exchange)
    exchange.add_argument("--sku", action="append", default=[], help="replacement SKU per line")
    exchange.add_argument(
        "--price", action="append", type=int, default=[], help="replacement unit price, minor"
    )
    exchange.add_argument("--reason", default="exchange")
    add_later(
        exchange,
        "--condition",
        choices=_conditions,
        default=None,
        help="the returned units' condition",
    )
    reship = osub.add_parser("reship", help="ship units again at no charge")
    change_args(reship)
    reship.add_argument("--reason", required=True, choices=["lost", "damaged"])
    reship.add_argument("--note", default="")
    appease = osub.add_parser("appease", help="goodwill on a line or the whole order")
    change_args(appease, lines=False)
    appease.add_argument("--line", default="", help="one order line (default: the order)")
    how_much = appease.add_mutually_exclusive_group(required=True)
    how_much.add_argument("--amount", type=int, help="minor units")
    how_much.add_argument("--percent", help="percent of what was charged, e.g. 10 or 12.5")
    appease.add_argument("--reason", default="goodwill")
    add_items = osub.add_parser(
        "add-items",
        help="add lines or units before anything shipped (routed, then authorized)",
        description="Add new lines (--new) or more units of a line (--more) before any unit of "
        "the order has shipped; money in minor units. To lower a quantity, cancel units.",
    )
    change_args(add_items, lines=False)
    add_items.add_argument(
        "--new",
        action="append",
        default=[],
        metavar="SKU,QTY,UNIT_PRICE[,TAX]",
        help="a new line, e.g. SKU-MUG,1,1200,90",
    )
    add_items.add_argument(
        "--more",
        action="append",
        default=[],
        metavar="ORDER_LINE_ID,QTY[,TAX]",
        help="more units of an existing line, at its unit price",
    )
    add_items.add_argument("--name", default="", help="name of the new lines")
    add_items.add_argument("--group", default="", help="delivery group (default: the first)")
    add_items.add_argument("--reason", default="shopper asked for more")
    address = osub.add_parser(
        "change-address",
        help="send a delivery group to a new address before any of its units shipped",
        description="Send a delivery group to a new address (checked as an order's is); its "
        "unshipped units move to other locations when routing for the address prefers them. "
        "--preview says what would happen, --submit does it.",
    )
    change_args(address, lines=False, preview_or_submit=True)
    address.add_argument("--group", required=True, help="delivery group id")
    address.add_argument("--line1", required=True)
    address.add_argument("--line2", default="")
    address.add_argument("--city", required=True)
    address.add_argument("--region", default="", help="state or province")
    address.add_argument("--postal-code", required=True)
    address.add_argument("--country", required=True, help="ISO 3166 code, e.g. US")
    address.add_argument("--reason", default="", help="why (needed with --submit)")
    address.add_argument("--note", default="")
    osub.add_parser("changes", help="an order's changes").add_argument("order_id")

    returns = sub.add_parser("return", help="return orders: receive and list")
    rsub = returns.add_subparsers(dest="return_command", required=True)
    receive = rsub.add_parser("receive", help="record units received for a return order")
    receive.add_argument("return_order_id")
    receive.add_argument("--order", default="", help="its order (checked when given)")
    receive.add_argument("--line", action="append", default=[], required=True)
    receive.add_argument("--qty", action="append", type=int, default=[])
    receive.add_argument("--reject", action="store_true", help="inspection rejected them")
    receive.add_argument("--reason", default="", help="why they were rejected")
    add_later(receive, "--condition", choices=_conditions, default=None)
    receive.add_argument("--note", default="")
    receive.add_argument("--key", default=str(uuid.uuid4()))
    receive.add_argument("--timeout", type=float, default=60.0)
    rsub.add_parser("list", help="an order's return orders").add_argument("order_id")
    policies = rsub.add_parser(
        "policies", help="the return policy's rules (as a merchandiser): list, set, delete"
    )
    psub = policies.add_subparsers(dest="policy_command", required=True)
    psub.add_parser("list", help="every rule, most specific first (the default rule last)")
    rule = psub.add_parser(
        "set",
        help="create or replace a rule",
        description="Create or replace a rule by id: it is set whole, as given here (what is "
        "not given is reset). A rule matches the order's channel and the line's product "
        "category; leave either out to match any. Only rule 'default' matches everything.",
    )
    rule.add_argument("rule_id")
    rule.add_argument("--channel", default="", help="the order's channel (default: any)")
    rule.add_argument("--category", default="", help="the product category (default: any)")
    rule.add_argument(
        "--days", type=int, help="days after delivery (default: the channel's return window)"
    )
    add_later(
        rule,
        "--condition",
        action="append",
        default=[],
        choices=_conditions,
        help="a condition units must come back in (repeatable; default: any)",
    )
    rule.add_argument("--final-sale", action="store_true", help="never returnable")
    rule.add_argument(
        "--restocking-fee", default="0", help="percent of what the units credit back, e.g. 15"
    )
    rule.add_argument(
        "--fee-on-exchange", action="store_true", help="charge the restocking fee on exchanges too"
    )
    rule.add_argument("--description", default="")
    psub.add_parser("delete", help="delete a rule (never 'default')").add_argument("rule_id")

    exceptions = sub.add_parser("exception", help="process exceptions: list, resolve, triage")
    esub = exceptions.add_subparsers(dest="exception_command", required=True)
    elist = esub.add_parser("list", help="process exceptions, newest first")
    elist.add_argument("--order", default="")
    elist.add_argument(
        "--status",
        action="append",
        default=[],
        choices=["new", "triaged", "paused", "ignored", "voided", "resolved"],
    )
    elist.add_argument(
        "--category",
        action="append",
        default=[],
        choices=[
            "payment",
            "fulfillment",
            "inventory",
            "fraud",
            "carrier",
            "invoicing",
            "delivery_failed",
        ],
    )
    elist.add_argument(
        "--severity", action="append", default=[], choices=["low", "medium", "high", "critical"]
    )
    elist.add_argument("--older-than", default="", help="e.g. 30m, 4h, 2d")
    elist.add_argument("--limit", type=int, default=50)
    resolve = esub.add_parser("resolve", help="retry the step, skip it, or cancel the order")
    resolve.add_argument("process_exception_id")
    resolve.add_argument("--action", required=True, choices=["retry", "skip", "cancel"])
    resolve.add_argument("--note", default="")
    resolve.add_argument("--timeout", type=float, default=60.0)
    status = esub.add_parser("set-status", help="triage, pause, ignore or void")
    status.add_argument("process_exception_id")
    status.add_argument("--to", required=True, choices=["triaged", "paused", "ignored", "voided"])
    status.add_argument("--note", default="")
    for p in [*rsub.choices.values(), *psub.choices.values(), *esub.choices.values()]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")


def outbox_parsers(sub: Any) -> None:
    """`oms outbox dead-letters|redeliver|discard`."""
    parser_ = sub.add_parser(
        "outbox", help="dead letters of the outboxes: list, redeliver, discard"
    )
    xsub = parser_.add_subparsers(dest="outbox_command", required=True)
    listing = xsub.add_parser("dead-letters", help="rows Temporal refused for good, newest first")
    listing.add_argument(
        "--status", action="append", default=[], choices=["open", "redelivered", "discarded"]
    )
    listing.add_argument("--limit", type=int, default=50)
    redeliver = xsub.add_parser("redeliver", help="put a dead letter back in the outbox")
    discard = xsub.add_parser("discard", help="give up on a dead letter")
    for p in (redeliver, discard):
        p.add_argument("dead_letter_id", type=int)
        p.add_argument("--note", default="", help="why (recorded with your name)")
    for p in xsub.choices.values():
        p.add_argument("--service", choices=OUTBOX_OWNERS, default="capture", help="whose outbox")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")


def events_parsers(sub: Any) -> None:
    """`oms events tail`."""
    parser_ = sub.add_parser("events", help="the event log: every change of every order")
    esub = parser_.add_subparsers(dest="events_command", required=True)
    tail = esub.add_parser("tail", help="print the log's events, then follow new ones")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--from", dest="from_sequence", type=int, default=0, metavar="N",
                       help="start at sequence N (default: the next event)")  # fmt: skip
    start.add_argument("--from-time", default="", metavar="ISO",
                       help="start at the first event recorded at or after this time")  # fmt: skip
    tail.add_argument("--type", dest="types", action="append", default=[],
                      help="only this type, or a family as 'shipment.*' (repeatable)")  # fmt: skip
    tail.add_argument("--channel", dest="channels", action="append", default=[],
                      help="only this channel (repeatable)")  # fmt: skip
    tail.add_argument("--order", dest="order_ids", action="append", default=[],
                      help="only this order (repeatable)")  # fmt: skip
    tail.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True,
                      help="keep following new events (--no-follow: stop at the head, and "
                           "start at the beginning unless told where)")  # fmt: skip
    tail.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="JSON lines")  # fmt: skip


def webhook_parsers(sub: Any) -> None:
    """`oms webhook add|list|pause|resume|remove|deliveries|redeliver`."""
    parser_ = sub.add_parser("webhook", help="webhook subscriptions and deliveries (admins)")
    wsub = parser_.add_subparsers(dest="webhook_command", required=True)
    add = wsub.add_parser("add", help="subscribe an https:// endpoint to events")
    add.add_argument("url")
    add.add_argument(
        "--type",
        action="append",
        default=[],
        help="an event type or family, e.g. shipment.* (repeatable; default: every type)",
    )
    add.add_argument("--secret", default="", help="whsec_… (default: oms makes one, shown once)")
    add.add_argument("--description", default="")
    add.add_argument("--key", default="", help="idempotency key (a retried add makes no second)")
    wsub.add_parser("list", help="subscriptions, oldest first")
    for name, text in (
        ("pause", "queue deliveries instead of sending them"),
        ("resume", "send again, queued deliveries first"),
        ("remove", "delete: pending deliveries dropped, history kept"),
    ):
        wsub.add_parser(name, help=text).add_argument("subscription_id")
    deliveries = wsub.add_parser("deliveries", help="a subscription's deliveries, newest first")
    deliveries.add_argument("subscription_id")
    deliveries.add_argument("--state", choices=DELIVERY_STATES, default="")
    deliveries.add_argument("--limit", type=int, default=50)
    redeliver = wsub.add_parser("redeliver", help="send a delivery (or every dead one) again")
    which = redeliver.add_mutually_exclusive_group(required=True)
    which.add_argument("--delivery", default="", help="one delivery id")
    which.add_argument("--subscription", default="", help="every dead delivery of it")
    for p in wsub.choices.values():
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")


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
    add_later(new, "--channel", default="web", choices=_channels)
    new.add_argument("--email", required=True)
    new.add_argument("--name", default="")
    new.add_argument(
        "--address",
        default="1 Main St,Springfield,12345,US",
        help="LINE1,CITY,POSTAL_CODE,COUNTRY[,REGION]",
    )
    new.add_argument("--method", default="standard", help="delivery method")
    new.add_argument("--token", default="tok_visa", help="payment token")
    add_later(new, "--payment-type", default="card", choices=_payment_method_types)
    new.add_argument("--start", default="", help="earliest first cycle, ISO 8601 (default: now)")
    new.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
    show = ssub.add_parser("show", help="a subscription with its cycles and changes")
    show.add_argument("subscription_id")
    listing = ssub.add_parser("list", help="subscriptions, newest first")
    listing.add_argument("--email", default="")
    listing.add_argument("--plan", default="")
    add_later(listing, "--status", default="", choices=_subscription_statuses)
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
    add_later(change, "--payment-type", default="card", choices=_payment_method_types)
    cancel = ssub.add_parser("cancel", help="end the subscription")
    change_args(cancel)
    cancel.add_argument(
        "--at-period-end", action="store_true", help="once the cycle paid for is placed"
    )
    for p in [*psub.choices.values(), *ssub.choices.values()]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")


def postal_parsers(sub: Any) -> None:
    """`oms postal load|list`."""
    parser_ = sub.add_parser(
        "postal", help="postal codes routing measures distances from: load a country, list"
    )
    psub = parser_.add_subparsers(dest="postal_command", required=True)
    load = psub.add_parser(
        "load",
        help="load a country's postal codes with their coordinates (replaces what it had)",
        description="Load postal codes and their coordinates into fulfillment, replacing what "
        "each country got from earlier loads (the seeded prefixes stay), in one transaction. "
        "`us`: every US ZIP's centroid from the zipcodes package. `--file`: a file in the "
        "GeoNames postal-code dump layout (tab- or comma-separated: country code, postal code, "
        "place name, admin names and codes, latitude, longitude, accuracy), e.g. DE.txt from "
        "GeoNames' postal code export; every country in it is loaded unless --country says "
        "which.",
    )
    add_later(load, "dataset", nargs="?", choices=_postal_datasets, help="a data set oms ships: us")
    load.add_argument("--file", metavar="PATH", help="a GeoNames-layout postal code file")
    load.add_argument(
        "--country",
        action="append",
        default=[],
        metavar="CC",
        help="load only this country's lines of the file (repeatable)",
    )
    psub.add_parser("list", help="postal codes per country and where they came from")
    for p in psub.choices.values():
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")


def fulfillment_parsers(sub: Any) -> None:
    """`oms supply list|create|update|cancel|receive`, `oms reservations reserve|show|release`
    and `oms transit list|set|delete`."""
    supply = sub.add_parser("supply", help="incoming supply: purchase orders, notices, pre-orders")
    ssub = supply.add_subparsers(dest="supply_command", required=True)
    listing = ssub.add_parser("list", help="supply, earliest expected first")
    listing.add_argument("--sku", default="")
    listing.add_argument("--location", default="")
    add_later(listing, "--status", action="append", default=[], choices=_supply_statuses)
    listing.add_argument("--limit", type=int, default=100)
    create = ssub.add_parser("create", help="record units of a SKU expected at a location")
    add_later(create, "--kind", required=True, choices=_supply_kinds)
    create.add_argument("--location", required=True)
    create.add_argument("--sku", required=True)
    create.add_argument("--qty", type=int, required=True, help="units expected (a pre-order's cap)")
    create.add_argument(
        "--expected", required=True, help="YYYY-MM-DD (a pre-order's release day, after today)"
    )
    create.add_argument("--reference", default="", help="purchase order or notice number")
    create.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
    update = ssub.add_parser("update", help="change an open supply's quantity or expected day")
    update.add_argument("supply_id")
    update.add_argument("--qty", type=int, default=None)
    update.add_argument("--expected", default="", help="YYYY-MM-DD")
    cancel = ssub.add_parser("cancel", help="the supply will not come: its backorders move on")
    cancel.add_argument("supply_id")
    cancel.add_argument("--reason", default="")
    receive = ssub.add_parser("receive", help="units arrived: on hand, and backorders released")
    receive.add_argument("supply_id")
    receive.add_argument("--qty", type=int, required=True)
    receive.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")

    reservations = sub.add_parser(
        "reservations", help="checkout reservations: hold a cart's units while the shopper pays"
    )
    rsub = reservations.add_subparsers(dest="reservations_command", required=True)
    reserve = rsub.add_parser("reserve", help="hold a cart's units where routing would ship them")
    reserve.add_argument(
        "--line",
        action="append",
        required=True,
        metavar="SKU,QTY",
        help="a cart line (repeatable, each SKU once)",
    )
    where = reserve.add_mutually_exclusive_group(required=True)
    where.add_argument("--group", default="", help="hold at this location group's locations")
    where.add_argument("--postal-code", default="", help="hold for delivery to this postal code")
    reserve.add_argument("--country", default="US", help="the postal code's country")
    reserve.add_argument("--ttl", type=int, default=900, help="seconds to hold (1 to 3600)")
    reserve.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
    rsub.add_parser("show", help="a reservation as it is now").add_argument("reservation_id")
    rsub.add_parser("release", help="give a reservation's units back").add_argument(
        "reservation_id"
    )

    transit = sub.add_parser(
        "transit", help="carriers' business days by delivery method and distance band"
    )
    tsub = transit.add_subparsers(dest="transit_command", required=True)
    tlist = tsub.add_parser("list", help="every band, by method and start")
    tlist.add_argument("--method", default="", help="only this delivery method")
    tset = tsub.add_parser(
        "set",
        help="set a band's business days (adds the band when the method has none starting there)",
    )
    tset.add_argument("delivery_method")
    tset.add_argument("--from-km", type=int, required=True, help="where the band starts")
    tset.add_argument("--days", type=int, required=True, help="business days (0 to 60)")
    tset.add_argument(
        "--new-method",
        action="store_true",
        help="add the delivery method (its first band, from 0 km)",
    )
    tdelete = tsub.add_parser("delete", help="delete a band (the one before it runs on)")
    tdelete.add_argument("delivery_method")
    tdelete.add_argument("--from-km", type=int, required=True)
    for p in [*ssub.choices.values(), *rsub.choices.values(), *tsub.choices.values()]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
