"""Fulfillment's wire types to domain types and back: enum tables, requests into domain
values, and domain records into protobuf messages. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from oms.fulfillment.v1 import fulfillment_pb2 as pb

from oms_platform.errors import FieldViolation, InvalidArgument

# The servicer parses its requests' days with convert's parser, the one every edge shares.
from oms_platform.wire import date_from_pb as date_from_pb
from oms_platform.wire import (
    day_to_pb,
    postal_address_from_pb,
    postal_address_to_pb,
    timestamp_from_datetime,
    timestamp_to_datetime,
)
from services.fulfillment import domain
from services.fulfillment.handlers import AddressChanged, Moved, Rerouted, Routed, Shipped

# A wire enum's value.
E = TypeVar("E", bound=int)

STATUS_TO_PB: dict[str, pb.FulfillmentOrderStatus.ValueType] = {
    domain.BACKORDERED: pb.FULFILLMENT_ORDER_STATUS_BACKORDERED,
    domain.ALLOCATED: pb.FULFILLMENT_ORDER_STATUS_ALLOCATED,
    domain.ACCEPTED: pb.FULFILLMENT_ORDER_STATUS_ACCEPTED,
    domain.PICKED: pb.FULFILLMENT_ORDER_STATUS_PICKED,
    domain.PACKED: pb.FULFILLMENT_ORDER_STATUS_PACKED,
    domain.SHIPPED: pb.FULFILLMENT_ORDER_STATUS_SHIPPED,
    domain.REJECTED: pb.FULFILLMENT_ORDER_STATUS_REJECTED,
    domain.CANCELED: pb.FULFILLMENT_ORDER_STATUS_CANCELED,
    domain.READY_FOR_PICKUP: pb.FULFILLMENT_ORDER_STATUS_READY_FOR_PICKUP,
    domain.PICKED_UP: pb.FULFILLMENT_ORDER_STATUS_PICKED_UP,
    domain.IN_TRANSIT_TO_STORE: pb.FULFILLMENT_ORDER_STATUS_IN_TRANSIT_TO_STORE,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}

LOCATION_TYPE_TO_PB: dict[str, pb.LocationType.ValueType] = {
    "warehouse": pb.LOCATION_TYPE_WAREHOUSE,
    "store": pb.LOCATION_TYPE_STORE,
    "drop_ship": pb.LOCATION_TYPE_DROP_SHIP,
}
LOCATION_TYPE_FROM_PB = {v: k for k, v in LOCATION_TYPE_TO_PB.items()}

ADJUSTMENT_KIND_FROM_PB: dict[pb.InventoryAdjustmentKind.ValueType, str] = {
    pb.INVENTORY_ADJUSTMENT_KIND_RECEIVED: domain.RECEIVED,
    pb.INVENTORY_ADJUSTMENT_KIND_COUNTED: domain.COUNTED,
    pb.INVENTORY_ADJUSTMENT_KIND_DAMAGED: domain.DAMAGED,
}

TRIGGER_TO_PB: dict[str, pb.RoutingTrigger.ValueType] = {
    "order": pb.ROUTING_TRIGGER_ORDER,
    "rejection": pb.ROUTING_TRIGGER_REJECTION,
    "move": pb.ROUTING_TRIGGER_MOVE,
    "address_change": pb.ROUTING_TRIGGER_ADDRESS_CHANGE,
}


def groups_from_pb(groups: Sequence[pb.RoutingDeliveryGroup]) -> list[domain.DeliveryGroup]:
    """The delivery groups a routing request names."""
    return [
        domain.DeliveryGroup(
            delivery_group_id=g.delivery_group_id,
            address=postal_address_from_pb(g.address),
            lines=tuple(
                domain.RoutingLine(line.order_line_id, line.sku, line.quantity) for line in g.lines
            ),
            delivery_method=g.delivery_method,
            pickup_location_id=g.pickup_location_id,
        )
        for g in groups
    ]


def routing_line_to_pb(line: domain.RoutingLine) -> pb.RoutingLine:
    """A routing line on the wire."""
    return pb.RoutingLine(order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantity)


def line_quantities_from_pb(lines: Sequence[pb.LineQuantity]) -> list[domain.LineQuantity]:
    """The quantities of lines a change asks for."""
    return [domain.LineQuantity(line.order_line_id, line.quantity) for line in lines]


def shipment_to_pb(shipment: domain.Shipment) -> pb.Shipment:
    """A shipment on the wire."""
    return pb.Shipment(
        shipment_id=shipment.shipment_id,
        fulfillment_order_id=shipment.fulfillment_order_id,
        carrier=shipment.carrier,
        service=shipment.service,
        tracking_number=shipment.tracking_number,
        items=[
            pb.ShipmentItem(order_line_id=i.order_line_id, quantity=i.quantity)
            for i in shipment.items
        ],
        shipped_at=timestamp_from_datetime(shipment.shipped_at),
        delivered_at=timestamp_from_datetime(shipment.delivered_at),
        estimated_delivery_date=day_to_pb(shipment.estimated_delivery_date),
    )


def fulfillment_order_to_pb(fo: domain.FulfillmentOrder) -> pb.FulfillmentOrder:
    """A fulfillment order on the wire."""
    return pb.FulfillmentOrder(
        fulfillment_order_id=fo.fulfillment_order_id,
        order_id=fo.order_id,
        delivery_group_id=fo.delivery_group_id,
        location_id=fo.location_id,
        status=STATUS_TO_PB[fo.status],
        lines=[
            pb.FulfillmentLine(
                order_line_id=line.order_line_id,
                sku=line.sku,
                quantity=line.quantity,
                quantity_shipped=line.quantity_shipped,
                quantity_rejected=line.quantity_rejected,
                quantity_canceled=line.quantity_canceled,
                quantity_moved=line.quantity_moved,
            )
            for line in fo.lines
        ],
        shipments=[shipment_to_pb(s) for s in fo.shipments],
        created_at=timestamp_from_datetime(fo.created_at),
        updated_at=timestamp_from_datetime(fo.updated_at),
        supply_id=fo.supply_id,
        promise_date=day_to_pb(fo.promise_date),
        pickup_location_id=fo.pickup_location_id,
        ready_for_pickup_at=timestamp_from_datetime(fo.ready_for_pickup_at),
        pickup_deadline=timestamp_from_datetime(fo.pickup_deadline),
        transfer_carrier=fo.transfer_carrier,
        transfer_tracking_number=fo.transfer_tracking_number,
        transfer_shipped_at=timestamp_from_datetime(fo.transfer_shipped_at),
        received_at_store_at=timestamp_from_datetime(fo.received_at_store_at),
        promised_delivery_date=day_to_pb(fo.promised_delivery_date),
    )


def location_to_pb(location: domain.Location) -> pb.Location:
    """A location on the wire."""
    out = pb.Location(
        location_id=location.location_id,
        name=location.name,
        type=LOCATION_TYPE_TO_PB.get(location.type, pb.LOCATION_TYPE_UNSPECIFIED),
        address=postal_address_to_pb(location.address),
        latitude=location.latitude,
        longitude=location.longitude,
        priority=location.priority,
        enabled=location.enabled,
        location_group_ids=location.group_ids,
        fulfillment_orders_today=location.fulfillment_orders_today,
        timezone=location.schedule.timezone,
        cutoff_local_time=location.schedule.cutoff.strftime("%H:%M"),
        processing_days=location.schedule.processing_days,
        ship_to_store=pb.ShipToStoreSetting(
            accepted=location.ship_to_store.accepted,
            from_location_ids=location.ship_to_store.from_location_ids,
        ),
    )
    if location.daily_capacity is not None:
        out.daily_capacity = location.daily_capacity
    return out


def location_from_pb(location: pb.Location) -> domain.Location:
    """The domain's view of a location."""
    return domain.Location(
        location_id=location.location_id,
        name=location.name,
        type=LOCATION_TYPE_FROM_PB.get(location.type, ""),
        address=postal_address_from_pb(location.address),
        latitude=location.latitude,
        longitude=location.longitude,
        priority=location.priority,
        enabled=location.enabled,
        daily_capacity=location.daily_capacity if location.HasField("daily_capacity") else None,
    )


