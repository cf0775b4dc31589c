"""`oms supply …`, `oms reservations …` and `oms transit …`: fulfillment's incoming supply (as a
merchandiser), checkout reservations (as an agent, on a shopper's behalf) and the carriers'
transit times delivery promises count (as a merchandiser). README "Omnichannel"."""

from __future__ import annotations

import argparse
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
