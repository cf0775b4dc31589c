"""Fulfillment's use cases: one function per RPC, returning domain values.

The writes run in a transaction the edge opens (with the idempotency key when the RPC has
one, so the stored answer commits with the effect); each locks the fulfillment order it
changes, lets the domain decide, and stores the decision with its outbox signal to the order's
workflow in the same transaction. Routing use cases take `lock`: the edge retries them when a
concurrent writer took units they counted on, and the last attempt locks what it reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from oms_platform import erasure
from oms_platform.db import new_id
from oms_platform.errors import InvalidArgument, NotFound
from services.fulfillment import domain, events, store
from workflows.types import order_workflow_id


@dataclass(frozen=True)
class Routed:
    """Fulfillment orders created by routing, and what routing could not place."""

    fulfillment_orders: list[domain.FulfillmentOrder]
    plan: domain.RoutingPlan


@dataclass(frozen=True)
class Rerouted:
    """A rejection: the fulfillment order after it, and where its units went."""

    fulfillment_order: domain.FulfillmentOrder
    replacements: list[domain.FulfillmentOrder]
    plan: domain.RoutingPlan


@dataclass(frozen=True)
class Shipped:
    """A confirmed shipment and its fulfillment order after it."""

    shipment: domain.Shipment
    fulfillment_order: domain.FulfillmentOrder


@dataclass(frozen=True)
class Moved:
    """A move: the fulfillment order the units left, and the one they went to."""

    fulfillment_order: domain.FulfillmentOrder
    moved_to: domain.FulfillmentOrder


async def _route(
    conn: asyncpg.Connection,
    groups: Sequence[domain.DeliveryGroup],
    lock: bool,
    policy: domain.RoutingPolicy,
) -> domain.RoutingPlan:
    snapshot = await store.routing_snapshot(conn, groups, lock=lock)
    return domain.route(
        groups, snapshot.candidates, snapshot.availability, snapshot.destinations, policy
    )


# ---- routing and fulfillment orders ---------------------------------------------------------


async def _backorder(
    conn: asyncpg.Connection, plan: domain.RoutingPlan
) -> tuple[domain.RoutingPlan, list[domain.Backorder]]:
    """Promise what stock could not place from incoming supply (its rows locked, so two orders
    never promise the same units); the plan keeps only what is left unplaced."""
    if not plan.unallocated:
        return plan, []
    supplies = await store.open_supply(conn, [line.sku for line in plan.unallocated])
    return domain.backorder(plan, supplies, await store.today(conn))


async def _promise(
    conn: asyncpg.Connection,
    fos: Sequence[domain.FulfillmentOrder],
    holidays: domain.Holidays,
    now: datetime,
) -> list[domain.FulfillmentOrder]:
    """Give new fulfillment orders the delivery promise of the route each took (a backordered
    one's counted from its supply's day), as EstimateDelivery would have said."""
    if not fos:
        return []
    found = await store.routes(conn, [fo.fulfillment_order_id for fo in fos])
    transit = await store.transit_table(conn)
    promised = {
        fo.fulfillment_order_id: domain.promised_delivery(
            found[fo.fulfillment_order_id], transit, holidays, now, fo.available_on
        )
        for fo in fos
        if fo.fulfillment_order_id in found
    }
    await store.set_promised(conn, promised)
    return [
        dataclasses.replace(fo, promised_delivery_date=promised.get(fo.fulfillment_order_id))
        for fo in fos
    ]


async def create_fulfillment_orders(
    conn: asyncpg.Connection,
    policy: domain.RoutingPolicy,
    order_id: str,
    groups: Sequence[domain.DeliveryGroup],
    key: str,
    lock: bool,
    reservation_id: str = "",
    *,
    holidays: domain.Holidays,
    now: datetime,
) -> Routed:
    """Route an order's delivery groups, reserve the stock and create a fulfillment order
    per location chosen, each promised for the day its route arrives. With a checkout
    reservation the order may consume (held, not expired), its held units are placed where
    they are held and it is consumed; any other reservation is not used, and the routing
    decision says why."""
    consumed, note = None, ""
    if reservation_id:
        found = await store.get_reservation(conn, reservation_id, for_update=True)
        note = domain.usable_by(found, reservation_id, order_id)
        if found is not None and not note:
            # Its units go back to their levels here, for this routing to reserve again.
            await store.consume(conn, found, order_id)
            consumed = found
    await store.release_expired_for(conn, {line.sku for g in groups for line in g.lines})
    if consumed is None:
        plan = domain.with_note(await _route(conn, groups, lock, policy), note)
    else:
        snapshot = await store.routing_snapshot(conn, groups, lock=lock)
        plan = domain.route_with_reservation(
            groups,
            consumed.holds,
            reservation_id,
            snapshot.candidates,
            snapshot.availability,
            snapshot.destinations,
            policy,
        )
    plan, backorders = await _backorder(conn, plan)
    # The groups first: a pickup group's fulfillment orders take its store from them.
    await store.record_delivery_groups(conn, order_id, groups)
    created = await store.reserve_and_create(conn, order_id, plan, new_id, key)
    created += await store.create_backordered(conn, order_id, backorders, new_id)
    created = await _promise(conn, created, holidays, now)
    await store.record_decisions(conn, domain.decisions_of(order_id, plan, "order"), key)
    return Routed(created, plan)


async def progress(
    conn: asyncpg.Connection,
    fulfillment_order_id: str,
    step: str,
    acting_for: Callable[[domain.FulfillmentOrder], None] = lambda fo: None,
) -> domain.FulfillmentOrder:
    """Move a fulfillment order one step (accept, pick, pack) and log it for the order (the
    workflow is not told); the same step again is a no-op. `acting_for` raises when the
    caller may not act on the fulfillment order, before anything changes."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    acting_for(fo)
    status = domain.progress(fo, step)
    if status != fo.status:
        # Only the status and its time changed: no need to read the order back.
        updated_at = await store.set_status(conn, fulfillment_order_id, status)
        fo = dataclasses.replace(fo, status=status, updated_at=updated_at)
        await store.log_order_event(
            conn, events.status_changed_event(fo, f"warehouse:{fo.location_id}")
        )
    return fo


