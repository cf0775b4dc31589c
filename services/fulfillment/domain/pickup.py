"""Fulfillment domain, store pickup: a pickup fulfillment order is set aside at its store
(ready for pickup, with a deadline), then collected by the shopper, which counts as a shipment
delivered at once, or not collected in time and canceled."""

from __future__ import annotations

from oms_platform.errors import FailedPrecondition
from services.fulfillment.domain.fulfillment_orders import (
    ACCEPTED,
    ALLOCATED,
    CANCELED,
    IN_TRANSIT_TO_STORE,
    PACKED,
    PICKED,
    PICKED_UP,
    READY_FOR_PICKUP,
    FulfillmentOrder,
    FulfillmentOrderReduction,
    LineQuantity,
    ShipmentItem,
    ShipmentPlan,
    plan_line_change,
    refuse,
)

# The carrier a collection is recorded under; its tracking number is the store.
PICKUP_CARRIER = "pickup"

# Statuses a store may set a pickup fulfillment order aside from (it may skip reporting
# acceptance, picking and packing).
READYABLE = frozenset({ALLOCATED, ACCEPTED, PICKED, PACKED})


def _must_be_pickup(fo: FulfillmentOrder) -> None:
    if not fo.pickup_location_id:
        raise FailedPrecondition(
            f"fulfillment order {fo.fulfillment_order_id} is not collected at a store "
            "(its delivery method is not pickup)"
        )


def must_mark_ready(fo: FulfillmentOrder) -> bool:
    """Whether marking the fulfillment order ready for pickup changes it (False: it is
    already ready); refused for other delivery methods and for statuses past setting aside,
    and for a ship-to-store one until its transfer to the store has left the warehouse."""
    _must_be_pickup(fo)
    if fo.status == READY_FOR_PICKUP:
        return False
    if fo.ships_to_store:
        # Shipped to the store: marking it ready is the store receiving it.
        if fo.status != IN_TRANSIT_TO_STORE:
            raise refuse(
                fo,
                f"mark it ready for pickup: it has not been shipped to store "
                f"{fo.pickup_location_id} yet (ShipToStore)",
            )
        return True
    if fo.status not in READYABLE:
        raise refuse(fo, "mark it ready for pickup")
    return True


def ready_note(fo: FulfillmentOrder) -> str:
    """What the shopper is told with the ready event: where, and until when."""
    until = f" until {fo.pickup_deadline:%Y-%m-%d %H:%M} UTC" if fo.pickup_deadline else ""
    return f"ready for pickup at store {fo.pickup_location_id}{until}"


def plan_pickup(fo: FulfillmentOrder) -> ShipmentPlan:
    """The collection of a fulfillment order ready for pickup: every unit not shipped, as one
    parcel, leaving it picked up."""
    _must_be_pickup(fo)
    if fo.status != READY_FOR_PICKUP:
        raise refuse(fo, "confirm a pickup for it: it is not ready for pickup")
    items = tuple(
        ShipmentItem(line.order_line_id, line.remaining) for line in fo.lines if line.remaining > 0
    )
    if not items:
        raise refuse(fo, "confirm a pickup for it: nothing is left to collect")
    return ShipmentPlan(items, PICKED_UP)


def plan_not_collected(fo: FulfillmentOrder) -> FulfillmentOrderReduction:
    """Cancel every uncollected unit of a fulfillment order whose pickup deadline passed."""
    units = [
        LineQuantity(line.order_line_id, line.remaining) for line in fo.lines if line.remaining > 0
    ]
    return plan_line_change(fo, CANCELED, units)


def not_collected_reason(fo: FulfillmentOrder) -> str:
    """Why the fulfillment order was canceled, for the record and the order's timeline."""
    by = f" by {fo.pickup_deadline:%Y-%m-%d %H:%M} UTC" if fo.pickup_deadline else ""
    return f"not collected at store {fo.pickup_location_id}{by}"
