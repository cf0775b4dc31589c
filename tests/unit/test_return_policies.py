"""The return policy as data: the most specific rule decides, and what it decides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oms_platform.errors import InvalidArgument
from services.servicing import domain
from services.servicing.domain import EligibilityRequest, LineFacts, PolicyRule

DELIVERED = datetime(2026, 3, 1, 12, tzinfo=UTC)
DEFAULT = PolicyRule(id="default")
RULES = [
    DEFAULT,
    PolicyRule(id="marketplace", channel="marketplace", return_days=14),
    PolicyRule(id="clearance", category="clearance", final_sale=True),
    PolicyRule(
        id="web-electronics",
        channel="web",
        category="electronics",
        return_days=15,
        required_conditions=("new",),
        restocking_fee_basis_points=1500,
    ),
]


def facts(channel: str = "web", category: str = "", available: int = 2) -> LineFacts:
    """A delivered order's line, its return window closing 30 days after delivery."""
    return LineFacts(
        order_line_id="L1",
        channel=channel,
        sku="SKU-X",
        category=category,
        delivered_at=DELIVERED,
        available_to_return=available,
        return_window_closes_at=DELIVERED + timedelta(days=30),
    )


def ask(quantity: int = 1, condition: str = "new") -> EligibilityRequest:
    return EligibilityRequest("o1", "L1", quantity, condition)


def days_after(days: float) -> datetime:
    return DELIVERED + timedelta(days=days)


def test_a_category_rule_beats_a_channel_rule_and_both_beat_the_default() -> None:
    assert domain.deciding_rule(RULES, "marketplace", "clearance").id == "clearance"
    assert domain.deciding_rule(RULES, "marketplace", "toys").id == "marketplace"
    assert domain.deciding_rule(RULES, "web", "toys").id == "default"
    assert domain.deciding_rule(RULES, "web", "electronics").id == "web-electronics"
    # a rule for one channel and category does not reach the category on other channels
    assert domain.deciding_rule(RULES, "store", "electronics").id == "default"


def test_final_sale_refuses_and_says_which_category_made_it_so() -> None:
    answer = domain.decide(RULES, facts(category="clearance"), ask(), 1000, days_after(1))

    assert not answer.eligible
    assert answer.rule_id == "clearance"
    assert answer.explanation == "final sale: SKU-X is in category clearance"


def test_the_default_rule_keeps_the_channels_window() -> None:
    inside = domain.decide(RULES, facts(), ask(), 1000, days_after(29.9))
    outside = domain.decide(RULES, facts(), ask(), 1000, days_after(30.1))

    assert (inside.eligible, inside.rule_id, inside.refund_minor) == (True, "default", 1000)
    assert not outside.eligible and outside.rule_id == "default"
    assert "return window closed on 2026-03-31" in outside.explanation


def test_a_channel_rule_shortens_the_window_for_that_channel_only() -> None:
    late = days_after(20)
    assert not domain.decide(RULES, facts(channel="marketplace"), ask(), 1, late).eligible
    assert domain.decide(RULES, facts(channel="web"), ask(), 1, late).eligible


def test_a_required_condition_refuses_opened_units_and_names_the_condition() -> None:
    answer = domain.decide(
        RULES, facts(category="electronics"), ask(condition="opened"), 1000, days_after(1)
    )

    assert not answer.eligible and answer.rule_id == "web-electronics"
    assert "must come back new (unopened), its condition is opened" in answer.explanation


def test_the_restocking_fee_is_basis_points_of_the_credit_in_whole_minor_units() -> None:
    answer = domain.decide(RULES, facts(category="electronics"), ask(), 4995, days_after(1))

    # 15% of 49.95 is 7.4925: rounded half away from zero to 7.49
    assert (answer.eligible, answer.restocking_fee_minor, answer.refund_minor) == (
        True,
        749,
        4246,
    )


def test_more_units_than_may_come_back_is_refused_by_the_buckets_not_a_rule() -> None:
    answer = domain.decide(RULES, facts(available=1), ask(quantity=2), 0, days_after(1))

    assert not answer.eligible and answer.rule_id == ""
    assert "only 1 unit(s) of line L1" in answer.explanation


def test_an_order_not_delivered_yet_is_inside_any_window() -> None:
    undelivered = LineFacts("L1", "marketplace", "SKU-X", "", None, 1)
    assert domain.decide(RULES, undelivered, ask(), 0, days_after(400)).eligible


