"""Fulfillment domain rules: routing, the fulfillment order's life, shipments, stock feeds."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oms_platform.errors import FailedPrecondition, InvalidArgument
from services.fulfillment import domain
from services.fulfillment.domain import (
    Candidate,
    Coordinates,
    DeliveryGroup,
    FulfillmentLine,
    FulfillmentOrder,
    InventoryLevel,
    PostalAddress,
    RoutingLine,
    ShipmentItem,
)

NEWARK = Coordinates(40.7357, -74.1724)
RENO = Coordinates(39.5296, -119.8138)
CHICAGO = Coordinates(41.8818, -87.6470)
NYC = Coordinates(40.7128, -74.0060)
SEATTLE = Coordinates(47.6062, -122.3321)

EAST = Candidate("wh-east", 1, NEWARK)
WEST = Candidate("wh-west", 1, RENO)
STORE = Candidate("store-chicago", 2, CHICAGO)


def group(*lines: tuple[str, str, int], postal: str = "10001", gid: str = "dg-1") -> DeliveryGroup:
    return DeliveryGroup(
        gid,
        PostalAddress(line1="1 Main St", city="X", postal_code=postal, country_code="US"),
        tuple(RoutingLine(*line) for line in lines),
    )


def placed(plan: domain.RoutingPlan) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for g in plan.groups:
        for allocation in g.allocations:
            out[allocation.location_id] += [
                (ln.order_line_id, ln.quantity) for ln in allocation.lines
            ]
    return dict(out)


# ---- routing -----------------------------------------------------------------------------


def test_a_single_location_holding_everything_beats_nearer_locations_that_would_split() -> None:
    stock = {
        ("wh-west", "A"): 10, ("wh-west", "B"): 10,
        ("wh-east", "A"): 10, ("store-chicago", "B"): 10,
    }  # fmt: skip
    plan = domain.route(
        [group(("l1", "A", 1), ("l2", "B", 1))], [EAST, WEST, STORE], stock, {"dg-1": NYC}
    )
    assert placed(plan) == {"wh-west": [("l1", 1), ("l2", 1)]}
    assert plan.decisions[0].startswith("wh-west ships all 2 lines: fewest shipments (1)")


def test_the_nearest_location_wins_among_single_location_plans() -> None:
    stock = {("wh-east", "A"): 5, ("wh-west", "A"): 5}
    to_nyc = domain.route([group(("l1", "A", 2))], [EAST, WEST], stock, {"dg-1": NYC})
    to_seattle = domain.route([group(("l1", "A", 2))], [EAST, WEST], stock, {"dg-1": SEATTLE})
    assert placed(to_nyc) == {"wh-east": [("l1", 2)]}
    assert placed(to_seattle) == {"wh-west": [("l1", 2)]}
    assert "nearer than wh-west" in to_nyc.decisions[0]


def test_the_decision_names_the_winner_the_shipment_count_and_the_distance() -> None:
    stock = {("wh-east", "A"): 5, ("wh-east", "B"): 5}
    plan = domain.route(
        [group(("l1", "A", 1), ("l2", "B", 1), postal="07102")],
        [EAST],
        stock,
        {"dg-1": NEWARK},
    )
    assert plan.decisions == ["wh-east ships all 2 lines: fewest shipments (1), 0 km from 07102"]


def test_location_priority_breaks_a_distance_tie() -> None:
    twin = Candidate("aa-twin", 5, NEWARK)
    stock = {("wh-east", "A"): 5, ("aa-twin", "A"): 5}
    plan = domain.route([group(("l1", "A", 1))], [twin, EAST], stock, {"dg-1": NYC})
    assert placed(plan) == {"wh-east": [("l1", 1)]}
    assert "priority 1 beats 5" in plan.decisions[0]


def test_location_id_breaks_a_tie_on_distance_and_priority() -> None:
    twin = Candidate("wh-east-2", 1, NEWARK)
    stock = {("wh-east", "A"): 5, ("wh-east-2", "A"): 5}
    plan = domain.route([group(("l1", "A", 1))], [twin, EAST], stock, {"dg-1": NYC})
    assert placed(plan) == {"wh-east": [("l1", 1)]}


def test_an_unknown_destination_gives_no_distance_preference() -> None:
    near_but_low = Candidate("near", 9, NYC)
    far_but_high = Candidate("far", 1, SEATTLE)
    stock = {("near", "A"): 5, ("far", "A"): 5}
    plan = domain.route(
        [group(("l1", "A", 1), postal="99999")], [near_but_low, far_but_high], stock, {"dg-1": None}
    )
    assert placed(plan) == {"far": [("l1", 1)]}
    assert "no coordinates for 99999" in plan.decisions[0]


def test_lines_split_across_locations_when_no_single_location_has_them_all() -> None:
    stock = {("wh-east", "A"): 5, ("wh-west", "B"): 5}
    plan = domain.route(
        [group(("l1", "A", 1), ("l2", "B", 1))], [EAST, WEST, STORE], stock, {"dg-1": NYC}
    )
    assert placed(plan) == {"wh-east": [("l1", 1)], "wh-west": [("l2", 1)]}
    assert plan.unallocated == []
    assert "fewest shipments (2)" in plan.decisions[0]


def test_a_split_uses_as_few_locations_as_possible() -> None:
    # The store is nearest for A and C alone, but wh-east + wh-west cover A, B, C in two.
    stock = {
        ("store-chicago", "A"): 5, ("store-chicago", "C"): 5,
        ("wh-east", "A"): 5, ("wh-east", "B"): 5,
        ("wh-west", "C"): 5, ("wh-west", "D"): 5,
        ("wh-east", "D"): 5,
    }  # fmt: skip
    plan = domain.route(
        [group(("l1", "A", 1), ("l2", "B", 1), ("l3", "C", 1), ("l4", "D", 1))],
        [EAST, WEST, STORE],
        stock,
        {"dg-1": CHICAGO},
    )
    assert len(plan.groups[0].allocations) == 2
    assert set(placed(plan)) in ({"wh-east", "wh-west"}, {"wh-east", "store-chicago"})


def test_among_equal_size_splits_the_nearer_pair_wins() -> None:
    stock = {
        ("wh-east", "A"): 5, ("wh-west", "A"): 5,
        ("store-chicago", "B"): 5,
    }  # fmt: skip
    plan = domain.route(
        [group(("l1", "A", 1), ("l2", "B", 1))], [EAST, WEST, STORE], stock, {"dg-1": NYC}
    )
    assert placed(plan) == {"wh-east": [("l1", 1)], "store-chicago": [("l2", 1)]}


def test_lines_that_no_location_can_cover_are_reported_unallocated() -> None:
    stock = {("wh-east", "A"): 5}
    plan = domain.route(
        [group(("l1", "A", 1), ("l2", "NOPE", 3))], [EAST, WEST], stock, {"dg-1": NYC}
    )
    assert placed(plan) == {"wh-east": [("l1", 1)]}
    assert plan.unallocated == [RoutingLine("l2", "NOPE", 3)]
    assert plan.decisions[0].startswith("wh-east ships 1 of 2 lines")
    assert any("3 of NOPE for line l2 could not be placed" in d for d in plan.decisions)


def test_a_line_larger_than_any_one_location_is_split_and_the_rest_unallocated() -> None:
    stock = {("wh-east", "A"): 3, ("wh-west", "A"): 4}
    plan = domain.route([group(("l1", "A", 10))], [EAST, WEST], stock, {"dg-1": NYC})
    assert placed(plan) == {"wh-east": [("l1", 3)], "wh-west": [("l1", 4)]}
    assert plan.unallocated == [RoutingLine("l1", "A", 3)]


def test_disabled_or_empty_locations_are_not_candidates() -> None:
    stock = {("wh-east", "A"): 0, ("wh-west", "A"): 2}
    plan = domain.route([group(("l1", "A", 2))], [EAST, WEST], stock, {"dg-1": NYC})
    assert placed(plan) == {"wh-west": [("l1", 2)]}


def test_two_lines_of_one_sku_share_the_stock_of_a_location() -> None:
    stock = {("wh-east", "A"): 3, ("wh-west", "A"): 3}
    plan = domain.route([group(("l1", "A", 2), ("l2", "A", 2))], [EAST, WEST], stock, {"dg-1": NYC})
    assert placed(plan) == {"wh-east": [("l1", 2)], "wh-west": [("l2", 2)]}
    assert plan.reservations() == {("wh-east", "A"): 2, ("wh-west", "A"): 2}


def test_delivery_groups_of_one_order_share_one_stock_snapshot() -> None:
    stock = {("wh-east", "A"): 3}
    plan = domain.route(
        [group(("l1", "A", 2), gid="g1"), group(("l2", "A", 2), gid="g2")],
        [EAST],
        stock,
        {"g1": NYC, "g2": NYC},
    )
    assert plan.reservations() == {("wh-east", "A"): 3}
    assert plan.unallocated == [RoutingLine("l2", "A", 1)]
    assert "of delivery group g1" in plan.decisions[0]


def test_routing_does_not_change_the_callers_availability() -> None:
    stock = {("wh-east", "A"): 3}
    domain.route([group(("l1", "A", 2))], [EAST], stock, {"dg-1": NYC})
    assert stock == {("wh-east", "A"): 3}


@settings(max_examples=200, deadline=None)
@given(
    stock=st.dictionaries(
        st.tuples(st.sampled_from(["wh-east", "wh-west", "store-chicago"]), st.sampled_from("ABC")),
        st.integers(0, 6),
    ),
    lines=st.lists(st.tuples(st.sampled_from("ABC"), st.integers(1, 8)), min_size=1, max_size=5),
)
def test_routing_never_plans_more_than_is_available_and_accounts_for_every_unit(
    stock: dict[tuple[str, str], int], lines: list[tuple[str, int]]
) -> None:
    g = group(*((f"l{i}", sku, q) for i, (sku, q) in enumerate(lines)))
    plan = domain.route([g], [EAST, WEST, STORE], stock, {"dg-1": NYC})
    for key, quantity in plan.reservations().items():
        assert quantity <= stock.get(key, 0)
    accounted: dict[str, int] = defaultdict(int)
    for gp in plan.groups:
        for allocation in gp.allocations:
            assert allocation.lines
            for line in allocation.lines:
                accounted[line.order_line_id] += line.quantity
    for line in plan.unallocated:
        accounted[line.order_line_id] += line.quantity
    assert dict(accounted) == {line.order_line_id: line.quantity for line in g.lines}


def test_great_circle_distance_from_new_york_to_los_angeles_is_about_3940_km() -> None:
    assert round(domain.haversine_km(NYC, Coordinates(34.0522, -118.2437))) in range(3930, 3950)


def test_a_routing_request_lists_every_bad_field() -> None:
    bad = group(("", "A", 0), ("l1", "", 1))
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_routing_request("", "", [bad])
    fields = {v.field for v in raised.value.violations}
    assert fields == {
        "order_id",
        "idempotency_key",
        "delivery_groups[0].lines[0].order_line_id",
        "delivery_groups[0].lines[0].quantity",
        "delivery_groups[0].lines[1].sku",
    }


# ---- fulfillment orders ------------------------------------------------------------------


def fo(status: str, *lines: tuple[str, int, int]) -> FulfillmentOrder:
    return FulfillmentOrder(
        "fo-1",
        "order-1",
        "dg-1",
        "wh-east",
        status,
        tuple(FulfillmentLine(line_id, "SKU", q, shipped) for line_id, q, shipped in lines),
    )


def test_a_location_accepts_picks_and_packs_in_order() -> None:
    assert domain.progress(fo("allocated", ("l1", 1, 0)), "accept") == "accepted"
    assert domain.progress(fo("accepted", ("l1", 1, 0)), "pick") == "picked"
    assert domain.progress(fo("picked", ("l1", 1, 0)), "pack") == "packed"


def test_a_repeated_report_leaves_the_status_as_it_is() -> None:
    assert domain.progress(fo("accepted", ("l1", 1, 0)), "accept") == "accepted"


def test_an_illegal_step_names_the_current_status() -> None:
    with pytest.raises(FailedPrecondition) as raised:
        domain.progress(fo("shipped", ("l1", 1, 1)), "pick")
    assert raised.value.message == "fulfillment order fo-1 is shipped; cannot mark it picked"
    with pytest.raises(FailedPrecondition, match="is allocated; cannot mark it packed"):
        domain.progress(fo("allocated", ("l1", 1, 0)), "pack")


def test_a_shipment_without_items_ships_everything_not_yet_shipped() -> None:
    plan = domain.plan_shipment(fo("packed", ("l1", 3, 1), ("l2", 2, 2)), [])
    assert plan.items == (ShipmentItem("l1", 2),)
    assert plan.status_after == "shipped"


def test_a_partial_shipment_keeps_the_status() -> None:
    plan = domain.plan_shipment(fo("picked", ("l1", 3, 0)), [ShipmentItem("l1", 1)])
    assert plan.items == (ShipmentItem("l1", 1),)
    assert plan.status_after == "picked"


def test_a_shipment_may_not_exceed_what_remains_or_name_unknown_lines() -> None:
    order = fo("accepted", ("l1", 3, 1))
    with pytest.raises(InvalidArgument) as raised:
        domain.plan_shipment(order, [ShipmentItem("l1", 3), ShipmentItem("zz", 1)])
    fields = [v.field for v in raised.value.violations]
    assert fields == ["items[0].quantity", "items[1].order_line_id"]


def test_an_allocated_fulfillment_order_cannot_ship() -> None:
    with pytest.raises(FailedPrecondition, match="is allocated; cannot confirm a shipment"):
        domain.plan_shipment(fo("allocated", ("l1", 1, 0)), [])


def test_canceling_is_refused_after_shipping_and_a_no_op_when_already_canceled() -> None:
    assert domain.must_cancel(fo("packed", ("l1", 1, 0))) is True
    assert domain.must_cancel(fo("canceled", ("l1", 1, 0))) is False
    with pytest.raises(FailedPrecondition, match="is shipped; cannot cancel it"):
        domain.must_cancel(fo("shipped", ("l1", 1, 1)))


# ---- inventory and listing ---------------------------------------------------------------


def test_available_to_fulfill_is_never_negative() -> None:
    assert InventoryLevel("x", "A", on_hand=10, reserved=3, safety_stock=2).available == 5
    assert InventoryLevel("x", "A", on_hand=1, reserved=3, safety_stock=2).available == 0


def test_a_stock_feed_names_unknown_locations_and_negative_quantities() -> None:
    levels = [
        InventoryLevel("wh-east", "A", on_hand=5),
        InventoryLevel("mars", "A", on_hand=5),
        InventoryLevel("wh-east", "B", on_hand=-1, safety_stock=-2),
    ]
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_inventory_levels(levels, {"wh-east"})
    assert [v.field for v in raised.value.violations] == [
        "levels[1].location_id",
        "levels[2].on_hand",
        "levels[2].safety_stock",
    ]


def test_page_tokens_round_trip_and_foreign_tokens_are_refused() -> None:
    cursor = domain.Cursor(datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "fo-9")
    assert domain.decode_cursor(domain.encode_cursor(cursor)) == cursor
    assert domain.decode_cursor("") is None
    with pytest.raises(InvalidArgument, match="page_token"):
        domain.decode_cursor("not-a-token!")


def test_page_size_defaults_to_100_and_is_capped_at_1000() -> None:
    assert domain.page_size(0) == 100
    assert domain.page_size(5000) == 1000
    with pytest.raises(InvalidArgument, match="page_size"):
        domain.page_size(-1)
