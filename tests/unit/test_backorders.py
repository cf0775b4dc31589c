"""Backorder rules, pure: which supply a line is promised from, who gets arriving units, and
where a canceled supply's backorders go."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument
from services.fulfillment import domain

TODAY = date(2025, 3, 3)
PLACED = domain.Allocation("wh-east", (domain.RoutingLine("l-tee", "TEE", 2),))


def supply(
    supply_id: str,
    quantity: int,
    expected: date,
    sku: str = "MUG",
    kind: str = domain.PURCHASE_ORDER,
    promised: int = 0,
    received: int = 0,
) -> domain.Supply:
    return domain.Supply(
        supply_id=supply_id,
        kind=kind,
        reference="",
        location_id=f"loc-{supply_id}",
        sku=sku,
        quantity=quantity,
        expected_date=expected,
        promised=promised,
        quantity_received=received,
    )


def plan(*unplaced: domain.RoutingLine) -> domain.RoutingPlan:
    return domain.RoutingPlan(
        (domain.GroupPlan("dg", (PLACED,), tuple(unplaced), ("wh-east is nearest",)),)
    )


def waiting(fo_id: str, units: int) -> domain.Waiting:
    return domain.Waiting(fo_id, f"order-{fo_id}", "po", units)


def test_an_unplaced_line_is_promised_from_the_earliest_supply_that_can_take_it_whole() -> None:
    late = supply("late", 10, date(2025, 4, 1))
    early_small = supply("early-small", 1, date(2025, 3, 10))
    early = supply("early", 5, date(2025, 3, 20))

    after, backorders = domain.backorder(
        plan(domain.RoutingLine("l-mug", "MUG", 3)), [late, early_small, early], TODAY
    )

    [made] = backorders
    assert (made.supply.supply_id, made.delivery_group_id) == ("early", "dg")
    assert made.lines == (domain.RoutingLine("l-mug", "MUG", 3),)
    assert after.unallocated == []
    assert after.groups[0].allocations == (PLACED,)
    assert after.decisions[-1] == (
        "backordered 3 x MUG at loc-early against incoming supply early, promised for 2025-03-20"
    )


def test_units_already_promised_or_received_are_not_promised_again() -> None:
    po = supply("po", 5, date(2025, 3, 20), promised=2, received=2)  # 1 unpromised

    after, backorders = domain.backorder(
        plan(domain.RoutingLine("a", "MUG", 1), domain.RoutingLine("b", "MUG", 1)), [po], TODAY
    )

    assert [line.order_line_id for b in backorders for line in b.lines] == ["a"]
    assert after.unallocated == [domain.RoutingLine("b", "MUG", 1)]


def test_a_line_without_supply_of_its_sku_stays_unplaced() -> None:
    after, backorders = domain.backorder(
        plan(domain.RoutingLine("l-cup", "CUP", 1)), [supply("po", 9, date(2025, 3, 20))], TODAY
    )

    assert backorders == []
    assert after.unallocated == [domain.RoutingLine("l-cup", "CUP", 1)]


def test_a_pre_order_takes_orders_only_before_its_release_date() -> None:
    release = supply("pre", 100, date(2025, 3, 10), kind=domain.PRE_ORDER)

    assert domain.usable(release, date(2025, 3, 9))
    assert not domain.usable(release, date(2025, 3, 10))
    _, backorders = domain.backorder(
        plan(domain.RoutingLine("l", "MUG", 1)), [release], date(2025, 3, 10)
    )
    assert backorders == []


def test_a_pre_order_sells_up_to_its_cap() -> None:
    release = supply("pre", 3, date(2025, 4, 1), kind=domain.PRE_ORDER, promised=2)

    after, backorders = domain.backorder(plan(domain.RoutingLine("l", "MUG", 2)), [release], TODAY)

    assert backorders == []
    assert after.unallocated == [domain.RoutingLine("l", "MUG", 2)]


def test_arriving_units_go_oldest_first_and_a_younger_order_never_jumps_the_queue() -> None:
    queue = [waiting("old", 2), waiting("middle", 3), waiting("young", 1)]

    assert [w.fulfillment_order_id for w in domain.to_release(queue, 2)] == ["old"]
    # 4 units: the middle order (3) does not fit after the old one, so the young one waits too.
    assert [w.fulfillment_order_id for w in domain.to_release(queue, 4)] == ["old"]
    assert [w.fulfillment_order_id for w in domain.to_release(queue, 6)] == [
        "old",
        "middle",
        "young",
    ]
    assert domain.to_release(queue, 1) == []


def test_a_canceled_supplys_backorders_move_to_other_supply_while_it_has_room() -> None:
    gone = supply("gone", 5, date(2025, 3, 10))
    other = supply("other", 3, date(2025, 3, 25))
    elsewhere = supply("cups", 50, date(2025, 3, 12), sku="CUP")

    moved = domain.repromise(
        [waiting("old", 2), waiting("young", 2)], gone, [gone, other, elsewhere], TODAY
    )

    assert [(w.fulfillment_order_id, s.supply_id if s else None) for w, s in moved] == [
        ("old", "other"),
        ("young", None),
    ]


def test_a_supply_cannot_shrink_below_what_arrived_and_what_is_promised() -> None:
    po = supply("po", 10, date(2025, 3, 20), promised=4, received=3)

    with pytest.raises(InvalidArgument) as refused:
        domain.changed_supply(po, 6, None)

    assert "at least 7" in refused.value.violations[0].description
    assert domain.changed_supply(po, 7, date(2025, 4, 1)).expected_date == date(2025, 4, 1)


def test_receiving_more_than_is_expected_or_a_closed_supply_is_refused() -> None:
    po = supply("po", 5, date(2025, 3, 20), received=3)

    with pytest.raises(InvalidArgument):
        domain.check_receipt(po, 3)
    assert domain.receipt_status(po, 2) == domain.SUPPLY_RECEIVED
    assert domain.receipt_status(po, 1) == domain.SUPPLY_OPEN
    closed = domain.Supply(**{**po.__dict__, "status": domain.SUPPLY_CANCELED})
    with pytest.raises(FailedPrecondition):
        domain.check_receipt(closed, 1)


def test_a_new_supply_names_every_bad_field() -> None:
    request = domain.SupplyRequest("", "", "nowhere", "", 0, None)

    with pytest.raises(InvalidArgument) as refused:
        domain.validate_supply(request, ["wh-east"], TODAY)

    assert [v.field for v in refused.value.violations] == [
        "kind",
        "location_id",
        "sku",
        "quantity",
        "expected_date",
    ]
    past = domain.SupplyRequest(domain.PRE_ORDER, "", "wh-east", "GAME", 10, TODAY)
    with pytest.raises(InvalidArgument):
        domain.validate_supply(past, ["wh-east"], TODAY)


def test_a_backordered_fulfillment_order_can_be_canceled_but_not_rejected_or_moved() -> None:
    fo = domain.FulfillmentOrder(
        "fo", "o", "dg", "wh-east", domain.BACKORDERED, (domain.FulfillmentLine("l", "MUG", 2),)
    )

    canceled = domain.plan_line_change(fo, domain.CANCELED, [domain.LineQuantity("l", 2)])
    assert (canceled.status_after, canceled.holds_stock, canceled.frees_capacity) == (
        domain.CANCELED,
        False,
        False,
    )
    for kind in (domain.REJECTED, domain.MOVED):
        with pytest.raises(FailedPrecondition):
            domain.plan_line_change(fo, kind, [])


def test_a_backorder_is_promised_from_its_supply_day_until_it_is_released() -> None:
    waiting = domain.FulfillmentOrder(
        "fo", "o", "dg", "wh-east", domain.BACKORDERED, (domain.FulfillmentLine("l", "MUG", 2),),
        supply_id="po-1", promise_date=date(2025, 3, 10),
    )  # fmt: skip
    assert waiting.available_on == date(2025, 3, 10)
    # Released, it keeps its promise date, but its units are the location's work now.
    released = replace(waiting, status=domain.ALLOCATED)
    assert released.available_on is None


def _level(sku: str, on_hand: int, location_id: str = "wh-east") -> domain.InventoryLevel:
    return domain.InventoryLevel(location_id=location_id, sku=sku, on_hand=on_hand)


def test_only_levels_an_adjustment_batch_left_higher_release_backorders() -> None:
    steps = [
        (_level("MUG", 0), _level("MUG", 3)),  # received
        (_level("MUG", 3), _level("MUG", 2)),  # then one damaged: still up overall
        (_level("TEE", 5), _level("TEE", 4)),  # damaged
        (_level("CAP", 2), _level("CAP", 2)),  # counted, unchanged
        (_level("HAT", 1, "wh-west"), _level("HAT", 4, "wh-west")),  # counted higher
    ]
    assert domain.stock_added(steps) == [("wh-east", "MUG"), ("wh-west", "HAT")]


def test_a_second_open_pre_order_of_a_sku_at_a_location_is_refused_naming_the_first() -> None:
    first = supply("pre-1", 10, date(2025, 4, 1), sku="GAME", kind=domain.PRE_ORDER)
    again = domain.SupplyRequest(domain.PRE_ORDER, "", "loc-pre-1", "GAME", 20, date(2025, 4, 1))

    with pytest.raises(FailedPrecondition) as refused:
        domain.check_one_pre_order(again, first)

    assert "pre-1" in str(refused.value) and "UpdateSupply" in str(refused.value)
    # The first of its SKU there, or a purchase order beside an open pre-order, is accepted.
    domain.check_one_pre_order(again, None)
    po = domain.SupplyRequest(domain.PURCHASE_ORDER, "", "loc-pre-1", "GAME", 5, date(2025, 4, 1))
    domain.check_one_pre_order(po, first)


def test_waiting_orders_are_told_why_their_promise_moved_and_where_from() -> None:
    po = supply("po", 5, date(2025, 3, 10))
    later = replace(po, expected_date=date(2025, 3, 17))
    other = supply("other", 5, date(2025, 3, 20))

    assert domain.date_moved_reason(po, later) == (
        "supply po now expected 2025-03-17 (was 2025-03-10)"
    )
    # A change that keeps the date re-promises nobody.
    assert domain.date_moved_reason(po, replace(po, quantity=8)) == ""
    why = domain.canceled_reason(po, "vendor out of stock")
    assert why == "supply po canceled: vendor out of stock"
    assert domain.canceled_reason(po, "") == "supply po canceled"
    assert domain.repromised_reason(why, other) == (
        "supply po canceled: vendor out of stock; promised from supply other"
    )


def test_a_receipt_adds_stock_at_the_supplys_location_naming_the_supply() -> None:
    po = replace(supply("po", 5, date(2025, 3, 10)), reference="PO-77")

    added = domain.receipt_adjustment(po, 3)

    assert (added.location_id, added.sku, added.kind, added.quantity) == (
        "loc-po",
        "MUG",
        domain.RECEIVED,
        3,
    )
    assert added.reason == "supply po received (PO-77)"
    assert domain.receipt_adjustment(replace(po, reference=""), 3).reason == "supply po received"


def test_a_waiting_fulfillment_order_counts_its_unshipped_units() -> None:
    fo = domain.FulfillmentOrder(
        "fo", "o", "dg", "wh-east", domain.BACKORDERED,
        (domain.FulfillmentLine("l1", "MUG", 2), domain.FulfillmentLine("l2", "MUG", 3)),
        supply_id="po-1",
    )  # fmt: skip

    assert domain.waiting_of(fo) == domain.Waiting("fo", "o", "po-1", 5)
