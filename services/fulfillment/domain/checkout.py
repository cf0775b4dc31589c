"""Fulfillment domain, checkout reservations: a cart's units held at the locations routing would
ship them from, for a bounded time, and an order placing the units held for it where they are
held (the rest routed as usual)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.postal import PostalAddress
from services.fulfillment.domain.common import Coordinates
from services.fulfillment.domain.inventory import LocationGroup
from services.fulfillment.domain.routing import (
    Allocation,
    Candidate,
    DeliveryGroup,
    ExcludeLocations,
    GroupPlan,
    RoutingLine,
    RoutingPlan,
    RoutingPolicy,
    route_group,
)

# How long a reservation may hold units: long enough for a payment page, short enough that an
# abandoned cart does not keep stock from other shoppers for long.
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 3600

# Statuses of a checkout reservation.
HELD = "held"
CONSUMED = "consumed"
RELEASED = "released"
EXPIRED = "expired"
RESERVATION_STATUSES = (HELD, CONSUMED, RELEASED, EXPIRED)


@dataclass(frozen=True)
class CartLine:
    """Units of one SKU in a cart."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class ReservationRequest:
    """A cart to hold: where from (a location group, or the address routing ranks by), for
    how long."""

    lines: tuple[CartLine, ...]
    location_group_id: str
    address: PostalAddress | None
    ttl_seconds: int
    idempotency_key: str


@dataclass(frozen=True)
class Hold:
    """Units of one cart line (by its index) held at one location."""

    line_index: int
    location_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class CheckoutReservation:
    """A checkout reservation as stored. `status` is the stored one except that a held
    reservation past its expiry reads EXPIRED (the sweeper may not have released it yet)."""

    reservation_id: str
    status: str
    expires_at: datetime
    lines: tuple[CartLine, ...]
    holds: tuple[Hold, ...]
    order_id: str = ""
    created_at: datetime | None = None

    def holds_of(self, line_index: int) -> list[Hold]:
        """Where the units of one cart line are held."""
        return [h for h in self.holds if h.line_index == line_index]


def validate_reservation_request(request: ReservationRequest) -> None:
    """A key, a cart of distinct SKUs with positive quantities, exactly one of a location
    group and an address, and a time to live within bounds; every violation at once."""
    violations: list[FieldViolation] = []
    if not request.idempotency_key:
        violations.append(FieldViolation("idempotency_key", "is required"))
    if not request.lines:
        violations.append(FieldViolation("lines", "at least one line is required"))
    seen: dict[str, int] = {}
    for i, line in enumerate(request.lines):
        if not line.sku:
            violations.append(FieldViolation(f"lines[{i}].sku", "is required"))
        elif line.sku in seen:
            violations.append(FieldViolation(f"lines[{i}].sku", f"repeats lines[{seen[line.sku]}]"))
        seen.setdefault(line.sku, i)
        if line.quantity <= 0:
            violations.append(FieldViolation(f"lines[{i}].quantity", "must be positive"))
    if request.location_group_id and request.address is not None:
        violations.append(
            FieldViolation("location_group_id", "give location_group_id or address, not both")
        )
    elif not request.location_group_id and request.address is None:
        violations.append(
            FieldViolation("location_group_id", "one of location_group_id or address is required")
        )
    if not MIN_TTL_SECONDS <= request.ttl_seconds <= MAX_TTL_SECONDS:
        violations.append(
            FieldViolation("ttl_seconds", f"must be {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS} seconds")
        )
    if violations:
        raise InvalidArgument(violations)


def unknown_location_group(location_group_id: str) -> InvalidArgument:
    """The refusal of a reservation from a location group that does not exist."""
    return InvalidArgument(
        [
            FieldViolation(
                "location_group_id", f"unknown location group {limits.echo(location_group_id)}"
            )
        ]
    )


@dataclass(frozen=True)
class WithinLocationGroup:
    """A routing rule: only the members of one location group."""

    group: LocationGroup

    def excludes(self, group: DeliveryGroup, candidate: Candidate) -> str | None:
        """Why a location outside the group may not hold the cart."""
        if candidate.location_id in self.group.location_ids:
            return None
        return f"not in location group {self.group.location_group_id}"


