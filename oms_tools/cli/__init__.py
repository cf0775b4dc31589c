"""`oms`: run the system, submit and follow orders, play the warehouse, benchmark.

Readable output for people; `--json` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from oms_platform import auth, grpcutil, tracing
from oms_platform import logging as oms_logging
from oms_platform.loop import event_loop_factory
from oms_platform.settings import SERVICES, Settings
from oms_tools.cli.events import cmd_events, events_parsers
from oms_tools.cli.fulfillment import (
    cmd_reservations,
    cmd_supply,
    cmd_transit,
    fulfillment_parsers,
)
from oms_tools.cli.operations import cmd_bench, cmd_fuzz, cmd_outbox, cmd_token, outbox_parsers
from oms_tools.cli.orders import (
    cmd_fo,
    cmd_order_late,
    cmd_order_list,
    cmd_order_show,
    cmd_order_submit,
    cmd_order_watch,
)
from oms_tools.cli.postal import cmd_postal, postal_parsers
from oms_tools.cli.processes import (
    cmd_codec,
    cmd_codec_server,
    cmd_dev,
    cmd_health,
    cmd_keys,
    cmd_migrate,
    cmd_serve,
    cmd_simulator,
    cmd_temporal,
    cmd_worker,
)
from oms_tools.cli.servicing import (
    cmd_exception,
    cmd_order_change,
    cmd_order_changes,
    cmd_return,
    servicing_parsers,
)
from oms_tools.cli.subscriptions import cmd_plan, cmd_subscription, subscription_parsers
from oms_tools.cli.webhooks import cmd_webhook, webhook_parsers
from services.fulfillment.domain.fulfillment_orders import FULFILLMENT_ORDER_STATUSES


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="oms", description=__doc__)
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
    submit.add_argument("--channel", default="web", choices=auth.ALL_CHANNELS)
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
    fl.add_argument(
        "--status",
        action="append",
        default=[],
        choices=FULFILLMENT_ORDER_STATUSES,
    )
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
    issue.add_argument("--role", required=True, choices=sorted(auth.EXTERNAL_ROLES))
    issue.add_argument("--subject", default="", help="who (default: <role>@dev)")
    issue.add_argument(
        "--location", action="append", default=[], help="a warehouse's location (repeatable)"
    )
    issue.add_argument(
        "--channel",
        action="append",
        default=[],
        choices=auth.ALL_CHANNELS,
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
    from oms_tools.bench import command as bench

    bench.add_arguments(bench_parser)

    for p in [
        top,
        # An alias names its parser twice: each gets the option once.
        *dict.fromkeys(sub.choices.values()),
        *osub.choices.values(),
        *fsub.choices.values(),
    ]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    return top


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "dev": cmd_dev,
    "serve": cmd_serve,
    "worker": cmd_worker,
    "simulator": cmd_simulator,
    "migrate": cmd_migrate,
    "codec-server": cmd_codec_server,
    "codec": cmd_codec,
    "keys": cmd_keys,
    "health": cmd_health,
    "temporal": cmd_temporal,
    "fo": cmd_fo,
    "bench": cmd_bench,
    "fuzz": cmd_fuzz,
    "order:submit": cmd_order_submit,
    "order:show": cmd_order_show,
    "order:watch": cmd_order_watch,
    "order:list": cmd_order_list,
    "order:late": cmd_order_late,
    "order:cancel": cmd_order_change,
    "order:return": cmd_order_change,
    "order:exchange": cmd_order_change,
    "order:reship": cmd_order_change,
    "order:appease": cmd_order_change,
    "order:add-items": cmd_order_change,
    "order:change-address": cmd_order_change,
    "order:changes": cmd_order_changes,
    "return": cmd_return,
    "exception": cmd_exception,
    "outbox": cmd_outbox,
    "webhook": cmd_webhook,
    "token": cmd_token,
    "events": cmd_events,
    "plan": cmd_plan,
    "subscription": cmd_subscription,
    "postal": cmd_postal,
    "supply": cmd_supply,
    "reservations": cmd_reservations,
    "transit": cmd_transit,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    settings = Settings.from_env()
    name = args.command
    if name not in ("dev", "serve", "bench"):
        # A caller of the dev stack on this data_dir finds its certificates when it runs TLS.
        from oms_tools.devstack import replicas
        from oms_tools.devstack.certs import dev_client_settings

        settings = replicas.dev_client_settings(dev_client_settings(settings))
    service = args.service if name == "serve" else name
    oms_logging.configure(settings.log_level, settings.log_format, service=service)
    key = f"order:{args.order_command}" if name in ("order", "orders") else name
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
            return runner.run(COMMANDS[key](settings, args))
    except grpc.aio.AioRpcError as error:
        detail = error.details()
        violations = grpcutil.field_violations(error)
        print(f"error: {error.code().name}: {detail}", file=sys.stderr)
        for field, description in violations:
            print(f"  {field}: {description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """The `oms` console script: `main`, then exit at once with its status. Everything the
    command opened is closed by then; skipping interpreter teardown avoids a crash seen there
    when the Temporal SDK's native threads outlive the event loop (an abort, exit -6, after
    the command had succeeded)."""
    code = main()
    # Spans still batched would die with the process (os._exit runs no atexit hook).
    tracing.reset()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code or 0)
