"""Fulfillment domain, routing: which locations ship an order's delivery groups — the
routing policy and its rules, the plan, and the decisions recorded with their alternatives."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import combinations
from typing import Literal, Protocol

from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.postal import PostalAddress
from services.fulfillment.domain.common import Coordinates, ShipToStore, haversine_km, plural

# The delivery method of a group the shopper collects at a store.
PICKUP = "pickup"


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
    # With delivery method "pickup": the store the shopper collects at.
    pickup_location_id: str = ""


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
        if group.delivery_method == PICKUP and not group.pickup_location_id:
            violations.append(
                FieldViolation(
                    f"{where}.pickup_location_id", "is required for delivery method pickup"
                )
            )
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
    # A store's ship-to-store setting: whether (and from which warehouses) a pickup group it
    # cannot fill is shipped to it.
    ship_to_store: ShipToStore = field(default_factory=ShipToStore)


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
class PickupAtStore:
    """A pickup group is fulfilled by the store it names, and only if that is a store; other
    delivery methods are left alone. Every policy applies it first."""

    def excludes(self, group: DeliveryGroup, candidate: Candidate) -> str | None:
        """Why `candidate` cannot be where the shopper collects `group`."""
        if group.delivery_method != PICKUP:
            return None
        if candidate.location_id != group.pickup_location_id:
            return f"pickup at store {group.pickup_location_id}"
        if candidate.type != "store":
            return f"pickup needs a store; {candidate.location_id} is a {candidate.type}"
        return None


_PICKUP_AT_STORE = PickupAtStore()


@dataclass(frozen=True)
class ShipToStoreFrom:
    """What a pickup group's store could not fill is shipped to it from a warehouse it
    accepts ship-to-store from (any warehouse, or only those it names); it takes the place of
    `PickupAtStore` for those units."""

    store_id: str
    setting: ShipToStore

    def excludes(self, group: DeliveryGroup, candidate: Candidate) -> str | None:
        """Why `candidate` cannot ship the rest of `group` to its store."""
        if candidate.type != "warehouse":
            return (
                f"ship-to-store {self.store_id} ships from a warehouse; "
                f"{candidate.location_id} is a {candidate.type}"
            )
        if not self.setting.ships_from(candidate.location_id):
            allowed = ", ".join(self.setting.from_location_ids)
            return f"store {self.store_id} accepts ship-to-store only from {allowed}"
        return None


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

    def exclusion(
        self, group: DeliveryGroup, candidate: Candidate, first: RoutingRule = _PICKUP_AT_STORE
    ) -> str | None:
        """The first rule's reason to keep `candidate` away from `group`; None if none has.
        Pickup at the named store (or, for what it cannot fill, ship-to-store from a
        warehouse: `first`) comes before the merchant's rules."""
        for rule in (first, *self.rules):
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


def _km(distance: int) -> str:
    return f"{distance:,} km"


def _deciding(
    score: PlanScore, other: PlanScore
) -> Literal["shipments", "distance", "priority", ""]:
    """The first criterion on which two plans differ, in the policy's order: "shipments",
    "distance" (only when both distances are known), "priority", or "" for a tie the
    location ids settle."""
    if score.shipments != other.shipments:
        return "shipments"
    if (
        score.distance_km is not None
        and other.distance_km is not None
        and score.distance_km != other.distance_km
    ):
        return "distance"
    if score.priority != other.priority:
        return "priority"
    return ""


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
        lines = f"{line_count} of {plural(total_lines, 'line')}"
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
    deciding = _deciding(score, other)
    if deciding == "shipments":
        return f"{head}; {other_name} would need {other.shipments}"
    if deciding == "distance":
        assert other.distance_km is not None
        return f"{head}, nearer than {other_name} ({_km(other.distance_km)})"
    same = "same distance as" if score.distance_km is not None else "no nearer than"
    if deciding == "priority":
        return f"{head}; {same} {other_name} but priority {score.priority} beats {other.priority}"
    return f"{head}; tied with {other_name} on distance and priority, first by id"


def _lost(score: PlanScore, winner: PlanScore) -> str:
    """Why a plan lost to the winner, on the first criterion where they differ."""
    deciding = _deciding(score, winner)
    if deciding == "shipments":
        return f"needs {score.shipments} fulfillment orders, not {winner.shipments}"
    if deciding == "distance":
        assert score.distance_km is not None and winner.distance_km is not None
        return f"farther: {_km(score.distance_km)} on average against {_km(winner.distance_km)}"
    if deciding == "priority":
        return f"as near, but priority {score.priority} against {winner.priority}"
    return "tied on distance and priority; the winner comes first by location id"