def cart_group(request: ReservationRequest) -> DeliveryGroup:
    """The cart as the delivery group routing places: one line per cart line, named by its
    index, going to the request's address (none: routing ranks by priority)."""
    return DeliveryGroup(
        "cart",
        request.address or PostalAddress(),
        tuple(RoutingLine(str(i), line.sku, line.quantity) for i, line in enumerate(request.lines)),
    )


def holds_of_plan(
    request: ReservationRequest,
    plan: RoutingPlan,
    availability: Mapping[tuple[str, str], int],
    eligible: Sequence[str],
) -> list[Hold]:
    """The holds of a routing of the cart; FailedPrecondition naming each SKU routing could
    not place whole and what is available of it at the eligible locations (nothing is held
    then)."""
    short = {int(line.order_line_id) for line in plan.unallocated}
    if short:
        parts = []
        for i in sorted(short):
            line = request.lines[i]
            available = sum(availability.get((loc, line.sku), 0) for loc in eligible)
            parts.append(
                f"{limits.echo(line.sku)} (lines[{i}]): {line.quantity} wanted, "
                f"{available} available"
            )
        raise FailedPrecondition("not enough stock to hold the cart: " + "; ".join(parts))
    holds = [
        Hold(int(line.order_line_id), allocation.location_id, line.sku, line.quantity)
        for g in plan.groups
        for allocation in g.allocations
        for line in allocation.lines
    ]
    return sorted(holds, key=lambda h: h.line_index)


def eligible_locations(candidates: Sequence[Candidate], group: LocationGroup | None) -> list[str]:
    """Enabled locations a reservation may hold units at."""
    return [
        c.location_id for c in candidates if group is None or c.location_id in group.location_ids
    ]


def held_units(holds: Sequence[Hold]) -> dict[tuple[str, str], int]:
    """Units held per (location_id, sku)."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for h in holds:
        out[(h.location_id, h.sku)] += h.quantity
    return dict(out)


def released_status(reservation: CheckoutReservation) -> str | None:
    """The status releasing a reservation leaves it in: RELEASED while it holds units,
    EXPIRED when its time ran out first (the sweeper had not got to it yet); None when it was
    released or expired before (returned as it is). A consumed one is refused: its units are
    the order's."""
    if reservation.status == CONSUMED:
        raise FailedPrecondition(
            f"checkout reservation {reservation.reservation_id} was consumed by order "
            f"{reservation.order_id}; its units belong to the order's fulfillment orders"
        )
    if reservation.status == HELD:
        return RELEASED
    return EXPIRED if reservation.status == EXPIRED else None


# ---- an order consuming a reservation ---------------------------------------------------------


def usable_by(found: CheckoutReservation | None, reservation_id: str, order_id: str) -> str:
    """Empty when the order may consume the reservation; otherwise why not, as a routing
    decision sentence (the order then routes on current availability)."""
    prefix = f"checkout reservation {limits.echo(reservation_id)} not used"
    if found is None:
        return f"{prefix}: it does not exist"
    if found.status == HELD:
        return ""
    if found.status == CONSUMED:
        whose = "this order" if found.order_id == order_id else f"order {found.order_id}"
        return f"{prefix}: already consumed by {whose}"
    return f"{prefix}: it is {found.status}"


def _take_held(
    pool: dict[tuple[str, str], int],
    line: RoutingLine,
    stock: dict[tuple[str, str], int],
    shipping: set[str],
    may_open: set[str],
    room: int,
) -> list[tuple[str, int]]:
    """Units of `line` from the held pool at locations already `shipping` the group, or at up
    to `room` more of `may_open`, never more than a location has available; takes them out
    of `pool` and `stock`."""
    need = line.quantity
    parts: list[tuple[str, int]] = []
    for (location_id, sku), held in pool.items():
        if sku != line.sku or need == 0:
            continue
        opens = location_id not in shipping
        if opens and (location_id not in may_open or room <= 0):
            continue
        take = min(need, held, stock.get((location_id, sku), 0))
        if take <= 0:
            continue
        if opens:
            room -= 1
        pool[(location_id, sku)] = held - take
        stock[(location_id, sku)] -= take
        parts.append((location_id, take))
        need -= take
    return parts


