"""FulfillmentService over gRPC: converts wire types to domain types and back, runs each
request in one transaction (with its idempotency key and outbox rows), and delegates the
decisions to the domain."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar, cast

import asyncpg
import grpc
import structlog
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import db
from oms_platform.errors import FieldViolation, InvalidArgument
from services.fulfillment import domain, store
from workflows.types import FulfillmentEvent, ShipmentItemData

log = structlog.get_logger("oms.fulfillment")

M = TypeVar("M", bound=Message)

# Optimistic routing attempts before the last one, which locks the inventory rows it reads.
ROUTING_ATTEMPTS = 4

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


# ---- conversions --------------------------------------------------------------------------


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None (field left unset)."""
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def address_from_pb(address: common_pb2.PostalAddress) -> domain.PostalAddress:
    return domain.PostalAddress(
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        region=address.region,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )


def address_to_pb(address: domain.PostalAddress) -> common_pb2.PostalAddress:
    return common_pb2.PostalAddress(
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        region=address.region,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )


def groups_from_pb(groups: list[pb.RoutingDeliveryGroup]) -> list[domain.DeliveryGroup]:
    return [
        domain.DeliveryGroup(
            delivery_group_id=g.delivery_group_id,
            address=address_from_pb(g.address),
            lines=tuple(
                domain.RoutingLine(line.order_line_id, line.sku, line.quantity) for line in g.lines
            ),
        )
        for g in groups
    ]


def routing_line_to_pb(line: domain.RoutingLine) -> pb.RoutingLine:
    return pb.RoutingLine(order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantity)


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
        shipped_at=timestamp(shipment.shipped_at),
        delivered_at=timestamp(shipment.delivered_at),
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
            )
            for line in fo.lines
        ],
        shipments=[shipment_to_pb(s) for s in fo.shipments],
        created_at=timestamp(fo.created_at),
        updated_at=timestamp(fo.updated_at),
    )