async def confirm_shipment(
    conn: asyncpg.Connection,
    fulfillment_order_id: str,
    items: Sequence[domain.ShipmentItem],
    carrier: str,
    service: str,
    tracking_number: str,
    estimated_delivery_date: date | None = None,
    *,
    holidays: domain.Holidays,
) -> Shipped:
    """Record a parcel that left, promise its fulfillment order again from the day it left
    (or the carrier's estimate), and tell the order's workflow."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    plan = domain.plan_shipment(fo, items)
    shipment = await store.record_shipment(
        conn, fo, new_id(), carrier, service, tracking_number, plan, estimated_delivery_date
    )
    route = (await store.routes(conn, [fulfillment_order_id])).get(fulfillment_order_id)
    if route is not None:
        promised = domain.promised_after_shipment(
            route,
            await store.transit_table(conn),
            holidays,
            shipment.shipped_at,
            estimated_delivery_date,
        )
        if promised is not None:
            await store.set_promised(conn, {fulfillment_order_id: promised})
    after = await store.get_fulfillment_order(conn, fulfillment_order_id)
    await store.signal_order(conn, fo.order_id, events.shipped_event(after, shipment))
    return Shipped(shipment, after)


async def confirm_delivery(conn: asyncpg.Connection, shipment_id: str) -> domain.Shipment:
    """Record a parcel that arrived, and tell the order's workflow the first time only."""
    order_id = await store.order_of_shipment(conn, shipment_id)
    if await store.mark_delivered(conn, shipment_id):
        shipment = await store.get_shipment(conn, shipment_id)
        await store.signal_order(conn, order_id, events.delivered_event(shipment))
    else:
        shipment = await store.get_shipment(conn, shipment_id)
    return shipment


# ---- store pickup ----------------------------------------------------------------------------


async def mark_ready_for_pickup(
    conn: asyncpg.Connection, fulfillment_order_id: str, collect_within_seconds: float
) -> domain.FulfillmentOrder:
    """The store set a pickup fulfillment order aside: it waits there until its deadline, and
    the order's log (which mails the shopper) hears of it; again, nothing changes. A
    ship-to-store one is received at the store first (its units onto the store's stock,
    reserved there)."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    if domain.must_mark_ready(fo):
        if fo.status == domain.IN_TRANSIT_TO_STORE:
            # Ship-to-store: setting it aside is the store receiving the transfer.
            await store.receive_at_store(conn, fo)
        await store.mark_ready(conn, fulfillment_order_id, collect_within_seconds)
        fo = await store.get_fulfillment_order(conn, fulfillment_order_id)
        await store.log_order_event(
            conn,
            events.status_changed_event(fo, f"warehouse:{fo.location_id}", domain.ready_note(fo)),
        )
    return fo


async def ship_to_store(
    conn: asyncpg.Connection,
    fulfillment_order_id: str,
    carrier: str,
    tracking_number: str,
    *,
    holidays: domain.Holidays,
) -> domain.FulfillmentOrder:
    """The warehouse shipped a ship-to-store fulfillment order to its pickup store: the units
    leave the warehouse (a transfer, not the shopper's shipment: the order's log hears of it,
    nothing is invoiced), and it is promised again from the day it left, as a shipment is;
    its workflow is told only when that moves the promise. Again, nothing changes."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    if domain.must_ship_to_store(fo):
        await store.ship_to_store(conn, fo, carrier, tracking_number)
        fo = await store.get_fulfillment_order(conn, fulfillment_order_id)
        await store.log_order_event(
            conn,
            events.status_changed_event(
                fo, f"warehouse:{fo.location_id}", domain.transfer_note(fo)
            ),
        )
        route = (await store.routes(conn, [fulfillment_order_id])).get(fulfillment_order_id)
        if route is not None and fo.transfer_shipped_at is not None:
            promised = domain.promised_after_transfer(
                route, await store.transit_table(conn), holidays, fo.transfer_shipped_at
            )
            if promised is not None and promised != fo.promised_delivery_date:
                await store.set_promised(conn, {fulfillment_order_id: promised})
                fo = dataclasses.replace(fo, promised_delivery_date=promised)
                await store.signal_order(conn, fo.order_id, events.transfer_repromised_event(fo))
    return fo


