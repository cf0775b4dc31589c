"""Fulfillment domain: routing an order's lines to locations, and a fulfillment order's life.

Pure: standard library and oms_platform.errors only. The store reads and writes these types;
the servicer converts them to and from the wire.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import combinations
from typing import Protocol

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.postal import PostalAddress as PostalAddress  # re-exported: domain vocabulary

# ---- statuses ----------------------------------------------------------------------------

ALLOCATED = "allocated"
ACCEPTED = "accepted"
PICKED = "picked"
PACKED = "packed"
SHIPPED = "shipped"
REJECTED = "rejected"
CANCELED = "canceled"
FULFILLMENT_ORDER_STATUSES = (ALLOCATED, ACCEPTED, PICKED, PACKED, SHIPPED, REJECTED, CANCELED)

# Statuses a shipment can be confirmed from (a location may skip picking and packing reports).
SHIPPABLE = frozenset({ACCEPTED, PICKED, PACKED})
# Statuses in which units can still be taken off (rejected, canceled, moved).
OPEN_STATUSES = frozenset({ALLOCATED, ACCEPTED, PICKED, PACKED})

# Reservation statuses.
RESERVED = "reserved"
RELEASED = "released"
FULFILLED = "fulfilled"

LOCATION_TYPES = ("warehouse", "store", "drop_ship")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

EARTH_RADIUS_KM = 6371.0088


# ---- places ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coordinates:
    """A point on Earth in degrees."""

    latitude: float
    longitude: float


def haversine_km(a: Coordinates, b: Coordinates) -> float:
    """Great-circle distance between two points, in kilometres."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def normalize_postal_code(postal_code: str) -> str:
    """Upper case without spaces or dashes, the form postal prefixes are matched against."""
    return "".join(ch for ch in postal_code.upper() if ch.isalnum())


@dataclass(frozen=True)
class Location:
    """A place inventory ships from."""

    location_id: str
    name: str
    type: str
    address: PostalAddress
    latitude: float
    longitude: float
    priority: int
    enabled: bool
    # Fulfillment orders it takes per UTC day; None means no limit.
    daily_capacity: int | None = None
    # Read only: the groups it belongs to, and fulfillment orders it took today.
    group_ids: tuple[str, ...] = ()
    fulfillment_orders_today: int = 0

    @property
    def coordinates(self) -> Coordinates:
        """Where it is."""
        return Coordinates(self.latitude, self.longitude)


# ---- inventory ---------------------------------------------------------------------------


def available_to_fulfill(on_hand: int, reserved: int, safety_stock: int) -> int:
    """Units that can still be promised: on hand less reserved less safety stock, never < 0."""
    return max(0, on_hand - reserved - safety_stock)


@dataclass(frozen=True)
class InventoryLevel:
    """Stock of one SKU at one location."""

    location_id: str
    sku: str
    on_hand: int
    reserved: int = 0
    safety_stock: int = 0

    @property
    def available(self) -> int:
        """Available to fulfill."""
        return available_to_fulfill(self.on_hand, self.reserved, self.safety_stock)


RECEIVED = "received"
COUNTED = "counted"
DAMAGED = "damaged"
ADJUSTMENT_KINDS = (RECEIVED, COUNTED, DAMAGED)


@dataclass(frozen=True)
class InventoryAdjustment:
    """What happened to on hand at one location: units received, counted or damaged."""

    location_id: str
    sku: str
    kind: str
    quantity: int
    reason: str


def validate_adjustments(
    adjustments: Sequence[InventoryAdjustment], known_locations: Iterable[str]
) -> None:
    """Known locations, SKUs, kinds and reasons; positive units (zero or more when counted)."""
    known = set(known_locations)
    violations: list[FieldViolation] = []
    if not adjustments:
        violations.append(FieldViolation("adjustments", "at least one adjustment is required"))
    for i, a in enumerate(adjustments):
        where = f"adjustments[{i}]"
        if not a.location_id:
            violations.append(FieldViolation(f"{where}.location_id", "is required"))
        elif a.location_id not in known:
            violations.append(
                FieldViolation(
                    f"{where}.location_id", f"unknown location {limits.echo(a.location_id)}"
                )
            )
        if not a.sku:
            violations.append(FieldViolation(f"{where}.sku", "is required"))
        if a.kind not in ADJUSTMENT_KINDS:
            violations.append(
                FieldViolation(f"{where}.kind", "must be received, counted or damaged")
            )
        elif a.kind == COUNTED and a.quantity < 0:
            violations.append(FieldViolation(f"{where}.quantity", "must not be negative"))
        elif a.kind != COUNTED and a.quantity <= 0:
            violations.append(FieldViolation(f"{where}.quantity", "must be positive"))
        if not a.reason.strip():
            violations.append(FieldViolation(f"{where}.reason", "is required"))
    if violations:
        raise InvalidArgument(violations)