def schedule_change_from_pb(location: pb.Location) -> domain.ScheduleChange:
    """The processing schedule fields an upsert sets (unset ones keep what is stored)."""
    return domain.ScheduleChange(
        timezone=location.timezone if location.HasField("timezone") else None,
        cutoff_local_time=(
            location.cutoff_local_time if location.HasField("cutoff_local_time") else None
        ),
        processing_days=(
            location.processing_days if location.HasField("processing_days") else None
        ),
    )


def ship_to_store_from_pb(location: pb.Location) -> domain.ShipToStore | None:
    """The ship-to-store setting an upsert sets; None when it leaves it as stored."""
    if not location.HasField("ship_to_store"):
        return None
    setting = location.ship_to_store
    return domain.ShipToStore(setting.accepted, tuple(setting.from_location_ids))


def location_group_to_pb(group: domain.LocationGroup) -> pb.LocationGroup:
    """A location group on the wire."""
    return pb.LocationGroup(
        location_group_id=group.location_group_id,
        name=group.name,
        location_ids=group.location_ids,
    )


def location_group_from_pb(group: pb.LocationGroup) -> domain.LocationGroup:
    """The domain's view of a location group."""
    return domain.LocationGroup(
        group.location_group_id, group.name, tuple(dict.fromkeys(group.location_ids))
    )


