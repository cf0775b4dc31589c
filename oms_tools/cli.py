"""`oms`: run the system, submit and follow orders, play the warehouse, benchmark.

Readable output for people; `--json` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth, grpcutil, tracing
from oms_platform import logging as oms_logging
from oms_platform.money import format_minor
from oms_platform.settings import SERVICES, Settings
from oms_platform.tls import TLSConfig
from workflows.types import order_id_of_workflow

SETTLED = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}


def _status_name(value: Any) -> str:
    return capture_pb2.OrderStatus.Name(value).removeprefix("ORDER_STATUS_").lower()


def _fo_status(value: Any) -> str:
    return fpb.FulfillmentOrderStatus.Name(value).removeprefix("FULFILLMENT_ORDER_STATUS_").lower()


def _as_json(message: Any) -> str:
    return json.dumps(
        MessageToDict(message, preserving_proto_field_name=True), indent=2, sort_keys=True
    )


def _money(m: Any) -> str:
    return format_minor(m.amount_minor, m.currency) if m.currency else "-"


# ---- processes -----------------------------------------------------------------------------


async def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from oms_tools.devstack.stack import run_dev

    replicas = settings.dev_replicas if args.replicas is None else args.replicas
    if replicas < 1:
        print("error: --replicas (OMS_DEV_REPLICAS) is at least 1", file=sys.stderr)
        return 2
    await run_dev(replace(settings, dev_tls=settings.dev_tls or args.tls, dev_replicas=replicas))
    return 0


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform import tracing
    from oms_tools.registry import serve_forever

    tracing.configure(args.service, order_of_workflow=order_id_of_workflow)

    await serve_forever(args.service, settings)
    return 0


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform import metrics, temporal, tracing
    from workflows.worker import run_worker

    tracing.configure("worker", order_of_workflow=order_id_of_workflow)
    runtime = None
    if settings.metrics_port:
        runtime = metrics.temporal_runtime(metrics.loopback_port())
        metrics.serve(settings.metrics_port, settings.metrics_host)
    client = await _retry(lambda: temporal.connect(settings, runtime=runtime), "Temporal")
    try:
        await run_worker(settings, client)
    finally:
        await temporal.close(client)
    return 0


async def cmd_codec_server(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform.codec_server import serve_forever

    await serve_forever(settings)
    return 0


async def cmd_codec(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform import codec, temporal

    if args.codec_command == "new-key":
        # Printed, not written: the operator puts it first in every process's keys file.
        print(codec.new_key_line(args.id or None))
        return 0
    payload_codec = await temporal.open_codec(settings, cache=False)
    assert payload_codec.vault is not None
    try:
        done = await payload_codec.vault.rewrap()
    finally:
        await payload_codec.vault.close()
    print(f"{done} data keys re-wrapped under master key {payload_codec.keys.active_id}")
    return 0


async def cmd_simulator(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.devstack.simulator import Simulator

    # The warehouse's calls (accept … ship, deliver) root the traces of those events.
    tracing.configure("simulator", order_of_workflow=order_id_of_workflow)
    simulator = Simulator(settings)
    task = asyncio.create_task(simulator.run())
    await _until_signal()
    task.cancel()
    await simulator.close()
    return 0


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.registry import migrate_all

    applied = await migrate_all(settings)
    for name, versions in applied.items():
        print(f"{name}: {', '.join(versions) if versions else 'up to date'}")
    return 0


# What `oms keys init` writes, and the setting that points a process at each file.
KEY_FILES = {
    "issuer.pem": "the dev issuer's signing key: OMS_AUTH_SIGNING_KEY_FILE",
    "jwks.json": "its public key, callers' tokens are verified with: OMS_AUTH_JWKS",
    "internal.secret": "oms processes sign service tokens with it: OMS_INTERNAL_SECRET_FILE",
    "codec.keys": "Temporal payload master keys: OMS_CODEC_KEYS_FILE",
}


async def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """`oms keys init`: the keys a single-host deployment needs, made once and then kept."""
    from pathlib import Path

    from oms_platform import codec

    directory = Path(args.dir) if args.dir else settings.keys_dir
    present = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    # Never replaced: a new codec key would leave every sealed payload unreadable, a new
    # signing key or secret every issued token invalid.
    auth.ensure_dev_keys(directory)
    codec.ensure_keys_file(directory / "codec.keys")
    for name, what in KEY_FILES.items():
        print(f"{directory / name}  {'kept' if name in present else 'created'}  ({what})")
    return 0


async def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """`oms health SERVICE`: exit 0 when the service answers SERVING (container health checks;
    Kubernetes probes gRPC health itself)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = args.address or f"127.0.0.1:{settings.port_of(args.service)}"
    # No token: health checks answer anyone.
    async with grpcutil.channel(address, tls=TLSConfig.from_settings(settings)) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as error:
            print(f"{args.service} at {address}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{args.service} at {address}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


async def cmd_temporal(settings: Settings, args: argparse.Namespace) -> int:
    """`oms temporal search-attributes`: register what the order workflow indexes."""
    from oms_platform import temporal
    from oms_tools.devstack.temporal_server import SEARCH_ATTRIBUTES

    added = await _retry(
        lambda: temporal.register_search_attributes(settings, SEARCH_ATTRIBUTES), "Temporal"
    )
    for name, kind in sorted(SEARCH_ATTRIBUTES.items()):
        print(f"{name} ({kind}): {'added' if name in added else 'already there'}")
    return 0


async def _until_signal() -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _retry(connect: Callable[[], Coroutine[Any, Any, Any]], what: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await connect()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# ---- orders --------------------------------------------------------------------------------


def _caller(
    settings: Settings,
    role: str,
    *,
    channels: tuple[str, ...] = (),
    locations: tuple[str, ...] = (),
) -> auth.TokenSource:
    """The token the CLI presents: `OMS_TOKEN` when set (one from your identity provider or
    `oms token issue`), otherwise one signed with the dev stack's key for the persona the
    command acts as (storefront submits, agents service, warehouses ship)."""
    explicit = os.environ.get("OMS_TOKEN", "").strip()
    if explicit:
        return auth.static_token(explicit)
    subject = os.environ.get("OMS_CLI_SUBJECT") or f"{getpass.getuser()}@cli"
    return auth.dev_caller(
        settings, subject, role, channels=channels, locations=locations, ttl_seconds=900
    )


def _channel(settings: Settings, service: str, token: auth.TokenSource) -> grpc.aio.Channel:
    """A channel to `service` (TLS when the settings say so) whose calls carry `token`."""
    return grpcutil.channel(
        settings.address_of(service), token, tls=TLSConfig.from_settings(settings)
    )


def _capture(settings: Settings, role: str = auth.AGENT) -> tuple[grpc.aio.Channel, Any]:
    channel = _channel(settings, "capture", _caller(settings, role))
    return channel, capture_pb2_grpc.CaptureServiceStub(channel)


async def cmd_order_submit(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.samples import sample_order

    if not args.sample:
        print("only --sample is supported from the command line; use the gRPC API for more")
        return 2
    channel = _channel(
        settings, "capture", _caller(settings, auth.STOREFRONT, channels=(args.channel,))
    )
    stub = capture_pb2_grpc.CaptureServiceStub(channel)
    async with channel:
        request = sample_order(channel=args.channel, token=args.token, email=args.email)
        response = await stub.SubmitOrder(request, timeout=10)
    if args.json:
        print(_as_json(response))
    else:
        order = response.order
        print(f"order {order.order_id} captured ({_status_name(order.status)})")
        print(f"  total {_money(order.totals.grand_total)}, {len(order.lines)} lines")
        print(f"  follow it: oms order watch {order.order_id}")
    return 0


def _print_order(view: capture_pb2.GetOrderResponse) -> None:
    order = view.order
    print(f"order {order.order_id}  [{_status_name(order.status)}]")
    print(
        f"  channel {capture_pb2.Channel.Name(order.channel).removeprefix('CHANNEL_').lower()}"
        f" ref {order.channel_order_ref}; shopper {order.shopper.email or order.shopper.shopper_id}"
    )
    totals = order.totals
    print(
        f"  subtotal {_money(totals.subtotal)}  discounts {_money(totals.discounts)}  "
        f"tax {_money(totals.tax)}  shipping {_money(totals.shipping)}  "
        f"total {_money(totals.grand_total)}"
    )
    print("  lines:")
    for line in order.lines:
        q = line.quantities
        print(
            f"    {line.sku:<14} x{line.quantity}  total {_money(line.total)}  "
            f"ordered {q.ordered} allocated {q.allocated} fulfilled {q.fulfilled} "
            f"canceled {q.canceled}"
        )
    if view.fulfillment_orders:
        print("  fulfillment orders:")
    for fo in view.fulfillment_orders:
        print(f"    {fo.fulfillment_order_id}  {fo.location_id}  [{_fo_status(fo.status)}]")
        for shipment in fo.shipments:
            delivered = "delivered" if shipment.HasField("delivered_at") else "in transit"
            print(
                f"      shipment {shipment.shipment_id} {shipment.carrier} "
                f"{shipment.tracking_number} ({delivered})"
            )
    if view.HasField("payment_summary"):
        p = view.payment_summary
        print(
            f"  payments: authorized {_money(p.authorized)}  captured {_money(p.captured)}  "
            f"refunded {_money(p.refunded)}  invoiced {_money(p.invoiced)}  "
            f"balance due {_money(p.balance_due)}"
        )
    for invoice in view.invoices:
        print(
            f"    invoice {invoice.invoice_id}  total {_money(invoice.total)}  "
            f"captured {_money(invoice.captured)}"
        )
    for pe in view.process_exceptions:
        print(f"  process exception {pe.process_exception_id}: {pe.message}")
    print("  timeline:")
    for event in view.timeline:
        print(f"    {event.at.ToDatetime():%Y-%m-%d %H:%M:%S}  {event.kind:<24} {event.summary}")
    if view.missing_sections:
        print(f"  (not available right now: {', '.join(view.missing_sections)})")


async def cmd_order_show(settings: Settings, args: argparse.Namespace) -> int:
    channel, stub = _capture(settings)
    async with channel:
        view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=args.order_id), timeout=10)
    print(_as_json(view)) if args.json else _print_order(view)
    return 0


async def cmd_order_watch(settings: Settings, args: argparse.Namespace) -> int:
    """Follow an order through WatchOrder until it settles; reconnect if the stream breaks."""
    channel, stub = _capture(settings)
    printed = 0  # timeline events shown so far (a reconnect's snapshot repeats them)
    status = None
    deadline = time.monotonic() + args.timeout
    async with channel:
        while True:
            call = stub.WatchOrder(
                capture_pb2.WatchOrderRequest(order_id=args.order_id),
                timeout=max(0.1, deadline - time.monotonic()),
            )
            seen = 0
            try:
                async for update in call:
                    for event in update.events:
                        seen += 1
                        if seen <= printed:
                            continue
                        printed = seen
                        if args.json:
                            print(
                                json.dumps(MessageToDict(event, preserving_proto_field_name=True)),
                                flush=True,
                            )
                        else:
                            print(
                                f"{event.at.ToDatetime():%H:%M:%S}  {event.kind:<24} "
                                f"{event.summary}",
                                flush=True,
                            )
                    if update.status != status:
                        status = update.status
                        if not args.json:
                            print(f"          status → {_status_name(status)}", flush=True)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    print(f"still {_status_name(status)} after {args.timeout}s", file=sys.stderr)
                    return 1
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
                # capture restarting: follow again after a pause, from a fresh snapshot.
                await asyncio.sleep(args.interval)
                continue
            if status in SETTLED:
                return 0
            if time.monotonic() > deadline:
                print(f"still {_status_name(status)} after {args.timeout}s", file=sys.stderr)
                return 1
            await asyncio.sleep(args.interval)


async def cmd_order_list(settings: Settings, args: argparse.Namespace) -> int:
    channel, stub = _capture(settings)
    async with channel:
        page = await stub.ListOrders(
            capture_pb2.ListOrdersRequest(page_size=args.limit), timeout=10
        )
    if args.json:
        print(_as_json(page))
        return 0
    for order in page.orders:
        print(
            f"{order.order_id}  {_status_name(order.status):<18} "
            f"{_money(order.totals.grand_total):>14}  "
            f"{order.created_at.ToDatetime():%Y-%m-%d %H:%M}"
        )
    return 0


# ---- the warehouse, by hand ----------------------------------------------------------------


async def _warehouse(settings: Settings, locations: list[str]) -> auth.TokenSource:
    """The warehouse the CLI plays: the given locations, or every location oms knows."""
    if locations or os.environ.get("OMS_TOKEN", "").strip():
        return _caller(settings, auth.WAREHOUSE, locations=tuple(locations))
    async with _channel(settings, "fulfillment", _caller(settings, auth.WAREHOUSE)) as channel:
        found = await fulfillment_pb2_grpc.FulfillmentServiceStub(channel).ListLocations(
            fpb.ListLocationsRequest(), timeout=10
        )
    every = tuple(loc.location_id for loc in found.locations)
    return _caller(settings, auth.WAREHOUSE, locations=every)


async def cmd_fo(settings: Settings, args: argparse.Namespace) -> int:
    token = await _warehouse(settings, args.location)
    async with _channel(settings, "fulfillment", token) as channel:
        stub = fulfillment_pb2_grpc.FulfillmentServiceStub(channel)
        fo_id = getattr(args, "fulfillment_order_id", "")
        result: Any
        if args.fo_command == "list":
            statuses = [
                fpb.FulfillmentOrderStatus.Value(f"FULFILLMENT_ORDER_STATUS_{s.upper()}")
                for s in args.status
            ]
            result = await stub.ListFulfillmentOrders(
                fpb.ListFulfillmentOrdersRequest(
                    order_id=args.order, statuses=statuses, page_size=args.limit
                ),
                timeout=10,
            )
            if not args.json:
                for fo in result.fulfillment_orders:
                    print(
                        f"{fo.fulfillment_order_id}  order {fo.order_id}  {fo.location_id:<14} "
                        f"[{_fo_status(fo.status)}]"
                    )
                return 0
        elif args.fo_command == "accept":
            result = await stub.AcceptFulfillmentOrder(
                fpb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id), timeout=10
            )
        elif args.fo_command == "pick":
            result = await stub.MarkFulfillmentOrderPicked(
                fpb.MarkFulfillmentOrderPickedRequest(fulfillment_order_id=fo_id), timeout=10
            )
        elif args.fo_command == "pack":
            result = await stub.MarkFulfillmentOrderPacked(
                fpb.MarkFulfillmentOrderPackedRequest(fulfillment_order_id=fo_id), timeout=10
            )
        elif args.fo_command == "ship":
            result = await stub.ConfirmShipment(
                fpb.ConfirmShipmentRequest(
                    fulfillment_order_id=fo_id,
                    idempotency_key=args.key or f"cli-ship:{fo_id}:{args.tracking}",
                    carrier=args.carrier,
                    service=args.service,
                    tracking_number=args.tracking,
                ),
                timeout=10,
            )
        else:  # deliver
            result = await stub.ConfirmDelivery(
                fpb.ConfirmDeliveryRequest(shipment_id=args.shipment_id), timeout=10
            )
    if args.json:
        print(_as_json(result))
    elif args.fo_command == "ship":
        print(
            f"shipment {result.shipment.shipment_id} ({args.carrier} {args.tracking}); "
            f"fulfillment order {_fo_status(result.fulfillment_order.status)}"
        )
    elif args.fo_command == "deliver":
        print(f"shipment {result.shipment.shipment_id} delivered")
    else:
        fo = result.fulfillment_order
        print(f"fulfillment order {fo.fulfillment_order_id} is {_fo_status(fo.status)}")
    return 0


