"""`oms`: run the system, submit and follow orders, play the warehouse, benchmark.

Readable output for people; `--json` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import grpcutil
from oms_platform import logging as oms_logging
from oms_platform.money import format_minor
from oms_platform.settings import SERVICES, Settings

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
    from oms_platform.devstack.stack import run_dev

    await run_dev(settings)
    return 0


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform.service import serve_forever

    await serve_forever(args.service, settings)
    return 0


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform import temporal
    from workflows.worker import run_worker

    client = await _retry(lambda: temporal.connect(settings), "Temporal")
    await run_worker(settings, client)
    return 0


async def cmd_simulator(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform.devstack.simulator import Simulator

    simulator = Simulator(settings)
    task = asyncio.create_task(simulator.run())
    await _until_signal()
    task.cancel()
    await simulator.close()
    return 0


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform.service import migrate_all

    applied = await migrate_all(settings)
    for name, versions in applied.items():
        print(f"{name}: {', '.join(versions) if versions else 'up to date'}")
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


def _capture(settings: Settings) -> tuple[grpc.aio.Channel, Any]:
    channel = grpcutil.channel(settings.address_of("capture"))
    return channel, capture_pb2_grpc.CaptureServiceStub(channel)


async def cmd_order_submit(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform.samples import sample_order

    if not args.sample:
        print("only --sample is supported from the command line; use the gRPC API for more")
        return 2
    channel, stub = _capture(settings)
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
    channel, stub = _capture(settings)
    seen = 0
    status = None
    deadline = time.monotonic() + args.timeout
    async with channel:
        while True:
            view = await stub.GetOrder(
                capture_pb2.GetOrderRequest(order_id=args.order_id), timeout=10
            )
            for event in view.timeline[seen:]:
                if args.json:
                    print(json.dumps(MessageToDict(event, preserving_proto_field_name=True)))
                else:
                    print(f"{event.at.ToDatetime():%H:%M:%S}  {event.kind:<24} {event.summary}")
            seen = len(view.timeline)
            if view.order.status != status:
                status = view.order.status
                if not args.json:
                    print(f"          status → {_status_name(status)}")
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


async def cmd_fo(settings: Settings, args: argparse.Namespace) -> int:
    async with grpcutil.channel(settings.address_of("fulfillment")) as channel:
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


# ---- benchmarks ----------------------------------------------------------------------------


async def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform import bench

    return await bench.run(args)


# ---- wiring --------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="oms", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    sub.add_parser("dev", help="run the whole system on embedded defaults (what `make dev` runs)")
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    sub.add_parser("worker", help="run the order workflow worker")
    sub.add_parser("simulator", help="run the warehouse-and-carrier simulator")
    sub.add_parser("migrate", help="apply every service's migrations")

    order = sub.add_parser("order", help="submit, show, watch and list orders")
    osub = order.add_subparsers(dest="order_command", required=True)
    submit = osub.add_parser("submit", help="submit an order")
    submit.add_argument("--sample", action="store_true", help="a two-line sample order")
    submit.add_argument(
        "--channel", default="web", choices=["web", "marketplace", "store", "b2b", "agent"]
    )
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

    fo = sub.add_parser("fo", help="play the warehouse: fulfillment orders and shipments")
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

    bench_parser = sub.add_parser("bench", help="benchmarks (start their own stack)")
    from oms_platform import bench

    bench.add_arguments(bench_parser)

    for p in [top, *sub.choices.values(), *osub.choices.values(), *fsub.choices.values()]:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    return top


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "dev": cmd_dev,
    "serve": cmd_serve,
    "worker": cmd_worker,
    "simulator": cmd_simulator,
    "migrate": cmd_migrate,
    "fo": cmd_fo,
    "bench": cmd_bench,
    "order:submit": cmd_order_submit,
    "order:show": cmd_order_show,
    "order:watch": cmd_order_watch,
    "order:list": cmd_order_list,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    settings = Settings.from_env()
    name = args.command
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