def adjust(level: InventoryLevel, adjustment: InventoryAdjustment) -> InventoryLevel:
    """The level after an adjustment. Damage never takes on hand below what is reserved:
    those units are promised, so the location must reject their orders first."""
    if adjustment.kind == RECEIVED:
        return replace(level, on_hand=level.on_hand + adjustment.quantity)
    if adjustment.kind == COUNTED:
        return replace(level, on_hand=adjustment.quantity)
    after = level.on_hand - adjustment.quantity
    if after < level.reserved:
        raise FailedPrecondition(
            f"level of {level.sku} at {level.location_id} has {level.on_hand} on hand and "
            f"{level.reserved} reserved; writing off {adjustment.quantity} damaged would leave "
            f"{after} on hand, below what is reserved"
        )
    return replace(level, on_hand=after)


def apply_adjustments(
    levels: Mapping[tuple[str, str], InventoryLevel], adjustments: Sequence[InventoryAdjustment]
) -> list[tuple[InventoryLevel, InventoryLevel]]:
    """Each adjustment in order, as (level before, level after); one that cannot apply
    refuses the whole batch. `levels` holds every (location_id, sku) adjusted."""
    current = dict(levels)
    out: list[tuple[InventoryLevel, InventoryLevel]] = []
    for a in adjustments:
        before = current[(a.location_id, a.sku)]
        after = adjust(before, a)
        current[(a.location_id, a.sku)] = after
        out.append((before, after))
    return out


@dataclass(frozen=True)
class LocationGroup:
    """A named set of locations, e.g. "EU warehouses"."""

    location_group_id: str
    name: str
    location_ids: tuple[str, ...]


@dataclass(frozen=True)
class Availability:
    """Available to fulfill per SKU: in total and per location group (enabled locations)."""

    total: dict[str, int]
    by_group: dict[str, dict[str, int]]


def availability(
    levels: Iterable[tuple[InventoryLevel, bool]],
    skus: Sequence[str],
    groups: Sequence[LocationGroup],
) -> Availability:
    """Sum what enabled locations can fulfill, overall and per group (each SKU reported)."""
    total = dict.fromkeys(skus, 0)
    by_group = {g.location_group_id: dict.fromkeys(skus, 0) for g in groups}
    memberships: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        for location_id in g.location_ids:
            memberships[location_id].append(g.location_group_id)
    for level, enabled in levels:
        if not enabled or level.sku not in total:
            continue
        total[level.sku] += level.available
        for group_id in memberships[level.location_id]:
            by_group[group_id][level.sku] += level.available
    return Availability(total, by_group)


def validate_location(location: Location) -> None:
    """What a location needs to be routed to."""
    violations: list[FieldViolation] = []
    if not location.location_id:
        violations.append(FieldViolation("location.location_id", "is required"))
    if not location.name:
        violations.append(FieldViolation("location.name", "is required"))
    if location.type not in LOCATION_TYPES:
        violations.append(FieldViolation("location.type", "must be warehouse, store or drop_ship"))
    if not -90 <= location.latitude <= 90:
        violations.append(FieldViolation("location.latitude", "must be within -90 and 90"))
    if not -180 <= location.longitude <= 180:
        violations.append(FieldViolation("location.longitude", "must be within -180 and 180"))
    if location.daily_capacity is not None and location.daily_capacity < 0:
        violations.append(FieldViolation("location.daily_capacity", "must not be negative"))
    if violations:
        raise InvalidArgument(violations)


def validate_location_group(group: LocationGroup, known_locations: Iterable[str]) -> None:
    """An id, a name, and members that exist."""
    known = set(known_locations)
    violations: list[FieldViolation] = []
    if not group.location_group_id:
        violations.append(FieldViolation("location_group.location_group_id", "is required"))
    if not group.name:
        violations.append(FieldViolation("location_group.name", "is required"))
    for i, location_id in enumerate(group.location_ids):
        if location_id not in known:
            violations.append(
                FieldViolation(
                    f"location_group.location_ids[{i}]",
                    f"unknown location {limits.echo(location_id)}",
                )
            )
    if violations:
        raise InvalidArgument(violations)


