"""Delivery promises without a database: business days (weekends and public holidays from the
`holidays` package skipped), a location's cut-off and processing days in its own time zone,
transit days by method and distance band, and the estimate per delivery method."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from oms_platform.errors import InvalidArgument
from services.fulfillment import domain
from services.fulfillment.calendars import PublicHolidays
from services.fulfillment.domain import (
    BusinessCalendar,
    Candidate,
    Coordinates,
    DeliveryItem,
    DeliveryQuestion,
    Location,
    PostalAddress,
    ProcessingSchedule,
    PromiseSnapshot,
    RoutingPolicy,
    TransitBand,
    TransitTable,
)

HOLIDAYS = PublicHolidays()
US = BusinessCalendar("US", HOLIDAYS)

NEWARK = Coordinates(40.7357, -74.1724)
RENO = Coordinates(39.5296, -119.8138)
NYC = Coordinates(40.7128, -74.0060)

NEW_YORK_TIME = ProcessingSchedule("America/New_York", time(14, 0), 1)
LOS_ANGELES_TIME = ProcessingSchedule("America/Los_Angeles", time(14, 0), 1)

TRANSIT = TransitTable(
    (
        TransitBand("standard", 0, 2),
        TransitBand("standard", 300, 3),
        TransitBand("standard", 1000, 4),
        TransitBand("standard", 2000, 5),
        TransitBand("express", 0, 1),
        TransitBand("express", 1000, 2),
    )
)
NYC_ADDRESS = PostalAddress(line1="350 5th Ave", postal_code="10118", country_code="US")


def at(text: str) -> datetime:
    """An instant written in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def location(
    location_id: str, where: Coordinates, schedule: ProcessingSchedule, country: str = "US"
) -> Location:
    return Location(
        location_id=location_id,
        name=location_id,
        type="warehouse",
        address=PostalAddress(country_code=country),
        latitude=where.latitude,
        longitude=where.longitude,
        priority=1,
        enabled=True,
        schedule=schedule,
    )


EAST = location("wh-east", NEWARK, NEW_YORK_TIME)
WEST = location("wh-west", RENO, LOS_ANGELES_TIME)


def snapshot(
    stock: dict[tuple[str, str], int],
    destination: Coordinates | None = NYC,
    locations: tuple[Location, ...] = (EAST, WEST),
) -> PromiseSnapshot:
    return PromiseSnapshot(
        candidates=[Candidate(loc.location_id, loc.priority, loc.coordinates) for loc in locations],
        availability=stock,
        destination=destination,
        locations={loc.location_id: loc for loc in locations},
        transit=TRANSIT,
    )


def estimate(
    stock: dict[tuple[str, str], int],
    *items: tuple[str, int],
    methods: tuple[str, ...] = ("standard",),
    ordered_at: str = "2026-11-24T15:00:00",
    destination: Coordinates | None = NYC,
    address: PostalAddress = NYC_ADDRESS,
) -> list[domain.DeliveryEstimate]:
    question = DeliveryQuestion(
        items=tuple(DeliveryItem(sku, q) for sku, q in items),
        address=address,
        delivery_methods=methods,
    )
    return domain.estimate_delivery(
        question, snapshot(stock, destination), HOLIDAYS, RoutingPolicy(), at(ordered_at)
    )


# ---- business days ---------------------------------------------------------------------------


def test_thanksgiving_2026_is_not_a_business_day_and_is_skipped() -> None:
    assert not US.is_business_day(date(2026, 11, 26))
    assert US.next_business_day(date(2026, 11, 25)) == date(2026, 11, 27)
    assert US.add_business_days(date(2026, 11, 25), 2) == date(2026, 11, 30)


def test_a_weekend_is_skipped() -> None:
    friday = date(2026, 11, 27)
    assert US.next_business_day(friday) == date(2026, 11, 30)
    assert US.add_business_days(friday, 2) == date(2026, 12, 1)
    # No days to add from a Saturday still waits for a business day.
    assert US.add_business_days(date(2026, 11, 28), 0) == date(2026, 11, 30)
    assert US.add_business_days(friday, 0) == friday


def test_a_country_s_own_weekend_and_holidays_count() -> None:
    saudi = BusinessCalendar("SA", HOLIDAYS)
    # Friday and Saturday are the weekend there: Thursday's next business day is Sunday.
    assert saudi.next_business_day(date(2026, 12, 3)) == date(2026, 12, 6)
    # Thanksgiving is worked in Germany.
    assert BusinessCalendar("DE", HOLIDAYS).is_business_day(date(2026, 11, 26))
    assert not BusinessCalendar("DE", HOLIDAYS).is_business_day(date(2026, 12, 25))


def test_a_country_the_holiday_database_does_not_know_has_weekends_only() -> None:
    assert HOLIDAYS.holiday("ZZ", date(2026, 1, 1)) is None
    assert BusinessCalendar("ZZ", HOLIDAYS).next_business_day(date(2026, 1, 2)) == date(2026, 1, 5)


