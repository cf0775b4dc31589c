"""Capture's domain: what a valid order is, what it costs, how its buckets move."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument, NotFound
from services.capture import domain
from services.capture.domain import (
    AdjustmentRequest,
    DeliveryGroupRequest,
    LineRequest,
    Money,
    OrderSubmission,
    Quantities,
    TaxRequest,
)

SHOPPER = domain.Shopper("s-1", "person", "ada@example.com", "Ada", "", "")


def usd(amount: int, currency: str = "USD") -> Money:
    return Money(amount, currency)


def address() -> domain.PostalAddress:
    return domain.PostalAddress(
        line1="1 Main St", city="Springfield", postal_code="12345", country_code="us"
    )


def line(quantity: int = 2, price: int = 1000, **kw: object) -> LineRequest:
    base = LineRequest(
        delivery_group_ref="home",
        sku="SKU-1",
        name="Widget",
        quantity=quantity,
        unit_price=usd(price),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def submission(**kw: object) -> OrderSubmission:
    """A valid order: 2 x 10.00 + 3 x 5.00, 1.00 tax, 4.99 shipping = 40.99 USD."""
    base = OrderSubmission(
        idempotency_key="k-1",
        channel="web",
        channel_order_ref="W-1",
        shopper=domain.ShopperDetails(email="Ada@Example.com", name="Ada"),
        currency="USD",
        delivery_groups=(
            DeliveryGroupRequest(
                ref="home", recipient_name="Ada", address=address(), shipping_charge=usd(499)
            ),
        ),
        lines=(
            line(2, 1000, taxes=(TaxRequest("state tax", usd(100)),)),
            line(3, 500, sku="SKU-2"),
        ),
        discounts=(),
        grand_total=usd(4099),
        payment_method=domain.PaymentMethod(type="card", token="tok_1"),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def fields_of(sub: OrderSubmission) -> dict[str, str]:
    return {v.field: v.description for v in domain.validation_errors(sub)}


def new_ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


# ---- validation ---------------------------------------------------------------------------


def test_a_well_formed_order_has_no_violations() -> None:
    assert domain.validation_errors(submission()) == []


def test_every_violation_is_reported_at_once_with_its_field_path() -> None:
    bad = submission(
        idempotency_key="",
        channel="",
        channel_order_ref="x" * 129,
        currency="XXX",
        shopper=domain.ShopperDetails(kind="business", name="Ada"),
        delivery_groups=(
            DeliveryGroupRequest(
                ref="home",
                recipient_name="Ada",
                address=domain.PostalAddress(
                    line1="1 Main", city="", postal_code="", country_code="USA"
                ),
            ),
            DeliveryGroupRequest(ref="home", recipient_name="Bob", address=None),
        ),
        lines=(
            line(0, 1000),
            line(1, -5, delivery_group_ref="office"),
            line(
                1, 100, unit_price=usd(100, "EUR"), discounts=(AdjustmentRequest("X", "", usd(-1)),)
            ),
        ),
        payment_method=domain.PaymentMethod(type="card"),
    )
    with pytest.raises(InvalidArgument) as raised:
        domain.check_submission(bad)
    fields = {v.field for v in raised.value.violations}
    assert {
        "idempotency_key",
        "channel",
        "channel_order_ref",
        "currency",
        "shopper.email",
        "shopper.company",
        "delivery_groups[0].address.city",
        "delivery_groups[0].address.postal_code",
        "delivery_groups[0].address.country_code",
        "delivery_groups[1].ref",
        "delivery_groups[1].address",
        "lines[0].quantity",
        "lines[1].delivery_group_ref",
        "lines[1].unit_price.amount_minor",
        "lines[2].unit_price.currency",
        "lines[2].discounts[0].amount.amount_minor",
        "payment_method.token",
    } <= fields


def test_a_grand_total_that_does_not_add_up_names_the_expected_amount() -> None:
    violations = fields_of(submission(grand_total=usd(4000)))
    assert list(violations) == ["grand_total"]
    assert violations["grand_total"].startswith(
        "must equal 40.99 USD (lines + shipping + tax − discounts)"  # noqa: RUF001
    )


def test_order_discounts_cannot_exceed_the_lines_net() -> None:
    violations = fields_of(
        submission(discounts=(AdjustmentRequest("BIG", "", usd(3600)),), grand_total=usd(499))
    )
    assert "discounts" in violations
    assert "cannot exceed the lines' net (35.00 USD)" in violations["discounts"]


def test_a_line_must_point_at_a_delivery_group_ref() -> None:
    violations = fields_of(submission(lines=(line(1, 3499, delivery_group_ref="nowhere"),)))
    assert "lines[0].delivery_group_ref" in violations


def test_an_order_needs_a_group_and_a_line_and_at_most_2000_lines() -> None:
    assert {"delivery_groups", "lines"} <= set(fields_of(submission(delivery_groups=(), lines=())))
    many = tuple(line(1, 1) for _ in range(2001))
    violations = fields_of(submission(lines=many, grand_total=usd(2001 + 499)))
    assert violations["lines"].startswith("at most 2000 lines")


def test_a_shopper_is_known_by_email_or_channel_customer_id() -> None:
    assert "shopper.email" in fields_of(submission(shopper=domain.ShopperDetails(name="Ada")))
    assert fields_of(submission(shopper=domain.ShopperDetails(channel_customer_id="c-9"))) == {}


def test_payment_needs_a_token_or_a_preauthorization() -> None:
    preauth = domain.PaymentMethod(type="gift_card", preauthorization_ref="pre-1")
    assert fields_of(submission(payment_method=preauth)) == {}
    assert "payment_method.token" in fields_of(
        submission(payment_method=domain.PaymentMethod(type="card"))
    )


def test_names_longer_than_256_characters_are_refused() -> None:
    long_name = domain.ShopperDetails(email="a@b.c", name="n" * 257)
    assert fields_of(submission(shopper=long_name)) == {
        "shopper.name": "must be at most 256 characters"
    }


# ---- money ----------------------------------------------------------------------------------


def test_captured_order_totals_add_up_and_lines_carry_their_share_of_order_discounts() -> None:
    sub = submission(discounts=(AdjustmentRequest("TEN", "", usd(1000)),), grand_total=usd(3099))
    order = domain.capture_order(sub, new_ids(), SHOPPER)
    t = order.totals
    totals = (t.subtotal_minor, t.discount_minor, t.tax_minor, t.shipping_minor)
    assert totals == (3500, 1000, 100, 499)
    assert t.grand_total_minor == 3099
    # Weights are the lines' nets 2000 and 1500: 10.00 splits 5.71 / 4.29.
    assert [line.allocated_order_discount_minor for line in order.lines] == [571, 429]
    assert [line.total_minor for line in order.lines] == [2000 - 571 + 100, 1500 - 429]
    assert sum(line.total_minor for line in order.lines) + t.shipping_minor == t.grand_total_minor
    assert order.status == "pending"
    assert order.delivery_groups[0].address.country_code == "US"
    assert order.lines[0].delivery_group_id == order.delivery_groups[0].delivery_group_id


def test_order_discounts_are_weighted_by_each_lines_net_after_its_own_discounts() -> None:
    first, second = submission().lines
    sub = submission(
        lines=(replace(first, discounts=(AdjustmentRequest("HALF", "", usd(500)),)), second),
        discounts=(AdjustmentRequest("TEN", "", usd(1000)),),
        grand_total=usd(2599),
    )
    order = domain.capture_order(sub, new_ids(), SHOPPER)
    # Nets 15.00 and 15.00, not the gross 20.00 and 15.00.
    assert [line.allocated_order_discount_minor for line in order.lines] == [500, 500]
    assert [line.discount_minor for line in order.lines] == [1000, 500]
    assert order.totals.discount_minor == 1500


@pytest.mark.parametrize(
    ("currency", "discount", "nets", "expected"),
    [
        ("JPY", 100, [1, 1, 1], [34, 33, 33]),
        ("BHD", 1000, [3333, 3333, 3334], [333, 333, 334]),
        ("USD", 1, [500, 500], [1, 0]),
    ],
)
def test_order_discount_allocation_sums_exactly(
    currency: str, discount: int, nets: list[int], expected: list[int]
) -> None:
    shares = domain.allocate_order_discount(discount, nets)
    assert shares == expected
    assert sum(shares) == discount


def test_a_jpy_order_allocates_whole_yen_and_adds_up() -> None:
    def yen(amount: int) -> Money:
        return Money(amount, "JPY")

    sub = submission(
        currency="JPY",
        delivery_groups=(DeliveryGroupRequest("home", "Ada", address(), shipping_charge=yen(0)),),
        lines=(
            line(1, 333, unit_price=yen(333)),
            line(1, 333, unit_price=yen(333)),
            line(1, 334, unit_price=yen(334)),
        ),
        discounts=(AdjustmentRequest("Y", "", yen(100)),),
        grand_total=yen(900),
    )
    order = domain.capture_order(sub, new_ids(), SHOPPER)
    shares = [line.allocated_order_discount_minor for line in order.lines]
    assert sum(shares) == 100
    assert sum(line.total_minor for line in order.lines) == 900


def test_a_bhd_order_is_checked_in_fils() -> None:
    def fils(amount: int) -> Money:
        return Money(amount, "BHD")

    sub = submission(
        currency="BHD",
        delivery_groups=(
            DeliveryGroupRequest("home", "Ada", address(), shipping_charge=fils(500)),
        ),
        lines=(line(3, 1333, unit_price=fils(1333)),),
        discounts=(AdjustmentRequest("F", "", fils(1)),),
        grand_total=fils(4000),
    )
    assert fields_of(sub)["grand_total"].startswith("must equal 4.498 BHD")


# ---- shoppers and progress ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [("  Ada@Example.COM ", "ada@example.com"), ("bob@shop.io", "bob@shop.io"), ("", "")],
)
def test_emails_are_matched_trimmed_and_lower_case(raw: str, normalized: str) -> None:
    assert domain.normalize_email(raw) == normalized


def test_agent_orders_are_captured_by_the_agent() -> None:
    order = domain.capture_order(submission(channel="agent"), new_ids(), SHOPPER)
    assert domain.captured_event(order).actor == "agent"
    assert domain.captured_event(replace(order, channel="web")).actor == "shopper"


def test_line_changes_move_buckets_and_refuse_going_below_zero() -> None:
    current = {"l1": Quantities(ordered=3), "l2": Quantities(ordered=1)}
    after = domain.apply_line_changes(
        "o1", current, [domain.LineQuantityChange("l1", Quantities(0, allocated=3))]
    )
    assert after == {"l1": Quantities(ordered=3, allocated=3)}
    with pytest.raises(FailedPrecondition, match="fulfilled below zero"):
        domain.apply_line_changes(
            "o1", current, [domain.LineQuantityChange("l2", Quantities(0, fulfilled=-1))]
        )
    with pytest.raises(NotFound):
        domain.apply_line_changes(
            "o1", current, [domain.LineQuantityChange("nope", Quantities(0, canceled=1))]
        )


def test_page_size_defaults_to_50_and_is_capped_at_500() -> None:
    assert (domain.page_size(0), domain.page_size(10), domain.page_size(9999)) == (50, 10, 500)


def test_a_new_delivery_address_is_checked_as_a_submitted_one_and_kept_upper_cased() -> None:
    changes = [("dg-1", address())]
    assert domain.group_address_changes(changes) == [
        ("dg-1", replace(address(), country_code="US"))
    ]
    with pytest.raises(InvalidArgument) as raised:
        domain.group_address_changes([("dg-1", address()), ("", replace(address(), city=" "))])
    fields = sorted(v.field for v in raised.value.violations)
    assert fields == [
        "delivery_group_addresses[1].address.city",
        "delivery_group_addresses[1].delivery_group_id",
    ]