def _merge(first: Sequence[Allocation], second: Sequence[Allocation]) -> tuple[Allocation, ...]:
    """Allocations of one delivery group, one per location (lines of one order line at one
    location added up)."""
    lines: dict[str, dict[str, RoutingLine]] = {}
    for allocation in (*first, *second):
        at = lines.setdefault(allocation.location_id, {})
        for line in allocation.lines:
            before = at.get(line.order_line_id)
            at[line.order_line_id] = (
                line
                if before is None
                else replace(before, quantity=before.quantity + line.quantity)
            )
    return tuple(Allocation(loc, tuple(by_line.values())) for loc, by_line in lines.items())


def _policy_for_rest(
    policy: RoutingPolicy, held: set[str], candidates: Sequence[Candidate]
) -> RoutingPolicy:
    """The policy for a group's units no hold covers: the held locations already count
    against the split limit; when they reach it, only they may take more."""
    room = policy.max_splits - len(held)
    if room > 0:
        return replace(policy, max_splits=room)
    full = "the split limit is reached by the reservation's locations"
    others = {c.location_id: full for c in candidates if c.location_id not in held}
    return replace(policy, max_splits=len(held)).with_rules(ExcludeLocations(others))


def route_with_reservation(
    groups: Sequence[DeliveryGroup],
    holds: Sequence[Hold],
    reservation_id: str,
    candidates: Sequence[Candidate],
    availability: Mapping[tuple[str, str], int],
    destinations: Mapping[str, Coordinates | None],
    policy: RoutingPolicy,
) -> RoutingPlan:
    """Route an order that consumes a checkout reservation: units of its lines' SKUs the
    reservation holds are placed where they are held, the rest routed as `route` would.

    `availability` must count the held units as available (the caller released them in the
    same transaction); held units a location cannot take (disabled, no longer available, or
    no daily capacity left) are routed like the rest, and held units the order does not use
    stay released. The held placement is the reservation's routing: it keeps the locations
    even where today's rules would choose others.
    """
    stock = {k: v for k, v in availability.items() if v > 0}
    capacity = {c.location_id: c.capacity_left for c in candidates}
    pool = held_units(holds)
    many = len(groups) > 1
    plans: list[GroupPlan] = []
    for group in groups:
        label = f" of delivery group {group.delivery_group_id}" if many else ""
        held: dict[str, list[RoutingLine]] = defaultdict(list)
        rest: list[RoutingLine] = []
        decisions: list[str] = []
        for line in group.lines:
            # A location ships held units if it already does for this group, or else has a
            # fulfillment order left today (which the first held unit there takes) while the
            # group is within the split limit.
            may_open = {loc for loc, left in capacity.items() if left is None or left > 0}
            room = policy.max_splits - len(held)
            parts = _take_held(pool, line, stock, set(held), may_open, room)
            for location_id, quantity in parts:
                left = capacity.get(location_id)
                if location_id not in held and left is not None:
                    capacity[location_id] = left - 1
                held[location_id].append(RoutingLine(line.order_line_id, line.sku, quantity))
            placed = sum(q for _, q in parts)
            if parts:
                where = ", ".join(f"{q} at {loc}" for loc, q in parts)
                decisions.append(
                    f"{placed} of {line.sku} for line {line.order_line_id}{label} held by "
                    f"checkout reservation {reservation_id}: {where}"
                )
            if placed < line.quantity:
                rest.append(replace(line, quantity=line.quantity - placed))
        held_allocations = [Allocation(loc, tuple(lines)) for loc, lines in held.items()]
        routed = GroupPlan(group.delivery_group_id, (), (), ())
        if rest:
            routed = route_group(
                replace(group, lines=tuple(rest)),
                candidates,
                stock,
                capacity,
                destinations.get(group.delivery_group_id),
                _policy_for_rest(policy, set(held), candidates),
                label,
            )
        plans.append(
            GroupPlan(
                group.delivery_group_id,
                _merge(held_allocations, routed.allocations),
                routed.unallocated,
                (*decisions, *routed.decisions),
                routed.alternatives,
                routed.excluded,
            )
        )
    return RoutingPlan(tuple(plans))


def with_note(plan: RoutingPlan, note: str) -> RoutingPlan:
    """The plan with one more decision sentence on its first delivery group."""
    if not note or not plan.groups:
        return plan
    first = plan.groups[0]
    return RoutingPlan((replace(first, decisions=(note, *first.decisions)), *plan.groups[1:]))
