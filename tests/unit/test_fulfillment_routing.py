"""Routing rules, capacity, split limits and recorded decisions, and the properties every
plan keeps whatever the stock: never more than available, never more fulfillment orders than
allowed, every unit either placed or reported missing."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.fulfillment import domain
from services.fulfillment.domain import (
    Candidate,
    Coordinates,
    DeliveryGroup,
    PostalAddress,
    RoutingLine,
    RoutingPolicy,
)

NEWARK = Coordinates(40.7357, -74.1724)
RENO = Coordinates(39.5296, -119.8138)
CHICAGO = Coordinates(41.8818, -87.6470)
NYC = Coordinates(40.7128, -74.0060)

EAST = Candidate("wh-east", 1, NEWARK)
WEST = Candidate("wh-west", 1, RENO)
STORE = Candidate("store-chicago", 2, CHICAGO, type="store")


def group(
    *lines: tuple[str, str, int], gid: str = "dg-1", method: str = "standard"
) -> DeliveryGroup:
    return DeliveryGroup(
        gid,
        PostalAddress(line1="1 Main St", city="X", postal_code="10001", country_code="US"),
        tuple(RoutingLine(*line) for line in lines),
        delivery_method=method,
    )


def placed(plan: domain.RoutingPlan) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for g in plan.groups:
        for allocation in g.allocations:
            out[allocation.location_id] += [
                (ln.order_line_id, ln.quantity) for ln in allocation.lines
            ]
    return dict(out)


# ---- a merchant's rule, added without touching routing ------------------------------------


@dataclass(frozen=True)
class SameDayFromStoresOnly:
    """A merchant's rule: same-day delivery ships from stores only."""

    def excludes(self, group: DeliveryGroup, candidate: Candidate) -> str | None:
        if group.delivery_method == "same_day" and candidate.type != "store":
            return "same-day delivery ships from stores only"
        return None


def test_a_merchant_rule_keeps_same_day_orders_at_stores_and_says_why() -> None:
    stock = {("wh-east", "A"): 5, ("store-chicago", "A"): 5}
    policy = RoutingPolicy(rules=(SameDayFromStoresOnly(),))

    same_day = domain.route(
        [group(("l1", "A", 1), method="same_day")], [EAST, STORE], stock, {"dg-1": NYC}, policy
    )
    standard = domain.route(
        [group(("l1", "A", 1), method="standard")], [EAST, STORE], stock, {"dg-1": NYC}, policy
    )

    assert placed(same_day) == {"store-chicago": [("l1", 1)]}
    assert placed(standard) == {"wh-east": [("l1", 1)]}
    assert same_day.groups[0].excluded == (
        domain.Exclusion("wh-east", "same-day delivery ships from stores only"),
    )
    assert same_day.decisions[-1] == (
        "not considered: wh-east (same-day delivery ships from stores only)"
    )


def test_a_rule_that_excludes_every_stocking_location_leaves_the_line_unallocated() -> None:
    stock = {("wh-east", "A"): 5}
    plan = domain.route(
        [group(("l1", "A", 2), method="same_day")],
        [EAST, STORE],
        stock,
        {"dg-1": NYC},
        RoutingPolicy().with_rules(SameDayFromStoresOnly()),
    )
    assert plan.unallocated == [RoutingLine("l1", "A", 2)]
    assert any(
        "could not be placed: only locations not considered have them" in d for d in plan.decisions
    )


def test_excluded_locations_that_stock_nothing_asked_for_are_not_listed() -> None:
    stock = {("wh-east", "A"): 5, ("wh-west", "B"): 5}
    plan = domain.route(
        [group(("l1", "A", 1))],
        [EAST, WEST],
        stock,
        {"dg-1": NYC},
        RoutingPolicy(rules=(domain.ExcludeLocations({"wh-west": "closed"}),)),
    )
    assert plan.groups[0].excluded == ()


# ---- capacity and split limits -------------------------------------------------------------


def test_a_location_without_capacity_left_is_skipped_for_the_next_nearest() -> None:
    full_east = Candidate("wh-east", 1, NEWARK, capacity_left=0)
    stock = {("wh-east", "A"): 5, ("wh-west", "A"): 5}
    plan = domain.route([group(("l1", "A", 1))], [full_east, WEST], stock, {"dg-1": NYC})
    assert placed(plan) == {"wh-west": [("l1", 1)]}
    assert plan.groups[0].excluded == (domain.Exclusion("wh-east", "no daily capacity left"),)