def validate_inventory_levels(
    levels: Sequence[InventoryLevel], known_locations: Iterable[str]
) -> None:
    """A stock feed must name known locations, non-empty SKUs and non-negative quantities."""
    known = set(known_locations)
    violations: list[FieldViolation] = []
    if not levels:
        violations.append(FieldViolation("levels", "at least one level is required"))
    seen: dict[tuple[str, str], int] = {}
    for i, level in enumerate(levels):
        where = f"levels[{i}]"
        if not level.location_id:
            violations.append(FieldViolation(f"{where}.location_id", "is required"))
        elif level.location_id not in known:
            violations.append(
                FieldViolation(
                    f"{where}.location_id", f"unknown location {limits.echo(level.location_id)}"
                )
            )
        if not level.sku:
            violations.append(FieldViolation(f"{where}.sku", "is required"))
        if level.on_hand < 0:
            violations.append(FieldViolation(f"{where}.on_hand", "must not be negative"))
        if level.safety_stock < 0:
            violations.append(FieldViolation(f"{where}.safety_stock", "must not be negative"))
        key = (level.location_id, level.sku)
        if key in seen:
            violations.append(
                FieldViolation(f"{where}.sku", f"repeats levels[{seen[key]}] for this location")
            )
        seen.setdefault(key, i)
    if violations:
        raise InvalidArgument(violations)


# ---- routing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingLine:
    """Units of an order line to place at a location."""

    order_line_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class DeliveryGroup:
    """One recipient's lines, routed together."""

    delivery_group_id: str
    address: PostalAddress
    lines: tuple[RoutingLine, ...]
    # e.g. "standard", "same_day"; merchant routing rules may depend on it.
    delivery_method: str = ""


def validate_routing_request(
    order_id: str, idempotency_key: str, groups: Sequence[DeliveryGroup]
) -> None:
    """Every field routing needs is present, every quantity positive, every id unique."""
    violations: list[FieldViolation] = []
    if not order_id:
        violations.append(FieldViolation("order_id", "is required"))
    if not idempotency_key:
        violations.append(FieldViolation("idempotency_key", "is required"))
    if not groups:
        violations.append(FieldViolation("delivery_groups", "at least one is required"))
    group_ids: set[str] = set()
    line_ids: set[str] = set()
    for g, group in enumerate(groups):
        where = f"delivery_groups[{g}]"
        if not group.delivery_group_id:
            violations.append(FieldViolation(f"{where}.delivery_group_id", "is required"))
        elif group.delivery_group_id in group_ids:
            violations.append(FieldViolation(f"{where}.delivery_group_id", "is repeated"))
        group_ids.add(group.delivery_group_id)
        if not group.lines:
            violations.append(FieldViolation(f"{where}.lines", "at least one is required"))
        for i, line in enumerate(group.lines):
            at = f"{where}.lines[{i}]"
            if not line.order_line_id:
                violations.append(FieldViolation(f"{at}.order_line_id", "is required"))
            elif line.order_line_id in line_ids:
                violations.append(FieldViolation(f"{at}.order_line_id", "is repeated"))
            line_ids.add(line.order_line_id)
            if not line.sku:
                violations.append(FieldViolation(f"{at}.sku", "is required"))
            if line.quantity <= 0:
                violations.append(FieldViolation(f"{at}.quantity", "must be positive"))
    if violations:
        raise InvalidArgument(violations)


@dataclass(frozen=True)
class Candidate:
    """A location as routing sees it: where it is, how it ranks, what it may still take."""

    location_id: str
    priority: int
    coordinates: Coordinates
    type: str = "warehouse"
    # Fulfillment orders it can still take today; None means no limit.
    capacity_left: int | None = None
    group_ids: frozenset[str] = frozenset()


class RoutingRule(Protocol):
    """A merchant's routing rule: why a location may not ship a delivery group.

    Rules only exclude; ranking what is left is the policy's job. A merchant adds one with
    `RoutingPolicy(rules=(...,))` or `policy.with_rules(...)`; nothing else changes.
    """

    def excludes(self, group: DeliveryGroup, candidate: Candidate) -> str | None:
        """Why `candidate` may not ship `group`; None when it may."""
        ...


@dataclass(frozen=True)
class ExcludeLocations:
    """Never these locations, each for its own reason (e.g. they rejected the lines before)."""

    reasons: Mapping[str, str]

    def excludes(self, group: DeliveryGroup, candidate: Candidate) -> str | None:
        """The location's reason, if it is one of them."""
        return self.reasons.get(candidate.location_id)


@dataclass(frozen=True)
class Allocation:
    """The lines (or parts of lines) one location ships for one delivery group."""

    location_id: str
    lines: tuple[RoutingLine, ...]


@dataclass(frozen=True)
class Exclusion:
    """A location that stocks the lines but was not allowed to ship them, and why."""

    location_id: str
    reason: str


@dataclass(frozen=True)
class Alternative:
    """A plan routing considered: how it scored, and why it won or lost."""

    location_ids: tuple[str, ...]
    fulfillment_orders: int
    distance_km: int | None
    priority: int
    chosen: bool
    verdict: str


