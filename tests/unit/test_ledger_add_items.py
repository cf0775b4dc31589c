"""Adding items before fulfillment in the lifecycle's ledger: validation, re-based money and
exact invoices afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from workflows.ledger import AddItemsPlan, ChangeRefused, Ledger, line_share_minor, new_line_id
from workflows.types import (
    Address,
    FulfillmentOrderData,
    ItemQuantity,
    LifecycleDeliveryGroup,
    LifecycleLine,
    LineIncrease,
    NewLineData,
    OrderLifecycleInput,
    PaymentMethodData,
    RoutingLineData,
)

GROUPS = ["dg-1", "dg-2"]


def an_order() -> OrderLifecycleInput:
    address = Address("1 Main St", "Newark", "07102", "US")
    return OrderLifecycleInput(
        order_id="order-1",
        channel="web",
        currency="USD",
        grand_total_minor=2000 - 100 + 150 + 1500 + 500,
        payment_method=PaymentMethodData("card", "tok_visa"),
        delivery_groups=[
            LifecycleDeliveryGroup("dg-1", address, 500),
            LifecycleDeliveryGroup("dg-2", address, 0),
        ],
        lines=[
            LifecycleLine("line-1", "dg-1", "SKU-TSHIRT-M", 2, 2000, 100, 150),
            LifecycleLine("line-2", "dg-1", "SKU-MUG", 1, 1500, 0, 0),
        ],
    )


def plan(
    ledger: Ledger, new: Sequence[NewLineData] = (), more: Sequence[LineIncrease] = ()
) -> AddItemsPlan:
    return ledger.plan_add_items("order-1", "chg-1", list(new), list(more), GROUPS)


def refusal(ledger: Ledger, **kw: Any) -> ChangeRefused:
    with pytest.raises(ChangeRefused) as refused:
        plan(ledger, **kw)
    return refused.value


def test_an_increase_rebases_the_line_on_its_unit_price_and_adds_the_tax_given() -> None:
    ledger = Ledger.of(an_order())

    added = plan(ledger, more=[LineIncrease("line-1", 3, tax_minor=225)])
    ledger.apply_add_items(added)

    line = ledger.lines["line-1"].line
    # 2 units for 2000 gross -> 1000 a unit; discounts stay as they were.
    assert (line.quantity, line.gross_minor, line.discount_minor, line.tax_minor) == (
        5,
        5000,
        100,
        375,
    )
    assert added.total_minor == 3 * 1000 + 225
    assert added.items() == [ItemQuantity("line-1", 3)]
    assert [(r.order_line_id, r.quantity) for r in added.routing_lines()] == [("line-1", 3)]
    [addition] = added.additions()
    assert (addition.new_line, addition.quantity, addition.gross_minor, addition.tax_minor) == (
        False,
        3,
        3000,
        225,
    )


def test_a_new_line_gets_a_derived_id_the_first_group_by_default_and_no_discount() -> None:
    ledger = Ledger.of(an_order())

    added = plan(
        ledger,
        new=[
            NewLineData("SKU-CAP", 2, 800, tax_minor=96, name="Cap"),
            NewLineData("SKU-SOCKS", 1, 500, delivery_group_id="dg-2"),
        ],
    )
    ledger.apply_add_items(added)

    cap_id, socks_id = new_line_id("order-1", "chg-1", 0), new_line_id("order-1", "chg-1", 1)
    assert ":" not in cap_id and cap_id != socks_id
    assert new_line_id("order-1", "chg-1", 0) == cap_id  # the same on replay and in previews
    cap, socks = ledger.lines[cap_id].line, ledger.lines[socks_id].line
    assert (cap.delivery_group_id, cap.quantity, cap.gross_minor, cap.tax_minor) == (
        "dg-1",
        2,
        1600,
        96,
    )
    assert (socks.delivery_group_id, socks.discount_minor) == ("dg-2", 0)
    assert added.total_minor == 1600 + 96 + 500
    assert [line.order_line_id for line in added.new_lines()] == [cap_id, socks_id]
    assert ledger.unallocated()[-2:] == [
        RoutingLineData(cap_id, "SKU-CAP", 2),
        RoutingLineData(socks_id, "SKU-SOCKS", 1),
    ]


def test_invoices_of_an_increased_line_add_up_to_its_new_total() -> None:
    ledger = Ledger.of(an_order())
    ledger.add_fulfillment_order(
        FulfillmentOrderData("fo-1", "wh", "dg-1", [RoutingLineData("line-1", "SKU-TSHIRT-M", 2)])
    )
    ledger.apply_add_items(plan(ledger, more=[LineIncrease("line-1", 1, tax_minor=75)]))
    line = ledger.lines["line-1"].line

    first = line_share_minor(line, 0, 2)  # the original fulfillment order ships first
    second = line_share_minor(line, 2, 1)  # then the added unit

    assert first + second == 3000 - 100 + 225
    assert ledger.lines["line-1"].allocated == 2
    assert RoutingLineData("line-1", "SKU-TSHIRT-M", 1) in ledger.unallocated()


def test_nothing_is_changed_by_planning() -> None:
    ledger = Ledger.of(an_order())

    plan(ledger, new=[NewLineData("SKU-CAP", 1, 800)], more=[LineIncrease("line-2", 1)])

    assert sorted(ledger.lines) == ["line-1", "line-2"]
    assert ledger.lines["line-2"].line.quantity == 1


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({}, "new_lines: give at least one"),
        ({"more": [LineIncrease("line-1", 0)]}, "increases[0].quantity: must be > 0"),
        ({"more": [LineIncrease("line-1", -1)]}, "lowering a quantity is a cancel"),
        ({"more": [LineIncrease("nope", 1)]}, "increases[0].order_line_id: no line"),
        (
            {"more": [LineIncrease("line-1", 1), LineIncrease("line-1", 1)]},
            "increases[1].order_line_id: appears more than once",
        ),
        ({"more": [LineIncrease("line-1", 1, tax_minor=-1)]}, "increases[0].tax_minor"),
        ({"new": [NewLineData("", 1, 100)]}, "new_lines[0].sku: is required"),
        ({"new": [NewLineData("SKU-CAP", 0, 100)]}, "new_lines[0].quantity: must be > 0"),
        ({"new": [NewLineData("SKU-CAP", 1, -1)]}, "new_lines[0].unit_price_minor"),
        ({"new": [NewLineData("SKU-CAP", 1, 100, tax_minor=-5)]}, "new_lines[0].tax_minor"),
        (
            {"new": [NewLineData("SKU-CAP", 1_000_000, 10**7)]},
            "new_lines[0].unit_price_minor: quantity x unit price must be at most",
        ),
        ({"more": [LineIncrease("line-1", 999_999)]}, "increases[0].quantity: the line would"),
        (
            {"new": [NewLineData("SKU-CAP", 1, 100, delivery_group_id="dg-9")]},
            "new_lines[0].delivery_group_id: no delivery group 'dg-9'",
        ),
    ],
)
def test_a_bad_request_is_an_invalid_argument_naming_the_field(
    kw: dict[str, Any], field: str
) -> None:
    refused = refusal(Ledger.of(an_order()), **kw)

    assert refused.code == "INVALID_ARGUMENT"
    assert field in refused.message


def test_nothing_can_be_added_once_any_unit_has_shipped() -> None:
    ledger = Ledger.of(an_order())
    ledger.add_fulfillment_order(
        FulfillmentOrderData("fo-1", "wh", "dg-1", [RoutingLineData("line-2", "SKU-MUG", 1)])
    )
    ledger.ship("fo-1", [ItemQuantity("line-2", 1)])

    refused = refusal(ledger, new=[NewLineData("SKU-CAP", 1, 800)])

    assert refused.code == "FAILED_PRECONDITION"
    assert "have shipped" in refused.message


def test_a_line_with_canceled_units_cannot_grow_add_a_new_line_instead() -> None:
    ledger = Ledger.of(an_order())
    ledger.apply_cancel([ItemQuantity("line-1", 1)])

    refused = refusal(ledger, more=[LineIncrease("line-1", 1)])

    assert refused.code == "FAILED_PRECONDITION"
    assert "are canceled; add a new line instead" in refused.message


def test_a_line_whose_gross_is_not_a_whole_unit_price_cannot_grow() -> None:
    order = an_order()
    order.lines[0] = LifecycleLine("line-1", "dg-1", "SKU-TSHIRT-M", 3, 2000, 0, 0)

    refused = refusal(Ledger.of(order), more=[LineIncrease("line-1", 1)])

    assert refused.code == "FAILED_PRECONDITION"
    assert "not a whole unit price" in refused.message


def test_a_delivery_group_whose_lines_were_all_canceled_takes_no_new_line() -> None:
    order = an_order()
    order.lines.append(LifecycleLine("line-3", "dg-2", "SKU-MUG", 1, 1500, 0, 0))
    ledger = Ledger.of(order)
    ledger.apply_cancel([ItemQuantity("line-3", 1)])

    refused = refusal(ledger, new=[NewLineData("SKU-CAP", 1, 800, delivery_group_id="dg-2")])

    assert refused.code == "FAILED_PRECONDITION"
    assert "delivery group dg-2 was canceled" in refused.message