def test_capacity_is_spent_across_the_delivery_groups_of_one_order() -> None:
    one_slot = Candidate("wh-east", 1, NEWARK, capacity_left=1)
    stock = {("wh-east", "A"): 5, ("wh-west", "A"): 5}
    plan = domain.route(
        [group(("l1", "A", 1), gid="g1"), group(("l2", "A", 1), gid="g2")],
        [one_slot, WEST],
        stock,
        {"g1": NYC, "g2": NYC},
    )
    assert [a.location_id for g in plan.groups for a in g.allocations] == ["wh-east", "wh-west"]
    assert plan.fulfillment_orders_per_location() == {"wh-east": 1, "wh-west": 1}


def test_with_one_split_allowed_one_location_ships_what_it_can_and_the_rest_is_reported() -> None:
    stock = {("wh-east", "A"): 5, ("wh-west", "B"): 5}
    plan = domain.route(
        [group(("l1", "A", 1), ("l2", "B", 2))],
        [EAST, WEST],
        stock,
        {"dg-1": NYC},
        RoutingPolicy(max_splits=1),
    )
    assert placed(plan) == {"wh-east": [("l1", 1)]}
    assert plan.unallocated == [RoutingLine("l2", "B", 2)]
    assert any("the split limit of 1 fulfillment order is reached" in d for d in plan.decisions)


def test_a_quantity_split_stops_at_the_split_limit() -> None:
    third = Candidate("wh-third", 1, CHICAGO)
    stock = {("wh-east", "A"): 2, ("wh-west", "A"): 2, ("wh-third", "A"): 2}
    plan = domain.route(
        [group(("l1", "A", 6))],
        [EAST, WEST, third],
        stock,
        {"dg-1": NYC},
        RoutingPolicy(max_splits=2),
    )
    assert len(plan.groups[0].allocations) == 2
    assert plan.unallocated == [RoutingLine("l1", "A", 2)]


def test_a_split_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_splits"):
        RoutingPolicy(max_splits=0)


# ---- the decision as recorded ---------------------------------------------------------------


def test_the_decision_keeps_the_alternatives_with_why_each_lost() -> None:
    stock = {("wh-east", "A"): 5, ("wh-west", "A"): 5, ("store-chicago", "A"): 5}
    plan = domain.route([group(("l1", "A", 1))], [EAST, WEST, STORE], stock, {"dg-1": NYC})

    alternatives = plan.groups[0].alternatives
    assert [(a.location_ids, a.chosen) for a in alternatives] == [
        (("wh-east",), True),
        (("store-chicago",), False),
        (("wh-west",), False),
    ]
    chosen, store, west = alternatives
    assert chosen.verdict == "chosen: 1 fulfillment order, nearest on average (14 km)"
    assert store.verdict == "farther: 1,146 km on average against 14 km"
    assert (west.fulfillment_orders, west.priority) == (1, 1)


def test_decision_records_name_the_order_trigger_and_chosen_locations() -> None:
    stock = {("wh-east", "A"): 5}
    plan = domain.route([group(("l1", "A", 1), ("l2", "B", 1))], [EAST], stock, {"dg-1": NYC})

    [record] = domain.decisions_of("order-1", plan, "rejection", "fo-9")

    assert record.order_id == "order-1"
    assert (record.trigger, record.source_fulfillment_order_id) == ("rejection", "fo-9")
    assert record.chosen_location_ids == ("wh-east",)
    assert record.unallocated == (RoutingLine("l2", "B", 1),)
    assert record.summary == plan.groups[0].decisions


# ---- properties ------------------------------------------------------------------------------

LOCATION_IDS = ["a", "b", "c", "d", "e", "f"]
SKUS = "PQRST"


# Locations, stock, delivery groups, policy (split limit, a rule) and the locations it bans.
World = tuple[
    list[Candidate], dict[tuple[str, str], int], list[DeliveryGroup], RoutingPolicy, set[str]
]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    ids = draw(st.lists(st.sampled_from(LOCATION_IDS), min_size=1, max_size=6, unique=True))
    candidates = [
        Candidate(
            location_id,
            draw(st.integers(1, 3)),
            Coordinates(draw(st.floats(25, 48)), draw(st.floats(-122, -70))),
            type=draw(st.sampled_from(domain.LOCATION_TYPES)),
            capacity_left=draw(st.none() | st.integers(0, 2)),
        )
        for location_id in ids
    ]
    stock = draw(
        st.dictionaries(
            st.tuples(st.sampled_from(ids), st.sampled_from(SKUS)), st.integers(0, 8), max_size=20
        )
    )
    group_count = draw(st.integers(1, 3))
    groups = []
    for g in range(group_count):
        lines = draw(
            st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 9)), min_size=1, max_size=6)
        )
        groups.append(
            group(*((f"g{g}-l{i}", sku, q) for i, (sku, q) in enumerate(lines)), gid=f"g{g}")
        )
    banned = set(draw(st.lists(st.sampled_from(ids), max_size=2)))
    policy = RoutingPolicy(
        max_splits=draw(st.integers(1, 4)),
        rules=(domain.ExcludeLocations(dict.fromkeys(banned, "banned")),),
    )
    return candidates, stock, groups, policy, banned