# ---- cut-off and processing ------------------------------------------------------------------


def test_an_order_before_the_cut_off_starts_that_day_and_one_after_it_the_next_business_day() -> (
    None
):
    # Wednesday before Thanksgiving, 13:59 and 14:00 in New York (EST, UTC-5).
    before = at("2026-11-25T18:59:00")
    after = at("2026-11-25T19:00:00")
    assert domain.processing_starts(before, NEW_YORK_TIME, US) == date(2026, 11, 25)
    assert domain.ship_date(before, NEW_YORK_TIME, US) == date(2026, 11, 27)
    assert domain.processing_starts(after, NEW_YORK_TIME, US) == date(2026, 11, 27)
    assert domain.ship_date(after, NEW_YORK_TIME, US) == date(2026, 11, 30)


def test_the_cut_off_is_in_the_location_s_own_time_zone() -> None:
    # Tuesday 20:30 UTC is 15:30 in New York (past the cut-off) and 12:30 in Los Angeles.
    ordered = at("2026-11-24T20:30:00")
    assert domain.processing_starts(ordered, NEW_YORK_TIME, US) == date(2026, 11, 25)
    assert domain.processing_starts(ordered, LOS_ANGELES_TIME, US) == date(2026, 11, 24)
    # The local day counts too: Saturday 03:00 UTC is still Friday, 19:00, in Los Angeles.
    ordered = at("2026-11-28T03:00:00")
    cutoff_at_six = ProcessingSchedule("America/Los_Angeles", time(18, 0), 0)
    cutoff_at_eight = ProcessingSchedule("America/Los_Angeles", time(20, 0), 0)
    assert domain.ship_date(ordered, cutoff_at_six, US) == date(2026, 11, 30)
    assert domain.ship_date(ordered, cutoff_at_eight, US) == date(2026, 11, 27)


def test_the_cut_off_follows_daylight_saving_time() -> None:
    # 18:30 UTC is 14:30 EDT in July (after the cut-off) and 13:30 EST in November (before).
    assert domain.processing_starts(at("2026-07-14T18:30:00"), NEW_YORK_TIME, US) == date(
        2026, 7, 15
    )
    assert domain.processing_starts(at("2026-11-10T18:30:00"), NEW_YORK_TIME, US) == date(
        2026, 11, 10
    )


def test_an_order_on_a_holiday_or_weekend_starts_the_next_business_day_whatever_the_time() -> None:
    thanksgiving_morning = at("2026-11-26T14:00:00")  # 09:00 in New York
    saturday_morning = at("2026-11-28T14:00:00")
    assert domain.processing_starts(thanksgiving_morning, NEW_YORK_TIME, US) == date(2026, 11, 27)
    assert domain.processing_starts(saturday_morning, NEW_YORK_TIME, US) == date(2026, 11, 30)


def test_zero_processing_days_ships_the_day_processing_starts() -> None:
    same_day = ProcessingSchedule("America/New_York", time(14, 0), 0)
    assert domain.ship_date(at("2026-11-24T15:00:00"), same_day, US) == date(2026, 11, 24)


# ---- transit ---------------------------------------------------------------------------------


def test_transit_days_by_distance_band_and_the_longest_band_when_distance_is_unknown() -> None:
    assert TRANSIT.transit_days("standard", 0) == 2
    assert TRANSIT.transit_days("standard", 299.9) == 2
    assert TRANSIT.transit_days("standard", 300) == 3
    assert TRANSIT.transit_days("standard", 1999) == 4
    assert TRANSIT.transit_days("standard", 4000) == 5
    assert TRANSIT.transit_days("standard", None) == 5
    assert TRANSIT.transit_days("express", 500) == 1
    assert TRANSIT.transit_days("express", None) == 2
    assert TRANSIT.transit_days("pigeon", 10) is None
    assert TRANSIT.methods() == ["express", "standard"]


# ---- estimates -------------------------------------------------------------------------------


def test_a_friday_order_after_the_cut_off_before_a_monday_holiday_ships_tuesday() -> None:
    # Friday 2027-01-15, 14:30 in New York; Monday 2027-01-18 is Martin Luther King Jr. Day.
    [standard, express] = estimate(
        {("wh-east", "MUG"): 5},
        ("MUG", 2),
        methods=("standard", "express"),
        ordered_at="2027-01-15T19:30:00",
    )
    assert standard.promised and standard.reason == ""
    [shipment] = standard.shipments
    assert shipment.location_id == "wh-east"
    assert shipment.items == (DeliveryItem("MUG", 2),)
    assert shipment.distance_km == 14 and shipment.transit_days == 2
    # Processing starts Tuesday 19th, takes one business day: ships Wednesday the 20th.
    assert standard.ship_date == date(2027, 1, 20)
    assert standard.delivery_date == date(2027, 1, 22)
    assert express.ship_date == date(2027, 1, 20)
    assert express.delivery_date == date(2027, 1, 21)