@dataclass(frozen=True)
class GroupPlan:
    """How one delivery group is fulfilled, what could not be placed, and why."""

    delivery_group_id: str
    allocations: tuple[Allocation, ...]
    unallocated: tuple[RoutingLine, ...]
    decisions: tuple[str, ...]
    alternatives: tuple[Alternative, ...] = ()
    excluded: tuple[Exclusion, ...] = ()


@dataclass(frozen=True)
class RoutingPlan:
    """The routing outcome of a whole order."""

    groups: tuple[GroupPlan, ...]

    @property
    def unallocated(self) -> list[RoutingLine]:
        """Every quantity no location could take."""
        return [line for g in self.groups for line in g.unallocated]

    @property
    def decisions(self) -> list[str]:
        """Every decision sentence, in order."""
        return [d for g in self.groups for d in g.decisions]

    def reservations(self) -> dict[tuple[str, str], int]:
        """Units to reserve per (location_id, sku)."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for g in self.groups:
            for allocation in g.allocations:
                for line in allocation.lines:
                    out[(allocation.location_id, line.sku)] += line.quantity
        return dict(out)

    def fulfillment_orders_per_location(self) -> dict[str, int]:
        """Fulfillment orders the plan gives each location (what its capacity pays)."""
        out: dict[str, int] = defaultdict(int)
        for g in self.groups:
            for allocation in g.allocations:
                out[allocation.location_id] += 1
        return dict(out)


@dataclass(frozen=True)
class PlanOption:
    """A candidate plan for a delivery group: which location ships which whole lines."""

    assignments: tuple[tuple[str, tuple[RoutingLine, ...]], ...]

    @property
    def location_ids(self) -> tuple[str, ...]:
        """The locations it uses."""
        return tuple(location_id for location_id, _ in self.assignments)


@dataclass(frozen=True)
class PlanScore:
    """What a policy compares; smaller is better, field by field."""

    shipments: int
    distance_km: int | None
    priority: int
    location_ids: tuple[str, ...]

    def key(self) -> tuple[int, int, int, tuple[str, ...]]:
        """Sort key; an unknown distance counts as a tie with everything."""
        return (self.shipments, self.distance_km or 0, self.priority, self.location_ids)


@dataclass(frozen=True)
class RoutingPolicy:
    """Which plan wins: fewest fulfillment orders, then nearest on average (to the whole
    kilometre), then lowest total location priority, then location id; among the locations
    every rule allows and that have capacity left, in at most `max_splits` fulfillment orders
    per delivery group.

    Plans of whole lines are searched exhaustively up to `max_locations` locations and
    `max_combinations` combinations per size; past that a greedy cover is used.
    """

    rules: tuple[RoutingRule, ...] = ()
    max_splits: int = 5
    max_locations: int = 3
    max_combinations: int = 20_000
    # How many of the best plans a decision keeps, the chosen one included.
    alternatives_kept: int = 5

    def __post_init__(self) -> None:
        if self.max_splits < 1:
            raise ValueError("max_splits must be at least 1")

    def with_rules(self, *rules: RoutingRule) -> RoutingPolicy:
        """The same policy with more rules."""
        return replace(self, rules=(*self.rules, *rules))

    def exclusion(self, group: DeliveryGroup, candidate: Candidate) -> str | None:
        """The first rule's reason to keep `candidate` away from `group`; None if none has."""
        for rule in self.rules:
            reason = rule.excludes(group, candidate)
            if reason:
                return reason
        return None

    def score(
        self,
        option: PlanOption,
        candidates: Mapping[str, Candidate],
        destination: Coordinates | None,
    ) -> PlanScore:
        """The comparable facts of one plan."""
        ids = option.location_ids
        distance: int | None = None
        if destination is not None:
            total = sum(haversine_km(candidates[i].coordinates, destination) for i in ids)
            distance = round(total / len(ids))
        return PlanScore(
            shipments=len(ids),
            distance_km=distance,
            priority=sum(candidates[i].priority for i in ids),
            location_ids=tuple(sorted(ids)),
        )

    def rank(
        self,
        options: Sequence[PlanOption],
        candidates: Mapping[str, Candidate],
        destination: Coordinates | None,
    ) -> list[tuple[PlanOption, PlanScore]]:
        """Options best first, each with its score."""
        scored = [(o, self.score(o, candidates, destination)) for o in options]
        return sorted(scored, key=lambda pair: pair[1].key())

    def rank_locations(
        self, candidates: Iterable[Candidate], destination: Coordinates | None
    ) -> list[Candidate]:
        """Single locations best first, for assigning lines and splitting quantities."""

        def key(c: Candidate) -> tuple[int, int, str]:
            km = 0 if destination is None else round(haversine_km(c.coordinates, destination))
            return (km, c.priority, c.location_id)

        return sorted(candidates, key=key)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _km(distance: int) -> str:
    return f"{distance:,} km"