# ---- servicing: changes, returns and process exceptions ------------------------------------


def _servicing(settings: Settings) -> tuple[grpc.aio.Channel, Any]:
    from oms.servicing.v1 import servicing_pb2_grpc

    channel = _channel(settings, "servicing", _caller(settings, auth.AGENT))
    return channel, servicing_pb2_grpc.ServicingServiceStub(channel)


async def _currency_of(settings: Settings, order_id: str) -> str:
    """The order's currency, for printing amounts; "" if capture cannot say right now."""
    channel, stub = _capture(settings)
    async with channel:
        try:
            view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=5)
        except grpc.aio.AioRpcError:
            return ""
    return str(view.order.currency)


def _amount(amount_minor: int, currency: str) -> str:
    return format_minor(amount_minor, currency) if currency else f"{amount_minor} (minor units)"


def _item_pairs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """--line/--qty pairs in the order given; --qty defaults to 1 for every line."""
    qty = args.qty or [1] * len(args.line)
    if len(qty) != len(args.line):
        raise SystemExit("error: give one --qty per --line (or none for 1 each)")
    return list(zip(args.line, qty, strict=True))


def _print_outcome(outcome: Any, currency: str, indent: str = "  ") -> None:
    print(f"{indent}{outcome.summary}")
    money = [
        (label, value)
        for label, value in (
            ("credited", outcome.credited_minor),
            ("refunded", outcome.refunded_minor),
            ("released", outcome.released_minor),
            ("charged", outcome.charged_minor),
            ("authorized", outcome.authorized_minor),
        )
        if value
    ]
    if money:
        print(indent + "  ".join(f"{label} {_amount(v, currency)}" for label, v in money))
    if outcome.credit_memo_id:
        print(f"{indent}credit memo {outcome.credit_memo_id}")
    if outcome.return_order_id:
        print(f"{indent}return order {outcome.return_order_id}")
    for fo_id in outcome.fulfillment_order_ids:
        print(f"{indent}new fulfillment order {fo_id}")
    if outcome.grand_total_minor:
        print(f"{indent}order total {_amount(outcome.grand_total_minor, currency)}")
    if outcome.order_status:
        print(f"{indent}order is {outcome.order_status}")


