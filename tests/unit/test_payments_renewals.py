"""Holds renewed ahead of a promised day: which holds, when, and when to ask again (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from oms_platform.errors import InvalidArgument
from oms_platform.money import Money
from services.payments import domain

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
RULE = domain.RenewalRule(margin_hours=48, lead_seconds=12 * 3600)


def held(
    authorization_id: str = "a-1",
    *,
    expires_in: timedelta = timedelta(days=7),
    method: str = domain.CARD,
    amount_minor: int = 5_000,
    captured_minor: int = 0,
) -> domain.Authorization:
    a = domain.new_authorization(
        "o-1",
        domain.PaymentMethod(method, "tok"),
        Money(amount_minor, "USD"),
        authorization_id=authorization_id,
        approved=True,
        gateway_reference=f"ref-{authorization_id}",
        decline_reason="",
        now=NOW,
        hold_hours=0,
        gateway_hold_seconds=int(expires_in.total_seconds()),
    )
    return domain.captured_from(a, captured_minor)


def test_holds_must_last_until_the_end_of_the_promised_day_plus_the_margin() -> None:
    assert domain.held_until(date(2025, 6, 20), RULE) == datetime(2025, 6, 23, 0, 0, tzinfo=UTC)


def test_a_hold_lapsing_before_the_promised_day_is_renewed_only_within_the_lead() -> None:
    until = domain.held_until(date(2025, 6, 20), RULE)
    a = held(expires_in=timedelta(days=7))

    assert domain.renewals_due([a], until, NOW, RULE) == []
    assert domain.next_renewal([a], until, RULE) == a.expires_at - timedelta(hours=12)
    later = a.expires_at - timedelta(hours=11)
    assert domain.renewals_due([a], until, later, RULE) == [a]


def test_a_hold_that_outlasts_the_promised_day_is_never_renewed() -> None:
    until = domain.held_until(date(2025, 6, 5), RULE)
    a = held(expires_in=timedelta(days=7))
    assert domain.renewals_due([a], until, a.expires_at, RULE) == []
    assert domain.next_renewal([a], until, RULE) is None


def test_a_fully_captured_or_declined_hold_needs_no_renewal() -> None:
    until = domain.held_until(date(2025, 7, 1), RULE)
    spent = held("a-1", expires_in=timedelta(hours=1), captured_minor=5_000)
    declined = domain.new_authorization(
        "o-1",
        domain.PaymentMethod(domain.CARD, "tok"),
        Money(5_000, "USD"),
        authorization_id="a-2",
        approved=False,
        gateway_reference="",
        decline_reason="card_declined",
        now=NOW,
        hold_hours=1,
    )
    assert domain.renewals_due([spent, declined], until, NOW, RULE) == []


def test_the_gateways_hold_decides_when_an_authorization_lapses() -> None:
    a = held(expires_in=timedelta(minutes=30))
    assert a.expires_at == NOW + timedelta(minutes=30)


def test_seconds_until_rounds_up_so_the_caller_wakes_when_it_is_due() -> None:
    assert domain.seconds_until(NOW + timedelta(seconds=1.2), NOW) == 2
    assert domain.seconds_until(NOW - timedelta(seconds=5), NOW) == 0
    assert domain.seconds_until(None, NOW) == 0


def test_a_card_is_held_anew_first_a_gift_card_or_a_lapsed_hold_released_first() -> None:
    assert not domain.releases_first(held(), NOW)
    assert domain.releases_first(held(method=domain.GIFT_CARD), NOW)
    assert domain.releases_first(held(expires_in=timedelta(hours=1)), NOW + timedelta(hours=2))


def test_a_renewal_request_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        domain.promised_day("", "", "next week")
    assert [v.field for v in refused.value.violations] == [
        "order_id",
        "idempotency_key",
        "promise_date",
    ]
    assert domain.promised_day("o-1", "k", "2025-06-20") == date(2025, 6, 20)