def explain_choice(
    ranked: Sequence[tuple[PlanOption, PlanScore]],
    line_count: int,
    total_lines: int,
    postal_code: str,
    label: str,
) -> str:
    """One sentence saying why the best plan won over the runner-up."""
    best, score = ranked[0]
    where = (
        f"no coordinates for {postal_code or 'the address'}"
        if score.distance_km is None
        else f"{_km(score.distance_km)} from {postal_code}"
    )
    if line_count != total_lines:
        lines = f"{line_count} of {_plural(total_lines, 'line')}"
    else:
        lines = "its only line" if line_count == 1 else f"all {line_count} lines"
    if score.shipments == 1:
        head = f"{best.location_ids[0]} ships {lines}{label}: fewest shipments (1), {where}"
    else:
        parts = ", ".join(
            f"{location_id} ({', '.join(line.order_line_id for line in lines)})"
            for location_id, lines in best.assignments
        )
        average = "average " if score.distance_km is not None else ""
        head = (
            f"no single location ships {lines}{label}; "
            f"fewest shipments ({score.shipments}): {parts}, {average}{where}"
        )
    if len(ranked) == 1:
        return head
    runner, other = ranked[1]
    other_name = "+".join(runner.location_ids)
    if other.shipments != score.shipments:
        return f"{head}; {other_name} would need {other.shipments}"
    if (
        score.distance_km is not None
        and other.distance_km is not None
        and other.distance_km != score.distance_km
    ):
        return f"{head}, nearer than {other_name} ({_km(other.distance_km)})"
    same = "same distance as" if score.distance_km is not None else "no nearer than"
    if other.priority != score.priority:
        return f"{head}; {same} {other_name} but priority {score.priority} beats {other.priority}"
    return f"{head}; tied with {other_name} on distance and priority, first by id"


def _lost(score: PlanScore, winner: PlanScore) -> str:
    """Why a plan lost to the winner, on the first criterion where they differ."""
    if score.shipments != winner.shipments:
        return f"needs {score.shipments} fulfillment orders, not {winner.shipments}"
    if (
        score.distance_km is not None
        and winner.distance_km is not None
        and score.distance_km != winner.distance_km
    ):
        return f"farther: {_km(score.distance_km)} on average against {_km(winner.distance_km)}"
    if score.priority != winner.priority:
        return f"as near, but priority {score.priority} against {winner.priority}"
    return "tied on distance and priority; the winner comes first by location id"


def _won(score: PlanScore, runner_up: PlanScore | None) -> str:
    """Why the chosen plan won over the runner-up."""
    orders = _plural(score.shipments, "fulfillment order")
    if runner_up is None:
        return f"chosen: the only plan shipping every line whole in {orders}"
    if runner_up.shipments != score.shipments:
        return f"chosen: fewest fulfillment orders ({score.shipments})"
    if (
        score.distance_km is not None
        and runner_up.distance_km is not None
        and runner_up.distance_km != score.distance_km
    ):
        return f"chosen: {orders}, nearest on average ({_km(score.distance_km)})"
    if runner_up.priority != score.priority:
        return f"chosen: {orders}, as near as any, best priority ({score.priority})"
    return f"chosen: {orders}, tied on distance and priority, first by location id"


def _alternatives(ranked: Sequence[tuple[PlanOption, PlanScore]]) -> tuple[Alternative, ...]:
    """The best plans, the winner first, each with its verdict."""
    best = ranked[0][1]
    runner_up = ranked[1][1] if len(ranked) > 1 else None
    return tuple(
        Alternative(
            location_ids=option.location_ids,
            fulfillment_orders=score.shipments,
            distance_km=score.distance_km,
            priority=score.priority,
            chosen=index == 0,
            verdict=_won(best, runner_up) if index == 0 else _lost(score, best),
        )
        for index, (option, score) in enumerate(ranked)
    )


def _assign(
    lines: Sequence[RoutingLine],
    ordered: Sequence[str],
    stock: Mapping[tuple[str, str], int],
) -> tuple[dict[str, list[RoutingLine]], list[RoutingLine]]:
    """Place whole lines at the first of `ordered` with enough stock left; the hardest
    lines (fewest locations able to take them) go first. Returns placements and leftovers."""

    def able(line: RoutingLine) -> int:
        return sum(1 for loc in ordered if stock.get((loc, line.sku), 0) >= line.quantity)

    indexed = sorted(enumerate(lines), key=lambda p: (able(p[1]), p[0]))
    taken: dict[tuple[str, str], int] = defaultdict(int)
    placed: dict[str, list[tuple[int, RoutingLine]]] = defaultdict(list)
    leftovers: list[RoutingLine] = []
    for index, line in indexed:
        for loc in ordered:
            key = (loc, line.sku)
            if stock.get(key, 0) - taken[key] >= line.quantity:
                taken[key] += line.quantity
                placed[loc].append((index, line))
                break
        else:
            leftovers.append(line)
    result = {loc: [line for _, line in sorted(items)] for loc, items in placed.items()}
    return result, leftovers


