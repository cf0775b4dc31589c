"""Servicing's subscription rules, without a database: plans, subscriptions, changes and
listing pages."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from oms_platform.errors import InvalidArgument
from services.servicing.domain import subscriptions as sd
from workflows import subscription_types as st
from workflows.types import Address, PaymentMethodData

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
MONTHLY = st.CadenceData(st.MONTHLY, 1, "07:30")


def a_plan(**changes: object) -> sd.NewPlan:
    plan = sd.NewPlan(
        idempotency_key="k",
        name="Coffee",
        items=(st.PlanItemData("SKU-BEANS", "Beans", 2, 1500),),
        currency="EUR",
        shipping_minor=490,
        tax_minor=0,
        cadence=MONTHLY,
        timezone="Europe/Berlin",
    )
    return replace(plan, **changes)  # type: ignore[arg-type]


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_a_good_plan_passes_and_costs_its_items_shipping_and_tax() -> None:
    sd.validate_plan(a_plan(), minutes_allowed=False)

    plan = sd.new_plan(a_plan(tax_minor=10), "plan-1", NOW)

    assert plan.data.price_minor() == 2 * 1500 + 490 + 10


@pytest.mark.parametrize("day", [0, 29, 30, 32])
def test_a_monthly_day_is_1_to_28_or_31(day: int) -> None:
    with pytest.raises(InvalidArgument) as error:
        sd.validate_plan(a_plan(cadence=st.CadenceData(st.MONTHLY, day)), minutes_allowed=False)

    assert fields(error) == ["cadence.monthly_on_day"]


def test_the_last_day_of_the_month_is_31() -> None:
    sd.validate_plan(a_plan(cadence=st.CadenceData(st.MONTHLY, 31)), minutes_allowed=False)


def test_minute_cadences_are_refused_unless_the_deployment_allows_them() -> None:
    every_five = a_plan(cadence=st.CadenceData(st.MINUTES, 5))

    with pytest.raises(InvalidArgument) as error:
        sd.validate_plan(every_five, minutes_allowed=False)
    sd.validate_plan(every_five, minutes_allowed=True)

    assert fields(error) == ["cadence.minutes"]
    assert "OMS_SUBSCRIPTION_MINUTE_CADENCE" in error.value.violations[0].description


def test_weeks_are_1_to_52_and_minutes_1_to_1440() -> None:
    with pytest.raises(InvalidArgument) as weeks:
        sd.validate_plan(a_plan(cadence=st.CadenceData(st.WEEKLY, 53)), minutes_allowed=True)
    with pytest.raises(InvalidArgument) as minutes:
        sd.validate_plan(a_plan(cadence=st.CadenceData(st.MINUTES, 1441)), minutes_allowed=True)

    assert fields(weeks) == ["cadence.weeks"]
    assert fields(minutes) == ["cadence.minutes"]


def test_every_bad_field_of_a_plan_is_named_at_once() -> None:
    bad = a_plan(
        idempotency_key="",
        items=(st.PlanItemData("", "", 0, -1), st.PlanItemData("A", "", 1, 1)),
        currency="EURO",
        tax_minor=-1,
        cadence=st.CadenceData(st.WEEKLY, 2, "7:30"),
        timezone="Nowhere/Special",
    )

    with pytest.raises(InvalidArgument) as error:
        sd.validate_plan(bad, minutes_allowed=False)

    assert fields(error) == [
        "idempotency_key",
        "items[0].sku",
        "items[0].quantity",
        "items[0].unit_price_minor",
        "currency",
        "tax_minor",
        "cadence.at_local_time",
        "timezone",
    ]


def a_subscription(**changes: object) -> sd.NewSubscription:
    request = sd.NewSubscription(
        idempotency_key="k",
        plan_id="plan-1",
        channel="web",
        subscriber=st.SubscriberData("ada@example.com"),
        delivery_address=Address("1 Main St", "Berlin", "10115", "DE"),
        delivery_method="standard",
        payment_method=PaymentMethodData("card", "tok_visa"),
        start_at=NOW,
    )
    return replace(request, **changes)  # type: ignore[arg-type]


def test_a_subscription_starts_no_earlier_than_now_and_active() -> None:
    request = a_subscription(start_at=datetime(2020, 1, 1, tzinfo=UTC))
    sd.validate_subscription(request)

    made = sd.new_subscription(request, "sub-1", NOW)
    start = sd.workflow_input(made, sd.new_plan(a_plan(), "plan-1", NOW).data, 14_400)

    assert (made.status, made.start_at, made.next_cycle) == (st.ACTIVE, NOW, 1)
    assert (start.subscription_id, start.spread_seconds) == ("sub-1", 14_400)
    assert start.start_at == NOW.isoformat()


def test_a_subscription_without_subscriber_address_or_payment_is_refused() -> None:
    bad = a_subscription(
        channel="", subscriber=None, delivery_address=None, payment_method=None, plan_id=""
    )

    with pytest.raises(InvalidArgument) as error:
        sd.validate_subscription(bad)

    assert fields(error) == [
        "plan_id",
        "channel",
        "subscriber.email",
        "delivery_address",
        "payment_method",
    ]


def test_a_cycle_day_change_needs_a_monthly_plan_and_a_good_day() -> None:
    weekly = sd.new_plan(a_plan(cadence=st.CadenceData(st.WEEKLY, 2)), "p", NOW).data
    change = st.SubscriptionChangeRequest(
        kind=st.CHANGE_CYCLE_DAY, actor="agent:ada", idempotency_key="k", day=30
    )

    with pytest.raises(InvalidArgument) as error:
        sd.validate_change(change, preview=False, current_plan=weekly)

    assert fields(error) == ["change_cycle_day.day", "change_cycle_day.day"]


def test_a_preview_needs_no_key_but_a_change_does() -> None:
    plan = sd.new_plan(a_plan(), "p", NOW).data
    pause = st.SubscriptionChangeRequest(kind=st.PAUSE, actor="agent:ada")

    sd.validate_change(pause, preview=True, current_plan=plan)
    with pytest.raises(InvalidArgument) as error:
        sd.validate_change(pause, preview=False, current_plan=plan)

    assert fields(error) == ["idempotency_key"]


def test_a_page_token_is_good_only_for_the_filters_it_came_with() -> None:
    query = sd.list_query("Ada@Example.com", "", "", 1, "", None)
    subscription = sd.new_subscription(a_subscription(), "sub-1", NOW)
    page = sd.page_of(query, [subscription, subscription])
    token = sd.next_page_token(query, page)

    following = sd.list_query("ada@example.com", "", "", 1, token, None)
    with pytest.raises(InvalidArgument) as error:
        sd.list_query("ada@example.com", "plan-2", "", 1, token, None)

    assert query.shopper_email == "ada@example.com"
    assert following.after == sd.Cursor(NOW, "sub-1")
    assert fields(error) == ["page_token"]


def test_a_page_token_made_by_hand_with_a_time_of_no_zone_is_refused() -> None:
    # The right filters' digest, but a cursor time without its zone (the SQL would compare it
    # as local time): refused like any token this listing did not issue.
    digest = sd._filters_digest("ada@example.com", "", "")
    body = {"v": 1, "f": digest, "t": "2027-01-01T00:00:00", "i": "sub-1"}
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(InvalidArgument) as error:
        sd.list_query("ada@example.com", "", "", 1, forged, None)
    assert fields(error) == ["page_token"]
