"""Fulfillment domain: routing an order's lines to locations, and a fulfillment order's life.

Pure: standard library and oms_platform.errors only. The store reads and writes these types;
the servicer converts them to and from the wire.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument

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
class PostalAddress:
    """A postal address."""

    line1: str = ""
    line2: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country_code: str = ""


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
    daily_capacity: int | None = None

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
                FieldViolation(f"{where}.location_id", f"unknown location {level.location_id!r}")
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
    """A location as routing sees it: where it is and how it ranks."""

    location_id: str
    priority: int
    coordinates: Coordinates


@dataclass(frozen=True)
class Allocation:
    """The lines (or parts of lines) one location ships for one delivery group."""

    location_id: str
    lines: tuple[RoutingLine, ...]


@dataclass(frozen=True)
class GroupPlan:
    """How one delivery group is fulfilled, what could not be placed, and why."""

    delivery_group_id: str
    allocations: tuple[Allocation, ...]
    unallocated: tuple[RoutingLine, ...]
    decisions: tuple[str, ...]


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


@dataclass
class RoutingPolicy:
    """Which plan wins: fewest fulfillment orders, then nearest on average (to the whole
    kilometre), then lowest total location priority, then location id.

    Plans are only generated up to `max_locations` locations and `max_combinations`
    combinations per size; past that a greedy cover is used.
    """

    max_locations: int = 3
    max_combinations: int = 5000

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


def _assign(
    lines: Sequence[RoutingLine],
    ordered: Sequence[str],
    stock: Mapping[tuple[str, str], int],
) -> tuple[dict[str, list[RoutingLine]], list[RoutingLine]]:
    """Place whole lines at the first of `ordered` with enough stock left; the hardest
    lines (fewest locations able to take them) go first. Returns placements and leftovers."""
    left = dict(stock)

    def able(line: RoutingLine) -> int:
        return sum(1 for loc in ordered if left.get((loc, line.sku), 0) >= line.quantity)

    indexed = sorted(enumerate(lines), key=lambda p: (able(p[1]), p[0]))
    placed: dict[str, list[tuple[int, RoutingLine]]] = defaultdict(list)
    leftovers: list[RoutingLine] = []
    for index, line in indexed:
        for loc in ordered:
            if left.get((loc, line.sku), 0) >= line.quantity:
                left[(loc, line.sku)] -= line.quantity
                placed[loc].append((index, line))
                break
        else:
            leftovers.append(line)
    result = {loc: [line for _, line in sorted(items)] for loc, items in placed.items()}
    return result, leftovers


def _options(
    lines: Sequence[RoutingLine],
    ranked: Sequence[Candidate],
    stock: Mapping[tuple[str, str], int],
    policy: RoutingPolicy,
) -> list[PlanOption]:
    """Every feasible plan of the smallest size that has one (searched up to the policy's
    limits); empty if none was found that way."""
    if not lines:
        return []
    relevant = [
        c.location_id
        for c in ranked
        if any(stock.get((c.location_id, line.sku), 0) >= line.quantity for line in lines)
    ]
    for size in range(1, min(policy.max_locations, len(relevant), len(lines)) + 1):
        if math.comb(len(relevant), size) > policy.max_combinations:
            return []
        found: list[PlanOption] = []
        for combo in combinations(relevant, size):
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
    ranked: Sequence[Candidate],
    stock: dict[tuple[str, str], int],
) -> tuple[PlanOption, list[RoutingLine]]:
    """Repeatedly take the location that can ship the most remaining lines."""
    remaining = list(lines)
    assignments: list[tuple[str, tuple[RoutingLine, ...]]] = []
    used: set[str] = set()
    while remaining:
        best: tuple[str, list[RoutingLine]] | None = None
        for c in ranked:
            if c.location_id in used:
                continue
            placed, _ = _assign(remaining, [c.location_id], stock)
            got = placed.get(c.location_id, [])
            if got and (best is None or len(got) > len(best[1])):
                best = (c.location_id, got)
        if best is None:
            break
        location_id, got = best
        used.add(location_id)
        for line in got:
            stock[(location_id, line.sku)] -= line.quantity
            remaining.remove(line)
        assignments.append((location_id, tuple(got)))
    return PlanOption(tuple(assignments)), remaining


def route_group(
    group: DeliveryGroup,
    candidates: Sequence[Candidate],
    stock: dict[tuple[str, str], int],
    destination: Coordinates | None,
    policy: RoutingPolicy,
    label: str = "",
) -> GroupPlan:
    """Route one delivery group, taking what it uses out of `stock` (mutated)."""
    by_id = {c.location_id: c for c in candidates}
    ranked = policy.rank_locations(candidates, destination)
    postal = group.address.postal_code
    whole = [
        line
        for line in group.lines
        if any(stock.get((c.location_id, line.sku), 0) >= line.quantity for c in candidates)
    ]
    hard = [line for line in group.lines if line not in whole]
    decisions: list[str] = []
    chosen = PlanOption(())
    options = _options(whole, ranked, stock, policy)
    if options:
        ordered = policy.rank(options, by_id, destination)
        chosen = ordered[0][0]
        decisions.append(explain_choice(ordered, len(whole), len(group.lines), postal, label))
        for location_id, lines in chosen.assignments:
            for line in lines:
                stock[(location_id, line.sku)] -= line.quantity
    elif whole:
        chosen, leftovers = _greedy_cover(whole, ranked, stock)
        hard = leftovers + hard
        if chosen.assignments:
            single = [(chosen, policy.score(chosen, by_id, destination))]
            placed_count = sum(len(lines) for _, lines in chosen.assignments)
            decisions.append(explain_choice(single, placed_count, len(group.lines), postal, label))

    placed: dict[str, list[RoutingLine]] = {loc: list(lines) for loc, lines in chosen.assignments}
    # Lines no one location can take whole are split, preferring locations already shipping.
    in_plan = list(placed)
    split_order = [c.location_id for c in ranked if c.location_id in placed] + [
        c.location_id for c in ranked if c.location_id not in placed
    ]
    unallocated: list[RoutingLine] = []
    for line in sorted(hard, key=lambda ln: group.lines.index(ln)):
        need = line.quantity
        parts: list[tuple[str, int]] = []
        for loc in split_order:
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
                f"placed: no enabled location has them available"
            )
    order = in_plan + [loc for loc in placed if loc not in in_plan]
    allocations = tuple(Allocation(loc, tuple(placed[loc])) for loc in order if placed[loc])
    return GroupPlan(group.delivery_group_id, allocations, tuple(unallocated), tuple(decisions))


def route(
    groups: Sequence[DeliveryGroup],
    candidates: Sequence[Candidate],
    availability: Mapping[tuple[str, str], int],
    destinations: Mapping[str, Coordinates | None],
    policy: RoutingPolicy | None = None,
) -> RoutingPlan:
    """Route every delivery group of an order against one availability snapshot.

    `availability` is units available to fulfill per (location_id, sku) at enabled
    locations; groups are routed in order and never plan more than it holds in total.
    """
    policy = policy or RoutingPolicy()
    stock = {k: v for k, v in availability.items() if v > 0}
    many = len(groups) > 1
    plans = tuple(
        route_group(
            group,
            candidates,
            stock,
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
    quantity: int
    quantity_shipped: int = 0

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
                        f"order line {item.order_line_id!r} is not in fulfillment order "
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
    raw = f"{cursor.created_at.isoformat()}|{cursor.fulfillment_order_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(token: str) -> Cursor | None:
    """The cursor inside a page token; None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode()).decode()
        stamp, _, fo_id = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument([FieldViolation("page_token", "is not a token we issued")]) from None
    if not fo_id or created_at.tzinfo is None:
        raise InvalidArgument([FieldViolation("page_token", "is not a token we issued")])
    return Cursor(created_at, fo_id)


@dataclass(frozen=True)
class ListFilter:
    """Which fulfillment orders to list; empty fields match everything."""

    order_id: str = ""
    location_id: str = ""
    statuses: tuple[str, ...] = field(default_factory=tuple)