def _coverage(
    lines: Sequence[RoutingLine], ranked: Sequence[str], stock: Mapping[tuple[str, str], int]
) -> dict[str, int]:
    """Per location, a bit mask of the lines it could ship whole (locations with none left out)."""
    masks: dict[str, int] = {}
    for loc in ranked:
        mask = 0
        for i, line in enumerate(lines):
            if stock.get((loc, line.sku), 0) >= line.quantity:
                mask |= 1 << i
        if mask:
            masks[loc] = mask
    return masks


def _options(
    lines: Sequence[RoutingLine],
    ranked: Sequence[str],
    stock: Mapping[tuple[str, str], int],
    policy: RoutingPolicy,
) -> list[PlanOption]:
    """Every feasible plan of the smallest size that has one (searched up to the policy's
    limits); empty if none was found that way.

    A combination is only tried when the bit masks of the lines its locations could take
    cover every line, which rules out almost all of them for the price of an integer OR.
    """
    if not lines:
        return []
    full = (1 << len(lines)) - 1
    masks = _coverage(lines, ranked, stock)
    relevant = [loc for loc in ranked if loc in masks]
    depth = min(policy.max_locations, policy.max_splits, len(relevant), len(lines))
    for size in range(1, depth + 1):
        if math.comb(len(relevant), size) > policy.max_combinations:
            return []
        found: list[PlanOption] = []
        for combo in combinations(relevant, size):
            covered = 0
            for loc in combo:
                covered |= masks[loc]
            if covered != full:
                continue
            placed, leftovers = _assign(lines, combo, stock)
            if leftovers or len(placed) != size:
                continue  # infeasible, or really a smaller plan (already searched)
            found.append(
                PlanOption(tuple((loc, tuple(placed[loc])) for loc in combo if loc in placed))
            )
        if found:
            return found
    return []


def _greedy_cover(
    lines: Sequence[RoutingLine],
    ranked: Sequence[str],
    stock: dict[tuple[str, str], int],
    limit: int,
) -> tuple[PlanOption, list[RoutingLine]]:
    """Repeatedly take the location that can ship the most remaining lines whole, using at
    most `limit` locations; takes what it places out of `stock`."""
    remaining = list(lines)
    assignments: list[tuple[str, tuple[RoutingLine, ...]]] = []
    used: set[str] = set()
    while remaining and len(assignments) < limit:
        best: tuple[str, list[RoutingLine]] | None = None
        for loc in ranked:
            if loc in used:
                continue
            placed, _ = _assign(remaining, [loc], stock)
            got = placed.get(loc, [])
            if got and (best is None or len(got) > len(best[1])):
                best = (loc, got)
        if best is None:
            break
        location_id, got = best
        used.add(location_id)
        for line in got:
            stock[(location_id, line.sku)] -= line.quantity
        taken = {line.order_line_id for line in got}
        remaining = [line for line in remaining if line.order_line_id not in taken]
        assignments.append((location_id, tuple(got)))
    return PlanOption(tuple(assignments)), remaining


def _allowed(
    group: DeliveryGroup,
    candidates: Sequence[Candidate],
    stock: Mapping[tuple[str, str], int],
    capacity: Mapping[str, int | None],
    policy: RoutingPolicy,
) -> tuple[list[Candidate], list[Exclusion]]:
    """The candidates every rule allows with capacity left; and the excluded ones that stock
    some of the group's SKUs (the others were never an alternative), with why."""
    skus = {line.sku for line in group.lines}
    allowed: list[Candidate] = []
    excluded: list[Exclusion] = []
    for candidate in candidates:
        reason = policy.exclusion(group, candidate)
        left = capacity.get(candidate.location_id)
        if reason is None and left is not None and left <= 0:
            reason = "no daily capacity left"
        if reason is None:
            allowed.append(candidate)
        elif any(stock.get((candidate.location_id, sku), 0) > 0 for sku in skus):
            excluded.append(Exclusion(candidate.location_id, reason))
    return allowed, excluded


