"""Fulfillment domain, ship-to-store: a store that accepts it has pickup orders it has not got
the units for shipped to it from a warehouse. The setting's rules, and the transfer: the
warehouse ships the fulfillment order to the store (not the shopper's delivery), the store
receives it and sets it aside; from there it is a pickup like any other (`pickup`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation
from services.fulfillment.domain.common import ShipToStore
from services.fulfillment.domain.fulfillment_orders import (
    IN_TRANSIT_TO_STORE,
    FulfillmentOrder,
    refuse,
)
from services.fulfillment.domain.inventory import Location
from services.fulfillment.domain.pickup import READYABLE


def with_ship_to_store(
    location: Location, setting: ShipToStore | None, stored: Location | None
) -> Location:
    """`location` with the ship-to-store `setting` an upsert names (None: it leaves it out,
    and the stored one is kept; a new location's default accepts none)."""
    if setting is None:
        setting = stored.ship_to_store if stored is not None else ShipToStore()
    return replace(location, ship_to_store=setting)


def ship_to_store_violations(
    location: Location, location_types: Mapping[str, str]
) -> list[FieldViolation]:
    """Why a location's ship-to-store setting cannot be kept: only a store accepts it, and
    only from known warehouses (`location_types`: every location's type by id)."""
    path = "location.ship_to_store"
    setting = location.ship_to_store
    out: list[FieldViolation] = []
    if setting.accepted and location.type != "store":
        out.append(
            FieldViolation(
                f"{path}.accepted", f"only a store accepts ship-to-store; this is a {location.type}"
            )
        )
    if setting.from_location_ids and not setting.accepted:
        out.append(
            FieldViolation(f"{path}.from_location_ids", "needs accepted: true (or leave it empty)")
        )
    seen: set[str] = set()
    for i, location_id in enumerate(setting.from_location_ids):
        at = f"{path}.from_location_ids[{i}]"
        found = location_types.get(location_id)
        if location_id in seen:
            out.append(FieldViolation(at, "is repeated"))
        elif found is None:
            out.append(FieldViolation(at, f"unknown location {limits.echo(location_id)}"))
        elif found != "warehouse":
            out.append(FieldViolation(at, f"{location_id} is a {found}, not a warehouse"))
        seen.add(location_id)
    return out


def must_ship_to_store(fo: FulfillmentOrder) -> bool:
    """Whether the warehouse reporting the transfer to the store changes the fulfillment order
    (False: it is in transit already); refused for one the store fills itself or that is not
    a pickup, and once it is past the warehouse's steps."""
    if not fo.ships_to_store:
        raise FailedPrecondition(
            f"fulfillment order {fo.fulfillment_order_id} is not shipped to a store "
            "(ship-to-store is for a pickup its store has not got the units for)"
        )
    if fo.status == IN_TRANSIT_TO_STORE:
        return False
    if fo.status not in READYABLE:
        raise refuse(fo, f"ship it to store {fo.pickup_location_id}")
    return True


def transfer_note(fo: FulfillmentOrder) -> str:
    """What the order's log says of a transfer that left: where to, and how."""
    how = ", ".join(x for x in (fo.transfer_carrier, fo.transfer_tracking_number) if x)
    by = f" ({how})" if how else ""
    return f"shipped from {fo.location_id} to store {fo.pickup_location_id} for pickup{by}"


def receipt_reason(fo: FulfillmentOrder) -> str:
    """Why the store's on hand went up when it received a transfer (its adjustment's reason)."""
    return (
        f"ship-to-store: fulfillment order {fo.fulfillment_order_id} received from {fo.location_id}"
    )
