"""FulfillmentService over gRPC: decode the request, check who may act, call the use case in
`handlers` in its transaction (with its idempotency key when the RPC has one), encode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import asyncpg
import grpc
import structlog
from google.protobuf.message import Message
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth, db
from oms_platform.errors import InvalidArgument, PermissionDenied, check_required
from oms_platform.postal import address_violations
from oms_platform.wire import postal_address_from_pb
from services.fulfillment import convert, domain, handlers, store

log = structlog.get_logger("oms.fulfillment")

M = TypeVar("M", bound=Message)
T = TypeVar("T")

# Optimistic attempts before the last one, which locks the inventory rows it reads.
ROUTING_ATTEMPTS = 4

# A transaction attempt: given whether to lock what it reads, the use case to run.
Attempt = Callable[[bool], Callable[[asyncpg.Connection], Awaitable[T]]]


def _warehouse_may_act(fo: domain.FulfillmentOrder) -> None:
    """PERMISSION_DENIED unless the caller may act for the fulfillment order's location."""
    auth.require_location(fo.location_id, f"fulfillment order {fo.fulfillment_order_id}")


async def _retrying(attempt: Callable[[bool], Awaitable[T]]) -> T:
    """Run a transaction `attempt` again when a concurrent writer took units it counted on
    or deadlocked with it (nothing of it was kept), up to ROUTING_ATTEMPTS times; it is told
    whether it is the last."""
    for number in range(1, ROUTING_ATTEMPTS + 1):
        try:
            return await attempt(number == ROUTING_ATTEMPTS)
        except (store.ReservationConflict, asyncpg.TransactionRollbackError) as lost:
            # Nothing of this attempt was kept; try again on what is there now.
            if number == ROUTING_ATTEMPTS:
                raise
            log.debug("lost a race; trying again", attempt=number, lost=str(lost))
    raise AssertionError("unreachable")