@settings(max_examples=250, deadline=None)
@given(world=worlds(), destination=st.none() | st.just(NYC))
def test_a_plan_never_oversells_nor_splits_past_the_limit_and_accounts_for_every_unit(
    world: World,
    destination: Coordinates | None,
) -> None:
    candidates, stock, groups, policy, banned = world
    destinations = {g.delivery_group_id: destination for g in groups}

    plan = domain.route(groups, candidates, stock, destinations, policy)

    # Never more than is available at any location.
    for key, quantity in plan.reservations().items():
        assert quantity <= stock.get(key, 0)
    # Never more fulfillment orders per group than the split limit, one per location.
    for g in plan.groups:
        locations = [a.location_id for a in g.allocations]
        assert len(locations) <= policy.max_splits
        assert len(set(locations)) == len(locations)
        assert not banned & set(locations)
    # Never more fulfillment orders at a location than its capacity left.
    capacity = {c.location_id: c.capacity_left for c in candidates}
    for location_id, count in plan.fulfillment_orders_per_location().items():
        left = capacity[location_id]
        assert left is None or count <= left
    # Every unit of every line is placed or reported missing, exactly.
    accounted: Counter[str] = Counter()
    for g in plan.groups:
        for allocation in g.allocations:
            assert allocation.lines
            for line in allocation.lines:
                assert line.quantity > 0
                accounted[line.order_line_id] += line.quantity
    for line in plan.unallocated:
        assert line.quantity > 0
        accounted[line.order_line_id] += line.quantity
    assert dict(accounted) == {
        line.order_line_id: line.quantity for g in groups for line in g.lines
    }


@settings(max_examples=100, deadline=None)
@given(world=worlds(), pick=st.integers(0, 5))
def test_a_group_one_allowed_location_can_ship_whole_is_never_split(
    world: World,
    pick: int,
) -> None:
    candidates, stock, groups, policy, banned = world
    [first, *_] = groups
    # Make one allowed location (with capacity) able to ship the whole group.
    full = candidates[pick % len(candidates)]
    candidates = [replace(c, capacity_left=None) if c is full else c for c in candidates]
    policy = replace(
        policy,
        rules=(domain.ExcludeLocations(dict.fromkeys(banned - {full.location_id}, "banned")),),
    )
    needed: Counter[str] = Counter()
    for line in first.lines:
        needed[line.sku] += line.quantity
    stock = {**stock, **{(full.location_id, sku): q for sku, q in needed.items()}}

    plan = domain.route([first], candidates, stock, {first.delivery_group_id: NYC}, policy)

    assert len(plan.groups[0].allocations) == 1
    assert plan.unallocated == []


# ---- an order consuming a checkout reservation ------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(world=worlds(), destination=st.none() | st.just(NYC), data=st.data())
def test_a_plan_with_a_reservation_never_oversells_and_places_held_units_where_they_are_held(
    world: World, destination: Coordinates | None, data: st.DataObject
) -> None:
    candidates, stock, groups, policy, _ = world
    destinations = {g.delivery_group_id: destination for g in groups}
    # Held units are part of what is available (released for the order's routing).
    holds = [
        domain.Hold(i, location_id, sku, data.draw(st.integers(1, quantity)))
        for i, ((location_id, sku), quantity) in enumerate(sorted(stock.items()))
        if quantity > 0 and data.draw(st.booleans())
    ]

    plan = domain.route_with_reservation(
        groups, holds, "r-1", candidates, stock, destinations, policy
    )

    for key, quantity in plan.reservations().items():
        assert quantity <= stock.get(key, 0)
    for g in plan.groups:
        locations = [a.location_id for a in g.allocations]
        assert len(set(locations)) == len(locations)
        assert len(locations) <= policy.max_splits
    capacity = {c.location_id: c.capacity_left for c in candidates}
    for location_id, count in plan.fulfillment_orders_per_location().items():
        left = capacity[location_id]
        assert left is None or count <= left
    accounted: Counter[str] = Counter()
    for g in plan.groups:
        for allocation in g.allocations:
            for line in allocation.lines:
                assert line.quantity > 0
                accounted[line.order_line_id] += line.quantity
    for line in plan.unallocated:
        accounted[line.order_line_id] += line.quantity
    assert dict(accounted) == {
        line.order_line_id: line.quantity for g in groups for line in g.lines
    }
    # Held units go to the order first: where neither capacity nor the split limit stops
    # them, of each SKU as many as the order wants of them ship from the held locations.
    demand: Counter[str] = Counter()
    for g in groups:
        for line in g.lines:
            demand[line.sku] += line.quantity
    open_locations = {loc for loc, left in capacity.items() if left is None or left > 0}
    for sku in demand:
        held = sum(h.quantity for h in holds if h.sku == sku and h.location_id in open_locations)
        shipped_from_held = sum(
            q
            for (loc, s), q in plan.reservations().items()
            if s == sku and loc in {h.location_id for h in holds if h.sku == sku}
        )
        held_locations = {h.location_id for h in holds}
        if (
            all(left is None for left in capacity.values())
            and len(held_locations) <= policy.max_splits
        ):
            assert shipped_from_held >= min(demand[sku], held)