async def confirm_pickup(conn: asyncpg.Connection, fulfillment_order_id: str) -> Shipped:
    """The shopper collected a fulfillment order ready for pickup: a parcel that left the
    store's stock and was delivered at once, told to the order's workflow as both."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    plan = domain.plan_pickup(fo)
    shipment_id = new_id()
    await store.record_shipment(
        conn, fo, shipment_id, domain.PICKUP_CARRIER, "", fo.pickup_location_id, plan
    )
    await store.mark_delivered(conn, shipment_id)
    shipment = await store.get_shipment(conn, shipment_id)
    await store.signal_order(conn, fo.order_id, events.shipped_event(fo, shipment))
    await store.signal_order(conn, fo.order_id, events.delivered_event(shipment))
    after = await store.get_fulfillment_order(conn, fulfillment_order_id)
    return Shipped(shipment, after)


async def cancel_uncollected_pickups(pool: asyncpg.Pool, batch: int) -> int:
    """Cancel up to `batch` pickup fulfillment orders whose deadline passed (their stock
    restored, their capacity slots given back) in one transaction, and tell each order's
    workflow; returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        due = await store.lock_due_pickups(conn, batch)
        for fo_id in due:
            fo = await store.get_fulfillment_order(conn, fo_id)
            change = domain.plan_not_collected(fo)
            reason = domain.not_collected_reason(fo)
            await store.take_off(conn, fo, change, reason, f"not_collected:{fo_id}")
            await store.signal_order(
                conn, fo.order_id, events.not_collected_event(fo, change, reason)
            )
    return len(due)


async def cancel_fulfillment_order(
    conn: asyncpg.Connection, fulfillment_order_id: str, reason: str, key: str, logged_by: str = ""
) -> domain.FulfillmentOrder:
    """Cancel what is left of a fulfillment order (its reservations released). `logged_by`:
    the actor of a cancel the workflow did not ask for (an admin's), logged for the order, as
    the workflow logs its own."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    change = domain.plan_cancel(fo)
    if change is not None:
        await store.take_off(conn, fo, change, reason, key)
        fo = await store.get_fulfillment_order(conn, fulfillment_order_id)
        if logged_by:
            await store.log_order_event(
                conn, events.status_changed_event(fo, logged_by, reason, change.lines)
            )
    return fo


async def cancel_order_fulfillment_orders(
    conn: asyncpg.Connection, order_id: str, reason: str, key: str
) -> list[domain.FulfillmentOrder]:
    """Cancel what each of an order's fulfillment orders has not shipped (reservations
    released); the ones canceled, after it. The workflow logs the cancel itself."""
    fos = await store.order_fulfillment_orders_for_update(conn, order_id)
    planned = domain.plan_order_cancel(fos)
    for fo, change in planned:
        await store.take_off(conn, fo, change, reason, key)
    return await store.fulfillment_orders_by_id(
        conn, [fo.fulfillment_order_id for fo, _ in planned]
    )


async def reject_fulfillment_order(
    conn: asyncpg.Connection,
    policy: domain.RoutingPolicy,
    fulfillment_order_id: str,
    idempotency_key: str,
    requested: Sequence[domain.LineQuantity],
    reason: str,
    key: str,
    lock: bool,
    *,
    holidays: domain.Holidays,
    now: datetime,
) -> Rerouted:
    """A location refuses units: take them off, route them again elsewhere (never back to a
    location that refused them), each replacement promised for the day its route arrives,
    and tell the order's workflow where they went."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    change = domain.plan_line_change(fo, domain.REJECTED, requested)
    await store.take_off(conn, fo, change, reason, key)
    line_ids = [line.order_line_id for line in change.lines]
    earlier = await store.rejecting_locations(conn, fo.order_id, line_ids)
    excluded = domain.rejection_reasons(fo, reason, earlier)
    group = await store.delivery_group(conn, fo.order_id, fo.delivery_group_id, change.lines)
    await store.release_expired_for(conn, [line.sku for line in change.lines])
    plan = await _route(conn, [group], lock, policy.with_rules(domain.ExcludeLocations(excluded)))
    replacements = await store.reserve_and_create(conn, fo.order_id, plan, new_id, key)
    replacements = await _promise(conn, replacements, holidays, now)
    await store.record_decisions(
        conn, domain.decisions_of(fo.order_id, plan, "rejection", fulfillment_order_id), key
    )
    event = events.line_change_event(
        fulfillment_order_id, idempotency_key, change, reason, replacements, plan.unallocated
    )
    await store.signal_order(conn, fo.order_id, event)
    after = await store.get_fulfillment_order(conn, fulfillment_order_id)
    return Rerouted(after, replacements, plan)


