"""Units fulfillment moves from fulfillment orders onto replacements (a rejection, a move, a
new address), in the lifecycle's ledger: where the units are open, what stays allocated, and
the allocation changes capture records."""

from __future__ import annotations

from workflows.ledger import Ledger
from workflows.types import (
    Address,
    FulfillmentOrderData,
    ItemQuantity,
    LifecycleDeliveryGroup,
    LifecycleLine,
    LineQuantityChange,
    OrderLifecycleInput,
    PaymentMethodData,
    RoutingLineData,
)

TEE = RoutingLineData("line-1", "SKU-TSHIRT-M", 2)
MUG = RoutingLineData("line-2", "SKU-MUG", 1)


def a_ledger() -> Ledger:
    order = OrderLifecycleInput(
        order_id="order-1",
        channel="web",
        currency="USD",
        grand_total_minor=2000 - 100 + 150 + 1500 + 500,
        payment_method=PaymentMethodData("card", "tok_visa"),
        delivery_groups=[
            LifecycleDeliveryGroup("dg-1", Address("1 Main St", "Newark", "07102", "US"), 500)
        ],
        lines=[
            LifecycleLine("line-1", "dg-1", "SKU-TSHIRT-M", 2, 2000, 100, 150),
            LifecycleLine("line-2", "dg-1", "SKU-MUG", 1, 1500, 0, 0),
        ],
    )
    ledger = Ledger.of(order)
    ledger.add_fulfillment_order(FulfillmentOrderData("fo-1", "wh-east", "dg-1", [TEE, MUG]))
    return ledger


def test_a_rejected_unit_moves_to_its_replacement_and_stays_allocated() -> None:
    ledger = a_ledger()
    changes = ledger.reroute(
        {"fo-1": [ItemQuantity("line-2", 1)]},
        [FulfillmentOrderData("fo-2", "wh-west", "dg-1", [MUG])],
    )
    assert ledger.open_units == {"fo-1": {"line-1": 2, "line-2": 0}, "fo-2": {"line-2": 1}}
    assert [b.allocated for b in ledger.lines.values()] == [2, 1]
    assert ledger.is_open("fo-1") and ledger.open_items("fo-2") == [ItemQuantity("line-2", 1)]
    assert changes == [
        LineQuantityChange("line-2", allocated=-1),
        LineQuantityChange("line-2", allocated=1),
    ]
    assert ledger.unallocated() == []


def test_every_open_unit_of_several_orders_moves_and_the_old_ones_close() -> None:
    ledger = a_ledger()
    taken = {"fo-1": ledger.open_items("fo-1")}
    changes = ledger.reroute(taken, [FulfillmentOrderData("fo-7", "wh-west", "dg-1", [TEE, MUG])])
    assert not ledger.is_open("fo-1") and ledger.open_items("fo-7") == taken["fo-1"]
    assert [b.allocated for b in ledger.lines.values()] == [2, 1]
    # What left, then what arrived: capture's allocation nets to nothing.
    assert [(c.order_line_id, c.allocated) for c in changes] == [
        ("line-1", -2),
        ("line-2", -1),
        ("line-1", 2),
        ("line-2", 1),
    ]


def test_units_rejected_with_no_replacement_need_a_place_again() -> None:
    ledger = a_ledger()
    changes = ledger.reroute({"fo-1": [ItemQuantity("line-1", 1)]}, [])
    assert changes == [LineQuantityChange("line-1", allocated=-1)]
    assert [(r.order_line_id, r.quantity) for r in ledger.unallocated()] == [("line-1", 1)]


def test_the_replacement_of_a_no_charge_order_is_no_charge_and_allocates_nothing() -> None:
    ledger = a_ledger()
    ledger.add_fulfillment_order(
        FulfillmentOrderData("fo-r", "wh-east", "dg-1", [MUG]), no_charge=True
    )
    changes = ledger.reroute(
        {"fo-r": [ItemQuantity("line-2", 1)]},
        [FulfillmentOrderData("fo-r2", "wh-west", "dg-1", [MUG])],
    )
    assert "fo-r2" in ledger.no_charge
    assert ledger.lines["line-2"].allocated == 1  # the order's own unit, on fo-1, only
    # The units taken off are reported; the no-charge replacement allocates nothing.
    assert changes == [LineQuantityChange("line-2", allocated=-1)]