def _print_change(change: Any, currency: str) -> None:
    from oms.servicing.v1 import servicing_pb2 as spb

    kind = spb.ChangeKind.Name(change.kind).removeprefix("CHANGE_KIND_").lower()
    status = spb.ChangeStatus.Name(change.status).removeprefix("CHANGE_STATUS_").lower()
    print(f"{kind} {change.change_id} [{status}] by {change.actor}: {change.reason}")
    if change.HasField("outcome"):
        _print_outcome(change.outcome, currency)
    if change.refusal_message:
        print(f"  {change.refusal_code}: {change.refusal_message}")


# A change command's Submit RPC, and its Preview RPC with the fields a preview takes.
CHANGE_RPCS = {
    "cancel": ("SubmitCancel", "PreviewCancel", ("order_id", "lines")),
    "return": ("SubmitReturn", "PreviewReturn", ("order_id", "lines", "return_fee_minor")),
    "exchange": ("SubmitExchange", "PreviewExchange", ("order_id", "lines")),
    "reship": ("SubmitReship", "PreviewReship", ("order_id", "lines")),
    "appease": (
        "SubmitAppeasement",
        "PreviewAppeasement",
        ("order_id", "order_line_id", "amount_minor", "percent_basis_points"),
    ),
    "add-items": ("SubmitAddItems", "PreviewAddItems", ("order_id", "new_lines", "increases")),
}


