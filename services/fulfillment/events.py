"""The signals fulfillment sends the order's workflow through its outbox, built from domain
records: the workflow's payload types, whose JSON shape recorded histories hold.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    )


def shipped_event(fo: domain.FulfillmentOrder, shipment: domain.Shipment) -> FulfillmentEvent:
    """The signal payload telling the order's workflow a parcel left."""
    return FulfillmentEvent(
        event_id=f"shipped:{shipment.shipment_id}",
        kind="shipped",
        fulfillment_order_id=fo.fulfillment_order_id,
        shipment_id=shipment.shipment_id,
        items=[ShipmentItemData(i.order_line_id, i.quantity) for i in shipment.items],
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
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
