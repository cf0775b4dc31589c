"""`oms supply …`, `oms reservations …` and `oms transit …`: fulfillment's incoming supply (as a
merchandiser), checkout reservations (as an agent, on a shopper's behalf) and the carriers'
transit times delivery promises count (as a merchandiser). README "Omnichannel"."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth
from oms_platform.settings import Settings
from oms_tools.cli.common import as_json, enum_name, fo_status_name, table
from oms_tools.cli.orders import caller_token, service_channel
from services.fulfillment.domain.supply import SUPPLY_KINDS, SUPPLY_STATUSES


def fulfillment_parsers(sub: Any) -> None:
    """`oms supply list|create|update|cancel|receive`, `oms reservations reserve|show|release`
    and `oms transit list|set|delete`."""
    supply = sub.add_parser("supply", help="incoming supply: purchase orders, notices, pre-orders")
    ssub = supply.add_subparsers(dest="supply_command", required=True)
    listing = ssub.add_parser("list", help="supply, earliest expected first")
    listing.add_argument("--sku", default="")
    listing.add_argument("--location", default="")
    listing.add_argument("--status", action="append", default=[], choices=SUPPLY_STATUSES)
    listing.add_argument("--limit", type=int, default=100)
    create = ssub.add_parser("create", help="record units of a SKU expected at a location")
    create.add_argument("--kind", required=True, choices=SUPPLY_KINDS)
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


def _stub(settings: Settings, role: str) -> tuple[grpc.aio.Channel, Any]:
    channel = service_channel(settings, "fulfillment", caller_token(settings, role))
    return channel, fulfillment_pb2_grpc.FulfillmentServiceStub(channel)


# ---- supply --------------------------------------------------------------------------------


SUPPLY_COLUMNS = (
    "supply", "kind", "reference", "location", "sku", "expected", "qty", "received", "promised",
    "status",
)  # fmt: skip


def _supply_rows(supply: Sequence[Any]) -> str:
    return table(
        SUPPLY_COLUMNS,
        [
            (
                s.supply_id,
                enum_name(fpb.SupplyKind, s.kind, "SUPPLY_KIND_"),
                s.reference or "-",
                s.location_id,
                s.sku,
                s.expected_date,
                s.quantity,
                s.quantity_received,
                s.quantity_promised,
                enum_name(fpb.SupplyStatus, s.status, "SUPPLY_STATUS_"),
            )
            for s in supply
        ],
    )


def _fulfillment_order_rows(fos: Sequence[Any]) -> str:
    return table(
        ("fulfillment order", "order", "location", "status", "units"),
        [
            (
                fo.fulfillment_order_id,
                fo.order_id,
                fo.location_id,
                fo_status_name(fo.status),
                sum(line.quantity for line in fo.lines),
            )
            for fo in fos
        ],
    )


async def cmd_supply(settings: Settings, args: argparse.Namespace) -> int:
    """`oms supply …` as a merchandiser."""
    channel, stub = _stub(settings, auth.MERCHANDISER)
    command = args.supply_command
    response: Any
    async with channel:
        if command == "list":
            response = await stub.ListSupply(
                fpb.ListSupplyRequest(
                    sku=args.sku,
                    location_id=args.location,
                    statuses=[
                        fpb.SupplyStatus.Value(f"SUPPLY_STATUS_{s.upper()}") for s in args.status
                    ],
                    page_size=args.limit,
                ),
                timeout=10,
            )
        elif command == "create":
            response = await stub.CreateSupply(
                fpb.CreateSupplyRequest(
                    idempotency_key=args.key,
                    kind=fpb.SupplyKind.Value(f"SUPPLY_KIND_{args.kind.upper()}"),
                    reference=args.reference,
                    location_id=args.location,
                    sku=args.sku,
                    quantity=args.qty,
                    expected_date=args.expected,
                ),
                timeout=10,
            )
        elif command == "update":
            response = await stub.UpdateSupply(
                fpb.UpdateSupplyRequest(
                    supply_id=args.supply_id, quantity=args.qty, expected_date=args.expected
                ),
                timeout=10,
            )
        elif command == "cancel":
            response = await stub.CancelSupply(
                fpb.CancelSupplyRequest(supply_id=args.supply_id, reason=args.reason),
                timeout=10,
            )
        else:
            response = await stub.ReceiveSupply(
                fpb.ReceiveSupplyRequest(
                    idempotency_key=args.key, supply_id=args.supply_id, quantity=args.qty
                ),
                timeout=30,
            )
    if args.json:
        print(as_json(response))
    elif command == "list":
        print(_supply_rows(response.supply) if response.supply else "no supply found")
    else:
        supply = response.supply
        done = {"create": "recorded", "update": "changed", "cancel": "canceled"}
        if command == "receive":
            print(f"supply {supply.supply_id}: {args.qty} received")
        else:
            print(f"supply {supply.supply_id} {done[command]}")
        print(_supply_rows([supply]))
        if command == "receive":
            released = response.released
            if released:
                print(f"released {len(released)} backordered fulfillment order(s):")
                print(_fulfillment_order_rows(released))
            else:
                print("no backordered fulfillment order released")
    return 0


# ---- checkout reservations -----------------------------------------------------------------


def _cart_line(spec: str) -> fpb.CartLine:
    sku, _, quantity = spec.rpartition(",")
    try:
        units = int(quantity)
    except ValueError:
        raise SystemExit(f"error: --line {spec!r} is not SKU,QTY") from None
    if not sku:
        raise SystemExit(f"error: --line {spec!r} is not SKU,QTY")
    return fpb.CartLine(sku=sku, quantity=units)


def _print_reservation(r: Any) -> None:
    status = enum_name(fpb.ReservationStatus, r.status, "RESERVATION_STATUS_")
    expires = r.expires_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
    consumed = f", consumed by order {r.order_id}" if r.order_id else ""
    print(f"reservation {r.reservation_id} [{status}], expires {expires}{consumed}")
    rows = [
        (line.sku, line.quantity, held.location_id, held.quantity)
        for line in r.lines
        for held in line.held
    ]
    print(table(("sku", "qty", "held at", "held"), rows))


async def cmd_reservations(settings: Settings, args: argparse.Namespace) -> int:
    """`oms reservations …` as an agent, on a shopper's behalf."""
    channel, stub = _stub(settings, auth.AGENT)
    command = args.reservations_command
    response: Any
    async with channel:
        if command == "reserve":
            address = (
                common_pb2.PostalAddress(postal_code=args.postal_code, country_code=args.country)
                if args.postal_code
                else None
            )
            response = await stub.ReserveInventory(
                fpb.ReserveInventoryRequest(
                    lines=[_cart_line(spec) for spec in args.line],
                    location_group_id=args.group,
                    address=address,
                    ttl_seconds=args.ttl,
                    idempotency_key=args.key,
                ),
                timeout=10,
            )
        elif command == "show":
            response = await stub.GetReservation(
                fpb.GetReservationRequest(reservation_id=args.reservation_id), timeout=10
            )
        else:
            response = await stub.ReleaseReservation(
                fpb.ReleaseReservationRequest(reservation_id=args.reservation_id), timeout=10
            )
    if args.json:
        print(as_json(response))
    else:
        _print_reservation(response.reservation)
    return 0