def level_from_pb(level: pb.InventoryLevel) -> domain.InventoryLevel:
    """The domain's view of an inventory level."""
    return domain.InventoryLevel(
        location_id=level.location_id,
        sku=level.sku,
        on_hand=level.on_hand,
        safety_stock=level.safety_stock,
    )


def level_to_pb(level: domain.InventoryLevel) -> pb.InventoryLevel:
    """An inventory level on the wire."""
    return pb.InventoryLevel(
        location_id=level.location_id,
        sku=level.sku,
        on_hand=level.on_hand,
        reserved=level.reserved,
        safety_stock=level.safety_stock,
        available_to_fulfill=level.available,
    )


def adjustment_from_pb(adjustment: pb.InventoryAdjustment) -> domain.InventoryAdjustment:
    """The domain's view of an inventory adjustment."""
    return domain.InventoryAdjustment(
        location_id=adjustment.location_id,
        sku=adjustment.sku,
        kind=ADJUSTMENT_KIND_FROM_PB.get(adjustment.kind, ""),
        quantity=adjustment.quantity,
        reason=adjustment.reason,
    )


def decision_to_pb(decision: domain.RoutingDecision) -> pb.RoutingDecision:
    """A routing decision on the wire."""
    return pb.RoutingDecision(
        order_id=decision.order_id,
        delivery_group_id=decision.delivery_group_id,
        trigger=TRIGGER_TO_PB.get(decision.trigger, pb.ROUTING_TRIGGER_UNSPECIFIED),
        source_fulfillment_order_id=decision.source_fulfillment_order_id,
        summary=decision.summary,
        chosen_location_ids=decision.chosen_location_ids,
        alternatives=[
            pb.RoutingAlternative(
                location_ids=a.location_ids,
                fulfillment_orders=a.fulfillment_orders,
                average_distance_km=a.distance_km,
                priority=a.priority,
                chosen=a.chosen,
                verdict=a.verdict,
            )
            for a in decision.alternatives
        ],
        excluded=[
            pb.RoutingExclusion(location_id=e.location_id, reason=e.reason)
            for e in decision.excluded
        ],
        unallocated_lines=[routing_line_to_pb(line) for line in decision.unallocated],
        decided_at=timestamp_from_datetime(decision.decided_at),
    )


def _status_filter(statuses: Sequence[E], table: Mapping[E, str], what: str) -> tuple[str, ...]:
    """Statuses to list by, through `table`; InvalidArgument naming each one it has not got
    (`what`: whose statuses, for the rule)."""
    violations = [
        FieldViolation(f"statuses[{i}]", f"must be a known {what} status")
        for i, s in enumerate(statuses)
        if s not in table
    ]
    if violations:
        raise InvalidArgument(violations)
    return tuple(table[s] for s in statuses)


def statuses_from_pb(statuses: list[pb.FulfillmentOrderStatus.ValueType]) -> tuple[str, ...]:
    """Statuses to list by; InvalidArgument naming an unknown one."""
    return _status_filter(statuses, STATUS_FROM_PB, "fulfillment order")


def shipment_items_from_pb(items: Sequence[pb.ShipmentItem]) -> list[domain.ShipmentItem]:
    """The items a shipment confirmation reports."""
    return [domain.ShipmentItem(i.order_line_id, i.quantity) for i in items]


# ---- use-case outcomes -> responses ---------------------------------------------------------


def routed_pb(routed: Routed) -> pb.CreateFulfillmentOrdersResponse:
    """CreateFulfillmentOrders' answer."""
    return pb.CreateFulfillmentOrdersResponse(
        fulfillment_orders=[fulfillment_order_to_pb(fo) for fo in routed.fulfillment_orders],
        unallocated_lines=[routing_line_to_pb(line) for line in routed.plan.unallocated],
        decisions=routed.plan.decisions,
    )


def rerouted_pb(rerouted: Rerouted) -> pb.RejectFulfillmentOrderResponse:
    """RejectFulfillmentOrder's answer."""
    return pb.RejectFulfillmentOrderResponse(
        fulfillment_order=fulfillment_order_to_pb(rerouted.fulfillment_order),
        replacements=[fulfillment_order_to_pb(r) for r in rerouted.replacements],
        unallocated_lines=[routing_line_to_pb(line) for line in rerouted.plan.unallocated],
        decisions=rerouted.plan.decisions,
    )