def route_group(
    group: DeliveryGroup,
    candidates: Sequence[Candidate],
    stock: dict[tuple[str, str], int],
    capacity: dict[str, int | None],
    destination: Coordinates | None,
    policy: RoutingPolicy,
    label: str = "",
) -> GroupPlan:
    """Route one delivery group, taking what it uses out of `stock` and `capacity` (mutated)."""
    allowed, excluded = _allowed(group, candidates, stock, capacity, policy)
    by_id = {c.location_id: c for c in allowed}
    ranked = [c.location_id for c in policy.rank_locations(allowed, destination)]
    limit = policy.max_splits
    postal = group.address.postal_code
    position = {line.order_line_id: i for i, line in enumerate(group.lines)}
    whole = [
        line
        for line in group.lines
        if any(stock.get((loc, line.sku), 0) >= line.quantity for loc in ranked)
    ]
    whole_ids = {line.order_line_id for line in whole}
    hard = [line for line in group.lines if line.order_line_id not in whole_ids]
    decisions: list[str] = []
    alternatives: tuple[Alternative, ...] = ()
    chosen = PlanOption(())
    options = _options(whole, ranked, stock, policy)
    if options:
        ordered = policy.rank(options, by_id, destination)
        chosen = ordered[0][0]
        decisions.append(explain_choice(ordered, len(whole), len(group.lines), postal, label))
        alternatives = _alternatives(ordered[: policy.alternatives_kept])
        for location_id, lines in chosen.assignments:
            for line in lines:
                stock[(location_id, line.sku)] -= line.quantity
    elif whole:
        chosen, leftovers = _greedy_cover(whole, ranked, stock, limit)
        hard = sorted(leftovers + hard, key=lambda ln: position[ln.order_line_id])
        if chosen.assignments:
            score = policy.score(chosen, by_id, destination)
            placed_count = sum(len(lines) for _, lines in chosen.assignments)
            decisions.append(
                explain_choice([(chosen, score)], placed_count, len(group.lines), postal, label)
            )
            depth = min(policy.max_locations, limit)
            alternatives = (
                Alternative(
                    location_ids=chosen.location_ids,
                    fulfillment_orders=score.shipments,
                    distance_km=score.distance_km,
                    priority=score.priority,
                    chosen=True,
                    verdict=(
                        "chosen by greedy cover: no plan searched (up to "
                        f"{_plural(depth, 'location')}) ships every line whole"
                    ),
                ),
            )

    placed: dict[str, list[RoutingLine]] = {loc: list(lines) for loc, lines in chosen.assignments}
    # Lines no one location can take whole are split, preferring locations already shipping,
    # and opening new fulfillment orders only while the split limit allows.
    in_plan = list(placed)
    split_order = [loc for loc in ranked if loc in placed] + [
        loc for loc in ranked if loc not in placed
    ]
    unallocated: list[RoutingLine] = []
    for line in hard:
        need = line.quantity
        parts: list[tuple[str, int]] = []
        for loc in split_order:
            if loc not in placed and len(placed) >= limit:
                continue
            take = min(need, stock.get((loc, line.sku), 0))
            if take <= 0:
                continue
            stock[(loc, line.sku)] -= take
            placed.setdefault(loc, []).append(RoutingLine(line.order_line_id, line.sku, take))
            parts.append((loc, take))
            need -= take
            if need == 0:
                break
        if parts:
            pieces = ", ".join(f"{q} from {loc}" for loc, q in parts)
            decisions.append(
                f"no location has all {line.quantity} of {line.sku} for line "
                f"{line.order_line_id}{label}; split: {pieces}"
            )
        if need:
            unallocated.append(RoutingLine(line.order_line_id, line.sku, need))
            decisions.append(
                f"{need} of {line.sku} for line {line.order_line_id}{label} could not be "
                f"placed: {_why_unplaced(line.sku, ranked, placed, stock, excluded, limit)}"
            )
    if excluded:
        decisions.append(
            f"not considered{label}: "
            + ", ".join(f"{e.location_id} ({e.reason})" for e in excluded)
        )
    order = in_plan + [loc for loc in placed if loc not in in_plan]
    allocations = tuple(Allocation(loc, tuple(placed[loc])) for loc in order if placed[loc])
    for allocation in allocations:
        left = capacity.get(allocation.location_id)
        if left is not None:
            capacity[allocation.location_id] = left - 1
    return GroupPlan(
        group.delivery_group_id,
        allocations,
        tuple(unallocated),
        tuple(decisions),
        alternatives,
        tuple(excluded),
    )


def _why_unplaced(
    sku: str,
    ranked: Sequence[str],
    placed: Mapping[str, list[RoutingLine]],
    stock: Mapping[tuple[str, str], int],
    excluded: Sequence[Exclusion],
    limit: int,
) -> str:
    if any(stock.get((loc, sku), 0) > 0 for loc in ranked if loc not in placed):
        return f"the split limit of {_plural(limit, 'fulfillment order')} is reached"
    if any(stock.get((e.location_id, sku), 0) > 0 for e in excluded):
        return "only locations not considered have them available"
    return "no enabled location has them available"


