"""Holds renewed ahead of a promised day: which holds, when, and when to ask again (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from oms.payments.v1 import payments_pb2 as pb

from oms_platform.errors import InvalidArgument
from oms_platform.money import Money
from services.payments import convert, domain

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


def test_a_renewed_hold_shorter_than_the_lead_is_due_again_only_after_half_its_life() -> None:
    # The processor holds for an hour; the lead is 12 h: the first hold is due at once.
    until = domain.held_until(date(2025, 6, 20), RULE)
    first = held(expires_in=timedelta(hours=1))
    assert domain.renewals_due([first], until, NOW, RULE) == [first]
    renewed = domain.reauthorization(
        domain.expired(first),
        authorization_id="a-2",
        approved=True,
        held_minor=first.remaining_minor,
        gateway_reference="ref-a-2",
        decline_reason="",
        now=NOW,
        hold_hours=0,
        gateway_hold_seconds=3600,
    )

    # Not due again the moment it is made: half its hour later, still before it lapses.
    assert domain.renewals_due([renewed], until, NOW, RULE) == []
    assert domain.next_renewal([renewed], until, RULE) == NOW + timedelta(minutes=30)
    assert domain.renewals_due([renewed], until, NOW + timedelta(minutes=30), RULE) == [renewed]
    # Asked every minute for a day, it is renewed every half hour (47 times after the first
    # renewal), not at every ask.
    at, renewals, current = NOW, 0, renewed
    while at < NOW + timedelta(days=1):
        if domain.renewals_due([current], until, at, RULE):
            renewals += 1
            current = domain.reauthorization(
                domain.expired(current),
                authorization_id=f"a-{renewals + 2}",
                approved=True,
                held_minor=current.remaining_minor,
                gateway_reference="ref",
                decline_reason="",
                now=at,
                hold_hours=0,
                gateway_hold_seconds=3600,
            )
        at += timedelta(minutes=1)
    assert renewals == 47


def test_a_long_renewed_hold_is_still_renewed_the_lead_before_it_lapses() -> None:
    until = domain.held_until(date(2025, 7, 20), RULE)
    renewed = domain.reauthorization(
        domain.expired(held()),
        authorization_id="a-2",
        approved=True,
        held_minor=5_000,
        gateway_reference="ref-a-2",
        decline_reason="",
        now=NOW,
        hold_hours=0,
        gateway_hold_seconds=7 * 86400,
    )
    assert domain.next_renewal([renewed], until, RULE) == renewed.expires_at - timedelta(hours=12)


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
        convert.promised_day_from_pb(
            pb.RenewAuthorizationsRequest(order_id="", idempotency_key="", promise_date="next week")
        )
    assert [v.field for v in refused.value.violations] == [
        "order_id",
        "idempotency_key",
        "promise_date",
    ]
    asked = pb.RenewAuthorizationsRequest(
        order_id="o-1", idempotency_key="k", promise_date="2025-06-20"
    )
    assert convert.promised_day_from_pb(asked) == date(2025, 6, 20)
    with pytest.raises(InvalidArgument) as missing:
        convert.promised_day_from_pb(
            pb.RenewAuthorizationsRequest(order_id="o-1", idempotency_key="k")
        )
    assert [v.field for v in missing.value.violations] == ["promise_date"]