def test_the_farther_location_ships_when_the_nearer_has_no_stock_and_transit_is_longer() -> None:
    [standard] = estimate({("wh-west", "MUG"): 5}, ("MUG", 1))
    [shipment] = standard.shipments
    assert shipment.location_id == "wh-west"
    assert shipment.distance_km is not None and shipment.distance_km > 2000
    assert shipment.transit_days == 5
    # Tuesday 07:00 in Reno's time zone, before the cut-off: ships Wednesday the 25th; five
    # business days skipping Thanksgiving and the weekend.
    assert standard.ship_date == date(2026, 11, 25)
    assert standard.delivery_date == date(2026, 12, 3)


def test_an_address_that_cannot_be_located_gets_the_longest_band() -> None:
    [standard] = estimate({("wh-east", "MUG"): 5}, ("MUG", 1), destination=None)
    [shipment] = standard.shipments
    assert shipment.distance_km is None and shipment.transit_days == 5


def test_items_split_over_two_locations_are_promised_when_the_last_parcel_arrives() -> None:
    [standard] = estimate({("wh-east", "MUG"): 1, ("wh-west", "CAP"): 1}, ("MUG", 1), ("CAP", 1))
    by_location = {s.location_id: s for s in standard.shipments}
    assert set(by_location) == {"wh-east", "wh-west"}
    assert by_location["wh-east"].delivery_date < by_location["wh-west"].delivery_date
    assert standard.delivery_date == by_location["wh-west"].delivery_date


def test_a_method_cannot_be_promised_without_stock_anywhere_and_says_why() -> None:
    [standard] = estimate({("wh-east", "MUG"): 1}, ("MUG", 1), ("CAP", 2))
    assert not standard.promised
    assert standard.reason == (
        "not in stock at any location that can ship it: 2 of 'CAP' (items[1])"
    )
    assert standard.shipments == () and standard.ship_date is None


def test_a_method_without_transit_times_says_so_and_no_methods_means_every_method() -> None:
    [pigeon] = estimate({("wh-east", "MUG"): 1}, ("MUG", 1), methods=("pigeon",))
    assert not pigeon.promised
    assert pigeon.reason == "no transit times are set for delivery method 'pigeon'"
    every = estimate({("wh-east", "MUG"): 1}, ("MUG", 1), methods=())
    assert [e.delivery_method for e in every] == ["express", "standard"]


def test_an_estimate_asked_without_a_moment_is_for_now() -> None:
    question = DeliveryQuestion((DeliveryItem("MUG", 1),), NYC_ADDRESS, ("standard",))
    [friday] = domain.estimate_delivery(
        question,
        snapshot({("wh-east", "MUG"): 1}),
        HOLIDAYS,
        RoutingPolicy(),
        at("2027-01-15T19:30:00"),
    )
    assert friday.ship_date == date(2027, 1, 20)


def test_a_bad_question_names_every_field_and_rule() -> None:
    question = DeliveryQuestion(
        items=(DeliveryItem("", 0),),
        address=PostalAddress(postal_code="10118"),
        delivery_methods=("standard", "", "standard"),
        ordered_at=at("2150-01-01T00:00:00"),
    )
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_delivery_question(question)
    assert {v.field: v.description for v in raised.value.violations} == {
        "items[0].sku": "is required",
        "items[0].quantity": "must be positive",
        "address.country_code": "is required: its business days count",
        "delivery_methods[1]": "is required",
        "delivery_methods[2]": "repeats delivery_methods[0]",
        "ordered_at": "must be from 2000-01-01 to 2099-12-31",
    }
    with pytest.raises(InvalidArgument) as none:
        domain.validate_delivery_question(DeliveryQuestion((), NYC_ADDRESS))
    assert [v.field for v in none.value.violations] == ["items"]


# ---- a location's schedule -------------------------------------------------------------------


def test_a_location_upsert_keeps_the_stored_schedule_fields_it_leaves_out() -> None:
    stored = EAST
    change = domain.ScheduleChange(cutoff_local_time="16:30")
    updated = domain.with_schedule(EAST, change, stored)
    assert updated.schedule == ProcessingSchedule("America/New_York", time(16, 30), 1)
    fresh = domain.with_schedule(EAST, domain.ScheduleChange(processing_days=0), None)
    assert fresh.schedule == ProcessingSchedule("UTC", time(14, 0), 0)


def test_a_bad_schedule_names_the_location_fields() -> None:
    change = domain.ScheduleChange(
        timezone="Mars/Olympus_Mons", cutoff_local_time="25:00", processing_days=31
    )
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_location(EAST, change)
    assert {v.field for v in raised.value.violations} == {
        "location.timezone",
        "location.cutoff_local_time",
        "location.processing_days",
    }
    domain.validate_location(
        EAST, domain.ScheduleChange("Europe/Berlin", "00:00", domain.MAX_PROCESSING_DAYS)
    )
