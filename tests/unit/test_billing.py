"""The lifecycle's money rules, without Temporal: invoices, goodwill, what is still to be
charged and what cancels, returns and exchanges give back, in exact minor units.

The order: line-1 is 3 units for a gross of 10.01 less 1.00 discount plus 0.75 tax, so its units
are worth 3.25, 3.26 and 3.25 (the odd minor unit of gross goes to the earliest units, of
discount too); line-2 is one unit at 20.00. Shipping is 5.00 for dg-1 and 3.00 for dg-2."""

from __future__ import annotations

import pytest

from workflows import billing
from workflows.ledger import ChangeRefused, Ledger
from workflows.state import LifecycleState, Replacement
from workflows.types import (
    Address,
    ItemQuantity,
    LifecycleDeliveryGroup,
    LifecycleLine,
    OrderLifecycleInput,
    PaymentMethodData,
)

ADDRESS = Address("1 Main St", "Newark", "07102", "US")
GROUPS = [
    LifecycleDeliveryGroup("dg-1", ADDRESS, 500),
    LifecycleDeliveryGroup("dg-2", ADDRESS, 300),
]


def an_order() -> OrderLifecycleInput:
    return OrderLifecycleInput(
        order_id="order-1",
        channel="web",
        currency="USD",
        grand_total_minor=976 + 2000 + 800,
        payment_method=PaymentMethodData("card", "tok_visa"),
        delivery_groups=GROUPS,
        lines=[
            LifecycleLine("line-1", "dg-1", "SKU-TSHIRT-M", 3, 1001, 100, 75),
            LifecycleLine("line-2", "dg-2", "SKU-MUG", 1, 2000, 0, 0),
        ],
    )


def a_state() -> tuple[LifecycleState, Ledger]:
    state = LifecycleState(ledger=Ledger.of(an_order()).state)
    return state, Ledger(state.ledger)


def invoice(state: LifecycleState, ledger: Ledger, units: int) -> billing.InvoicePlan:
    plan = billing.plan_invoice(state, ledger, GROUPS[0], [ItemQuantity("line-1", units)])
    total = sum(plan.shares.values()) + plan.shipping_minor - plan.goodwill_minor
    billing.record_invoice(state, ledger, plan, "dg-1", total)
    return plan


def appeasement(state: LifecycleState, ledger: Ledger, *lines: str, **ask: int) -> tuple[int, bool]:
    return billing.appeasement_amount(
        state,
        ledger,
        GROUPS,
        "USD",
        [ItemQuantity(line, 0) for line in lines],
        ask.get("amount_minor", 0),
        ask.get("percent_basis_points", 0),
    )


def test_an_order_nothing_happened_to_still_charges_every_unit_and_all_shipping() -> None:
    _, ledger = a_state()
    assert billing.uncharged_minor(ledger, GROUPS) == 976 + 2000 + 500 + 300


def test_the_first_invoice_charges_the_lines_first_units_and_the_groups_shipping() -> None:
    state, ledger = a_state()
    plan = invoice(state, ledger, 2)
    assert [(c.quantity_to_invoice, c.quantity_invoiced_before) for c in plan.lines] == [(2, 0)]
    assert (plan.shares, plan.shipping_minor, plan.goodwill_minor) == ({"line-1": 651}, 500, 0)
    assert (state.invoiced_minor, state.line_invoiced_minor) == (1151, {"line-1": 651})
    assert ledger.shipping_charged == ["dg-1"]
    assert billing.uncharged_minor(ledger, GROUPS) == 325 + 2000 + 300


def test_a_later_invoice_of_the_same_group_charges_no_shipping_and_the_next_units() -> None:
    state, ledger = a_state()
    invoice(state, ledger, 2)
    plan = invoice(state, ledger, 1)
    assert [c.quantity_invoiced_before for c in plan.lines] == [2]
    assert (plan.shares, plan.shipping_minor) == ({"line-1": 325}, 0)
    assert state.invoiced_minor == 1151 + 325


def test_goodwill_before_charging_comes_off_the_first_invoices_it_fits() -> None:
    state, ledger = a_state()
    billing.record_goodwill_before_charging(state, [ItemQuantity("line-1", 0)], 700)
    billing.record_goodwill_before_charging(state, [], 200)
    assert state.release_at_settlement
    plan = invoice(state, ledger, 2)
    # 7.00 on line-1 but its two units are worth 6.51; the order's 2.00 fits in the shipping.
    assert (plan.line_goodwill, plan.order_goodwill, plan.goodwill_minor) == (
        {"line-1": 651},
        200,
        851,
    )
    assert state.goodwill_pending_by_line == {"line-1": 49}
    assert state.goodwill_pending_order == 0
    assert billing.goodwill_pending_minor(state) == 49
    assert state.line_invoiced_minor == {"line-1": 0}
    assert state.invoiced_minor == 300