# What made fulfillment route: an order's lines, a rejection, or a move someone asked for.
ROUTING_TRIGGERS = ("order", "rejection", "move")


@dataclass(frozen=True)
class RoutingDecision:
    """A routing decision as recorded: one delivery group, what was considered, the choice."""

    order_id: str
    delivery_group_id: str
    trigger: str
    source_fulfillment_order_id: str
    summary: tuple[str, ...]
    chosen_location_ids: tuple[str, ...]
    alternatives: tuple[Alternative, ...]
    excluded: tuple[Exclusion, ...]
    unallocated: tuple[RoutingLine, ...]
    decided_at: datetime | None = None


def decisions_of(
    order_id: str, plan: RoutingPlan, trigger: str, source_fulfillment_order_id: str = ""
) -> list[RoutingDecision]:
    """The records of a plan, one per delivery group."""
    return [
        RoutingDecision(
            order_id=order_id,
            delivery_group_id=g.delivery_group_id,
            trigger=trigger,
            source_fulfillment_order_id=source_fulfillment_order_id,
            summary=g.decisions,
            chosen_location_ids=tuple(a.location_id for a in g.allocations),
            alternatives=g.alternatives,
            excluded=g.excluded,
            unallocated=g.unallocated,
        )
        for g in plan.groups
    ]


def route(
    groups: Sequence[DeliveryGroup],
    candidates: Sequence[Candidate],
    availability: Mapping[tuple[str, str], int],
    destinations: Mapping[str, Coordinates | None],
    policy: RoutingPolicy | None = None,
) -> RoutingPlan:
    """Route every delivery group of an order against one availability snapshot.

    `availability` is units available to fulfill per (location_id, sku) at enabled
    locations; groups are routed in order and never plan more than it holds in total, nor
    more fulfillment orders at a location than its capacity left.
    """
    policy = policy or RoutingPolicy()
    stock = {k: v for k, v in availability.items() if v > 0}
    capacity = {c.location_id: c.capacity_left for c in candidates}
    many = len(groups) > 1
    plans = tuple(
        route_group(
            group,
            candidates,
            stock,
            capacity,
            destinations.get(group.delivery_group_id),
            policy,
            label=f" of delivery group {group.delivery_group_id}" if many else "",
        )
        for group in groups
    )
    return RoutingPlan(plans)


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


# Warehouse progress reports: the status each leads to, the statuses it may come from, and
# how to say it in an error ("cannot <verb> it").
PROGRESS: dict[str, tuple[str, frozenset[str], str]] = {
    "accept": (ACCEPTED, frozenset({ALLOCATED}), "accept it"),
    "pick": (PICKED, frozenset({ACCEPTED}), "mark it picked"),
    "pack": (PACKED, frozenset({PICKED}), "mark it packed"),
}


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
    if fo.status in (SHIPPED, REJECTED):
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

    @property
    def frees_capacity(self) -> bool:
        """True when the fulfillment order stops being work for its location."""
        return self.status_before in OPEN_STATUSES and self.status_after in (REJECTED, CANCELED)


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
                f"{_plural(line.remaining, 'unshipped unit')}; cannot {verb} {item.quantity}"
            )
    return [RoutingLine(i.order_line_id, by_id[i.order_line_id].sku, i.quantity) for i in requested]


def plan_line_change(
    fo: FulfillmentOrder, kind: str, requested: Sequence[LineQuantity]
) -> FulfillmentOrderReduction:
    """Check taking units off an open fulfillment order; no lines means every unshipped unit
    (except for a cancel, which must name them). The order ends rejected or canceled when
    nothing is left to ship, or shipped if part of it already shipped."""
    verb, terminal = LINE_CHANGE_KINDS[kind]
    if fo.status not in OPEN_STATUSES:
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
    return FulfillmentOrderReduction(kind, tuple(taking), fo.status, status)


def plan_cancel(fo: FulfillmentOrder) -> FulfillmentOrderReduction | None:
    """Cancel what a fulfillment order has not shipped; None if it is already canceled."""
    if not must_cancel(fo):
        return None
    taking = tuple(
        RoutingLine(line.order_line_id, line.sku, line.remaining)
        for line in fo.lines
        if line.remaining > 0
    )
    return FulfillmentOrderReduction(CANCELED, taking, fo.status, CANCELED)


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
        f"({_plural(target.daily_capacity or 0, 'fulfillment order')} a day); cannot move there"
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
