"""Capture's record of items added before fulfillment: lines, tax lines and totals grow by
exactly the added gross and tax, and bad additions are refused."""

from __future__ import annotations

import itertools

import pytest

from oms_platform.errors import AlreadyExists, InvalidArgument, NotFound
from services.capture import domain
from services.capture.domain import (
    DeliveryGroupRequest,
    LineAddition,
    LineRequest,
    Money,
    OrderSubmission,
    TaxRequest,
)

SHOPPER = domain.Shopper("s-1", "person", "ada@example.com", "Ada", "", "")


def an_order() -> domain.Order:
    """2 x 10.00 with 1.00 tax, 3 x 5.00, 4.99 shipping = 40.99 USD."""
    counter = itertools.count(1)
    submission = OrderSubmission(
        idempotency_key="k-1",
        channel="web",
        channel_order_ref="W-1",
        shopper=domain.ShopperDetails(email="ada@example.com", name="Ada"),
        currency="USD",
        delivery_groups=(
            DeliveryGroupRequest(
                ref="home",
                recipient_name="Ada",
                address=domain.PostalAddress("1 Main St", "Springfield", "12345", "US"),
                shipping_charge=Money(499, "USD"),
            ),
        ),
        lines=(
            LineRequest(
                "home", "SKU-1", "Widget", 2, Money(1000, "USD"),
                taxes=(TaxRequest("state tax", Money(100, "USD")),),
            ),
            LineRequest("home", "SKU-2", "Gadget", 3, Money(500, "USD")),
        ),
        discounts=(),
        grand_total=Money(4099, "USD"),
        payment_method=domain.PaymentMethod(type="card", token="tok_1"),
    )  # fmt: skip
    return domain.capture_order(submission, lambda: f"id-{next(counter)}", SHOPPER)


def more(line_id: str, quantity: int, tax: int = 0) -> LineAddition:
    return LineAddition(line_id, quantity, tax, "USD")


def test_more_units_of_a_line_grow_its_ordered_units_total_and_the_order_totals() -> None:
    order = an_order()
    widget = order.lines[0]

    added = domain.add_items(order, [more(widget.order_line_id, 3, tax=150)])

    [line] = added.changed
    assert line.quantities.ordered == 5
    assert line.total_minor == widget.total_minor + 3 * 1000 + 150
    assert [t.amount_minor for t in line.taxes] == [100, 150]
    assert line.gross_minor - line.discount_minor + line.tax_minor == line.total_minor
    assert added.new == ()
    assert added.totals.subtotal_minor == order.totals.subtotal_minor + 3000
    assert added.totals.tax_minor == order.totals.tax_minor + 150
    assert added.totals.grand_total_minor == 4099 + 3150
    assert added.totals.shipping_minor == order.totals.shipping_minor


def test_a_new_line_is_recorded_with_its_group_price_and_tax_and_totals_add_up() -> None:
    order = an_order()
    group = order.delivery_groups[0].delivery_group_id

    added = domain.add_items(
        order,
        [
            LineAddition(
                "new-1", 2, 96, "USD", new_line=True, delivery_group_id=group,
                sku="SKU-CAP", name="Cap", unit_price_minor=800,
            )
        ],
    )  # fmt: skip

    [line] = added.new
    assert (line.sku, line.name, line.delivery_group_id, line.quantity) == (
        "SKU-CAP",
        "Cap",
        group,
        2,
    )
    assert (line.unit_price_minor, line.tax_minor, line.total_minor) == (800, 96, 1696)
    totals = added.totals
    assert totals.grand_total_minor == 4099 + 1696
    assert (
        totals.subtotal_minor - totals.discount_minor + totals.tax_minor + totals.shipping_minor
        == totals.grand_total_minor
    )


def test_additions_of_a_line_not_on_the_order_or_an_id_taken_are_refused() -> None:
    order = an_order()
    taken = order.lines[0].order_line_id
    group = order.delivery_groups[0].delivery_group_id

    with pytest.raises(NotFound):
        domain.add_items(order, [more("nope", 1)])
    with pytest.raises(AlreadyExists):
        domain.add_items(
            order,
            [LineAddition(taken, 1, 0, "USD", True, group, "SKU-CAP", "", 800)],
        )


def test_bad_additions_list_every_violation() -> None:
    order = an_order()

    with pytest.raises(InvalidArgument) as error:
        domain.add_items(
            order,
            [LineAddition("new-1", 0, -1, "EUR", True, "no-group", "", "", -5)],
        )

    assert sorted(v.field for v in error.value.violations) == [
        "added_lines[0]",
        "added_lines[0].delivery_group_id",
        "added_lines[0].quantity",
        "added_lines[0].sku",
        "added_lines[0].tax",
        "added_lines[0].unit_price",
    ]