def test_an_order_takes_the_units_held_for_it_at_the_held_location_over_a_nearer_one() -> None:
    order = group(("l1", "MUG", 2), ("l2", "TEE", 1))
    holds = [domain.Hold(0, "wh-west", "MUG", 2)]
    stock = {("wh-east", "MUG"): 5, ("wh-west", "MUG"): 2, ("wh-east", "TEE"): 5}

    plan = domain.route_with_reservation(
        [order], holds, "r-1", [EAST, WEST], stock, {"dg-1": NYC}, RoutingPolicy()
    )

    assert placed(plan) == {"wh-west": [("l1", 2)], "wh-east": [("l2", 1)]}
    assert "2 of MUG for line l1 held by checkout reservation r-1: 2 at wh-west" in plan.decisions


@settings(max_examples=250, deadline=None)
@given(world=worlds(), destination=st.none() | st.just(NYC), data=st.data())
def test_held_units_ship_from_where_they_are_held_when_nothing_else_limits_the_plan(
    world: World, destination: Coordinates | None, data: st.DataObject
) -> None:
    candidates, stock, groups, _, _ = world
    # No capacity limit, room for every location in each group and no rule: only the holds
    # make a location ship rather than a nearer or higher-priority one.
    candidates = [replace(c, capacity_left=None) for c in candidates]
    policy = RoutingPolicy(max_splits=len(candidates))
    destinations = {g.delivery_group_id: destination for g in groups}
    holds = [
        domain.Hold(i, location_id, sku, data.draw(st.integers(1, quantity)))
        for i, ((location_id, sku), quantity) in enumerate(sorted(stock.items()))
        if quantity > 0 and data.draw(st.booleans())
    ]

    plan = domain.route_with_reservation(
        groups, holds, "r-1", candidates, stock, destinations, policy
    )

    shipped = plan.reservations()
    held = domain.held_units(holds)
    for sku in SKUS:
        wanted = sum(ln.quantity for g in groups for ln in g.lines if ln.sku == sku)
        held_of_sku = sum(q for (_, s), q in held.items() if s == sku)
        from_held = sum(q for key, q in shipped.items() if key in held and key[1] == sku)
        # Of each SKU, as many held units as the order wants ship from the held locations...
        assert from_held >= min(wanted, held_of_sku)
        # ...every one of them when it wants at least what is held...
        if wanted >= held_of_sku:
            for key, quantity in held.items():
                if key[1] == sku:
                    assert shipped.get(key, 0) >= quantity
        # ...and the plan says which were the reservation's.
        if wanted and held_of_sku:
            assert any(
                f" of {sku} for line " in d and "held by checkout reservation r-1" in d
                for d in plan.decisions
            )


def _reservation(status: str, order_id: str = "") -> domain.CheckoutReservation:
    return domain.CheckoutReservation(
        "r-1",
        status,
        datetime(2026, 1, 1, tzinfo=UTC),
        (domain.CartLine("MUG", 2),),
        (domain.Hold(0, "wh-west", "MUG", 2),),
        order_id,
    )


def test_only_a_held_reservation_is_consumed_and_any_other_says_why_not() -> None:
    prefix = "checkout reservation 'r-1' not used"

    assert domain.usable_by(_reservation(domain.HELD), "r-1", "o-1") == ""
    assert domain.usable_by(_reservation(domain.EXPIRED), "r-1", "o-1") == (
        f"{prefix}: it is expired"
    )
    assert domain.usable_by(_reservation(domain.RELEASED), "r-1", "o-1") == (
        f"{prefix}: it is released"
    )
    assert domain.usable_by(_reservation(domain.CONSUMED, "o-2"), "r-1", "o-1") == (
        f"{prefix}: already consumed by order o-2"
    )
    assert domain.usable_by(_reservation(domain.CONSUMED, "o-1"), "r-1", "o-1") == (
        f"{prefix}: already consumed by this order"
    )
    assert domain.usable_by(None, "r-1", "o-1") == f"{prefix}: it does not exist"