def _change_request(args: argparse.Namespace) -> Any:
    """The Submit request of a change command."""
    from oms.servicing.v1 import servicing_pb2 as spb

    common = {"order_id": args.order_id, "idempotency_key": args.key}
    conditions = {c: spb.ItemCondition.Value(f"ITEM_CONDITION_{c.upper()}") for c in CONDITIONS}

    def items() -> list[Any]:  # only the commands with --line/--qty pairs have them
        return [spb.ItemQuantity(order_line_id=line, quantity=q) for line, q in _item_pairs(args)]

    if args.order_command == "cancel":
        return spb.SubmitCancelRequest(**common, reason=args.reason, lines=items())
    if args.order_command == "return":
        return spb.SubmitReturnRequest(
            **common,
            reason=args.reason,
            refund_without_return=args.no_return,
            return_fee_minor=args.fee,
            lines=[
                spb.ReturnItem(
                    order_line_id=line,
                    quantity=q,
                    reason=args.reason,
                    condition=conditions.get(args.condition, spb.ITEM_CONDITION_UNSPECIFIED),
                )
                for line, q in _item_pairs(args)
            ],
        )
    if args.order_command == "exchange":
        pairs = _item_pairs(args)
        if len(args.sku) != len(pairs) or len(args.price) != len(pairs):
            raise SystemExit("error: give one --sku and one --price per --line")
        return spb.SubmitExchangeRequest(
            **common,
            reason=args.reason,
            lines=[
                spb.ExchangeItem(
                    order_line_id=line,
                    quantity=q,
                    replacement_sku=sku,
                    replacement_unit_price_minor=price,
                )
                for (line, q), sku, price in zip(pairs, args.sku, args.price, strict=True)
            ],
        )
    if args.order_command == "reship":
        return spb.SubmitReshipRequest(
            **common,
            reason=spb.ReshipReason.Value(f"RESHIP_REASON_{args.reason.upper()}"),
            note=args.note,
            lines=items(),
        )
    if args.order_command == "add-items":
        new_lines, increases = _additions(args)
        return spb.SubmitAddItemsRequest(
            **common, reason=args.reason, new_lines=new_lines, increases=increases
        )
    request = spb.SubmitAppeasementRequest(
        **common, reason=args.reason, order_line_id=args.line or ""
    )
    if args.amount is not None:
        request.amount_minor = args.amount
    else:
        request.percent_basis_points = _basis_points(args.percent)
    return request