def shipped_pb(shipped: Shipped) -> pb.ConfirmShipmentResponse:
    """ConfirmShipment's answer."""
    return pb.ConfirmShipmentResponse(
        shipment=shipment_to_pb(shipped.shipment),
        fulfillment_order=fulfillment_order_to_pb(shipped.fulfillment_order),
    )


def picked_up_pb(picked_up: Shipped) -> pb.ConfirmPickupResponse:
    """ConfirmPickup's answer."""
    return pb.ConfirmPickupResponse(
        shipment=shipment_to_pb(picked_up.shipment),
        fulfillment_order=fulfillment_order_to_pb(picked_up.fulfillment_order),
    )


def address_changed_pb(changed: AddressChanged) -> pb.ChangeDeliveryAddressResponse:
    """ChangeDeliveryAddress' answer."""
    return pb.ChangeDeliveryAddressResponse(
        rerouted=changed.rerouted,
        from_location_ids=list(changed.from_location_ids),
        to_location_ids=list(changed.to_location_ids),
        canceled_fulfillment_order_ids=list(changed.canceled),
        replacements=[fulfillment_order_to_pb(fo) for fo in changed.replacements],
        decisions=changed.decisions,
    )


def moved_pb(moved: Moved) -> pb.MoveFulfillmentOrderLinesResponse:
    """MoveFulfillmentOrderLines' answer."""
    return pb.MoveFulfillmentOrderLinesResponse(
        fulfillment_order=fulfillment_order_to_pb(moved.fulfillment_order),
        moved_to=fulfillment_order_to_pb(moved.moved_to),
    )


def availability_pb(
    found: Sequence[tuple[domain.InventoryLevel, bool]], summed: domain.Availability
) -> pb.GetAvailabilityResponse:
    """GetAvailability's answer: every level found, and the sums."""
    return pb.GetAvailabilityResponse(
        levels=[level_to_pb(level) for level, _ in found],
        total_available=summed.total,
        groups=[
            pb.GroupAvailability(location_group_id=group_id, available=available)
            for group_id, available in summed.by_group.items()
        ],
    )


def delivery_question_from_pb(request: pb.EstimateDeliveryRequest) -> domain.DeliveryQuestion:
    """What checkout asks EstimateDelivery."""
    return domain.DeliveryQuestion(
        items=tuple(domain.DeliveryItem(i.sku, i.quantity) for i in request.items),
        address=postal_address_from_pb(request.address),
        delivery_methods=tuple(request.delivery_methods),
        ordered_at=(
            timestamp_to_datetime(request.ordered_at, "ordered_at")
            if request.HasField("ordered_at")
            else None
        ),
    )


def _delivery_items_to_pb(items: Sequence[domain.DeliveryItem]) -> list[pb.DeliveryItem]:
    return [pb.DeliveryItem(sku=i.sku, quantity=i.quantity) for i in items]


def estimate_to_pb(estimate: domain.DeliveryEstimate) -> pb.DeliveryEstimate:
    """One delivery method's estimate on the wire; dates as "YYYY-MM-DD"."""
    ship_date, delivery_date = estimate.ship_date, estimate.delivery_date
    return pb.DeliveryEstimate(
        delivery_method=estimate.delivery_method,
        promised=estimate.promised,
        reason=estimate.reason,
        ship_date=day_to_pb(ship_date),
        delivery_date=day_to_pb(delivery_date),
        shipments=[
            pb.PromisedShipment(
                location_id=s.location_id,
                items=_delivery_items_to_pb(s.items),
                ship_date=s.ship_date.isoformat(),
                delivery_date=s.delivery_date.isoformat(),
                distance_km=s.distance_km,
                transit_days=s.transit_days,
            )
            for s in estimate.shipments
        ],
    )


# ---- checkout reservations ----------------------------------------------------------------------

RESERVATION_STATUS_TO_PB: dict[str, pb.ReservationStatus.ValueType] = {
    domain.HELD: pb.RESERVATION_STATUS_HELD,
    domain.CONSUMED: pb.RESERVATION_STATUS_CONSUMED,
    domain.RELEASED: pb.RESERVATION_STATUS_RELEASED,
    domain.EXPIRED: pb.RESERVATION_STATUS_EXPIRED,
}


def reservation_request_from_pb(request: pb.ReserveInventoryRequest) -> domain.ReservationRequest:
    """A ReserveInventory request as the domain's (unchecked)."""
    return domain.ReservationRequest(
        lines=tuple(domain.CartLine(line.sku, line.quantity) for line in request.lines),
        location_group_id=request.location_group_id,
        address=(postal_address_from_pb(request.address) if request.HasField("address") else None),
        ttl_seconds=request.ttl_seconds,
        idempotency_key=request.idempotency_key,
    )


