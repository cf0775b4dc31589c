"""Taking units off fulfillment orders (reject, cancel, move), adjusting inventory, summing
availability per location group, and the simulator's stable rejection draw."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument
from oms_tools.devstack.simulator import rejects
from services.fulfillment import domain
from services.fulfillment.domain import (
    FulfillmentLine,
    FulfillmentOrder,
    InventoryAdjustment,
    InventoryLevel,
    LineQuantity,
    Location,
    LocationGroup,
    PostalAddress,
    RoutingLine,
)


def fo(status: str, *lines: tuple[str, int, int], location: str = "wh-east") -> FulfillmentOrder:
    return FulfillmentOrder(
        "fo-1",
        "order-1",
        "dg-1",
        location,
        status,
        tuple(FulfillmentLine(line_id, "SKU", q, shipped) for line_id, q, shipped in lines),
    )


def location(location_id: str, enabled: bool = True, capacity: int | None = None) -> Location:
    return Location(
        location_id, location_id, "warehouse", PostalAddress(), 40.0, -74.0, 1, enabled, capacity
    )


# ---- reject, cancel, move ------------------------------------------------------------------


def test_rejecting_without_lines_takes_every_unshipped_unit_and_rejects_the_order() -> None:
    change = domain.plan_line_change(
        fo("allocated", ("l1", 2, 0), ("l2", 1, 0)), domain.REJECTED, []
    )
    assert change.lines == (RoutingLine("l1", "SKU", 2), RoutingLine("l2", "SKU", 1))
    assert change.status_after == "rejected"
    assert change.frees_capacity


def test_rejecting_some_units_keeps_the_order_open() -> None:
    change = domain.plan_line_change(
        fo("accepted", ("l1", 3, 0), ("l2", 1, 0)), domain.REJECTED, [LineQuantity("l1", 2)]
    )
    assert change.lines == (RoutingLine("l1", "SKU", 2),)
    assert change.status_after == "accepted"
    assert not change.frees_capacity


def test_canceling_the_rest_of_a_partly_shipped_order_leaves_it_shipped() -> None:
    change = domain.plan_line_change(
        fo("packed", ("l1", 3, 1)), domain.CANCELED, [LineQuantity("l1", 2)]
    )
    assert change.status_after == "shipped"


def test_after_a_change_the_units_taken_off_are_counted_apart_by_kind() -> None:
    before = replace(fo("allocated", ("l1", 3, 0), ("l2", 1, 0)), updated_at=datetime(2027, 1, 1))
    some = domain.plan_line_change(before, domain.CANCELED, [LineQuantity("l1", 2)])

    after = domain.after_line_change(before, some, None)

    assert after.lines == (
        FulfillmentLine("l1", "SKU", 1, quantity_canceled=2),
        FulfillmentLine("l2", "SKU", 1),
    )
    assert (after.status, after.updated_at) == ("allocated", datetime(2027, 1, 1))
    moved_at = datetime(2027, 1, 2)
    rest = domain.plan_line_change(after, domain.MOVED, [])
    moved = domain.after_line_change(after, rest, moved_at)
    assert moved.lines == (
        FulfillmentLine("l1", "SKU", 0, quantity_canceled=2, quantity_moved=1),
        FulfillmentLine("l2", "SKU", 0, quantity_moved=1),
    )
    assert (moved.status, moved.updated_at) == ("canceled", moved_at)


def test_canceling_more_than_remains_unshipped_names_what_remains() -> None:
    with pytest.raises(FailedPrecondition) as raised:
        domain.plan_line_change(
            fo("packed", ("l1", 3, 1)), domain.CANCELED, [LineQuantity("l1", 3)]
        )
    assert raised.value.message == (
        "line l1 of fulfillment order fo-1 has 2 unshipped units; cannot cancel 3"
    )


def test_a_cancel_must_name_lines_and_bad_lines_are_all_listed() -> None:
    order = fo("allocated", ("l1", 3, 0))
    with pytest.raises(InvalidArgument, match="lines: at least one line is required"):
        domain.plan_line_change(order, domain.CANCELED, [])
    with pytest.raises(InvalidArgument) as raised:
        domain.plan_line_change(
            order,
            domain.CANCELED,
            [LineQuantity("zz", 1), LineQuantity("l1", 0), LineQuantity("l1", 1)],
        )
    assert [v.field for v in raised.value.violations] == [
        "lines[0].order_line_id",
        "lines[1].quantity",
        "lines[2].order_line_id",
    ]


def test_units_cannot_be_taken_off_a_closed_order_and_the_error_names_its_status() -> None:
    with pytest.raises(FailedPrecondition, match="is shipped; cannot reject its lines"):
        domain.plan_line_change(fo("shipped", ("l1", 1, 1)), domain.REJECTED, [])
    with pytest.raises(FailedPrecondition, match="is rejected; cannot move its lines"):
        domain.plan_line_change(fo("rejected", ("l1", 0, 0)), domain.MOVED, [])


def test_moving_everything_cancels_the_order_it_leaves() -> None:
    change = domain.plan_line_change(fo("allocated", ("l1", 2, 0)), domain.MOVED, [])
    assert (change.kind, change.status_after) == ("moved", "canceled")


def test_a_move_needs_a_known_enabled_other_location() -> None:
    order = fo("allocated", ("l1", 2, 0))
    with pytest.raises(InvalidArgument, match="to_location_id: unknown location 'mars'"):
        domain.check_move_target(order, "mars", None)
    with pytest.raises(InvalidArgument, match="already"):
        domain.check_move_target(order, "wh-east", location("wh-east"))
    with pytest.raises(FailedPrecondition, match="location wh-west is disabled"):
        domain.check_move_target(order, "wh-west", location("wh-west", enabled=False))
    assert domain.check_move_target(order, "wh-west", location("wh-west")).location_id == "wh-west"


def test_a_whole_cancel_takes_what_is_unshipped_and_is_a_no_op_once_canceled() -> None:
    change = domain.plan_cancel(fo("picked", ("l1", 3, 1), ("l2", 1, 1)))
    assert change is not None
    assert change.lines == (RoutingLine("l1", "SKU", 2),)
    assert change.status_after == "canceled"
    assert domain.plan_cancel(fo("canceled", ("l1", 3, 0))) is None


def test_rerouting_excludes_the_rejecting_location_and_earlier_rejecters() -> None:
    reasons = domain.rejection_reasons(
        fo("allocated", ("l1", 1, 0)), "shelf empty", {"wh-west": ["l1"], "wh-east": ["l1"]}
    )
    assert reasons == {
        "wh-east": "rejected fulfillment order fo-1: shelf empty",
        "wh-west": "rejected line l1 of this order before",
    }


# ---- inventory ---------------------------------------------------------------------------------


def level(on_hand: int, reserved: int = 0) -> InventoryLevel:
    return InventoryLevel("wh-east", "A", on_hand, reserved)


def adjustment(kind: str, quantity: int, reason: str = "why") -> InventoryAdjustment:
    return InventoryAdjustment("wh-east", "A", kind, quantity, reason)


def test_received_adds_counted_sets_and_damaged_takes_off_on_hand() -> None:
    assert domain.adjust(level(5), adjustment("received", 3)).on_hand == 8
    assert domain.adjust(level(5, reserved=4), adjustment("counted", 2)).on_hand == 2
    assert domain.adjust(level(5, reserved=2), adjustment("damaged", 3)).on_hand == 2


def test_damage_never_takes_on_hand_below_what_is_reserved() -> None:
    with pytest.raises(FailedPrecondition) as raised:
        domain.adjust(level(5, reserved=3), adjustment("damaged", 3))
    assert raised.value.message == (
        "level of A at wh-east has 5 on hand and 3 reserved; writing off 3 damaged would "
        "leave 2 on hand, below what is reserved"
    )


def test_adjustments_apply_in_order_and_one_refusal_refuses_the_batch() -> None:
    levels = {("wh-east", "A"): level(1, reserved=1)}
    steps = domain.apply_adjustments(levels, [adjustment("received", 4), adjustment("damaged", 2)])
    assert [(b.on_hand, a.on_hand) for b, a in steps] == [(1, 5), (5, 3)]
    with pytest.raises(FailedPrecondition):
        domain.apply_adjustments(levels, [adjustment("damaged", 1), adjustment("received", 9)])


def test_an_adjustment_batch_lists_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_adjustments(
            [
                InventoryAdjustment("mars", "", "received", 0, ""),
                InventoryAdjustment("wh-east", "A", "", 1, "x"),
                InventoryAdjustment("wh-east", "A", "counted", -1, "x"),
            ],
            {"wh-east"},
        )
    assert [v.field for v in raised.value.violations] == [
        "adjustments[0].location_id",
        "adjustments[0].sku",
        "adjustments[0].quantity",
        "adjustments[0].reason",
        "adjustments[1].kind",
        "adjustments[2].quantity",
    ]


def test_availability_sums_enabled_locations_in_total_and_per_group() -> None:
    levels = [
        (InventoryLevel("wh-east", "A", 10, reserved=3), True),
        (InventoryLevel("wh-west", "A", 4), True),
        (InventoryLevel("store", "A", 5, safety_stock=1), True),
        (InventoryLevel("closed", "A", 100), False),
    ]
    groups = [
        LocationGroup("warehouses", "Warehouses", ("wh-east", "wh-west", "closed")),
        LocationGroup("stores", "Stores", ("store",)),
    ]
    summed = domain.availability(levels, ["A", "B"], groups)
    assert summed.total == {"A": 15, "B": 0}
    assert summed.by_group == {"warehouses": {"A": 11, "B": 0}, "stores": {"A": 4, "B": 0}}


def test_a_location_needs_an_id_a_name_a_type_and_coordinates_on_earth() -> None:
    bad = Location("", "", "castle", PostalAddress(), 91.0, -181.0, 1, True, -1)
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_location(bad)
    assert [v.field for v in raised.value.violations] == [
        "location.location_id",
        "location.name",
        "location.type",
        "location.latitude",
        "location.longitude",
        "location.daily_capacity",
    ]


def test_a_location_group_may_only_hold_known_locations() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_location_group(LocationGroup("g", "G", ("wh-east", "mars")), {"wh-east"})
    assert [v.field for v in raised.value.violations] == ["location_group.location_ids[1]"]


# ---- the simulator's rejections ------------------------------------------------------------


def test_the_simulator_rejects_at_about_the_rate_asked_and_always_the_same_orders() -> None:
    ids = [f"fo-{i}" for i in range(2000)]
    assert not any(rejects(i, 0.0) for i in ids)
    assert all(rejects(i, 1.0) for i in ids)
    chosen = [i for i in ids if rejects(i, 0.25)]
    assert 400 < len(chosen) < 600
    assert chosen == [i for i in ids if rejects(i, 0.25)]


def test_availability_asks_for_distinct_skus_and_names_each_missing_one() -> None:
    assert domain.availability_skus(["A", "B", "A"]) == ["A", "B"]
    with pytest.raises(InvalidArgument) as empty:
        domain.availability_skus([])
    assert [(v.field, v.description) for v in empty.value.violations] == [
        ("skus", "at least one SKU is required")
    ]
    with pytest.raises(InvalidArgument) as blank:
        domain.availability_skus(["A", "", "B", ""])
    assert [v.field for v in blank.value.violations] == ["skus[1]", "skus[3]"]
