"""`oms order submit|show|watch|list|late` and `oms fo …`: orders, and the warehouse by hand."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth, grpcutil
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from oms_tools.cli.common import as_json, fo_status_name, money_text, status_name

# An order in one of these will not change by itself any more: `watch` stops there.
SETTLED = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}


# ---- orders --------------------------------------------------------------------------------


def caller_token(
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


def service_channel(settings: Settings, service: str, token: auth.TokenSource) -> grpc.aio.Channel:
    """A channel to `service` (TLS when the settings say so) whose calls carry `token`."""
    return grpcutil.channel(
        settings.address_of(service), token, tls=TLSConfig.from_settings(settings)
    )


def capture_stub(settings: Settings, role: str = auth.AGENT) -> tuple[grpc.aio.Channel, Any]:
    channel = service_channel(settings, "capture", caller_token(settings, role))
    return channel, capture_pb2_grpc.CaptureServiceStub(channel)


async def cmd_order_submit(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.samples import sample_order

    if not args.sample:
        print("only --sample is supported from the command line; use the gRPC API for more")
        return 2
    channel = service_channel(
        settings, "capture", caller_token(settings, auth.STOREFRONT, channels=(args.channel,))
    )
    stub = capture_pb2_grpc.CaptureServiceStub(channel)
    async with channel:
        request = sample_order(channel=args.channel, token=args.token, email=args.email)
        response = await stub.SubmitOrder(request, timeout=10)
    if args.json:
        print(as_json(response))
    else:
        order = response.order
        print(f"order {order.order_id} captured ({status_name(order.status)})")
        print(f"  total {money_text(order.totals.grand_total)}, {len(order.lines)} lines")
        print(f"  follow it: oms order watch {order.order_id}")
    return 0


def _print_order(view: capture_pb2.GetOrderResponse) -> None:
    order = view.order
    print(f"order {order.order_id}  [{status_name(order.status)}]")
    print(
        f"  channel {capture_pb2.Channel.Name(order.channel).removeprefix('CHANNEL_').lower()}"
        f" ref {order.channel_order_ref}; shopper {order.shopper.email or order.shopper.shopper_id}"
    )
    totals = order.totals
    print(
        f"  subtotal {money_text(totals.subtotal)}  discounts {money_text(totals.discounts)}  "
        f"tax {money_text(totals.tax)}  shipping {money_text(totals.shipping)}  "
        f"total {money_text(totals.grand_total)}"
    )
    print("  lines:")
    for line in order.lines:
        q = line.quantities
        print(
            f"    {line.sku:<14} x{line.quantity}  total {money_text(line.total)}  "
            f"ordered {q.ordered} allocated {q.allocated} fulfilled {q.fulfilled} "
            f"canceled {q.canceled}"
        )
    if view.fulfillment_orders:
        print("  fulfillment orders:")
    for fo in view.fulfillment_orders:
        print(f"    {fo.fulfillment_order_id}  {fo.location_id}  [{fo_status_name(fo.status)}]")
        for shipment in fo.shipments:
            delivered = "delivered" if shipment.HasField("delivered_at") else "in transit"
            print(
                f"      shipment {shipment.shipment_id} {shipment.carrier} "
                f"{shipment.tracking_number} ({delivered})"
            )
    if view.HasField("payment_summary"):
        p = view.payment_summary
        print(
            f"  payments: authorized {money_text(p.authorized)}  "
            f"captured {money_text(p.captured)}  "
            f"refunded {money_text(p.refunded)}  invoiced {money_text(p.invoiced)}  "
            f"balance due {money_text(p.balance_due)}"
        )
    for invoice in view.invoices:
        print(
            f"    invoice {invoice.invoice_id}  total {money_text(invoice.total)}  "
            f"captured {money_text(invoice.captured)}"
        )
    for pe in view.process_exceptions:
        print(f"  process exception {pe.process_exception_id}: {pe.message}")
    print("  timeline:")
    for event in view.timeline:
        print(f"    {event.at.ToDatetime():%Y-%m-%d %H:%M:%S}  {event.kind:<24} {event.summary}")
    if view.missing_sections:
        print(f"  (not available right now: {', '.join(view.missing_sections)})")


async def cmd_order_show(settings: Settings, args: argparse.Namespace) -> int:
    channel, stub = capture_stub(settings)
    async with channel:
        view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=args.order_id), timeout=10)
    print(as_json(view)) if args.json else _print_order(view)
    return 0


async def cmd_order_watch(settings: Settings, args: argparse.Namespace) -> int:
    """Follow an order through WatchOrder until it settles; reconnect if the stream breaks."""
    channel, stub = capture_stub(settings)
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
                            print(f"          status → {status_name(status)}", flush=True)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    print(f"still {status_name(status)} after {args.timeout}s", file=sys.stderr)
                    return 1
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
                # capture restarting: follow again after a pause, from a fresh snapshot.
                await asyncio.sleep(args.interval)
                continue
            if status in SETTLED:
                return 0
            if time.monotonic() > deadline:
                print(f"still {status_name(status)} after {args.timeout}s", file=sys.stderr)
                return 1
            await asyncio.sleep(args.interval)


async def cmd_order_list(settings: Settings, args: argparse.Namespace) -> int:
    await _print_orders(
        settings,
        args,
        capture_pb2.ListOrdersRequest(page_size=args.limit),
        lambda order: (
            f"{order.order_id}  {status_name(order.status):<18} "
            f"{money_text(order.totals.grand_total):>14}  "
            f"{order.created_at.ToDatetime():%Y-%m-%d %H:%M}"
        ),
    )
    return 0


async def cmd_order_late(settings: Settings, args: argparse.Namespace) -> int:
    """Late orders, newest first, and how many there are in all."""
    page = await _print_orders(
        settings,
        args,
        capture_pb2.ListOrdersRequest(late=True, as_of=args.as_of, page_size=args.limit),
        lambda order: (
            f"{order.order_id}  {status_name(order.status):<18} "
            f"promised {order.promised_delivery_date}  "
            f"ordered {order.created_at.ToDatetime():%Y-%m-%d %H:%M}"
        ),
    )
    if page is not None:
        shown = f" ({len(page.orders)} shown)" if len(page.orders) < page.late_count else ""
        print(f"{page.late_count} late order(s){shown}")
    return 0


async def _print_orders(
    settings: Settings,
    args: argparse.Namespace,
    request: capture_pb2.ListOrdersRequest,
    line: Callable[[capture_pb2.Order], str],
) -> capture_pb2.ListOrdersResponse | None:
    """One ListOrders page, printed whole as JSON with `--json` (then None), otherwise one
    `line` per order (then the page, for what the caller adds under it)."""
    channel, stub = capture_stub(settings)
    async with channel:
        page: capture_pb2.ListOrdersResponse = await stub.ListOrders(request, timeout=10)
    if args.json:
        print(as_json(page))
        return None
    for order in page.orders:
        print(line(order))
    return page


# ---- the warehouse, by hand ----------------------------------------------------------------


async def _warehouse(settings: Settings, locations: list[str]) -> auth.TokenSource:
    """The warehouse the CLI plays: the given locations, or every location oms knows."""
    if locations or os.environ.get("OMS_TOKEN", "").strip():
        return caller_token(settings, auth.WAREHOUSE, locations=tuple(locations))
    async with service_channel(
        settings, "fulfillment", caller_token(settings, auth.WAREHOUSE)
    ) as channel:
        found = await fulfillment_pb2_grpc.FulfillmentServiceStub(channel).ListLocations(
            fpb.ListLocationsRequest(), timeout=10
        )
    every = tuple(loc.location_id for loc in found.locations)
    return caller_token(settings, auth.WAREHOUSE, locations=every)


async def cmd_fo(settings: Settings, args: argparse.Namespace) -> int:
    token = await _warehouse(settings, args.location)
    async with service_channel(settings, "fulfillment", token) as channel:
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
                        f"[{fo_status_name(fo.status)}]"
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
        print(as_json(result))
    elif args.fo_command == "ship":
        print(
            f"shipment {result.shipment.shipment_id} ({args.carrier} {args.tracking}); "
            f"fulfillment order {fo_status_name(result.fulfillment_order.status)}"
        )
    elif args.fo_command == "deliver":
        print(f"shipment {result.shipment.shipment_id} delivered")
    else:
        fo = result.fulfillment_order
        print(f"fulfillment order {fo.fulfillment_order_id} is {fo_status_name(fo.status)}")
    return 0