def reservation_to_pb(reservation: domain.CheckoutReservation) -> pb.Reservation:
    """A checkout reservation on the wire: each cart line with where its units are held."""
    return pb.Reservation(
        reservation_id=reservation.reservation_id,
        status=RESERVATION_STATUS_TO_PB[reservation.status],
        expires_at=timestamp_from_datetime(reservation.expires_at),
        lines=[
            pb.ReservedLine(
                sku=line.sku,
                quantity=line.quantity,
                held=[
                    pb.HeldUnits(location_id=h.location_id, quantity=h.quantity)
                    for h in reservation.holds_of(i)
                ],
            )
            for i, line in enumerate(reservation.lines)
        ],
        order_id=reservation.order_id,
        created_at=timestamp_from_datetime(reservation.created_at),
    )


# ---- incoming supply ---------------------------------------------------------------------------

SUPPLY_KIND_TO_PB: dict[str, pb.SupplyKind.ValueType] = {
    domain.PURCHASE_ORDER: pb.SUPPLY_KIND_PURCHASE_ORDER,
    domain.ADVANCE_SHIP_NOTICE: pb.SUPPLY_KIND_ADVANCE_SHIP_NOTICE,
    domain.PRE_ORDER: pb.SUPPLY_KIND_PRE_ORDER,
}
SUPPLY_KIND_FROM_PB = {v: k for k, v in SUPPLY_KIND_TO_PB.items()}

SUPPLY_STATUS_TO_PB: dict[str, pb.SupplyStatus.ValueType] = {
    domain.SUPPLY_OPEN: pb.SUPPLY_STATUS_OPEN,
    domain.SUPPLY_RECEIVED: pb.SUPPLY_STATUS_RECEIVED,
    domain.SUPPLY_CANCELED: pb.SUPPLY_STATUS_CANCELED,
}
SUPPLY_STATUS_FROM_PB = {v: k for k, v in SUPPLY_STATUS_TO_PB.items()}


def supply_request_from_pb(request: pb.CreateSupplyRequest) -> domain.SupplyRequest:
    """A supply to record; an unknown kind is left for the domain to name."""
    return domain.SupplyRequest(
        kind=SUPPLY_KIND_FROM_PB.get(request.kind, ""),
        reference=request.reference,
        location_id=request.location_id,
        sku=request.sku,
        quantity=request.quantity,
        expected_date=date_from_pb(request.expected_date, "expected_date"),
    )


def supply_statuses_from_pb(
    statuses: Sequence[pb.SupplyStatus.ValueType],
) -> tuple[str, ...]:
    """Status filters; an unknown one is INVALID_ARGUMENT naming it."""
    return _status_filter(statuses, SUPPLY_STATUS_FROM_PB, "supply")


def supply_to_pb(supply: domain.Supply) -> pb.Supply:
    """A supply on the wire."""
    return pb.Supply(
        supply_id=supply.supply_id,
        kind=SUPPLY_KIND_TO_PB[supply.kind],
        reference=supply.reference,
        location_id=supply.location_id,
        sku=supply.sku,
        quantity=supply.quantity,
        quantity_received=supply.quantity_received,
        quantity_promised=supply.promised,
        expected_date=supply.expected_date.isoformat(),
        status=SUPPLY_STATUS_TO_PB[supply.status],
        created_at=timestamp_from_datetime(supply.created_at),
        updated_at=timestamp_from_datetime(supply.updated_at),
    )


def transit_band_from_pb(request: pb.SetTransitTimeRequest) -> domain.TransitBand:
    """The band a set names."""
    return domain.TransitBand(request.delivery_method, request.from_km, request.transit_days)


def transit_rows_to_pb(rows: Sequence[domain.TransitRow]) -> list[pb.TransitTime]:
    """Bands on the wire, each with where it ends."""
    return [_transit_time_pb(row.band, row.to_km) for row in rows]


def transit_time_to_pb(
    band: domain.TransitBand, rows: Sequence[domain.TransitRow] = ()
) -> pb.TransitTime:
    """A band on the wire, ending where its row among `rows` says (no row: no end)."""
    row = next((r for r in rows if r.band == band), None)
    return _transit_time_pb(band, row.to_km if row else None)


def _transit_time_pb(band: domain.TransitBand, to_km: int | None) -> pb.TransitTime:
    return pb.TransitTime(
        delivery_method=band.delivery_method,
        from_km=band.from_km,
        to_km=to_km,
        transit_days=band.transit_days,
    )