# ---- transit times -------------------------------------------------------------------------


def _transit_rows(bands: Sequence[Any]) -> str:
    return table(
        ("method", "from km", "to km", "days"),
        [
            (
                b.delivery_method,
                b.from_km,
                b.to_km if b.HasField("to_km") else "-",
                b.transit_days,
            )
            for b in bands
        ],
    )


async def cmd_transit(settings: Settings, args: argparse.Namespace) -> int:
    """`oms transit …` as a merchandiser."""
    channel, stub = _stub(settings, auth.MERCHANDISER)
    command = args.transit_command
    response: Any
    async with channel:
        if command == "list":
            response = await stub.ListTransitTimes(
                fpb.ListTransitTimesRequest(delivery_method=args.method), timeout=10
            )
        elif command == "set":
            response = await stub.SetTransitTime(
                fpb.SetTransitTimeRequest(
                    delivery_method=args.delivery_method,
                    from_km=args.from_km,
                    transit_days=args.days,
                    new_method=args.new_method,
                ),
                timeout=10,
            )
        else:
            response = await stub.DeleteTransitTime(
                fpb.DeleteTransitTimeRequest(
                    delivery_method=args.delivery_method, from_km=args.from_km
                ),
                timeout=10,
            )
    if args.json:
        print(as_json(response))
        return 0
    method = args.method if command == "list" else args.delivery_method
    if command == "set":
        band = response.transit_time
        verb = "added" if response.added else "changed"
        print(
            f"{band.delivery_method}: band from {band.from_km:,} km {verb}, "
            f"{band.transit_days} business days"
        )
    elif command == "delete":
        if response.deleted:
            print(f"{method}: band from {args.from_km:,} km deleted")
        else:
            print(f"{method}: no band from {args.from_km:,} km, nothing deleted")
    bands = response.transit_times
    if bands:
        print(_transit_rows(bands))
    else:
        print(f"no transit times for {method}" if method else "no transit times")
    return 0
