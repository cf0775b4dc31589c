"""What fulfillment sends through its outbox, built from domain records: the signals to the
order's workflow (the workflow's payload types, whose JSON shape recorded histories hold), and
the events of the order's log for the changes the workflow is not told of.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from oms.events.v1 import events_pb2

from oms_platform.outbox import event_id
from oms_platform.wire import day_to_pb
from services.fulfillment import domain
from workflows.types import (
    FulfillmentEvent,
    FulfillmentOrderData,
    RoutingLineData,
    ShipmentItemData,
)


def fulfillment_order_data(fo: domain.FulfillmentOrder) -> FulfillmentOrderData:
    """A fulfillment order as the order's workflow tracks it."""
    return FulfillmentOrderData(
        fulfillment_order_id=fo.fulfillment_order_id,
        location_id=fo.location_id,
        delivery_group_id=fo.delivery_group_id,
        lines=[RoutingLineData(line.order_line_id, line.sku, line.quantity) for line in fo.lines],
        promise_date=day_to_pb(fo.promise_date),
        promised_delivery_date=day_to_pb(fo.promised_delivery_date),
    )


def shipped_event(fo: domain.FulfillmentOrder, shipment: domain.Shipment) -> FulfillmentEvent:
    """The signal payload telling the order's workflow a parcel left (and what its fulfillment
    order is promised for now)."""
    return FulfillmentEvent(
        event_id=f"shipped:{shipment.shipment_id}",
        kind="shipped",
        fulfillment_order_id=fo.fulfillment_order_id,
        shipment_id=shipment.shipment_id,
        items=[ShipmentItemData(i.order_line_id, i.quantity) for i in shipment.items],
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        promised_delivery_date=day_to_pb(fo.promised_delivery_date),
    )


def transfer_repromised_event(fo: domain.FulfillmentOrder) -> FulfillmentEvent:
    """The signal payload telling the order's workflow a ship-to-store fulfillment order left
    its warehouse for the store and is promised for another day now (the day its transfer
    reaches the store)."""
    return FulfillmentEvent(
        event_id=f"transfer_repromised:{fo.fulfillment_order_id}",
        kind="transfer_repromised",
        fulfillment_order_id=fo.fulfillment_order_id,
        carrier=fo.transfer_carrier,
        tracking_number=fo.transfer_tracking_number,
        reason=domain.transfer_note(fo),
        promised_delivery_date=day_to_pb(fo.promised_delivery_date),
    )


def delivered_event(shipment: domain.Shipment) -> FulfillmentEvent:
    """The signal payload telling the order's workflow a parcel arrived."""
    return FulfillmentEvent(
        event_id=f"delivered:{shipment.shipment_id}",
        kind="delivered",
        fulfillment_order_id=shipment.fulfillment_order_id,
        shipment_id=shipment.shipment_id,
    )


def line_change_event(
    fulfillment_order_id: str,
    idempotency_key: str,
    change: domain.FulfillmentOrderReduction,
    reason: str,
    replacements: Sequence[domain.FulfillmentOrder],
    unallocated: Sequence[domain.RoutingLine] = (),
) -> FulfillmentEvent:
    """The signal payload telling the order's workflow units left a fulfillment order
    ("rejected" or "moved") and where they went."""
    return FulfillmentEvent(
        event_id=f"{change.kind}:{fulfillment_order_id}:{idempotency_key}",
        kind=change.kind,
        fulfillment_order_id=fulfillment_order_id,
        items=[ShipmentItemData(line.order_line_id, line.quantity) for line in change.lines],
        reason=reason,
        replacements=[fulfillment_order_data(fo) for fo in replacements],
        unallocated=[RoutingLineData(ln.order_line_id, ln.sku, ln.quantity) for ln in unallocated],
    )


def not_collected_event(
    fo: domain.FulfillmentOrder, change: domain.FulfillmentOrderReduction, reason: str
) -> FulfillmentEvent:
    """The signal payload telling the order's workflow a pickup fulfillment order was not
    collected by its deadline: fulfillment canceled `items` (their stock restored); the
    workflow cancels them on the order and gives their money back."""
    return FulfillmentEvent(
        event_id=f"not_collected:{fo.fulfillment_order_id}",
        kind="not_collected",
        fulfillment_order_id=fo.fulfillment_order_id,
        items=[ShipmentItemData(line.order_line_id, line.quantity) for line in change.lines],
        reason=reason,
    )


def log_event_id(fulfillment_order_id: str, change: str) -> str:
    """The log's id for a change of a fulfillment order (in the log's own form, "evt_" and 26
    hex digits): each change happens once to a fulfillment order, so a retried call, or a
    report repeated after it, names the same event."""
    return event_id(f"fulfillment_order:{fulfillment_order_id}:{change}")


def status_changed_event(
    fo: domain.FulfillmentOrder,
    actor: str,
    reason: str = "",
    lines: Sequence[domain.RoutingLine | domain.FulfillmentLine] | None = None,
) -> events_pb2.Event:
    """`fulfillment.<status>` for a fulfillment order that has just reached its status (accepted,
    picked, packed, ready_for_pickup; canceled outside the lifecycle), with the units it
    concerns: by default the fulfillment order's lines as they are now; for a cancel, those
    taken off."""
    event = events_pb2.Event(
        event_id=log_event_id(fo.fulfillment_order_id, fo.status),
        type=f"fulfillment.{fo.status}",
        order_id=fo.order_id,
        actor=actor,
        fulfillment_order_changed=events_pb2.FulfillmentOrderChanged(
            fulfillment_order_id=fo.fulfillment_order_id,
            location_id=fo.location_id,
            status=fo.status,
            lines=[
                events_pb2.LineQuantity(
                    order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantity
                )
                for line in (fo.lines if lines is None else lines)
            ],
            reason=reason,
        ),
    )
    event.occurred_at.FromDatetime(fo.updated_at or datetime.now(UTC))
    return event


def backorder_released_event(fo: domain.FulfillmentOrder, reason: str) -> FulfillmentEvent:
    """The signal payload telling the order's workflow a backordered fulfillment order got its
    units from arriving stock (`reason`: a supply received, stock adjusted) and is now its
    location's work."""
    return FulfillmentEvent(
        event_id=f"backorder_released:{fo.fulfillment_order_id}",
        kind="backorder_released",
        fulfillment_order_id=fo.fulfillment_order_id,
        items=[ShipmentItemData(ln.order_line_id, ln.remaining) for ln in fo.lines if ln.remaining],
        reason=reason,
    )


def backorder_repromised_event(
    fo: domain.FulfillmentOrder, supply: domain.Supply, reason: str
) -> FulfillmentEvent:
    """The signal payload telling the order's workflow a backordered fulfillment order is
    promised for another date (its supply moved, or another supply took it over): the
    fulfillment order as it is now, with its location, in `replacements`."""
    moved = dataclasses.replace(
        fo, location_id=supply.location_id, promise_date=supply.expected_date
    )
    return FulfillmentEvent(
        event_id=(
            f"backorder_repromised:{fo.fulfillment_order_id}:{supply.supply_id}:"
            f"{supply.expected_date.isoformat()}"
        ),
        kind="backorder_repromised",
        fulfillment_order_id=fo.fulfillment_order_id,
        reason=reason,
        replacements=[fulfillment_order_data(moved)],
    )
