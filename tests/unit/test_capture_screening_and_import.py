"""Capture's domain beyond a single submission: split payments, billing addresses, fraud
screening, historical imports, ListOrders' filters and when watchers stop."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oms_platform.errors import InvalidArgument
from services.capture import domain
from services.capture.domain import FraudPolicy, ImportOptions
from tests.unit.test_capture_domain import SHOPPER, address, fields_of, new_ids, submission

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def captured(**kw: object) -> domain.Order:
    """The sample submission (40.99 USD, shipping to the US) as captured at NOW."""
    return domain.capture_order(submission(**kw), new_ids(), SHOPPER, at=NOW)


def billing(country: str) -> domain.PostalAddress:
    return replace(address(), country_code=country)


# ---- split payments and billing address -----------------------------------------------------


def test_a_card_after_a_gift_card_is_kept_in_order() -> None:
    gift = domain.PaymentMethod(type="gift_card", token="gc_1")
    card = domain.PaymentMethod(type="card", token="tok_1")
    order = captured(payment_method=gift, additional_payment_methods=(card,))
    assert order.payment_method == gift
    assert order.additional_payment_methods == (card,)


def test_every_additional_payment_method_is_checked_with_its_position() -> None:
    bad = (
        domain.PaymentMethod(type="card", token="tok_1"),
        domain.PaymentMethod(type="", token=""),
    )
    violations = fields_of(submission(additional_payment_methods=bad))
    assert set(violations) == {
        "additional_payment_methods[1].type",
        "additional_payment_methods[1].token",
    }


def test_at_most_ten_additional_payment_methods_are_allowed() -> None:
    many = tuple(domain.PaymentMethod(type="gift_card", token=f"gc_{i}") for i in range(11))
    violations = fields_of(submission(additional_payment_methods=many))
    assert violations == {"additional_payment_methods": "at most 10 are allowed, got 11"}


def test_a_billing_address_needs_its_parts_and_is_stored_upper_case() -> None:
    partial = domain.PostalAddress(line1="", city="Paris", postal_code="", country_code="France")
    assert set(fields_of(submission(billing_address=partial))) == {
        "billing_address.line1",
        "billing_address.postal_code",
        "billing_address.country_code",
    }
    order = captured(billing_address=billing("fr"))
    assert order.billing_address is not None
    assert order.billing_address.country_code == "FR"


# ---- fraud screening ------------------------------------------------------------------------


def test_with_every_rule_off_nothing_is_flagged() -> None:
    policy = FraudPolicy(flag_country_mismatch=False)
    assert domain.fraud_reasons(captured(billing_address=billing("FR")), policy, 99) == []


def test_an_order_above_the_amount_threshold_is_flagged_and_one_at_it_is_not() -> None:
    order = captured()  # 40.99 USD
    assert domain.fraud_reasons(order, FraudPolicy(amount_threshold_minor=4099), 0) == []
    assert domain.fraud_reasons(order, FraudPolicy(amount_threshold_minor=4098), 0) == [
        "grand total 40.99 USD is above the screening threshold of 40.98 USD"
    ]


def test_a_shopper_ordering_more_than_the_hourly_limit_is_flagged() -> None:
    policy = FraudPolicy(max_orders_per_shopper_per_hour=3)
    assert domain.fraud_reasons(captured(), policy, 2) == []
    assert domain.fraud_reasons(captured(), policy, 3) == [
        "shopper placed 4 orders within an hour (more than 3)"
    ]


def test_a_billing_country_other_than_the_shipping_country_is_flagged() -> None:
    policy = FraudPolicy()
    assert domain.fraud_reasons(captured(billing_address=billing("us")), policy, 0) == []
    assert domain.fraud_reasons(captured(billing_address=billing("NG")), policy, 0) == [
        "billing country NG differs from shipping country US"
    ]
    assert domain.fraud_reasons(captured(), policy, 0) == []  # no billing address given


def test_a_flagged_order_carries_every_reason_and_starts_its_timeline_with_them() -> None:
    policy = FraudPolicy(amount_threshold_minor=100, max_orders_per_shopper_per_hour=1)
    order = domain.screened(captured(billing_address=billing("CA")), policy, 5)
    assert len(order.fraud_reasons) == 3
    events = domain.capture_events(order)
    assert [e.kind for e in events] == ["order.captured", "fraud.flagged"]
    assert events[1].summary.startswith("Fraud screening flagged the order: grand total")
    assert "billing country CA" in events[1].summary
    assert all(e.at == NOW for e in events)


def test_a_clear_order_starts_its_timeline_with_the_capture_alone() -> None:
    order = domain.screened(captured(), FraudPolicy(), 0)
    assert order.fraud_reasons == ()
    assert [e.kind for e in domain.capture_events(order)] == ["order.captured"]


# ---- historical imports ---------------------------------------------------------------------


def test_a_historical_order_is_stored_fulfilled_at_the_time_it_was_placed() -> None:
    placed = NOW - timedelta(days=40)
    order = domain.historical_order(captured(), ImportOptions(historical=True, placed_at=placed))
    assert order.status == "fulfilled"
    assert order.created_at == placed
    assert [(q.ordered, q.fulfilled, q.canceled) for q in (x.quantities for x in order.lines)] == [
        (2, 2, 0),
        (3, 3, 0),
    ]
    event = domain.imported_event(order)
    assert (event.kind, event.actor, event.at) == ("order.imported", "import", placed)
    assert "imported as fulfilled" in event.summary


def test_a_historical_order_can_be_stored_canceled() -> None:
    options = ImportOptions(historical=True, historical_status="canceled")
    order = domain.historical_order(captured(), options)
    assert order.status == "canceled"
    assert order.created_at == NOW
    assert [x.quantities.canceled for x in order.lines] == [2, 3]
    assert [x.quantities.fulfilled for x in order.lines] == [0, 0]


def test_import_options_that_make_no_sense_are_refused() -> None:
    def violations(options: ImportOptions) -> dict[str, str]:
        return {v.field: v.description for v in domain.import_violations(options, NOW)}

    assert violations(ImportOptions(historical=True, historical_status="shipped")) == {
        "historical_status": "must be FULFILLED or CANCELED when set"
    }
    assert violations(ImportOptions(historical=True, placed_at=NOW + timedelta(days=1))) == {
        "placed_at": "must not be in the future"
    }
    assert set(violations(ImportOptions(historical_status="fulfilled", placed_at=NOW))) == {
        "historical_status",
        "placed_at",
    }
    assert violations(ImportOptions(historical=True, placed_at=NOW)) == {}


# ---- reading --------------------------------------------------------------------------------


def test_a_created_range_must_end_after_it_starts() -> None:
    domain.check_filter(domain.OrderFilter(created_from=NOW, created_to=NOW + timedelta(1)))
    with pytest.raises(InvalidArgument) as raised:
        domain.check_filter(domain.OrderFilter(created_from=NOW, created_to=NOW))
    assert [v.field for v in raised.value.violations] == ["created_to"]


@pytest.mark.parametrize(
    ("status", "settled"),
    [("fulfilled", True), ("canceled", True), ("on_hold", False), ("pending", False)],
)
def test_watchers_stop_once_an_order_is_fulfilled_or_canceled(status: str, settled: bool) -> None:
    assert domain.is_settled(status) is settled


def test_an_unknown_currency_still_gets_its_totals_checked_so_every_fault_shows_at_once() -> None:
    bad = submission(currency="XYZ", lines=(replace(submission().lines[0], quantity=-1),))
    violations = fields_of(bad)
    assert {"currency", "lines[0].quantity", "grand_total"} <= set(violations)
