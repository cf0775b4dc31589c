"""Fulfillment domain, fulfillment orders: their statuses and warehouse progress, shipments,
units taken off them (rejected, canceled, moved), and how they are listed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.fulfillment.domain.common import plural
from services.fulfillment.domain.inventory import Location
from services.fulfillment.domain.routing import RoutingDecision, RoutingLine
from services.fulfillment.domain.supply import BACKORDERED, Waiting

# ---- statuses ----------------------------------------------------------------------------

ALLOCATED = "allocated"
ACCEPTED = "accepted"
PICKED = "picked"
PACKED = "packed"
SHIPPED = "shipped"
REJECTED = "rejected"
CANCELED = "canceled"
# Store pickup: set aside at the store for the shopper, then collected.
READY_FOR_PICKUP = "ready_for_pickup"
PICKED_UP = "picked_up"
# Ship-to-store: the warehouse shipped it to the pickup store (a transfer, not the shopper's
# delivery); the store has not received it yet.
IN_TRANSIT_TO_STORE = "in_transit_to_store"
FULFILLMENT_ORDER_STATUSES = (
    BACKORDERED,
    ALLOCATED,
    ACCEPTED,
    PICKED,
    PACKED,
    SHIPPED,
    REJECTED,
    CANCELED,
    READY_FOR_PICKUP,
    PICKED_UP,
    IN_TRANSIT_TO_STORE,
)

# Statuses a shipment can be confirmed from (a location may skip picking and packing reports).
SHIPPABLE = frozenset({ACCEPTED, PICKED, PACKED})
# Statuses in which units can still be taken off (rejected, canceled, moved); a backordered
# one's only canceled (no location has it yet to reject or move it), and so is one in transit
# to its store (the warehouse has let it go, the store not taken it in).
OPEN_STATUSES = frozenset(
    {BACKORDERED, ALLOCATED, ACCEPTED, PICKED, PACKED, READY_FOR_PICKUP, IN_TRANSIT_TO_STORE}
)
# Statuses whose units are reserved nowhere: not yet at a location, or between two.
_HOLDING_NOTHING = frozenset({BACKORDERED, IN_TRANSIT_TO_STORE})


# ---- fulfillment orders ------------------------------------------------------------------


@dataclass(frozen=True)
class FulfillmentLine:
    """A quantity of one order line that a fulfillment order ships."""

    order_line_id: str
    sku: str
    # Units this fulfillment order ships or has shipped; units taken off later (rejected,
    # canceled, moved elsewhere) are counted apart and no longer in it.
    quantity: int
    quantity_shipped: int = 0
    quantity_rejected: int = 0
    quantity_canceled: int = 0
    quantity_moved: int = 0

    @property
    def remaining(self) -> int:
        """Units not shipped yet."""
        return self.quantity - self.quantity_shipped


@dataclass(frozen=True)
class ShipmentItem:
    """Units of one order line in a parcel."""

    order_line_id: str
    quantity: int


@dataclass(frozen=True)
class Shipment:
    """One parcel handed to a carrier."""

    shipment_id: str
    fulfillment_order_id: str
    carrier: str
    service: str
    tracking_number: str
    items: tuple[ShipmentItem, ...]
    shipped_at: datetime
    delivered_at: datetime | None = None
    # The day the carrier expects to deliver it, when it said.
    estimated_delivery_date: date | None = None


@dataclass(frozen=True)
class FulfillmentOrder:
    """The part of one order's delivery group that one location ships."""

    fulfillment_order_id: str
    order_id: str
    delivery_group_id: str
    location_id: str
    status: str
    lines: tuple[FulfillmentLine, ...]
    shipments: tuple[Shipment, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # A backordered one's supply and the date it is promised for (kept after its release).
    supply_id: str = ""
    promise_date: date | None = None
    # Store pickup: the store the shopper collects at ("" for other delivery methods), and
    # since when it waits there and until when.
    pickup_location_id: str = ""
    ready_for_pickup_at: datetime | None = None
    pickup_deadline: datetime | None = None
    # Ship-to-store: the transfer to the store (carrier, tracking number, when it left) and
    # when the store received it.
    transfer_carrier: str = ""
    transfer_tracking_number: str = ""
    transfer_shipped_at: datetime | None = None
    received_at_store_at: datetime | None = None

    @property
    def ships_to_store(self) -> bool:
        """A pickup its warehouse ships to the store (ship-to-store), not one the store fills."""
        return bool(self.pickup_location_id) and self.pickup_location_id != self.location_id

    @property
    def stock_location_id(self) -> str:
        """Where its units are reserved and leave from: the store once a ship-to-store
        transfer was received there, else the location it was allocated at."""
        return self.pickup_location_id if self.received_at_store_at else self.location_id

    @property
    def handover_location_id(self) -> str:
        """The location that hands it over: a pickup's store (which a ship-to-store one is
        shipped to, so the store acts for it there), else the location that ships it."""
        return self.pickup_location_id or self.location_id

    @property
    def available_on(self) -> date | None:
        """The day its units can be processed at the earliest: a backordered one's supply day
        (its promise is counted from it); None once it is a location's work."""
        return self.promise_date if self.status == BACKORDERED else None

    # The day its units are promised to arrive (None: no promise could be made).
    promised_delivery_date: date | None = None


# Warehouse progress reports: the status each leads to, the statuses it may come from, and
# how to say it in an error ("cannot <verb> it").
PROGRESS: dict[str, tuple[str, frozenset[str], str]] = {
    "accept": (ACCEPTED, frozenset({ALLOCATED}), "accept it"),
    "pick": (PICKED, frozenset({ACCEPTED}), "mark it picked"),
    "pack": (PACKED, frozenset({PICKED}), "mark it packed"),
}


def waiting_of(fo: FulfillmentOrder) -> Waiting:
    """A backordered fulfillment order as release and re-promising see it: its unshipped
    units."""
    return Waiting(
        fo.fulfillment_order_id, fo.order_id, fo.supply_id, sum(ln.remaining for ln in fo.lines)
    )


def refuse(fo: FulfillmentOrder, verb: str) -> FailedPrecondition:
    """The error for a step the fulfillment order's status does not allow."""
    return FailedPrecondition(
        f"fulfillment order {fo.fulfillment_order_id} is {fo.status}; cannot {verb}"
    )


def progress(fo: FulfillmentOrder, step: str) -> str:
    """The status after a warehouse report; a repeated report leaves the status as it is."""
    target, sources, verb = PROGRESS[step]
    if fo.status == target:
        return target
    if fo.status not in sources:
        raise refuse(fo, verb)
    return target


@dataclass(frozen=True)
class ShipmentPlan:
    """What a shipment contains and the fulfillment order's status afterwards."""

    items: tuple[ShipmentItem, ...]
    status_after: str


def plan_shipment(fo: FulfillmentOrder, items: Sequence[ShipmentItem]) -> ShipmentPlan:
    """Check a shipment report against what remains to ship; no items means all of it."""
    if fo.ships_to_store:
        raise FailedPrecondition(
            f"fulfillment order {fo.fulfillment_order_id} is shipped to store "
            f"{fo.pickup_location_id} for pickup; confirm the transfer with ShipToStore, "
            "not as the shopper's shipment"
        )
    if fo.pickup_location_id:
        raise FailedPrecondition(
            f"fulfillment order {fo.fulfillment_order_id} is collected at store "
            f"{fo.pickup_location_id}; confirm it with ConfirmPickup, not as a shipment"
        )
    if fo.status not in SHIPPABLE:
        raise refuse(fo, "confirm a shipment for it")
    remaining = {line.order_line_id: line.remaining for line in fo.lines}
    if not items:
        chosen = tuple(
            ShipmentItem(line.order_line_id, line.remaining)
            for line in fo.lines
            if line.remaining > 0
        )
    else:
        violations: list[FieldViolation] = []
        taken: dict[str, int] = defaultdict(int)
        for i, item in enumerate(items):
            if item.order_line_id not in remaining:
                violations.append(
                    FieldViolation(
                        f"items[{i}].order_line_id",
                        f"order line {limits.echo(item.order_line_id)} is not in fulfillment order "
                        f"{fo.fulfillment_order_id}",
                    )
                )
                continue
            if item.quantity <= 0:
                violations.append(FieldViolation(f"items[{i}].quantity", "must be positive"))
                continue
            taken[item.order_line_id] += item.quantity
            if taken[item.order_line_id] > remaining[item.order_line_id]:
                violations.append(
                    FieldViolation(
                        f"items[{i}].quantity",
                        f"exceeds the {remaining[item.order_line_id]} units of line "
                        f"{item.order_line_id} not yet shipped",
                    )
                )
        if violations:
            raise InvalidArgument(violations)
        chosen = tuple(ShipmentItem(line_id, q) for line_id, q in taken.items())
    if not chosen:
        raise refuse(fo, "confirm a shipment for it: nothing is left to ship")
    shipping = {item.order_line_id: item.quantity for item in chosen}
    done = all(left == shipping.get(line_id, 0) for line_id, left in remaining.items())
    status = SHIPPED if done else fo.status
    return ShipmentPlan(chosen, status)


def must_cancel(fo: FulfillmentOrder) -> bool:
    """True if canceling changes something; False if it is already canceled."""
    if fo.status == CANCELED:
        return False
    if fo.status in (SHIPPED, REJECTED, PICKED_UP):
        raise refuse(fo, "cancel it")
    return True


# ---- taking units off a fulfillment order --------------------------------------------------

MOVED = "moved"
# Why units leave a fulfillment order line: the verb for errors, and the status of a
# fulfillment order left with nothing to ship that shipped nothing.
LINE_CHANGE_KINDS: dict[str, tuple[str, str]] = {
    REJECTED: ("reject", REJECTED),
    CANCELED: ("cancel", CANCELED),
    MOVED: ("move", CANCELED),
}


@dataclass(frozen=True)
class LineQuantity:
    """Units of one order line of a fulfillment order, as a request names them."""

    order_line_id: str
    quantity: int


@dataclass(frozen=True)
class FulfillmentOrderReduction:
    """Units taken off a fulfillment order's lines (why: `kind`), and its status after."""

    kind: str
    lines: tuple[RoutingLine, ...]
    status_before: str
    status_after: str
    # Taken off a ship-to-store one its store had received: its warehouse's work was done.
    received_at_store: bool = False

    @property
    def frees_capacity(self) -> bool:
        """True when the fulfillment order stops being work for its location (a backordered
        one never was; one in transit to its store, or received there, already was)."""
        if self.received_at_store:
            return False
        return self.status_before in OPEN_STATUSES - _HOLDING_NOTHING and self.status_after in (
            REJECTED,
            CANCELED,
        )

    @property
    def holds_stock(self) -> bool:
        """True when the units taken off were reserved (a backordered order reserved none,
        nor does one in transit to its store)."""
        return self.status_before not in _HOLDING_NOTHING


def _requested_units(
    fo: FulfillmentOrder, requested: Sequence[LineQuantity], verb: str
) -> list[RoutingLine]:
    by_id = {line.order_line_id: line for line in fo.lines}
    violations: list[FieldViolation] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(requested):
        where = f"lines[{i}]"
        if not item.order_line_id:
            violations.append(FieldViolation(f"{where}.order_line_id", "is required"))
        elif item.order_line_id not in by_id:
            violations.append(
                FieldViolation(
                    f"{where}.order_line_id",
                    f"order line {limits.echo(item.order_line_id)} is not in fulfillment order "
                    f"{fo.fulfillment_order_id}",
                )
            )
        elif item.order_line_id in seen:
            first = seen[item.order_line_id]
            violations.append(FieldViolation(f"{where}.order_line_id", f"repeats lines[{first}]"))
        seen.setdefault(item.order_line_id, i)
        if item.quantity <= 0:
            violations.append(FieldViolation(f"{where}.quantity", "must be positive"))
    if violations:
        raise InvalidArgument(violations)
    for item in requested:
        line = by_id[item.order_line_id]
        if item.quantity > line.remaining:
            raise FailedPrecondition(
                f"line {line.order_line_id} of fulfillment order {fo.fulfillment_order_id} has "
                f"{plural(line.remaining, 'unshipped unit')}; cannot {verb} {item.quantity}"
            )
    return [RoutingLine(i.order_line_id, by_id[i.order_line_id].sku, i.quantity) for i in requested]


def plan_line_change(
    fo: FulfillmentOrder, kind: str, requested: Sequence[LineQuantity]
) -> FulfillmentOrderReduction:
    """Check taking units off an open fulfillment order; no lines means every unshipped unit
    (except for a cancel, which must name them). The order ends rejected or canceled when
    nothing is left to ship, or shipped if part of it already shipped."""
    verb, terminal = LINE_CHANGE_KINDS[kind]
    if fo.status not in OPEN_STATUSES or (fo.status in _HOLDING_NOTHING and kind != CANCELED):
        raise refuse(fo, f"{verb} its lines")
    if requested:
        taking = _requested_units(fo, requested, verb)
    elif kind == CANCELED:
        raise InvalidArgument([FieldViolation("lines", "at least one line is required")])
    else:
        taking = [
            RoutingLine(line.order_line_id, line.sku, line.remaining)
            for line in fo.lines
            if line.remaining > 0
        ]
    if not taking:
        raise refuse(fo, f"{verb} its lines: nothing is left unshipped")
    taken = {line.order_line_id: line.quantity for line in taking}
    left = sum(line.remaining - taken.get(line.order_line_id, 0) for line in fo.lines)
    if left:
        status = fo.status
    elif any(line.quantity_shipped for line in fo.lines):
        status = SHIPPED
    else:
        status = terminal
    return FulfillmentOrderReduction(
        kind, tuple(taking), fo.status, status, fo.received_at_store_at is not None
    )


# The line's count that units taken off for each kind of change go to.
_TAKEN_OFF_AS = {
    REJECTED: "quantity_rejected",
    CANCELED: "quantity_canceled",
    MOVED: "quantity_moved",
}


def after_line_change(
    fo: FulfillmentOrder, change: FulfillmentOrderReduction, updated_at: datetime | None
) -> FulfillmentOrder:
    """`fo` as the store keeps it once `change` is applied: the units taken off its lines
    (counted apart by the change's kind), its status after, and `updated_at` (None: the
    status did not move, so neither did that)."""
    taken: dict[str, int] = defaultdict(int)
    for taking in change.lines:
        taken[taking.order_line_id] += taking.quantity
    counted = _TAKEN_OFF_AS[change.kind]
    lines = tuple(
        replace(
            line,
            quantity=line.quantity - taken[line.order_line_id],
            **{counted: getattr(line, counted) + taken[line.order_line_id]},
        )
        if line.order_line_id in taken
        else line
        for line in fo.lines
    )
    return replace(
        fo, lines=lines, status=change.status_after, updated_at=updated_at or fo.updated_at
    )


def plan_unpromised(fo: FulfillmentOrder) -> FulfillmentOrderReduction:
    """A backordered fulfillment order whose supply will not come and that no other supply
    can take: every unit goes back to the order (rejected), for routing again."""
    taking = tuple(
        RoutingLine(line.order_line_id, line.sku, line.remaining)
        for line in fo.lines
        if line.remaining > 0
    )
    return FulfillmentOrderReduction(REJECTED, taking, fo.status, REJECTED)


def plan_cancel(fo: FulfillmentOrder) -> FulfillmentOrderReduction | None:
    """Cancel what a fulfillment order has not shipped; None if it is already canceled."""
    if not must_cancel(fo):
        return None
    taking = tuple(
        RoutingLine(line.order_line_id, line.sku, line.remaining)
        for line in fo.lines
        if line.remaining > 0
    )
    return FulfillmentOrderReduction(
        CANCELED, taking, fo.status, CANCELED, fo.received_at_store_at is not None
    )


def plan_order_cancel(
    fos: Sequence[FulfillmentOrder],
) -> list[tuple[FulfillmentOrder, FulfillmentOrderReduction]]:
    """What canceling an order's fulfillment orders takes off each one that still has units to
    ship; those that shipped, were rejected or picked up (and canceled ones) are left alone."""
    left_alone = (CANCELED, SHIPPED, REJECTED, PICKED_UP)
    planned = []
    for fo in fos:
        change = None if fo.status in left_alone else plan_cancel(fo)
        if change is not None:
            planned.append((fo, change))
    return planned


def check_move_target(
    fo: FulfillmentOrder, to_location_id: str, target: Location | None
) -> Location:
    """The location units may move to: known, enabled, and not the one they leave."""
    if not to_location_id:
        raise InvalidArgument([FieldViolation("to_location_id", "is required")])
    if target is None:
        raise InvalidArgument(
            [FieldViolation("to_location_id", f"unknown location {limits.echo(to_location_id)}")]
        )
    if target.location_id == fo.location_id:
        raise InvalidArgument(
            [FieldViolation("to_location_id", "is the location the units are at already")]
        )
    if not target.enabled:
        raise FailedPrecondition(f"location {target.location_id} is disabled; cannot move to it")
    return target


def refuse_move_stock(
    target: Location, sku: str, available: int, quantity: int
) -> FailedPrecondition:
    """The error for moving more units of a SKU than the target has available."""
    return FailedPrecondition(
        f"location {target.location_id} has {available} of {sku} available; "
        f"cannot move {quantity} there"
    )


def refuse_move_capacity(target: Location) -> FailedPrecondition:
    """The error for moving to a location whose daily capacity is used up."""
    return FailedPrecondition(
        f"location {target.location_id} has no daily capacity left "
        f"({plural(target.daily_capacity or 0, 'fulfillment order')} a day); cannot move there"
    )


def move_decision(
    fo: FulfillmentOrder, target: Location, change: FulfillmentOrderReduction, reason: str
) -> RoutingDecision:
    """The record of a move someone asked for: no alternatives, the target was chosen."""
    units = ", ".join(f"{line.quantity} of line {line.order_line_id}" for line in change.lines)
    why = f": {reason}" if reason else ""
    return RoutingDecision(
        order_id=fo.order_id,
        delivery_group_id=fo.delivery_group_id,
        trigger="move",
        source_fulfillment_order_id=fo.fulfillment_order_id,
        summary=(f"moved {units} from {fo.location_id} to {target.location_id} on request{why}",),
        chosen_location_ids=(target.location_id,),
        alternatives=(),
        excluded=(),
        unallocated=(),
    )


def rejection_reasons(
    fo: FulfillmentOrder, reason: str, earlier: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """Why each location is excluded when rejected units are routed again: the rejecting one,
    and every location that rejected any of those order lines before (`earlier`: location
    -> order lines it rejected)."""
    out = {
        location_id: f"rejected line {', '.join(sorted(set(lines)))} of this order before"
        for location_id, lines in earlier.items()
    }
    out[fo.location_id] = f"rejected fulfillment order {fo.fulfillment_order_id}" + (
        f": {reason}" if reason else ""
    )
    return out


# ---- listing -----------------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Cursor:
    """Where a page of fulfillment orders ends: the last (created_at, id) returned."""

    created_at: datetime
    fulfillment_order_id: str


def page_size(requested: int) -> int:
    """The page size to use: default when unset, capped at the maximum."""
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


def encode_cursor(cursor: Cursor) -> str:
    """An opaque page token."""
    return limits.encode_page_token(
        {"t": cursor.created_at.isoformat(), "id": cursor.fulfillment_order_id}
    )


def decode_cursor(token: str) -> Cursor | None:
    """The cursor inside a page token; None for the first page. Anything but a token this
    listing issued (strictly: an aware time and a plausible id) is refused."""
    if not token:
        return None
    body = limits.decode_page_token(token)
    return Cursor(limits.token_time(body, "t"), limits.token_id(body, "id"))


@dataclass(frozen=True)
class ListFilter:
    """Which fulfillment orders to list; empty fields match everything."""

    order_id: str = ""
    location_id: str = ""
    statuses: tuple[str, ...] = field(default_factory=tuple)
    # Only these locations (a warehouse sees its own); None: every location.
    within_locations: tuple[str, ...] | None = None
