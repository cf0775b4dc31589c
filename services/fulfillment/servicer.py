"""FulfillmentService over gRPC: converts wire types to domain types and back, runs each
request in one transaction (with its idempotency key and outbox rows), and delegates the
decisions to the domain."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

import asyncpg
import grpc
import structlog
from google.protobuf.message import Message
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth, db, erasure
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.wire import postal_address_from_pb, postal_address_to_pb, timestamp_from_datetime
from services.fulfillment import domain, store
from workflows.types import (
    FulfillmentEvent,
    FulfillmentOrderData,
    RoutingLineData,
    ShipmentItemData,
    order_workflow_id,
)

log = structlog.get_logger("oms.fulfillment")

M = TypeVar("M", bound=Message)

# Optimistic attempts before the last one, which locks the inventory rows it reads.
ROUTING_ATTEMPTS = 4

# A transaction attempt: given whether to lock what it reads, the action to run.
Attempt = Callable[[bool], Callable[[asyncpg.Connection], Awaitable[M]]]

STATUS_TO_PB: dict[str, pb.FulfillmentOrderStatus.ValueType] = {
    domain.ALLOCATED: pb.FULFILLMENT_ORDER_STATUS_ALLOCATED,
    domain.ACCEPTED: pb.FULFILLMENT_ORDER_STATUS_ACCEPTED,
    domain.PICKED: pb.FULFILLMENT_ORDER_STATUS_PICKED,
    domain.PACKED: pb.FULFILLMENT_ORDER_STATUS_PACKED,
    domain.SHIPPED: pb.FULFILLMENT_ORDER_STATUS_SHIPPED,
    domain.REJECTED: pb.FULFILLMENT_ORDER_STATUS_REJECTED,
    domain.CANCELED: pb.FULFILLMENT_ORDER_STATUS_CANCELED,
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
}


# ---- conversions --------------------------------------------------------------------------


def groups_from_pb(groups: Sequence[pb.RoutingDeliveryGroup]) -> list[domain.DeliveryGroup]:
    return [
        domain.DeliveryGroup(
            delivery_group_id=g.delivery_group_id,
            address=postal_address_from_pb(g.address),
            lines=tuple(
                domain.RoutingLine(line.order_line_id, line.sku, line.quantity) for line in g.lines
            ),
            delivery_method=g.delivery_method,
        )
        for g in groups
    ]


def routing_line_to_pb(line: domain.RoutingLine) -> pb.RoutingLine:
    return pb.RoutingLine(order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantity)


def line_quantities_from_pb(lines: Sequence[pb.LineQuantity]) -> list[domain.LineQuantity]:
    return [domain.LineQuantity(line.order_line_id, line.quantity) for line in lines]


def shipment_to_pb(shipment: domain.Shipment) -> pb.Shipment:
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
    )


def fulfillment_order_to_pb(fo: domain.FulfillmentOrder) -> pb.FulfillmentOrder:
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
    )


def location_to_pb(location: domain.Location) -> pb.Location:
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
    )
    if location.daily_capacity is not None:
        out.daily_capacity = location.daily_capacity
    return out


def location_from_pb(location: pb.Location) -> domain.Location:
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


def location_group_to_pb(group: domain.LocationGroup) -> pb.LocationGroup:
    return pb.LocationGroup(
        location_group_id=group.location_group_id,
        name=group.name,
        location_ids=group.location_ids,
    )


def location_group_from_pb(group: pb.LocationGroup) -> domain.LocationGroup:
    return domain.LocationGroup(
        group.location_group_id, group.name, tuple(dict.fromkeys(group.location_ids))
    )


def level_from_pb(level: pb.InventoryLevel) -> domain.InventoryLevel:
    return domain.InventoryLevel(
        location_id=level.location_id,
        sku=level.sku,
        on_hand=level.on_hand,
        safety_stock=level.safety_stock,
    )


def level_to_pb(level: domain.InventoryLevel) -> pb.InventoryLevel:
    return pb.InventoryLevel(
        location_id=level.location_id,
        sku=level.sku,
        on_hand=level.on_hand,
        reserved=level.reserved,
        safety_stock=level.safety_stock,
        available_to_fulfill=level.available,
    )


def adjustment_from_pb(adjustment: pb.InventoryAdjustment) -> domain.InventoryAdjustment:
    return domain.InventoryAdjustment(
        location_id=adjustment.location_id,
        sku=adjustment.sku,
        kind=ADJUSTMENT_KIND_FROM_PB.get(adjustment.kind, ""),
        quantity=adjustment.quantity,
        reason=adjustment.reason,
    )


def decision_to_pb(decision: domain.RoutingDecision) -> pb.RoutingDecision:
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


def statuses_from_pb(statuses: list[pb.FulfillmentOrderStatus.ValueType]) -> tuple[str, ...]:
    violations = [
        FieldViolation(f"statuses[{i}]", "must be a known fulfillment order status")
        for i, s in enumerate(statuses)
        if s not in STATUS_FROM_PB
    ]
    if violations:
        raise InvalidArgument(violations)
    return tuple(STATUS_FROM_PB[s] for s in statuses)


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
    change: domain.LineChange,
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


def _required(**fields: str) -> None:
    violations = [
        FieldViolation(name, "is required") for name, value in fields.items() if not value
    ]
    if violations:
        raise InvalidArgument(violations)


def _new_id() -> str:
    return str(uuid.uuid4())


# ---- the service ---------------------------------------------------------------------------


class FulfillmentServicer(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    """Converts and delegates; the domain decides, the store remembers."""

    def __init__(self, pool: asyncpg.Pool, policy: domain.RoutingPolicy | None = None) -> None:
        self._pool = pool
        self._policy = policy or domain.RoutingPolicy()

    async def _in_transaction(self, action: Callable[[asyncpg.Connection], Awaitable[M]]) -> M:
        async with self._pool.acquire() as conn, conn.transaction():
            # A pool's connection proxies a Connection; the stubs do not say so.
            return await action(cast(asyncpg.Connection, conn))

    async def _acting_for(self, fulfillment_order_id: str = "", shipment_id: str = "") -> None:
        """A warehouse acts only for its own locations: checked before anything is read or
        replayed, so another location's fulfillment order is PERMISSION_DENIED, never touched."""
        principal = auth.current_principal()
        if principal.acts_for_every_location():
            return
        async with self._pool.acquire() as conn:
            if shipment_id:
                location = await store.location_of_shipment(conn, shipment_id)
                what = f"shipment {shipment_id}"
            else:
                location = await store.location_of_fulfillment_order(conn, fulfillment_order_id)
                what = f"fulfillment order {fulfillment_order_id}"
        auth.require_location(location, what)

    async def _idempotent(
        self, key: str, request: Message, response_type: type[M], attempt: Attempt[M]
    ) -> M:
        """Run an idempotent write, again on fresh stock when a concurrent writer took units
        it counted on (or deadlocked with it); the last attempt locks what it reads."""
        for number in range(1, ROUTING_ATTEMPTS + 1):
            try:
                response, _ = await db.idempotent(
                    self._pool,
                    key,
                    request,
                    response_type,
                    attempt(number == ROUTING_ATTEMPTS),
                    lambda r: r,
                )
                return response
            except (store.ReservationConflict, asyncpg.TransactionRollbackError) as lost:
                # Nothing of this attempt was kept; try again on what is there now.
                if number == ROUTING_ATTEMPTS:
                    raise
                log.debug("lost a race; trying again", attempt=number, lost=str(lost))
        raise AssertionError("unreachable")

    async def _route(
        self,
        conn: asyncpg.Connection,
        groups: Sequence[domain.DeliveryGroup],
        lock: bool,
        policy: domain.RoutingPolicy,
    ) -> domain.RoutingPlan:
        snapshot = await store.routing_snapshot(conn, groups, lock=lock)
        return domain.route(
            groups, snapshot.candidates, snapshot.availability, snapshot.destinations, policy
        )

    async def CreateFulfillmentOrders(
        self, request: pb.CreateFulfillmentOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateFulfillmentOrdersResponse:
        groups = groups_from_pb(list(request.delivery_groups))
        domain.validate_routing_request(request.order_id, request.idempotency_key, groups)
        order_id = request.order_id
        key = f"create:{order_id}:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[pb.CreateFulfillmentOrdersResponse]]:
            async def action(conn: asyncpg.Connection) -> pb.CreateFulfillmentOrdersResponse:
                plan = await self._route(conn, groups, lock, self._policy)
                created = await store.reserve_and_create(conn, order_id, plan, _new_id, key)
                await store.record_delivery_groups(conn, order_id, groups)
                await store.record_decisions(
                    conn, domain.decisions_of(order_id, plan, "order"), key
                )
                return pb.CreateFulfillmentOrdersResponse(
                    fulfillment_orders=[fulfillment_order_to_pb(fo) for fo in created],
                    unallocated_lines=[routing_line_to_pb(line) for line in plan.unallocated],
                    decisions=plan.decisions,
                )

            return action

        return await self._idempotent(key, request, pb.CreateFulfillmentOrdersResponse, attempt)

    async def GetFulfillmentOrder(
        self, request: pb.GetFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFulfillmentOrderResponse:
        _required(fulfillment_order_id=request.fulfillment_order_id)
        async with self._pool.acquire() as conn:
            fo = await store.get_fulfillment_order(conn, request.fulfillment_order_id)
        auth.require_location(fo.location_id, f"fulfillment order {fo.fulfillment_order_id}")
        return pb.GetFulfillmentOrderResponse(fulfillment_order=fulfillment_order_to_pb(fo))

    async def ListFulfillmentOrders(
        self, request: pb.ListFulfillmentOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListFulfillmentOrdersResponse:
        size = domain.page_size(request.page_size)
        cursor = domain.decode_cursor(request.page_token)
        principal = auth.current_principal()
        if request.location_id:
            auth.require_location(request.location_id, "the listing")
        where = domain.ListFilter(
            order_id=request.order_id,
            location_id=request.location_id,
            statuses=statuses_from_pb(list(request.statuses)),
            # A warehouse lists only its own locations' fulfillment orders.
            within_locations=None
            if principal.acts_for_every_location()
            else tuple(sorted(principal.locations)),
        )
        async with self._pool.acquire() as conn:
            page = await store.list_fulfillment_orders(conn, where, cursor, size)
        return pb.ListFulfillmentOrdersResponse(
            fulfillment_orders=[fulfillment_order_to_pb(fo) for fo in page.fulfillment_orders],
            next_page_token=domain.encode_cursor(page.next_cursor) if page.next_cursor else "",
        )

    async def _progress(self, fulfillment_order_id: str, step: str) -> pb.FulfillmentOrder:
        _required(fulfillment_order_id=fulfillment_order_id)
        await self._acting_for(fulfillment_order_id)

        async def action(conn: asyncpg.Connection) -> pb.FulfillmentOrder:
            fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
            status = domain.progress(fo, step)
            if status != fo.status:
                await store.set_status(conn, fulfillment_order_id, status)
                fo = await store.get_fulfillment_order(conn, fulfillment_order_id)
            return fulfillment_order_to_pb(fo)

        return await self._in_transaction(action)

    async def AcceptFulfillmentOrder(
        self, request: pb.AcceptFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcceptFulfillmentOrderResponse:
        fo = await self._progress(request.fulfillment_order_id, "accept")
        return pb.AcceptFulfillmentOrderResponse(fulfillment_order=fo)

    async def MarkFulfillmentOrderPicked(
        self, request: pb.MarkFulfillmentOrderPickedRequest, context: grpc.aio.ServicerContext
    ) -> pb.MarkFulfillmentOrderPickedResponse:
        fo = await self._progress(request.fulfillment_order_id, "pick")
        return pb.MarkFulfillmentOrderPickedResponse(fulfillment_order=fo)

    async def MarkFulfillmentOrderPacked(
        self, request: pb.MarkFulfillmentOrderPackedRequest, context: grpc.aio.ServicerContext
    ) -> pb.MarkFulfillmentOrderPackedResponse:
        fo = await self._progress(request.fulfillment_order_id, "pack")
        return pb.MarkFulfillmentOrderPackedResponse(fulfillment_order=fo)

    async def ConfirmShipment(
        self, request: pb.ConfirmShipmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmShipmentResponse:
        fo_id = request.fulfillment_order_id
        _required(fulfillment_order_id=fo_id, idempotency_key=request.idempotency_key)
        await self._acting_for(fo_id)
        items = [domain.ShipmentItem(i.order_line_id, i.quantity) for i in request.items]

        async def action(conn: asyncpg.Connection) -> pb.ConfirmShipmentResponse:
            fo = await store.get_fulfillment_order(conn, fo_id, for_update=True)
            plan = domain.plan_shipment(fo, items)
            shipment = await store.record_shipment(
                conn,
                fo,
                _new_id(),
                request.carrier,
                request.service,
                request.tracking_number,
                plan,
            )
            await store.signal_order(conn, fo.order_id, shipped_event(fo, shipment))
            after = await store.get_fulfillment_order(conn, fo_id)
            return pb.ConfirmShipmentResponse(
                shipment=shipment_to_pb(shipment), fulfillment_order=fulfillment_order_to_pb(after)
            )

        response, _ = await db.idempotent(
            self._pool,
            f"ship:{fo_id}:{request.idempotency_key}",
            request,
            pb.ConfirmShipmentResponse,
            action,
            lambda r: r,
        )
        return response

    async def ConfirmDelivery(
        self, request: pb.ConfirmDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmDeliveryResponse:
        _required(shipment_id=request.shipment_id)
        await self._acting_for(shipment_id=request.shipment_id)

        async def action(conn: asyncpg.Connection) -> pb.ConfirmDeliveryResponse:
            order_id = await store.order_of_shipment(conn, request.shipment_id)
            if await store.mark_delivered(conn, request.shipment_id):
                shipment = await store.get_shipment(conn, request.shipment_id)
                await store.signal_order(conn, order_id, delivered_event(shipment))
            else:
                shipment = await store.get_shipment(conn, request.shipment_id)
            return pb.ConfirmDeliveryResponse(shipment=shipment_to_pb(shipment))

        return await self._in_transaction(action)

    async def CancelFulfillmentOrder(
        self, request: pb.CancelFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelFulfillmentOrderResponse:
        fo_id = request.fulfillment_order_id
        _required(fulfillment_order_id=fo_id)
        key = f"cancel:{fo_id}:{request.idempotency_key}" if request.idempotency_key else ""

        async def action(conn: asyncpg.Connection) -> pb.CancelFulfillmentOrderResponse:
            fo = await store.get_fulfillment_order(conn, fo_id, for_update=True)
            change = domain.plan_cancel(fo)
            if change is not None:
                await store.take_off(conn, fo, change, request.reason, key)
                fo = await store.get_fulfillment_order(conn, fo_id)
            return pb.CancelFulfillmentOrderResponse(fulfillment_order=fulfillment_order_to_pb(fo))

        if not key:
            # Canceling is idempotent by state too: a canceled order is returned unchanged.
            return await self._in_transaction(action)
        response, _ = await db.idempotent(
            self._pool, key, request, pb.CancelFulfillmentOrderResponse, action, lambda r: r
        )
        return response

    async def RejectFulfillmentOrder(
        self, request: pb.RejectFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RejectFulfillmentOrderResponse:
        fo_id = request.fulfillment_order_id
        _required(fulfillment_order_id=fo_id, idempotency_key=request.idempotency_key)
        await self._acting_for(fo_id)
        requested = line_quantities_from_pb(request.lines)
        key = f"reject:{fo_id}:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[pb.RejectFulfillmentOrderResponse]]:
            async def action(conn: asyncpg.Connection) -> pb.RejectFulfillmentOrderResponse:
                fo = await store.get_fulfillment_order(conn, fo_id, for_update=True)
                change = domain.plan_line_change(fo, domain.REJECTED, requested)
                await store.take_off(conn, fo, change, request.reason, key)
                line_ids = [line.order_line_id for line in change.lines]
                earlier = await store.rejecting_locations(conn, fo.order_id, line_ids)
                excluded = domain.rejection_reasons(fo, request.reason, earlier)
                group = await store.delivery_group(
                    conn, fo.order_id, fo.delivery_group_id, change.lines
                )
                policy = self._policy.with_rules(domain.ExcludeLocations(excluded))
                plan = await self._route(conn, [group], lock, policy)
                replacements = await store.reserve_and_create(conn, fo.order_id, plan, _new_id, key)
                await store.record_decisions(
                    conn, domain.decisions_of(fo.order_id, plan, "rejection", fo_id), key
                )
                event = line_change_event(
                    fo_id,
                    request.idempotency_key,
                    change,
                    request.reason,
                    replacements,
                    plan.unallocated,
                )
                await store.signal_order(conn, fo.order_id, event)
                after = await store.get_fulfillment_order(conn, fo_id)
                return pb.RejectFulfillmentOrderResponse(
                    fulfillment_order=fulfillment_order_to_pb(after),
                    replacements=[fulfillment_order_to_pb(r) for r in replacements],
                    unallocated_lines=[routing_line_to_pb(line) for line in plan.unallocated],
                    decisions=plan.decisions,
                )

            return action

        return await self._idempotent(key, request, pb.RejectFulfillmentOrderResponse, attempt)

    async def CancelFulfillmentOrderLines(
        self, request: pb.CancelFulfillmentOrderLinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelFulfillmentOrderLinesResponse:
        fo_id = request.fulfillment_order_id
        _required(fulfillment_order_id=fo_id, idempotency_key=request.idempotency_key)
        requested = line_quantities_from_pb(request.lines)
        key = f"cancel-lines:{fo_id}:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[pb.CancelFulfillmentOrderLinesResponse]]:
            async def action(conn: asyncpg.Connection) -> pb.CancelFulfillmentOrderLinesResponse:
                fo = await store.get_fulfillment_order(conn, fo_id, for_update=True)
                change = domain.plan_line_change(fo, domain.CANCELED, requested)
                await store.take_off(conn, fo, change, request.reason, key)
                after = await store.get_fulfillment_order(conn, fo_id)
                return pb.CancelFulfillmentOrderLinesResponse(
                    fulfillment_order=fulfillment_order_to_pb(after)
                )

            return action

        return await self._idempotent(key, request, pb.CancelFulfillmentOrderLinesResponse, attempt)

    async def MoveFulfillmentOrderLines(
        self, request: pb.MoveFulfillmentOrderLinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.MoveFulfillmentOrderLinesResponse:
        fo_id = request.fulfillment_order_id
        _required(fulfillment_order_id=fo_id, idempotency_key=request.idempotency_key)
        requested = line_quantities_from_pb(request.lines)
        key = f"move:{fo_id}:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[pb.MoveFulfillmentOrderLinesResponse]]:
            async def action(conn: asyncpg.Connection) -> pb.MoveFulfillmentOrderLinesResponse:
                fo = await store.get_fulfillment_order(conn, fo_id, for_update=True)
                found = (
                    await store.get_location(conn, request.to_location_id)
                    if request.to_location_id
                    else None
                )
                target = domain.check_move_target(fo, request.to_location_id, found)
                change = domain.plan_line_change(fo, domain.MOVED, requested)
                moved_to = await store.move(conn, fo, change, target, _new_id, request.reason, key)
                await store.record_decisions(
                    conn, [domain.move_decision(fo, target, change, request.reason)], key
                )
                event = line_change_event(
                    fo_id, request.idempotency_key, change, request.reason, [moved_to]
                )
                await store.signal_order(conn, fo.order_id, event)
                after = await store.get_fulfillment_order(conn, fo_id)
                return pb.MoveFulfillmentOrderLinesResponse(
                    fulfillment_order=fulfillment_order_to_pb(after),
                    moved_to=fulfillment_order_to_pb(moved_to),
                )

            return action

        return await self._idempotent(key, request, pb.MoveFulfillmentOrderLinesResponse, attempt)

    async def GetRoutingDecisions(
        self, request: pb.GetRoutingDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRoutingDecisionsResponse:
        _required(order_id=request.order_id)
        async with self._pool.acquire() as conn:
            decisions = await store.routing_decisions(conn, request.order_id)
        return pb.GetRoutingDecisionsResponse(decisions=[decision_to_pb(d) for d in decisions])

    async def ListLocations(
        self, request: pb.ListLocationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLocationsResponse:
        async with self._pool.acquire() as conn:
            locations = await store.list_locations(conn)
        return pb.ListLocationsResponse(locations=[location_to_pb(loc) for loc in locations])

    async def UpsertLocation(
        self, request: pb.UpsertLocationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertLocationResponse:
        location = location_from_pb(request.location)
        domain.validate_location(location)

        async def action(conn: asyncpg.Connection) -> pb.UpsertLocationResponse:
            stored = await store.upsert_location(conn, location)
            return pb.UpsertLocationResponse(location=location_to_pb(stored))

        return await self._in_transaction(action)

    async def ListLocationGroups(
        self, request: pb.ListLocationGroupsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLocationGroupsResponse:
        async with self._pool.acquire() as conn:
            groups = await store.location_groups(conn)
        return pb.ListLocationGroupsResponse(
            location_groups=[location_group_to_pb(g) for g in groups]
        )

    async def UpsertLocationGroup(
        self, request: pb.UpsertLocationGroupRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertLocationGroupResponse:
        group = location_group_from_pb(request.location_group)

        async def action(conn: asyncpg.Connection) -> pb.UpsertLocationGroupResponse:
            domain.validate_location_group(group, await store.location_ids(conn))
            stored = await store.upsert_location_group(conn, group)
            return pb.UpsertLocationGroupResponse(location_group=location_group_to_pb(stored))

        return await self._in_transaction(action)

    async def SetInventoryLevels(
        self, request: pb.SetInventoryLevelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetInventoryLevelsResponse:
        levels = [level_from_pb(level) for level in request.levels]

        async def action(conn: asyncpg.Connection) -> pb.SetInventoryLevelsResponse:
            domain.validate_inventory_levels(levels, await store.location_ids(conn))
            stored = await store.set_inventory_levels(conn, levels)
            return pb.SetInventoryLevelsResponse(levels=[level_to_pb(lv) for lv in stored])

        return await self._in_transaction(action)

    async def AdjustInventory(
        self, request: pb.AdjustInventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdjustInventoryResponse:
        _required(idempotency_key=request.idempotency_key)
        adjustments = [adjustment_from_pb(a) for a in request.adjustments]
        for i, adjustment in enumerate(adjustments):
            auth.require_location(adjustment.location_id, f"adjustments[{i}]")
        key = f"adjust:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[pb.AdjustInventoryResponse]]:
            async def action(conn: asyncpg.Connection) -> pb.AdjustInventoryResponse:
                domain.validate_adjustments(adjustments, await store.location_ids(conn))
                levels = await store.adjust_inventory(conn, adjustments, key)
                return pb.AdjustInventoryResponse(levels=[level_to_pb(lv) for lv in levels])

            return action

        return await self._idempotent(key, request, pb.AdjustInventoryResponse, attempt)

    async def ErasePersonalData(
        self, request: pb.ErasePersonalDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ErasePersonalDataResponse:
        changed = await erasure.erase_orders(
            self._pool,
            store.PERSONAL_COLUMNS,
            request.order_ids,
            [order_workflow_id(o) for o in request.order_ids],
            request.identifying_text,
        )
        return pb.ErasePersonalDataResponse(records_erased=changed)

    async def GetAvailability(
        self, request: pb.GetAvailabilityRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAvailabilityResponse:
        skus = list(dict.fromkeys(request.skus))
        violations = [
            FieldViolation(f"skus[{i}]", "is required") for i, s in enumerate(request.skus) if not s
        ]
        if not skus:
            violations.append(FieldViolation("skus", "at least one SKU is required"))
        if violations:
            raise InvalidArgument(violations)
        async with self._pool.acquire() as conn:
            found = await store.levels_for_skus(conn, skus)
            groups = await store.location_groups(conn, list(request.location_group_ids))
        summed = domain.availability(found, skus, groups)
        return pb.GetAvailabilityResponse(
            levels=[level_to_pb(level) for level, _ in found],
            total_available=summed.total,
            groups=[
                pb.GroupAvailability(location_group_id=group_id, available=available)
                for group_id, available in summed.by_group.items()
            ],
        )