def _won(score: PlanScore, runner_up: PlanScore | None) -> str:
    """Why the chosen plan won over the runner-up."""
    orders = plural(score.shipments, "fulfillment order")
    if runner_up is None:
        return f"chosen: the only plan shipping every line whole in {orders}"
    deciding = _deciding(score, runner_up)
    if deciding == "shipments":
        return f"chosen: fewest fulfillment orders ({score.shipments})"
    if deciding == "distance":
        assert score.distance_km is not None
        return f"chosen: {orders}, nearest on average ({_km(score.distance_km)})"
    if deciding == "priority":
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
    first: RoutingRule = _PICKUP_AT_STORE,
) -> tuple[list[Candidate], list[Exclusion]]:
    """The candidates every rule allows with capacity left; and the excluded ones that stock
    some of the group's SKUs (the others were never an alternative), with why."""
    skus = {line.sku for line in group.lines}
    allowed: list[Candidate] = []
    excluded: list[Exclusion] = []
    for candidate in candidates:
        reason = policy.exclusion(group, candidate, first)
        left = capacity.get(candidate.location_id)
        if reason is None and left is not None and left <= 0:
            reason = "no daily capacity left"
        if reason is None:
            allowed.append(candidate)
        elif any(stock.get((candidate.location_id, sku), 0) > 0 for sku in skus):
            excluded.append(Exclusion(candidate.location_id, reason))
    return allowed, excluded


def ship_to_store_of(group: DeliveryGroup, candidates: Sequence[Candidate]) -> Candidate | None:
    """The store a pickup group is collected at when it accepts ship-to-store (and is enabled,
    so among the candidates); None for every other group."""
    if group.delivery_method != PICKUP:
        return None
    for candidate in candidates:
        if candidate.location_id == group.pickup_location_id:
            accepts = candidate.type == "store" and candidate.ship_to_store.accepted
            return candidate if accepts else None
    return None


def route_group(
    group: DeliveryGroup,
    candidates: Sequence[Candidate],
    stock: dict[tuple[str, str], int],
    capacity: dict[str, int | None],
    destination: Coordinates | None,
    policy: RoutingPolicy,
    label: str = "",
) -> GroupPlan:
    """Route one delivery group, taking what it uses out of `stock` and `capacity` (mutated).

    A pickup group goes to its store; what the store has not got stays unallocated, unless
    the store accepts ship-to-store: then it is routed among the warehouses the store accepts
    (nearest to the store first, as any group is to its recipient), to be shipped there."""
    store = ship_to_store_of(group, candidates)
    at_store = _route_among(
        group, candidates, stock, capacity, destination, policy, label, quiet=store is not None
    )
    if store is None:
        return at_store
    if not at_store.unallocated:
        if not at_store.excluded:
            return at_store
        said = (*at_store.decisions, _not_considered(at_store.excluded, label))
        return replace(at_store, decisions=said)
    units = ", ".join(f"{u.quantity} of {u.sku}" for u in at_store.unallocated)
    intro = (
        f"store {store.location_id} has not got {units}{label}; it accepts ship-to-store, so "
        "a warehouse ships them there"
    )
    shipped = _route_among(
        replace(group, lines=at_store.unallocated),
        candidates,
        stock,
        capacity,
        store.coordinates,
        policy,
        f"{label} to store {store.location_id}",
        first=ShipToStoreFrom(store.location_id, store.ship_to_store),
        destination_name=f"store {store.location_id}",
    )
    return GroupPlan(
        group.delivery_group_id,
        at_store.allocations + shipped.allocations,
        shipped.unallocated,
        (*at_store.decisions, intro, *shipped.decisions),
        at_store.alternatives + shipped.alternatives,
        shipped.excluded,
    )


def _route_among(
    group: DeliveryGroup,
    candidates: Sequence[Candidate],
    stock: dict[tuple[str, str], int],
    capacity: dict[str, int | None],
    destination: Coordinates | None,
    policy: RoutingPolicy,
    label: str = "",
    first: RoutingRule = _PICKUP_AT_STORE,
    destination_name: str = "",
    quiet: bool = False,
) -> GroupPlan:
    """Route one delivery group among the candidates `first` and the policy's rules allow.
    `quiet` leaves out the sentences about units not placed and locations not considered (a
    pickup's store whose leftovers ship-to-store routes again, where they are said)."""
    allowed, excluded = _allowed(group, candidates, stock, capacity, policy, first)
    by_id = {c.location_id: c for c in allowed}
    ranked = [c.location_id for c in policy.rank_locations(allowed, destination)]
    limit = policy.max_splits
    postal = destination_name or group.address.postal_code
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
                        f"{plural(depth, 'location')}) ships every line whole"
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
        if need and not quiet:
            decisions.append(
                f"{need} of {line.sku} for line {line.order_line_id}{label} could not be "
                f"placed: {_why_unplaced(line.sku, ranked, placed, stock, excluded, limit)}"
            )
    if excluded and not quiet:
        decisions.append(_not_considered(excluded, label))
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


def _not_considered(excluded: Sequence[Exclusion], label: str) -> str:
    return f"not considered{label}: " + ", ".join(f"{e.location_id} ({e.reason})" for e in excluded)


def _why_unplaced(
    sku: str,
    ranked: Sequence[str],
    placed: Mapping[str, list[RoutingLine]],
    stock: Mapping[tuple[str, str], int],
    excluded: Sequence[Exclusion],
    limit: int,
) -> str:
    if any(stock.get((loc, sku), 0) > 0 for loc in ranked if loc not in placed):
        return f"the split limit of {plural(limit, 'fulfillment order')} is reached"
    if any(stock.get((e.location_id, sku), 0) > 0 for e in excluded):
        return "only locations not considered have them available"
    return "no enabled location has them available"


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