async def cmd_order_change(settings: Settings, args: argparse.Namespace) -> int:
    """cancel, return, exchange, reship, appease and add-items: one Submit each, answered with
    the result (or, with --preview, what it would do: nothing is recorded)."""
    from oms.servicing.v1 import servicing_pb2 as spb

    submit_rpc, preview_rpc, preview_fields = CHANGE_RPCS[args.order_command]
    request = _change_request(args)
    channel, stub = _servicing(settings)
    async with channel:
        if args.preview:
            preview_type = getattr(spb, f"{preview_rpc}Request")
            given = {f: getattr(request, f) for f in preview_fields if getattr(request, f)}
            response = await getattr(stub, preview_rpc)(preview_type(**given), timeout=args.timeout)
        else:
            response = await getattr(stub, submit_rpc)(request, timeout=args.timeout)
    currency = "" if args.json else await _currency_of(settings, args.order_id)
    if args.json:
        print(_as_json(response))
    elif args.preview:
        _print_outcome(response.preview, currency, indent="")
    else:
        _print_change(response.change, currency)
    return 0


def _basis_points(percent: str) -> int:
    """ "12.5" (percent) -> 1250 basis points, exactly (no floating point)."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(percent) * 100
    except InvalidOperation:
        raise SystemExit(f"error: --percent {percent!r} is not a number") from None
    if value != value.to_integral_value():
        raise SystemExit("error: --percent has at most two decimals")
    return int(value)


def _fields(spec: str, option: str, names: tuple[str, ...], required: int) -> list[str]:
    """A comma-separated option value, e.g. --new SKU,QTY,PRICE[,TAX]."""
    parts = [p.strip() for p in spec.split(",")]
    if not required <= len(parts) <= len(names) or not all(parts[:required]):
        raise SystemExit(f"error: {option} {spec!r}: give {','.join(names[:required])}[,...]")
    return parts + [""] * (len(names) - len(parts))


def _minor(value: str, option: str) -> int:
    try:
        return int(value or 0)
    except ValueError:
        raise SystemExit(f"error: {option}: {value!r} is not a whole number") from None


def _additions(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """add-items: the new lines (--new) and the more units of lines (--more) asked for."""
    from oms.servicing.v1 import servicing_pb2 as spb

    new_lines = []
    for spec in args.new:
        sku, qty, price, tax = _fields(spec, "--new", ("SKU", "QTY", "UNIT_PRICE", "TAX"), 3)
        new_lines.append(
            spb.NewLineItem(
                sku=sku,
                name=args.name,
                quantity=_minor(qty, "--new"),
                unit_price_minor=_minor(price, "--new"),
                tax_minor=_minor(tax, "--new"),
                delivery_group_id=args.group,
            )
        )
    increases = []
    for spec in args.more:
        line, qty, tax = _fields(spec, "--more", ("ORDER_LINE_ID", "QTY", "TAX"), 2)
        increases.append(
            spb.LineIncrease(
                order_line_id=line, quantity=_minor(qty, "--more"), tax_minor=_minor(tax, "--more")
            )
        )
    if not new_lines and not increases:
        raise SystemExit("error: give at least one --new or --more")
    return new_lines, increases


async def cmd_order_changes(settings: Settings, args: argparse.Namespace) -> int:
    from oms.servicing.v1 import servicing_pb2 as spb

    channel, stub = _servicing(settings)
    async with channel:
        response = await stub.ListChanges(
            spb.ListChangesRequest(order_id=args.order_id), timeout=10
        )
    if args.json:
        print(_as_json(response))
        return 0
    currency = await _currency_of(settings, args.order_id) if response.changes else ""
    for change in response.changes:
        _print_change(change, currency)
    return 0


async def cmd_return(settings: Settings, args: argparse.Namespace) -> int:
    """`oms return receive` and `oms return list`."""
    from oms.servicing.v1 import servicing_pb2 as spb

    channel, stub = _servicing(settings)
    async with channel:
        if args.return_command == "list":
            listing = await stub.ListReturnOrders(
                spb.ListReturnOrdersRequest(order_id=args.order_id), timeout=10
            )
            if args.json:
                print(_as_json(listing))
                return 0
            for rma in listing.return_orders:
                _print_return_order(rma)
            return 0
        condition = spb.ItemCondition.Value(f"ITEM_CONDITION_{args.condition.upper()}")
        pairs = _item_pairs(args)
        request = spb.ReceiveReturnRequest(
            return_order_id=args.return_order_id,
            order_id=args.order,
            idempotency_key=args.key,
            note=args.note,
        )
        if args.reject:
            request.rejected.extend(
                spb.RejectedItem(
                    order_line_id=line, quantity=q, reason=args.reason, condition=condition
                )
                for line, q in pairs
            )
        else:
            request.accepted.extend(
                spb.ReceivedItem(order_line_id=line, quantity=q, condition=condition)
                for line, q in pairs
            )
        response = await stub.ReceiveReturn(request, timeout=args.timeout)
    if args.json:
        print(_as_json(response))
        return 0
    _print_change(response.change, await _currency_of(settings, response.change.order_id))
    _print_return_order(response.return_order)
    return 0


def _print_return_order(rma: Any) -> None:
    from oms.servicing.v1 import servicing_pb2 as spb

    status = spb.ReturnOrderStatus.Name(rma.status).removeprefix("RETURN_ORDER_STATUS_").lower()
    print(f"return order {rma.return_order_id}  order {rma.order_id}  [{status}]  {rma.reason}")
    for line in rma.lines:
        condition = spb.ItemCondition.Name(line.condition).removeprefix("ITEM_CONDITION_")
        why = f": {line.rejection_reason}" if line.rejection_reason else ""
        print(
            f"  {line.order_line_id}  expected {line.quantity_expected}  received "
            f"{line.quantity_received} (accepted {line.quantity_accepted}, rejected "
            f"{line.quantity_rejected}{why})  {condition.lower()}"
        )


async def cmd_exception(settings: Settings, args: argparse.Namespace) -> int:
    """`oms exception list | resolve | set-status`."""
    from oms.servicing.v1 import servicing_pb2 as spb

    channel, stub = _servicing(settings)
    async with channel:
        if args.exception_command == "list":
            request = spb.ListProcessExceptionsRequest(
                order_id=args.order,
                statuses=[
                    spb.ProcessExceptionStatus.Value(f"PROCESS_EXCEPTION_STATUS_{s.upper()}")
                    for s in args.status
                ],
                categories=[
                    spb.ProcessExceptionCategory.Value(f"PROCESS_EXCEPTION_CATEGORY_{c.upper()}")
                    for c in args.category
                ],
                severities=[
                    spb.ProcessExceptionSeverity.Value(f"PROCESS_EXCEPTION_SEVERITY_{s.upper()}")
                    for s in args.severity
                ],
                page_size=args.limit,
            )
            if args.older_than:
                request.created_before.FromDatetime(datetime.now(UTC) - _duration(args.older_than))
            listing = await stub.ListProcessExceptions(request, timeout=10)
            if args.json:
                print(_as_json(listing))
                return 0
            for pe in listing.process_exceptions:
                _print_exception(pe)
            return 0
        if args.exception_command == "resolve":
            response = await stub.ResolveProcessException(
                spb.ResolveProcessExceptionRequest(
                    process_exception_id=args.process_exception_id,
                    action=spb.ResolutionAction.Value(f"RESOLUTION_ACTION_{args.action.upper()}"),
                    note=args.note,
                ),
                timeout=args.timeout,
            )
        else:  # set-status
            response = await stub.UpdateProcessExceptionStatus(
                spb.UpdateProcessExceptionStatusRequest(
                    process_exception_id=args.process_exception_id,
                    status=spb.ProcessExceptionStatus.Value(
                        f"PROCESS_EXCEPTION_STATUS_{args.to.upper()}"
                    ),
                    note=args.note,
                ),
                timeout=10,
            )
    if args.json:
        print(_as_json(response))
    else:
        _print_exception(response.process_exception)
    return 0


def _duration(text: str) -> timedelta:
    """ "90s", "15m", "4h", "2d" as a timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise SystemExit(f"error: {text!r} is not a duration like 90s, 15m, 4h or 2d")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