def test_a_refusal_names_the_rule_and_the_line() -> None:
    answer = domain.decide(RULES, facts(category="clearance"), ask(), 0, days_after(1))
    error = domain.refusal_of(answer, "lines[0]")
    assert str(error) == (
        "lines[0]: return refused by rule 'clearance': final sale: SKU-X is in category clearance"
    )


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (PolicyRule(id="x"), "category"),
        (PolicyRule(id="default", channel="web"), "rule_id"),
        (PolicyRule(id="x", category="c", return_days=-1), "return_days"),
        (
            PolicyRule(id="x", category="c", restocking_fee_basis_points=10_001),
            "restocking_fee_basis_points",
        ),
        (PolicyRule(id="x", category="c", required_conditions=("mint",)), "required_conditions[0]"),
    ],
)
def test_a_malformed_rule_is_refused_naming_the_field(rule: PolicyRule, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        domain.validate_rule(rule)
    assert field in [v.field for v in refused.value.violations]


def test_only_units_received_new_or_opened_are_restocked() -> None:
    accepted = (domain.Item("L1", 1), domain.Item("L2", 2), domain.Item("L3", 1))
    notes = (
        domain.LineNote("L1", condition="new"),
        domain.LineNote("L2", condition="damaged"),
        domain.LineNote("L3", condition="opened"),
    )
    assert domain.restockable(accepted, notes) == (domain.Item("L1", 1), domain.Item("L3", 1))


# ---- exchanges: a return of the old item ------------------------------------------------------


def exchange(condition: str = "new") -> EligibilityRequest:
    return EligibilityRequest("o1", "L1", 1, condition, exchange=True)


def test_an_exchange_is_refused_by_the_same_rule_as_a_return_and_says_so() -> None:
    final = domain.decide(RULES, facts(category="clearance"), exchange(), 0, days_after(1))
    late = domain.decide(RULES, facts(channel="marketplace"), exchange(), 0, days_after(20))
    opened = domain.decide(
        RULES, facts(category="electronics"), exchange("opened"), 0, days_after(1)
    )

    assert [(a.eligible, a.rule_id) for a in (final, late, opened)] == [
        (False, "clearance"),
        (False, "marketplace"),
        (False, "web-electronics"),
    ]
    assert str(domain.refusal_of(final, "lines[0]", "exchange")) == (
        "lines[0]: exchange refused by rule 'clearance': final sale: SKU-X is in category clearance"
    )


def test_an_exchange_pays_the_restocking_fee_only_when_the_rule_says_so() -> None:
    charging = [*RULES[:3], replace(RULES[3], fee_on_exchange=True)]

    without = domain.decide(RULES, facts(category="electronics"), exchange(), 4995, days_after(1))
    with_fee = domain.decide(
        charging, facts(category="electronics"), exchange(), 4995, days_after(1)
    )
    returned = domain.decide(RULES, facts(category="electronics"), ask(), 4995, days_after(1))

    assert (without.eligible, without.restocking_fee_minor) == (True, 0)
    assert "exchangeable" in without.explanation and "fee" not in without.explanation
    assert (with_fee.eligible, with_fee.restocking_fee_minor) == (True, 749)
    assert returned.restocking_fee_minor == 749  # a return pays it either way


# ---- the window: a rule's days and the order's own date ---------------------------------------


def order_facts(closes_after_days: float, channel: str = "web") -> LineFacts:
    """Facts of an order whose lifecycle closes returns `closes_after_days` after delivery."""
    return replace(facts(channel=channel), return_window_closes_at=days_after(closes_after_days))


def test_a_rule_without_days_closes_with_the_orders_window() -> None:
    inside = domain.decide(RULES, order_facts(10), ask(), 0, days_after(9.9))
    outside = domain.decide(RULES, order_facts(10), ask(), 0, days_after(10.1))

    assert inside.eligible
    assert (outside.eligible, outside.rule_id) == (False, "default")
    assert outside.explanation.startswith(
        "return window closed on 2026-03-11 12:00 UTC "
        "(the order's return window of 10 day(s) after delivery)"
    )


def test_a_rules_shorter_days_close_before_the_orders_window() -> None:
    answer = domain.decide(RULES, order_facts(30, "marketplace"), ask(), 0, days_after(15))

    assert (answer.eligible, answer.rule_id) == (False, "marketplace")
    assert "(14 day(s) after delivery)" in answer.explanation


def test_a_rules_longer_days_end_with_the_orders_window() -> None:
    generous = [DEFAULT, PolicyRule(id="web-long", channel="web", return_days=90)]

    inside = domain.decide(generous, order_facts(30), ask(), 0, days_after(29))
    outside = domain.decide(generous, order_facts(30), ask(), 0, days_after(31))

    assert inside.eligible
    assert (outside.eligible, outside.rule_id) == (False, "web-long")
    assert "the order's return window of 30 day(s) after delivery, shorter than the rule's 90" in (
        outside.explanation
    )