class FulfillmentServicer(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    """Converts and delegates; the handlers run the use cases."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: domain.RoutingPolicy,
        holidays: domain.Holidays,
        collect_within_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        # Store pickup: how long a fulfillment order ready for pickup waits for the shopper.
        self._collect_within_seconds = collect_within_seconds
        self._policy = policy
        self._holidays = holidays
        self._clock = clock

    async def _in_transaction(self, use_case: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._pool.acquire() as conn, conn.transaction():
            # A pool's connection proxies a Connection; the stubs do not say so.
            return await use_case(cast(asyncpg.Connection, conn))

    async def _acting_for(
        self,
        fulfillment_order_id: str = "",
        shipment_id: str = "",
        at_store: bool = False,
        supply_id: str = "",
    ) -> None:
        """A warehouse acts only for its own locations: checked before anything is read or
        replayed, so another location's fulfillment order (or supply) is PERMISSION_DENIED,
        never touched. `at_store`: a pickup is handed over by its store (a ship-to-store
        one's too)."""
        if auth.current_principal().acts_for_every_location():
            return
        location, what = await handlers.location_acted_on(
            self._pool, fulfillment_order_id, shipment_id, at_store, supply_id
        )
        auth.require_location(location, what)

    async def _once(
        self,
        key: str,
        request: Message,
        response_type: type[M],
        use_case: Callable[[Any], Awaitable[T]],
        encode: Callable[[T], M],
    ) -> M:
        response, _ = await db.idempotent(self._pool, key, request, response_type, use_case, encode)
        return response

    async def _idempotent(
        self,
        key: str,
        request: Message,
        response_type: type[M],
        attempt: Attempt[T],
        encode: Callable[[T], M],
    ) -> M:
        """Run an idempotent write, again on fresh stock when a concurrent writer took units
        it counted on (or deadlocked with it); the last attempt locks what it reads."""
        return await _retrying(
            lambda last: self._once(key, request, response_type, attempt(last), encode)
        )

    async def CreateFulfillmentOrders(
        self, request: pb.CreateFulfillmentOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateFulfillmentOrdersResponse:
        groups = convert.groups_from_pb(list(request.delivery_groups))
        domain.validate_routing_request(request.order_id, request.idempotency_key, groups)
        key = f"create:{request.order_id}:{request.idempotency_key}"

        def attempt(lock: bool) -> Callable[[asyncpg.Connection], Awaitable[handlers.Routed]]:
            return lambda conn: handlers.create_fulfillment_orders(
                conn,
                self._policy,
                request.order_id,
                groups,
                key,
                lock,
                request.reservation_id,
                holidays=self._holidays,
                now=self._clock(),
            )

        return await self._idempotent(
            key, request, pb.CreateFulfillmentOrdersResponse, attempt, convert.routed_pb
        )

    async def GetFulfillmentOrder(
        self, request: pb.GetFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFulfillmentOrderResponse:
        check_required({"fulfillment_order_id": request.fulfillment_order_id})
        fo = await handlers.get_fulfillment_order(self._pool, request.fulfillment_order_id)
        # The store that hands it over may see it, and so may the location that ships it (a
        # ship-to-store one's warehouse).
        where = fo.handover_location_id
        if not auth.current_principal().may_act_for_location(where):
            where = fo.location_id
        auth.require_location(where, f"fulfillment order {fo.fulfillment_order_id}")
        return pb.GetFulfillmentOrderResponse(fulfillment_order=convert.fulfillment_order_to_pb(fo))

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
            statuses=convert.statuses_from_pb(list(request.statuses)),
            # A warehouse lists only its own locations' fulfillment orders.
            within_locations=None
            if principal.acts_for_every_location()
            else tuple(sorted(principal.locations)),
        )
        page = await handlers.list_fulfillment_orders(self._pool, where, cursor, size)
        return pb.ListFulfillmentOrdersResponse(
            fulfillment_orders=[
                convert.fulfillment_order_to_pb(fo) for fo in page.fulfillment_orders
            ],
            next_page_token=domain.encode_cursor(page.next_cursor) if page.next_cursor else "",
        )

    async def _progress(self, fulfillment_order_id: str, step: str) -> pb.FulfillmentOrder:
        check_required({"fulfillment_order_id": fulfillment_order_id})
        # The warehouse's location is checked on the fulfillment order the step locks, before
        # anything changes (no read of its own: these steps replay nothing).
        fo = await self._in_transaction(
            lambda conn: handlers.progress(
                conn, fulfillment_order_id, step, acting_for=_warehouse_may_act
            )
        )
        return convert.fulfillment_order_to_pb(fo)

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
        check_required({"fulfillment_order_id": fo_id, "idempotency_key": request.idempotency_key})
        await self._acting_for(fo_id)
        items = convert.shipment_items_from_pb(request.items)
        estimated = convert.date_from_pb(request.estimated_delivery_date, "estimated_delivery_date")
        return await self._once(
            f"ship:{fo_id}:{request.idempotency_key}",
            request,
            pb.ConfirmShipmentResponse,
            lambda conn: handlers.confirm_shipment(
                conn,
                fo_id,
                items,
                request.carrier,
                request.service,
                request.tracking_number,
                estimated,
                holidays=self._holidays,
            ),
            convert.shipped_pb,
        )

    async def ConfirmDelivery(
        self, request: pb.ConfirmDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmDeliveryResponse:
        check_required({"shipment_id": request.shipment_id})
        await self._acting_for(shipment_id=request.shipment_id)
        shipment = await self._in_transaction(
            lambda conn: handlers.confirm_delivery(conn, request.shipment_id)
        )
        return pb.ConfirmDeliveryResponse(shipment=convert.shipment_to_pb(shipment))

    async def MarkReadyForPickup(
        self, request: pb.MarkReadyForPickupRequest, context: grpc.aio.ServicerContext
    ) -> pb.MarkReadyForPickupResponse:
        fo_id = request.fulfillment_order_id
        check_required({"fulfillment_order_id": fo_id})
        await self._acting_for(fo_id, at_store=True)
        fo = await self._in_transaction(
            lambda conn: handlers.mark_ready_for_pickup(conn, fo_id, self._collect_within_seconds)
        )
        return pb.MarkReadyForPickupResponse(fulfillment_order=convert.fulfillment_order_to_pb(fo))

    async def ConfirmPickup(
        self, request: pb.ConfirmPickupRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmPickupResponse:
        fo_id = request.fulfillment_order_id
        check_required({"fulfillment_order_id": fo_id, "idempotency_key": request.idempotency_key})
        await self._acting_for(fo_id, at_store=True)
        return await self._once(
            f"pickup:{fo_id}:{request.idempotency_key}",
            request,
            pb.ConfirmPickupResponse,
            lambda conn: handlers.confirm_pickup(conn, fo_id),
            convert.picked_up_pb,
        )

    async def ShipToStore(
        self, request: pb.ShipToStoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShipToStoreResponse:
        fo_id = request.fulfillment_order_id
        check_required({"fulfillment_order_id": fo_id, "idempotency_key": request.idempotency_key})
        await self._acting_for(fo_id)
        return await self._once(
            f"ship_to_store:{fo_id}:{request.idempotency_key}",
            request,
            pb.ShipToStoreResponse,
            lambda conn: handlers.ship_to_store(
                conn, fo_id, request.carrier, request.tracking_number, holidays=self._holidays
            ),
            lambda fo: pb.ShipToStoreResponse(
                fulfillment_order=convert.fulfillment_order_to_pb(fo)
            ),
        )

    async def CancelFulfillmentOrder(
        self, request: pb.CancelFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelFulfillmentOrderResponse:
        fo_id = request.fulfillment_order_id
        check_required({"fulfillment_order_id": fo_id})
        key = f"cancel:{fo_id}:{request.idempotency_key}" if request.idempotency_key else ""
        # The workflow logs the cancels it asks for; anyone else's is logged here.
        principal = auth.current_principal()
        logged_by = "" if principal.has_any({auth.WORKFLOW}) else principal.subject

        def cancel(conn: asyncpg.Connection) -> Awaitable[domain.FulfillmentOrder]:
            return handlers.cancel_fulfillment_order(conn, fo_id, request.reason, key, logged_by)

        def encode(fo: domain.FulfillmentOrder) -> pb.CancelFulfillmentOrderResponse:
            return pb.CancelFulfillmentOrderResponse(
                fulfillment_order=convert.fulfillment_order_to_pb(fo)
            )

        if not key:
            # Canceling is idempotent by state too: a canceled order is returned unchanged.
            return encode(await self._in_transaction(cancel))
        return await self._once(key, request, pb.CancelFulfillmentOrderResponse, cancel, encode)

    async def CancelOrderFulfillmentOrders(
        self, request: pb.CancelOrderFulfillmentOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelOrderFulfillmentOrdersResponse:
        check_required({"order_id": request.order_id, "idempotency_key": request.idempotency_key})
        key = f"cancel-order:{request.order_id}:{request.idempotency_key}"

        def cancel(conn: asyncpg.Connection) -> Awaitable[list[domain.FulfillmentOrder]]:
            return handlers.cancel_order_fulfillment_orders(
                conn, request.order_id, request.reason, key
            )

        def encode(fos: list[domain.FulfillmentOrder]) -> pb.CancelOrderFulfillmentOrdersResponse:
            return pb.CancelOrderFulfillmentOrdersResponse(
                fulfillment_orders=[convert.fulfillment_order_to_pb(fo) for fo in fos]
            )

        return await self._once(
            key, request, pb.CancelOrderFulfillmentOrdersResponse, cancel, encode
        )

    async def RejectFulfillmentOrder(
        self, request: pb.RejectFulfillmentOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RejectFulfillmentOrderResponse:
        fo_id = request.fulfillment_order_id
        check_required({"fulfillment_order_id": fo_id, "idempotency_key": request.idempotency_key})
        await self._acting_for(fo_id)
        requested = convert.line_quantities_from_pb(request.lines)
        key = f"reject:{fo_id}:{request.idempotency_key}"

        def attempt(lock: bool) -> Callable[[asyncpg.Connection], Awaitable[handlers.Rerouted]]:
            return lambda conn: handlers.reject_fulfillment_order(
                conn,
                self._policy,
                fo_id,
                request.idempotency_key,
                requested,
                request.reason,
                key,
                lock,
                holidays=self._holidays,
                now=self._clock(),
            )

        return await self._idempotent(
            key, request, pb.RejectFulfillmentOrderResponse, attempt, convert.rerouted_pb
        )

    async def ChangeDeliveryAddress(
        self, request: pb.ChangeDeliveryAddressRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeDeliveryAddressResponse:
        required = {"order_id": request.order_id, "delivery_group_id": request.delivery_group_id}
        if not request.preview:
            required["idempotency_key"] = request.idempotency_key
        check_required(required)
        if not request.preview and not auth.current_principal().has_any({auth.WORKFLOW}):
            # Only the order's workflow decides a change; others may only ask what it would do.
            raise PermissionDenied(f"{auth.actor()} may only preview an address change")
        address = postal_address_from_pb(request.address)
        violations = address_violations("address", address)
        if violations:
            raise InvalidArgument(violations)
        key = f"address:{request.order_id}:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[handlers.AddressChanged]]:
            return lambda conn: handlers.change_delivery_address(
                conn,
                self._policy,
                request.order_id,
                request.delivery_group_id,
                address,
                request.reason or "delivery address changed",
                key,
                lock,
                preview=request.preview,
                holidays=self._holidays,
                now=self._clock(),
            )

        if request.preview:
            async with self._pool.acquire() as conn, conn.transaction():
                changed = await attempt(False)(cast(asyncpg.Connection, conn))
                return convert.address_changed_pb(changed)
        return await self._idempotent(
            key, request, pb.ChangeDeliveryAddressResponse, attempt, convert.address_changed_pb
        )

    async def CancelFulfillmentOrderLines(
        self, request: pb.CancelFulfillmentOrderLinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelFulfillmentOrderLinesResponse:
        fo_id = request.fulfillment_order_id
        check_required({"fulfillment_order_id": fo_id, "idempotency_key": request.idempotency_key})
        requested = convert.line_quantities_from_pb(request.lines)
        key = f"cancel-lines:{fo_id}:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[domain.FulfillmentOrder]]:
            return lambda conn: handlers.cancel_fulfillment_order_lines(
                conn, fo_id, requested, request.reason, key
            )

        def encode(fo: domain.FulfillmentOrder) -> pb.CancelFulfillmentOrderLinesResponse:
            return pb.CancelFulfillmentOrderLinesResponse(
                fulfillment_order=convert.fulfillment_order_to_pb(fo)
            )

        return await self._idempotent(
            key, request, pb.CancelFulfillmentOrderLinesResponse, attempt, encode
        )

    async def MoveFulfillmentOrderLines(
        self, request: pb.MoveFulfillmentOrderLinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.MoveFulfillmentOrderLinesResponse:
        fo_id = request.fulfillment_order_id
        check_required({"fulfillment_order_id": fo_id, "idempotency_key": request.idempotency_key})
        requested = convert.line_quantities_from_pb(request.lines)
        key = f"move:{fo_id}:{request.idempotency_key}"

        def attempt(lock: bool) -> Callable[[asyncpg.Connection], Awaitable[handlers.Moved]]:
            return lambda conn: handlers.move_fulfillment_order_lines(
                conn,
                fo_id,
                request.to_location_id,
                requested,
                request.reason,
                request.idempotency_key,
                key,
                holidays=self._holidays,
                now=self._clock(),
            )

        return await self._idempotent(
            key, request, pb.MoveFulfillmentOrderLinesResponse, attempt, convert.moved_pb
        )

    async def GetRoutingDecisions(
        self, request: pb.GetRoutingDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRoutingDecisionsResponse:
        check_required({"order_id": request.order_id})
        decisions = await handlers.routing_decisions(self._pool, request.order_id)
        return pb.GetRoutingDecisionsResponse(
            decisions=[convert.decision_to_pb(d) for d in decisions]
        )

    async def ListLocations(
        self, request: pb.ListLocationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLocationsResponse:
        locations = await handlers.list_locations(self._pool)
        return pb.ListLocationsResponse(
            locations=[convert.location_to_pb(loc) for loc in locations]
        )

    async def UpsertLocation(
        self, request: pb.UpsertLocationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertLocationResponse:
        location = convert.location_from_pb(request.location)
        schedule = convert.schedule_change_from_pb(request.location)
        ship_to_store = convert.ship_to_store_from_pb(request.location)
        domain.validate_location(location, schedule)
        stored = await self._in_transaction(
            lambda conn: handlers.upsert_location(conn, location, schedule, ship_to_store)
        )
        return pb.UpsertLocationResponse(location=convert.location_to_pb(stored))

    async def ListLocationGroups(
        self, request: pb.ListLocationGroupsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLocationGroupsResponse:
        groups = await handlers.list_location_groups(self._pool)
        return pb.ListLocationGroupsResponse(
            location_groups=[convert.location_group_to_pb(g) for g in groups]
        )

    async def UpsertLocationGroup(
        self, request: pb.UpsertLocationGroupRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertLocationGroupResponse:
        group = convert.location_group_from_pb(request.location_group)
        stored = await self._in_transaction(
            lambda conn: handlers.upsert_location_group(conn, group)
        )
        return pb.UpsertLocationGroupResponse(location_group=convert.location_group_to_pb(stored))

    async def SetInventoryLevels(
        self, request: pb.SetInventoryLevelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetInventoryLevelsResponse:
        levels = [convert.level_from_pb(level) for level in request.levels]
        stored = await self._in_transaction(
            lambda conn: handlers.set_inventory_levels(conn, levels)
        )
        return pb.SetInventoryLevelsResponse(levels=[convert.level_to_pb(lv) for lv in stored])

    async def AdjustInventory(
        self, request: pb.AdjustInventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdjustInventoryResponse:
        check_required({"idempotency_key": request.idempotency_key})
        adjustments = [convert.adjustment_from_pb(a) for a in request.adjustments]
        for i, adjustment in enumerate(adjustments):
            auth.require_location(adjustment.location_id, f"adjustments[{i}]")
        key = f"adjust:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[list[domain.InventoryLevel]]]:
            return lambda conn: handlers.adjust_inventory(conn, adjustments, key)

        def encode(levels: list[domain.InventoryLevel]) -> pb.AdjustInventoryResponse:
            return pb.AdjustInventoryResponse(levels=[convert.level_to_pb(lv) for lv in levels])

        return await self._idempotent(key, request, pb.AdjustInventoryResponse, attempt, encode)

    async def ErasePersonalData(
        self, request: pb.ErasePersonalDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ErasePersonalDataResponse:
        changed = await handlers.erase_personal_data(
            self._pool, request.order_ids, request.identifying_text
        )
        return pb.ErasePersonalDataResponse(records_erased=changed)

    async def GetAvailability(
        self, request: pb.GetAvailabilityRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAvailabilityResponse:
        skus = domain.availability_skus(request.skus)
        found, summed = await handlers.availability(
            self._pool, skus, list(request.location_group_ids)
        )
        return convert.availability_pb(found, summed)

    async def EstimateDelivery(
        self, request: pb.EstimateDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> pb.EstimateDeliveryResponse:
        question = convert.delivery_question_from_pb(request)
        domain.validate_delivery_question(question)
        estimates = await handlers.estimate_delivery(
            self._pool, self._policy, self._holidays, question, self._clock()
        )
        return pb.EstimateDeliveryResponse(estimates=[convert.estimate_to_pb(e) for e in estimates])

    async def ReserveInventory(
        self, request: pb.ReserveInventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReserveInventoryResponse:
        reservation = convert.reservation_request_from_pb(request)
        domain.validate_reservation_request(reservation)
        key = f"reserve:{request.idempotency_key}"

        def attempt(
            lock: bool,
        ) -> Callable[[asyncpg.Connection], Awaitable[domain.CheckoutReservation]]:
            return lambda conn: handlers.reserve_inventory(conn, self._policy, reservation, lock)

        def encode(held: domain.CheckoutReservation) -> pb.ReserveInventoryResponse:
            return pb.ReserveInventoryResponse(reservation=convert.reservation_to_pb(held))

        return await self._idempotent(key, request, pb.ReserveInventoryResponse, attempt, encode)

    async def GetReservation(
        self, request: pb.GetReservationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReservationResponse:
        check_required({"reservation_id": request.reservation_id})
        found = await handlers.get_reservation(self._pool, request.reservation_id)
        return pb.GetReservationResponse(reservation=convert.reservation_to_pb(found))

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseReservationResponse:
        check_required({"reservation_id": request.reservation_id})
        # Again after a deadlock with an order consuming it (nothing was kept).
        released = await _retrying(
            lambda _: self._in_transaction(
                lambda conn: handlers.release_reservation(conn, request.reservation_id)
            )
        )
        return pb.ReleaseReservationResponse(reservation=convert.reservation_to_pb(released))

    # ---- incoming supply ---------------------------------------------------------------------

    async def CreateSupply(
        self, request: pb.CreateSupplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSupplyResponse:
        check_required({"idempotency_key": request.idempotency_key})
        supply = convert.supply_request_from_pb(request)
        auth.require_location(supply.location_id, "the supply")
        key = f"supply:{request.idempotency_key}"

        def encode(created: domain.Supply) -> pb.CreateSupplyResponse:
            return pb.CreateSupplyResponse(supply=convert.supply_to_pb(created))

        return await self._once(
            key,
            request,
            pb.CreateSupplyResponse,
            lambda conn: handlers.create_supply(conn, supply),
            encode,
        )

    async def _supply_location(self, supply_id: str) -> None:
        """A warehouse changes or receives only its own locations' supply."""
        check_required({"supply_id": supply_id})
        await self._acting_for(supply_id=supply_id)

    async def UpdateSupply(
        self, request: pb.UpdateSupplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateSupplyResponse:
        await self._supply_location(request.supply_id)
        quantity = request.quantity if request.HasField("quantity") else None
        expected = convert.date_from_pb(request.expected_date, "expected_date")
        changed = await self._in_transaction(
            lambda conn: handlers.update_supply(
                conn,
                request.supply_id,
                quantity,
                expected,
                holidays=self._holidays,
                now=self._clock(),
            )
        )
        return pb.UpdateSupplyResponse(supply=convert.supply_to_pb(changed))

    async def CancelSupply(
        self, request: pb.CancelSupplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelSupplyResponse:
        await self._supply_location(request.supply_id)
        key = f"cancel-supply:{request.supply_id}"
        canceled = await self._in_transaction(
            lambda conn: handlers.cancel_supply(
                conn,
                request.supply_id,
                request.reason,
                key,
                holidays=self._holidays,
                now=self._clock(),
            )
        )
        return pb.CancelSupplyResponse(supply=convert.supply_to_pb(canceled))

    async def ListSupply(
        self, request: pb.ListSupplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSupplyResponse:
        size = domain.page_size(request.page_size)
        statuses = convert.supply_statuses_from_pb(list(request.statuses))
        found = await handlers.list_supply(
            self._pool, request.sku, request.location_id, statuses, size
        )
        return pb.ListSupplyResponse(supply=[convert.supply_to_pb(s) for s in found])

    async def ReceiveSupply(
        self, request: pb.ReceiveSupplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveSupplyResponse:
        check_required({"idempotency_key": request.idempotency_key})
        await self._supply_location(request.supply_id)
        key = f"receive-supply:{request.idempotency_key}"

        def attempt(lock: bool) -> Callable[[asyncpg.Connection], Awaitable[handlers.Received]]:
            return lambda conn: handlers.receive_supply(
                conn, request.supply_id, request.quantity, key
            )

        def encode(received: handlers.Received) -> pb.ReceiveSupplyResponse:
            return pb.ReceiveSupplyResponse(
                supply=convert.supply_to_pb(received.supply),
                released=[convert.fulfillment_order_to_pb(fo) for fo in received.released],
            )

        return await self._idempotent(key, request, pb.ReceiveSupplyResponse, attempt, encode)

    # ---- transit times -----------------------------------------------------------------------

    async def ListTransitTimes(
        self, request: pb.ListTransitTimesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransitTimesResponse:
        rows = await handlers.list_transit_times(self._pool, request.delivery_method)
        return pb.ListTransitTimesResponse(transit_times=convert.transit_rows_to_pb(rows))

    async def SetTransitTime(
        self, request: pb.SetTransitTimeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetTransitTimeResponse:
        band = convert.transit_band_from_pb(request)
        domain.validate_transit_band(band)
        edit = await self._in_transaction(
            lambda conn: handlers.set_transit_time(conn, band, request.new_method)
        )
        return pb.SetTransitTimeResponse(
            transit_time=convert.transit_time_to_pb(band, edit.bands),
            added=edit.added,
            transit_times=convert.transit_rows_to_pb(edit.bands),
        )

    async def DeleteTransitTime(
        self, request: pb.DeleteTransitTimeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTransitTimeResponse:
        check_required({"delivery_method": request.delivery_method})
        edit = await self._in_transaction(
            lambda conn: handlers.delete_transit_time(
                conn, request.delivery_method, request.from_km
            )
        )
        return pb.DeleteTransitTimeResponse(
            deleted=edit.band is not None,
            transit_time=convert.transit_time_to_pb(edit.band) if edit.band else None,
            transit_times=convert.transit_rows_to_pb(edit.bands),
        )