def _print_exception(pe: Any) -> None:
    from oms.servicing.v1 import servicing_pb2 as spb

    def name(enum: Any, value: int, prefix: str) -> str:
        return str(enum.Name(value)).removeprefix(prefix).lower()

    status = name(spb.ProcessExceptionStatus, pe.status, "PROCESS_EXCEPTION_STATUS_")
    category = name(spb.ProcessExceptionCategory, pe.category, "PROCESS_EXCEPTION_CATEGORY_")
    severity = name(spb.ProcessExceptionSeverity, pe.severity, "PROCESS_EXCEPTION_SEVERITY_")
    print(
        f"{pe.process_exception_id}  order {pe.order_id}  {category}/{severity}  [{status}]  "
        f"{pe.created_at.ToDatetime():%Y-%m-%d %H:%M}"
    )
    for line in pe.message.splitlines():
        print(f"  {line}")
    if pe.step_input:
        print(f"  step input: {pe.step_input}")
    if pe.status == spb.PROCESS_EXCEPTION_STATUS_RESOLVED:
        action = name(spb.ResolutionAction, pe.resolution_action, "RESOLUTION_ACTION_")
        print(
            f"  resolved by {pe.resolved_by}: {action}"
            + (f" ({pe.resolution_note})" if pe.resolution_note else "")
            + (f"; order is {pe.order_status}" if pe.order_status else "")
        )
    elif pe.note:
        print(f"  note by {pe.updated_by}: {pe.note}")