async def cancel_fulfillment_order_lines(
    conn: asyncpg.Connection,
    fulfillment_order_id: str,
    requested: Sequence[domain.LineQuantity],
    reason: str,
    key: str,
) -> domain.FulfillmentOrder:
    """Cancel some units of a fulfillment order (their reservations released)."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    change = domain.plan_line_change(fo, domain.CANCELED, requested)
    updated_at = await store.take_off(conn, fo, change, reason, key)
    # Locked since it was read: what is stored now is that with the change, not read again.
    return domain.after_line_change(fo, change, updated_at)


async def move_fulfillment_order_lines(
    conn: asyncpg.Connection,
    fulfillment_order_id: str,
    to_location_id: str,
    requested: Sequence[domain.LineQuantity],
    reason: str,
    idempotency_key: str,
    key: str,
    *,
    holidays: domain.Holidays,
    now: datetime,
) -> Moved:
    """Move units to another location's new fulfillment order, promised for the day its
    route arrives, and tell the workflow."""
    fo = await store.get_fulfillment_order(conn, fulfillment_order_id, for_update=True)
    found = await store.get_location(conn, to_location_id) if to_location_id else None
    target = domain.check_move_target(fo, to_location_id, found)
    change = domain.plan_line_change(fo, domain.MOVED, requested)
    await store.release_expired_for(conn, [line.sku for line in change.lines])
    moved_to = await store.move(conn, fo, change, target, new_id, reason, key)
    [moved_to] = await _promise(conn, [moved_to], holidays, now)
    await store.record_decisions(conn, [domain.move_decision(fo, target, change, reason)], key)
    event = events.line_change_event(
        fulfillment_order_id, idempotency_key, change, reason, [moved_to]
    )
    await store.signal_order(conn, fo.order_id, event)
    after = await store.get_fulfillment_order(conn, fulfillment_order_id)
    return Moved(after, moved_to)


@dataclass(frozen=True)
class AddressChanged:
    """A delivery group's new address: whether its units moved, from where to where, the
    fulfillment orders they left (every unshipped unit taken off) and their replacements."""

    rerouted: bool
    from_location_ids: tuple[str, ...]
    to_location_ids: tuple[str, ...]
    canceled: list[str]
    replacements: list[domain.FulfillmentOrder]
    decisions: list[str]


class _KeepNothing(Exception):
    """Rolls back a routing for a new address that is not kept (same locations, or a preview)."""


async def change_delivery_address(
    conn: asyncpg.Connection,
    policy: domain.RoutingPolicy,
    order_id: str,
    delivery_group_id: str,
    address: domain.PostalAddress,
    reason: str,
    key: str,
    lock: bool,
    preview: bool = False,
    *,
    holidays: domain.Holidays,
    now: datetime,
) -> AddressChanged:
    """Send a delivery group to `address`: its unshipped units are taken off where they are
    (their reservations released, so they count as available again) and routed for the new
    address as a rejection's units are, the replacements promised for the day their routes
    to it arrive; kept only when routing chose other locations for all of them, else rolled
    back so nothing but the address changes. A preview keeps nothing."""
    fos = await store.group_fulfillment_orders(conn, order_id, delivery_group_id)
    if not fos:
        raise NotFound(f"order {order_id} has no fulfillment orders in {delivery_group_id}")
    plan = domain.plan_address_change(delivery_group_id, fos)
    before = plan.location_ids
    kept = await store.delivery_group(conn, order_id, delivery_group_id, plan.lines)
    group = dataclasses.replace(kept, address=address)
    routed: domain.RoutingPlan | None = None
    answer: AddressChanged | None = None
    try:
        async with conn.transaction():  # a savepoint: undone unless the units move
            for fo, reduction in plan.reductions:
                await store.take_off(conn, fo, reduction, reason, key)
            await store.release_expired_for(conn, [line.sku for line in plan.lines])
            routed = await _route(conn, [group], lock, policy)
            if preview or not domain.reroutes(plan, routed):
                raise _KeepNothing
            replacements = await store.reserve_and_create(conn, order_id, routed, new_id, key)
            await store.record_decisions(
                conn, domain.decisions_of(order_id, routed, "address_change"), key
            )
            canceled = [fo.fulfillment_order_id for fo, _ in plan.reductions]
            answer = AddressChanged(
                True,
                before,
                domain.chosen_locations(routed),
                canceled,
                replacements,
                routed.decisions,
            )
    except _KeepNothing:
        pass
    if not preview:
        await store.set_delivery_address(conn, order_id, delivery_group_id, address)
    if answer is not None:
        # Promised once the group has its new address: the route runs to it.
        promised = await _promise(conn, answer.replacements, holidays, now)
        return dataclasses.replace(answer, replacements=promised)
    assert routed is not None
    moves = domain.reroutes(plan, routed)
    return AddressChanged(
        moves,
        before,
        domain.chosen_locations(routed) if moves else before,
        [],
        [],
        routed.decisions,
    )


# ---- checkout reservations --------------------------------------------------------------------


async def reserve_inventory(
    conn: asyncpg.Connection,
    policy: domain.RoutingPolicy,
    request: domain.ReservationRequest,
    lock: bool,
) -> domain.CheckoutReservation:
    """Hold a cart's units where routing would ship them from (only a location group's
    members when one is named), all or nothing, until the reservation expires."""
    group = None
    if request.location_group_id:
        found = await store.location_groups(conn, [request.location_group_id])
        if not found:
            raise domain.unknown_location_group(request.location_group_id)
        [group] = found
        policy = policy.with_rules(domain.WithinLocationGroup(group))
    cart = domain.cart_group(request)
    await store.release_expired_for(conn, [line.sku for line in request.lines])
    snapshot = await store.routing_snapshot(conn, [cart], lock=lock)
    plan = domain.route(
        [cart], snapshot.candidates, snapshot.availability, snapshot.destinations, policy
    )
    eligible = domain.eligible_locations(snapshot.candidates, group)
    holds = domain.holds_of_plan(request, plan, snapshot.availability, eligible)
    return await store.hold(conn, new_id(), request, holds)


async def _reservation(
    conn: store.Conn, reservation_id: str, for_update: bool = False
) -> domain.CheckoutReservation:
    found = await store.get_reservation(conn, reservation_id, for_update)
    if found is None:
        raise NotFound(f"checkout reservation {reservation_id} does not exist")
    return found


async def get_reservation(pool: asyncpg.Pool, reservation_id: str) -> domain.CheckoutReservation:
    """One checkout reservation as it is now."""
    async with pool.acquire() as conn:
        return await _reservation(conn, reservation_id)


async def release_reservation(
    conn: asyncpg.Connection, reservation_id: str
) -> domain.CheckoutReservation:
    """Give a held reservation's units back; a released or expired one is returned as it is,
    a consumed one refused (its units are the order's)."""
    found = await _reservation(conn, reservation_id, for_update=True)
    status = domain.released_status(found)
    if status is not None and await store.release_if_held(conn, found, status):
        return await _reservation(conn, reservation_id)  # locked above: still there
    return found


async def release_expired_reservations(pool: asyncpg.Pool, batch: int) -> int:
    """Release up to `batch` expired reservations not released yet, in one transaction;
    returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        return await store.release_expired_batch(conn, batch)


# ---- incoming supply and backorders ---------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A receipt: the supply after it, and the backordered fulfillment orders it released."""

    supply: domain.Supply
    released: list[domain.FulfillmentOrder]


async def create_supply(conn: asyncpg.Connection, request: domain.SupplyRequest) -> domain.Supply:
    """Record incoming supply at a known location; one open pre-order per SKU and location."""
    domain.validate_supply(request, await store.location_ids(conn), await store.today(conn))
    found = await store.open_pre_order(conn, request.location_id, request.sku)
    domain.check_one_pre_order(request, found)
    return await store.insert_supply(conn, new_id(), request)


async def update_supply(
    conn: asyncpg.Connection,
    supply_id: str,
    quantity: int | None,
    expected_date: date | None,
    *,
    holidays: domain.Holidays,
    now: datetime,
) -> domain.Supply:
    """Change an open supply; a new date re-promises its waiting fulfillment orders."""
    supply = await store.get_supply(conn, supply_id, for_update=True)
    changed = domain.changed_supply(supply, quantity, expected_date)
    after = await store.change_supply(conn, changed)
    if reason := domain.date_moved_reason(supply, after):
        waiting = await store.waiting(conn, supply_id)
        for fo in await _repromise(conn, [(fo, after) for fo in waiting], holidays, now):
            await store.signal_order(
                conn, fo.order_id, events.backorder_repromised_event(fo, after, reason)
            )
    return after


async def cancel_supply(
    conn: asyncpg.Connection,
    supply_id: str,
    reason: str,
    key: str,
    *,
    holidays: domain.Holidays,
    now: datetime,
) -> domain.Supply:
    """Cancel an open supply: each waiting fulfillment order, oldest first, is promised from
    other supply of the SKU, or rejected back to its order when there is none (its workflow
    routes the units again, and holds for an agent as when no location has them)."""
    supply = await store.get_supply(conn, supply_id, for_update=True)
    if supply.status == domain.SUPPLY_CANCELED:
        return supply
    domain.check_open(supply, "cancel it")
    waiting = await store.waiting(conn, supply_id)
    await store.cancel_supply(conn, supply_id)
    others = await store.open_supply(conn, [supply.sku])
    why = domain.canceled_reason(supply, reason)
    plan = domain.repromise(
        [domain.waiting_of(fo) for fo in waiting], supply, others, await store.today(conn)
    )
    by_id = {fo.fulfillment_order_id: fo for fo in waiting}
    # Every one that moves to other supply is promised from it at once, then each is told.
    moves = [
        (by_id[entry.fulfillment_order_id], other) for entry, other in plan if other is not None
    ]
    promised = {fo.fulfillment_order_id: fo for fo in await _repromise(conn, moves, holidays, now)}
    for entry, other in plan:
        fo = by_id[entry.fulfillment_order_id]
        if other is not None:
            fo = promised[fo.fulfillment_order_id]
            event = events.backorder_repromised_event(
                fo, other, domain.repromised_reason(why, other)
            )
            await store.signal_order(conn, fo.order_id, event)
            continue
        change = domain.plan_unpromised(fo)
        await store.take_off(conn, fo, change, why, key)
        event = events.line_change_event(
            fo.fulfillment_order_id, key, change, why, [], change.lines
        )
        await store.signal_order(conn, fo.order_id, event)
    return await store.get_supply(conn, supply_id)


async def _repromise(
    conn: asyncpg.Connection,
    moves: Sequence[tuple[domain.FulfillmentOrder, domain.Supply]],
    holidays: domain.Holidays,
    now: datetime,
) -> list[domain.FulfillmentOrder]:
    """Promise (locked) waiting fulfillment orders each from its supply: the supply's day, and
    the delivery dates counted from it, all on one read of routes and transit times. The
    fulfillment orders after, in the order given."""
    moved: list[domain.FulfillmentOrder] = []
    for fo, supply in moves:
        await store.repromise(conn, fo.fulfillment_order_id, supply)
        moved.append(
            dataclasses.replace(
                fo, location_id=supply.location_id, promise_date=supply.expected_date
            )
        )
    return await _promise(conn, moved, holidays, now)


async def receive_supply(
    conn: asyncpg.Connection, supply_id: str, quantity: int, key: str
) -> Received:
    """Units of a supply arrived: on hand goes up at its location, and its waiting fulfillment
    orders get them oldest first (reserved and allocated, their workflows told)."""
    supply = await store.get_supply(conn, supply_id)
    domain.check_receipt(supply, quantity)
    # Expired checkout holds give their units back first, as before any other count of stock
    # (reservations, then the level, then the supply and its waiting orders: the lock order).
    await store.release_expired_for(conn, [supply.sku])
    await store.adjust_inventory(conn, [domain.receipt_adjustment(supply, quantity)], key)
    supply = await store.get_supply(conn, supply_id, for_update=True)
    domain.check_receipt(supply, quantity)
    await store.receive_supply(conn, supply_id, quantity, domain.receipt_status(supply, quantity))
    released = await _release_backorders(
        conn,
        await store.waiting(conn, supply_id),
        supply.location_id,
        supply.sku,
        key,
        f"supply {supply_id} received",
    )
    return Received(await store.get_supply(conn, supply_id), released)


async def _release_backorders(
    conn: asyncpg.Connection,
    waiting: Sequence[domain.FulfillmentOrder],
    location_id: str,
    sku: str,
    key: str,
    reason: str,
) -> list[domain.FulfillmentOrder]:
    """Give what is available of `sku` at the location to its (locked) waiting fulfillment
    orders, oldest first, stopping at the first that does not fit: each is reserved whole and
    becomes the location's work, its workflow told why (`reason`). The released ones, after."""
    level = await store.available(conn, location_id, sku)
    chosen = {
        w.fulfillment_order_id
        for w in domain.to_release([domain.waiting_of(f) for f in waiting], level)
    }
    released: list[domain.FulfillmentOrder] = []
    for fo in waiting:
        if fo.fulfillment_order_id not in chosen or not await store.release(conn, fo, key):
            break
        after = await store.get_fulfillment_order(conn, fo.fulfillment_order_id)
        released.append(after)
        await store.signal_order(conn, fo.order_id, events.backorder_released_event(fo, reason))
    return released


async def list_supply(
    pool: asyncpg.Pool, sku: str, location_id: str, statuses: Sequence[str], limit: int
) -> list[domain.Supply]:
    """Supply matching the filters, earliest expected first."""
    async with pool.acquire() as conn:
        return await store.list_supply(conn, sku, location_id, statuses, limit)


# ---- locations and inventory ----------------------------------------------------------------


async def upsert_location(
    conn: asyncpg.Connection,
    location: domain.Location,
    schedule: domain.ScheduleChange,
    ship_to_store: domain.ShipToStore | None = None,
) -> domain.Location:
    """Create or change a location; the schedule fields and the ship-to-store setting it
    leaves out keep their values (a store accepts ship-to-store only from known warehouses)."""
    stored = await store.get_location(conn, location.location_id)
    location = domain.with_ship_to_store(location, ship_to_store, stored)
    if location.ship_to_store.accepted or location.ship_to_store.from_location_ids:
        types = {loc.location_id: loc.type for loc in await store.list_locations(conn)}
        if violations := domain.ship_to_store_violations(location, types):
            raise InvalidArgument(violations)
    return await store.upsert_location(conn, domain.with_schedule(location, schedule, stored))


async def upsert_location_group(
    conn: asyncpg.Connection, group: domain.LocationGroup
) -> domain.LocationGroup:
    """Create or change a location group of known locations."""
    domain.validate_location_group(group, await store.location_ids(conn))
    return await store.upsert_location_group(conn, group)


def levels_set_key() -> str:
    """The key a level set records the reservations of the backorders it releases under: a
    set has no idempotency key of its own (sending the same levels again raises nothing, so
    releases nothing), so each call gets a fresh one, telling one feed's releases from
    another's."""
    return f"set-inventory-levels:{new_id()}"


async def set_inventory_levels(
    conn: asyncpg.Connection, levels: Sequence[domain.InventoryLevel]
) -> list[domain.InventoryLevel]:
    """Set stock on hand at known locations; where on hand went up, the backorders waiting
    for that SKU there are released as a receipt releases them."""
    domain.validate_inventory_levels(levels, await store.location_ids(conn))
    # Expired checkout holds give their units back first, as before a receipt (the lock order).
    await store.release_expired_for(conn, sorted({lv.sku for lv in levels}))
    steps = await store.set_inventory_levels(conn, levels)
    await _release_where_stock_added(conn, steps, levels_set_key(), "set")
    return [after for _, after in steps]


async def adjust_inventory(
    conn: asyncpg.Connection, adjustments: Sequence[domain.InventoryAdjustment], key: str
) -> list[domain.InventoryLevel]:
    """Apply received, counted and damaged stock at known locations; where on hand went up,
    the backorders waiting for that SKU there are released as a receipt releases them."""
    domain.validate_adjustments(adjustments, await store.location_ids(conn))
    # Expired checkout holds give their units back first, as before a receipt (the lock order).
    await store.release_expired_for(conn, sorted({a.sku for a in adjustments}))
    steps = await store.adjust_inventory(conn, adjustments, key)
    await _release_where_stock_added(conn, steps, key, "adjusted")
    return [after for _, after in steps]


async def _release_where_stock_added(
    conn: asyncpg.Connection,
    steps: Sequence[tuple[domain.InventoryLevel, domain.InventoryLevel]],
    key: str,
    how: str,
) -> None:
    """Release the backorders waiting at each level whose on hand went up (`steps`: before
    and after), as a receipt releases them; `how` the stock changed, for their workflows."""
    for location_id, sku in domain.stock_added(steps):
        await _release_backorders(
            conn,
            await store.waiting_at(conn, location_id, sku),
            location_id,
            sku,
            key,
            f"stock of {sku} {how} at {location_id}",
        )


# ---- postal codes ---------------------------------------------------------------------------


async def load_postal_codes(
    pool: asyncpg.Pool, countries: Sequence[domain.CountryPostalCodes]
) -> None:
    """Replace each country's loaded postal codes with these, all in one transaction: a load
    that fails leaves every country as it was."""
    async with pool.acquire() as conn, conn.transaction():
        for country in countries:
            await store.replace_postal_codes(conn, country)
        await store.analyze_postal_codes(conn)


async def postal_code_counts(pool: asyncpg.Pool) -> list[store.PostalCodeCount]:
    """How many postal codes each country has, by source."""
    async with pool.acquire() as conn:
        return await store.postal_code_counts(conn)


# ---- reads and erasure ---------------------------------------------------------------------


async def location_acted_on(
    pool: asyncpg.Pool,
    fulfillment_order_id: str = "",
    shipment_id: str = "",
    at_store: bool = False,
    supply_id: str = "",
) -> tuple[str, str]:
    """The location a fulfillment order, shipment or supply belongs to, and how to name it;
    `at_store`: for handing a pickup over, its store (which a ship-to-store one is shipped to)."""
    async with pool.acquire() as conn:
        if supply_id:
            supply = await store.get_supply(conn, supply_id)
            return supply.location_id, f"supply {supply_id}"
        if at_store:
            fo = await store.get_fulfillment_order(conn, fulfillment_order_id)
            return fo.handover_location_id, f"fulfillment order {fulfillment_order_id}"
        if shipment_id:
            location = await store.location_of_shipment(conn, shipment_id)
            return location, f"shipment {shipment_id}"
        location = await store.location_of_fulfillment_order(conn, fulfillment_order_id)
        return location, f"fulfillment order {fulfillment_order_id}"


async def get_fulfillment_order(
    pool: asyncpg.Pool, fulfillment_order_id: str
) -> domain.FulfillmentOrder:
    """One fulfillment order."""
    async with pool.acquire() as conn:
        return await store.get_fulfillment_order(conn, fulfillment_order_id)


async def list_fulfillment_orders(
    pool: asyncpg.Pool, where: domain.ListFilter, cursor: domain.Cursor | None, size: int
) -> store.Page:
    """A page of fulfillment orders."""
    async with pool.acquire() as conn:
        return await store.list_fulfillment_orders(conn, where, cursor, size)


async def routing_decisions(pool: asyncpg.Pool, order_id: str) -> list[domain.RoutingDecision]:
    """Every routing decision made for an order."""
    async with pool.acquire() as conn:
        return await store.routing_decisions(conn, order_id)


async def list_locations(pool: asyncpg.Pool) -> list[domain.Location]:
    """Every location."""
    async with pool.acquire() as conn:
        return await store.list_locations(conn)


async def list_location_groups(pool: asyncpg.Pool) -> list[domain.LocationGroup]:
    """Every location group."""
    async with pool.acquire() as conn:
        return await store.location_groups(conn)


async def availability(
    pool: asyncpg.Pool, skus: Sequence[str], location_group_ids: Sequence[str]
) -> tuple[list[tuple[domain.InventoryLevel, bool]], domain.Availability]:
    """Stock of SKUs at every location, and summed over all and per location group."""
    async with pool.acquire() as conn:
        found = await store.levels_for_skus(conn, skus)
        groups = await store.location_groups(conn, list(location_group_ids))
    return found, domain.availability(found, skus, groups)


async def estimate_delivery(
    pool: asyncpg.Pool,
    policy: domain.RoutingPolicy,
    holidays: domain.Holidays,
    question: domain.DeliveryQuestion,
    now: datetime,
) -> list[domain.DeliveryEstimate]:
    """When the question's items would ship and arrive by each delivery method, on one
    snapshot of locations, stock and transit times; nothing is reserved or written."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await store.promise_snapshot(conn, question)
    return domain.estimate_delivery(question, snapshot, holidays, policy, now)


async def erase_personal_data(
    pool: asyncpg.Pool, order_ids: Sequence[str], identifying_text: Sequence[str]
) -> int:
    """Blank the shopper's personal data in these orders' fulfillment records."""
    return await erasure.erase_orders(
        pool,
        store.PERSONAL_COLUMNS,
        order_ids,
        [order_workflow_id(o) for o in order_ids],
        identifying_text,
    )


# ---- transit times ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TransitEdit:
    """A band set or deleted (None: there was no such band to delete), whether the set added
    it, and its method's bands after the edit."""

    band: domain.TransitBand | None
    added: bool
    bands: list[domain.TransitRow]


async def list_transit_times(pool: asyncpg.Pool, delivery_method: str) -> list[domain.TransitRow]:
    """Every band (or one method's), by method and start."""
    async with pool.acquire() as conn:
        table = await store.transit_table(conn)
    return domain.transit_rows(table, delivery_method)


async def set_transit_time(
    conn: asyncpg.Connection, band: domain.TransitBand, new_method: bool
) -> TransitEdit:
    """Add a band or change its days, as the table's rules allow; estimates read it at once
    (nothing keeps the table in memory)."""
    await store.lock_transit_times(conn)
    added = domain.check_transit_band(band, await store.transit_table(conn), new_method)
    await store.upsert_transit_band(conn, band)
    after = await store.transit_table(conn)
    return TransitEdit(band, added, domain.transit_rows(after, band.delivery_method))


async def delete_transit_time(
    conn: asyncpg.Connection, delivery_method: str, from_km: int
) -> TransitEdit:
    """Remove a band (the one before it runs on); a method's 0 km band goes last."""
    await store.lock_transit_times(conn)
    table = await store.transit_table(conn)
    found = domain.check_transit_band_removal(table, delivery_method, from_km)
    if found is not None:
        await store.delete_transit_band(conn, delivery_method, from_km)
        table = await store.transit_table(conn)
    return TransitEdit(found, False, domain.transit_rows(table, delivery_method))