def test_a_percentage_of_the_order_before_charging_is_of_what_will_be_charged() -> None:
    state, ledger = a_state()
    assert appeasement(state, ledger, percent_basis_points=1000) == (377, True)


def test_goodwill_on_an_invoiced_line_is_at_most_what_its_invoices_charged() -> None:
    state, ledger = a_state()
    invoice(state, ledger, 2)
    assert appeasement(state, ledger, "line-1", amount_minor=651) == (651, False)
    billing.record_appeasement(state, [ItemQuantity("line-1", 0)], 600)
    with pytest.raises(ChangeRefused) as refused:
        appeasement(state, ledger, "line-1", amount_minor=52)
    assert refused.value.message == (
        "goodwill of 0.52 USD exceeds the 0.51 USD still refundable for line line-1"
    )


def test_goodwill_on_the_order_after_charging_is_of_what_was_captured() -> None:
    state, ledger = a_state()
    invoice(state, ledger, 2)
    state.captured_minor = 1151
    billing.record_appeasement(state, [ItemQuantity("line-1", 0)], 100)
    assert appeasement(state, ledger, percent_basis_points=5000) == (575, False)
    with pytest.raises(ChangeRefused):
        appeasement(state, ledger, amount_minor=1052)


@pytest.mark.parametrize(
    ("lines", "ask"),
    [
        (("line-1", "line-2"), {"amount_minor": 100}),
        ((), {"amount_minor": 100, "percent_basis_points": 100}),
        ((), {}),
        ((), {"percent_basis_points": 10_001}),
        (("line-9",), {"amount_minor": 100}),
    ],
)
def test_a_malformed_appeasement_is_an_invalid_argument(
    lines: tuple[str, ...], ask: dict[str, int]
) -> None:
    state, ledger = a_state()
    with pytest.raises(ChangeRefused) as refused:
        appeasement(state, ledger, *lines, **ask)
    assert refused.value.code == "INVALID_ARGUMENT"


def test_canceling_a_whole_group_frees_its_shipping_unless_it_was_charged() -> None:
    state, ledger = a_state()
    assert billing.shipping_freed_by_cancel(ledger, GROUPS, [ItemQuantity("line-2", 1)]) == 300
    assert billing.shipping_freed_by_cancel(ledger, GROUPS, [ItemQuantity("line-1", 2)]) == 0
    invoice(state, ledger, 0)
    assert billing.shipping_freed_by_cancel(ledger, GROUPS, [ItemQuantity("line-1", 3)]) == 0


def test_a_cancel_gives_back_the_last_units_of_a_line() -> None:
    _, ledger = a_state()
    assert billing.cancel_credit_minor(ledger, [ItemQuantity("line-1", 1)]) == 325
    assert billing.cancel_credit_minor(ledger, [ItemQuantity("line-1", 2)]) == 326 + 325


def test_a_return_gives_back_the_first_units_not_yet_credited() -> None:
    _, ledger = a_state()
    assert billing.return_credit_minor(ledger, [ItemQuantity("line-1", 1)]) == 325
    ledger.lines["line-1"].credited_for_return = 1
    assert billing.return_credit_minor(ledger, [ItemQuantity("line-1", 1)]) == 326


def test_an_exchange_charges_a_dearer_replacement_and_refunds_a_cheaper_one() -> None:
    _, ledger = a_state()
    returned = [ItemQuantity("line-1", 1)]
    assert billing.exchange_difference(ledger, returned, {"line-1": Replacement("X", 400)}) == 75
    assert billing.exchange_difference(ledger, returned, {"line-1": Replacement("X", 300)}) == -25


def test_an_exchanges_restocking_fee_adds_to_what_the_shopper_owes() -> None:
    _, ledger = a_state()
    returned = [ItemQuantity("line-1", 1)]
    same = {"line-1": Replacement("X", 325)}
    cheaper = {"line-1": Replacement("X", 300)}
    assert billing.exchange_difference(ledger, returned, same, fee_minor=33) == 33
    assert billing.exchange_difference(ledger, returned, cheaper, fee_minor=10) == -15