CONDITIONS = ("new", "opened", "used", "damaged", "defective")


def _servicing_parsers(sub: Any, osub: Any) -> None:
    """`oms order cancel|return|exchange|reship|appease|add-items|changes`, `oms return ...`,
    `oms exception ...`."""

    def change_args(p: argparse.ArgumentParser, *, lines: bool = True) -> None:
        p.add_argument("order_id")
        if lines:
            p.add_argument("--line", action="append", default=[], help="order line id")
            p.add_argument(
                "--qty", action="append", type=int, default=[], help="units (1 per --line)"
            )
        p.add_argument("--key", default=str(uuid.uuid4()), help="idempotency key (default: new)")
        p.add_argument("--timeout", type=float, default=60.0)
        p.add_argument(
            "--preview", action="store_true", help="say what it would do; record nothing"
        )

    cancel = osub.add_parser("cancel", help="cancel units not shipped (no --line: everything)")
    change_args(cancel)
    cancel.add_argument("--reason", required=True)
    ret = osub.add_parser("return", help="open a return order for delivered units")
    change_args(ret)
    ret.add_argument("--reason", required=True)
    ret.add_argument("--condition", choices=CONDITIONS, default=None)
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
    receive.add_argument("--condition", choices=CONDITIONS, default="unspecified")
    receive.add_argument("--note", default="")
    receive.add_argument("--key", default=str(uuid.uuid4()))
    receive.add_argument("--timeout", type=float, default=60.0)
    rsub.add_parser("list", help="an order's return orders").add_argument("order_id")

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
    for p in [*rsub.choices.values(), *esub.choices.values()]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")


# ---- outbox: dead letters ------------------------------------------------------------------

OUTBOX_OWNERS = ("capture", "fulfillment")


async def cmd_outbox(settings: Settings, args: argparse.Namespace) -> int:
    """`oms outbox dead-letters | redeliver ID | discard ID` (as an admin)."""
    from oms.outbox.v1 import outbox_pb2, outbox_pb2_grpc

    channel = _channel(settings, args.service, _caller(settings, auth.ADMIN))
    async with channel:
        stub = outbox_pb2_grpc.OutboxServiceStub(channel)
        if args.outbox_command == "dead-letters":
            listing = await stub.ListDeadLetters(
                outbox_pb2.ListDeadLettersRequest(
                    statuses=[
                        outbox_pb2.DeadLetterStatus.Value(f"DEAD_LETTER_STATUS_{s.upper()}")
                        for s in args.status
                    ],
                    page_size=args.limit,
                ),
                timeout=10,
            )
            if args.json:
                print(_as_json(listing))
            for letter in [] if args.json else listing.dead_letters:
                _print_dead_letter(letter)
            return 0
        if args.outbox_command == "redeliver":
            response: Any = await stub.RedeliverDeadLetter(
                outbox_pb2.RedeliverDeadLetterRequest(
                    dead_letter_id=args.dead_letter_id, note=args.note
                ),
                timeout=10,
            )
        else:
            response = await stub.DiscardDeadLetter(
                outbox_pb2.DiscardDeadLetterRequest(
                    dead_letter_id=args.dead_letter_id, note=args.note
                ),
                timeout=10,
            )
    if args.json:
        print(_as_json(response))
    else:
        _print_dead_letter(response.dead_letter)
    return 0