def location_to_pb(location: domain.Location) -> pb.Location:
    return pb.Location(
        location_id=location.location_id,
        name=location.name,
        type=LOCATION_TYPE_TO_PB.get(location.type, pb.LOCATION_TYPE_UNSPECIFIED),
        address=address_to_pb(location.address),
        latitude=location.latitude,
        longitude=location.longitude,
        priority=location.priority,
        enabled=location.enabled,
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


def statuses_from_pb(statuses: list[pb.FulfillmentOrderStatus.ValueType]) -> tuple[str, ...]:
    violations = [
        FieldViolation(f"statuses[{i}]", "must be a known fulfillment order status")
        for i, s in enumerate(statuses)
        if s not in STATUS_FROM_PB
    ]
    if violations:
        raise InvalidArgument(violations)
    return tuple(STATUS_FROM_PB[s] for s in statuses)


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

    async def CreateFulfillmentOrders(
        self, request: pb.CreateFulfillmentOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateFulfillmentOrdersResponse:
        groups = groups_from_pb(list(request.delivery_groups))
        domain.validate_routing_request(request.order_id, request.idempotency_key, groups)
        key = f"create:{request.order_id}:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[pb.CreateFulfillmentOrdersResponse]]:
            async def action(conn: asyncpg.Connection) -> pb.CreateFulfillmentOrdersResponse:
                snapshot = await store.routing_snapshot(conn, groups, lock=lock)
                plan = domain.route(
                    groups,
                    snapshot.candidates,
                    snapshot.availability,
                    snapshot.destinations,
                    self._policy,
                )
                created = await store.reserve_and_create(conn, request.order_id, plan, _new_id)
                return pb.CreateFulfillmentOrdersResponse(
                    fulfillment_orders=[fulfillment_order_to_pb(fo) for fo in created],
                    unallocated_lines=[routing_line_to_pb(line) for line in plan.unallocated],
                    decisions=plan.decisions,
                )

            return action

        for number in range(1, ROUTING_ATTEMPTS + 1):
            try:
                response, _ = await db.idempotent(
                    self._pool,
                    key,
                    request,
                    pb.CreateFulfillmentOrdersResponse,
                    attempt(lock=number == ROUTING_ATTEMPTS),
                )
                return response
            except (store.ReservationConflict, asyncpg.TransactionRollbackError) as lost:
                # Someone reserved first: nothing of ours was kept; route again on fresh stock.
                if number == ROUTING_ATTEMPTS:
                    raise
                log.debug("routing race lost; routing again", attempt=number, lost=str(lost))
        raise AssertionError("unreachable")

    async def GetFulfillmentOrder(
        self, request: pb.GetFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFulfillmentOrderResponse:
        _required(fulfillment_order_id=request.fulfillment_order_id)
        async with self._pool.acquire() as conn:
            fo = await store.get_fulfillment_order(conn, request.fulfillment_order_id)
        return pb.GetFulfillmentOrderResponse(fulfillment_order=fulfillment_order_to_pb(fo))

    async def ListFulfillmentOrders(
        self, request: pb.ListFulfillmentOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListFulfillmentOrdersResponse:
        size = domain.page_size(request.page_size)
        cursor = domain.decode_cursor(request.page_token)
        where = domain.ListFilter(
            order_id=request.order_id,
            location_id=request.location_id,
            statuses=statuses_from_pb(list(request.statuses)),
        )
        async with self._pool.acquire() as conn:
            page = await store.list_fulfillment_orders(conn, where, cursor, size)
        return pb.ListFulfillmentOrdersResponse(
            fulfillment_orders=[fulfillment_order_to_pb(fo) for fo in page.fulfillment_orders],
            next_page_token=domain.encode_cursor(page.next_cursor) if page.next_cursor else "",
        )

    async def _progress(self, fulfillment_order_id: str, step: str) -> pb.FulfillmentOrder:
        _required(fulfillment_order_id=fulfillment_order_id)

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
        )
        return response

    async def ConfirmDelivery(
        self, request: pb.ConfirmDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmDeliveryResponse:
        _required(shipment_id=request.shipment_id)

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

        async def action(conn: asyncpg.Connection) -> pb.CancelFulfillmentOrderResponse:
            fo = await store.get_fulfillment_order(conn, fo_id, for_update=True)
            if domain.must_cancel(fo):
                await store.cancel(conn, fo, request.reason)
                fo = await store.get_fulfillment_order(conn, fo_id)
            return pb.CancelFulfillmentOrderResponse(fulfillment_order=fulfillment_order_to_pb(fo))

        if not request.idempotency_key:
            # Canceling is idempotent by state too: a canceled order is returned unchanged.
            return await self._in_transaction(action)
        response, _ = await db.idempotent(
            self._pool,
            f"cancel:{fo_id}:{request.idempotency_key}",
            request,
            pb.CancelFulfillmentOrderResponse,
            action,
        )
        return response

    async def ListLocations(
        self, request: pb.ListLocationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLocationsResponse:
        async with self._pool.acquire() as conn:
            locations = await store.list_locations(conn)
        return pb.ListLocationsResponse(locations=[location_to_pb(loc) for loc in locations])

    async def SetInventoryLevels(
        self, request: pb.SetInventoryLevelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetInventoryLevelsResponse:
        levels = [level_from_pb(level) for level in request.levels]

        async def action(conn: asyncpg.Connection) -> pb.SetInventoryLevelsResponse:
            domain.validate_inventory_levels(levels, await store.location_ids(conn))
            stored = await store.set_inventory_levels(conn, levels)
            return pb.SetInventoryLevelsResponse(levels=[level_to_pb(lv) for lv in stored])

        return await self._in_transaction(action)

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
        totals = {sku: 0 for sku in skus}
        for level, enabled in found:
            if enabled:
                totals[level.sku] += level.available
        return pb.GetAvailabilityResponse(
            levels=[level_to_pb(level) for level, _ in found], total_available=totals
        )