def _print_dead_letter(letter: Any) -> None:
    from oms.outbox.v1 import outbox_pb2

    status = outbox_pb2.DeadLetterStatus.Name(letter.status).removeprefix("DEAD_LETTER_STATUS_")
    print(
        f"{letter.dead_letter_id}  {letter.service}  {letter.kind} {letter.name} -> "
        f"{letter.workflow_id}  [{status.lower()}]  "
        f"{letter.dead_lettered_at.ToDatetime():%Y-%m-%d %H:%M}"
    )
    print(f"  {letter.error_kind} after {letter.attempts} attempts: {letter.error}")
    print(f"  payload {letter.payload_bytes} bytes; {letter.waiting} rows waiting behind it")
    if letter.settled_by:
        print(
            f"  {status.lower()} by {letter.settled_by}"
            + (f": {letter.note}" if letter.note else "")
        )


def _outbox_parsers(sub: Any) -> None:
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


# ---- benchmarks ----------------------------------------------------------------------------


async def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools import bench

    return await bench.run(args)


# ---- the protocol fuzzer ------------------------------------------------------------------


def _dev_tokens(settings: Settings, locations: list[str]) -> Callable[[str], str]:
    """A token per role from the dev stack's keys: external roles from its issuer (storefronts
    on every channel, warehouses at `locations`), internal ones from its internal secret."""
    sources: dict[str, auth.TokenSource] = {}
    for role in sorted(auth.ROLES):
        if role in auth.INTERNAL_ROLES:
            sources[role] = auth.ServiceIdentity.for_process(settings, "oms-fuzz", role)
        else:
            sources[role] = auth.dev_caller(
                settings,
                f"oms-fuzz-{role}",
                role,
                channels=auth.ALL_CHANNELS if role == auth.STOREFRONT else (),
                locations=locations if role == auth.WAREHOUSE else (),
            )
    return lambda role: sources[role]()


async def cmd_fuzz(settings: Settings, args: argparse.Namespace) -> int:
    """`oms fuzz`: hostile requests at every RPC of a running dev stack."""
    try:
        from oms_tools import fuzz
    except ImportError as missing:  # hypothesis is a development dependency
        print(f"oms fuzz needs the dev extras ({missing}): pip install -e '.[dev]'")
        return 2
    selected = fuzz.rpcs(args.service or None)
    addresses = {name: settings.address_of(name) for name in SERVICES}
    tls = TLSConfig.from_settings(settings)

    def say(text: str) -> None:
        if not args.json:  # --json prints the report alone
            print(text, flush=True)

    target = fuzz.Target(addresses, _dev_tokens(settings, []), tls=tls)
    try:
        if args.seed_orders:
            say(f"submitting {args.seed_orders} sample orders to fuzz with their ids")
            cards = ["tok_decline" if i == 2 else "tok_visa" for i in range(args.seed_orders)]
            ids = await fuzz.submit_samples(target, cards)
            await fuzz.wait_for(target, ids, fuzz.invoiced, args.seed_wait)
        known = await fuzz.harvest(target)
    finally:
        await target.close()
    # The warehouse plays every location found, so its calls get past the location check.
    target = fuzz.Target(addresses, _dev_tokens(settings, known.of("location_id")), tls=tls)
    say(
        f"fuzzing {len(selected)} RPCs for {args.minutes} min (seed {args.seed}) with "
        f"{len(known.every())} real ids; the stack's data gets hostile records"
    )
    try:
        report = await fuzz.run(
            target,
            known,
            selected,
            seed_value=args.seed,
            examples=args.examples,
            minutes=args.minutes,
            progress=say,
        )
    finally:
        await target.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.summary() + report.failure_lines()))
    return 1 if report.failures else 0


# ---- wiring --------------------------------------------------------------------------------


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

    order = sub.add_parser("order", help="submit, show, watch and list orders")
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
    _servicing_parsers(sub, osub)
    _outbox_parsers(sub)

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
        choices=["allocated", "accepted", "picked", "packed", "shipped", "rejected", "canceled"],
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
    from oms_tools import bench

    bench.add_arguments(bench_parser)

    for p in [top, *sub.choices.values(), *osub.choices.values(), *fsub.choices.values()]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    return top


async def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    """`oms token issue`: a development token from the dev stack's signing key."""
    channels = tuple(args.channel or (["web"] if args.role == auth.STOREFRONT else []))
    token = auth.TokenIssuer.from_settings(settings).issue(
        args.subject or f"{args.role}@dev",
        [args.role],
        locations=args.location,
        channels=channels,
        ttl_seconds=_duration(args.ttl).total_seconds(),
    )
    print(token)
    return 0


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
    "order:cancel": cmd_order_change,
    "order:return": cmd_order_change,
    "order:exchange": cmd_order_change,
    "order:reship": cmd_order_change,
    "order:appease": cmd_order_change,
    "order:add-items": cmd_order_change,
    "order:changes": cmd_order_changes,
    "return": cmd_return,
    "exception": cmd_exception,
    "outbox": cmd_outbox,
    "token": cmd_token,
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
    key = f"order:{args.order_command}" if name == "order" else name
    try:
        return asyncio.run(COMMANDS[key](settings, args))
    except grpc.aio.AioRpcError as error:
        detail = error.details()
        violations = grpcutil.field_violations(error)
        print(f"error: {error.code().name}: {detail}", file=sys.stderr)
        for field, description in violations:
            print(f"  {field}: {description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())


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
