"""The promise a fulfillment order carries, without a database: the same count as
EstimateDelivery for the route it took, from a backorder's supply day, for a store pickup (and
a ship-to-store one: the day the transfer reaches the store), and again from the day a parcel
left (or the carrier's estimate)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, time

from services.fulfillment import domain
from services.fulfillment.domain import Route
from tests.unit.test_fulfillment_promise import (
    EAST,
    HOLIDAYS,
    NYC,
    TRANSIT,
    WEST,
    at,
    estimate,
)

CHICAGO_STORE = replace(
    EAST,
    location_id="store-chicago",
    type="store",
    latitude=41.8818,
    longitude=-87.6470,
    schedule=domain.ProcessingSchedule("America/Chicago", time(14, 0), 1),
)


def route(method: str = "standard", location: domain.Location = EAST) -> Route:
    return Route(location=location, delivery_method=method, country_code="us", destination=NYC)


def test_a_fulfillment_order_is_promised_what_the_estimate_says_for_its_location_and_method() -> (
    None
):
    for location, method in ((EAST, "standard"), (WEST, "standard"), (EAST, "express")):
        [said] = estimate({(location.location_id, "SKU-MUG"): 5}, ("SKU-MUG", 1), methods=(method,))
        [parcel] = said.shipments
        assert parcel.location_id == location.location_id
        promised = domain.promised_delivery(
            route(method, location), TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00")
        )
        assert promised == parcel.delivery_date


def test_thanksgiving_is_skipped_on_the_way() -> None:
    # Tuesday 10:00 in New York: starts that day, leaves Wednesday, two transit days skip
    # Thanksgiving Thursday and the weekend.
    promised = domain.promised_delivery(route(), TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00"))
    assert promised == date(2026, 11, 30)


def test_a_backorder_is_counted_from_its_supply_day_not_from_now() -> None:
    promised = domain.promised_delivery(
        route(), TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00"), available_on=date(2026, 12, 1)
    )
    # Supply on Tuesday 1 December: processed that day, leaves Wednesday, arrives Friday.
    assert promised == date(2026, 12, 4)
    # Supply expected in the past counts from now.
    late_supply = domain.promised_delivery(
        route(), TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00"), available_on=date(2026, 11, 2)
    )
    assert late_supply == date(2026, 11, 30)


def test_a_pickup_is_promised_for_the_day_it_is_ready_a_method_without_transit_for_none() -> None:
    assert domain.promised_delivery(
        route(domain.PICKUP), TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00")
    ) == date(2026, 11, 25)
    assert (
        domain.promised_delivery(route("same_day"), TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00"))
        is None
    )


def test_a_ship_to_store_pickup_is_promised_the_day_the_transfer_reaches_the_store() -> None:
    # Tuesday 10:00 in New York: wh-east ships Wednesday; Newark to Chicago (about 1,150 km)
    # is 4 standard business days, past Thanksgiving and the weekend: Wednesday 2 December.
    shipped_to_store = Route(EAST, domain.PICKUP, "US", NYC, pickup_store=CHICAGO_STORE)
    promised = domain.promised_delivery(
        shipped_to_store, TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00")
    )
    assert promised == date(2026, 12, 2)
    # Not the warehouse's ship day, which a pickup the store fills itself would be promised.
    at_the_store = Route(CHICAGO_STORE, domain.PICKUP, "US", NYC, pickup_store=CHICAGO_STORE)
    assert domain.promised_delivery(
        at_the_store, TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00")
    ) == date(2026, 11, 25)
    # A backordered one leaves the warehouse after its supply arrives, then travels the same.
    assert domain.promised_delivery(
        shipped_to_store, TRANSIT, HOLIDAYS, at("2026-11-24T15:00:00"), date(2026, 12, 7)
    ) == date(2026, 12, 14)
    # Without transit times for the transfer's method there is no promise.
    express_only = domain.TransitTable(TRANSIT.bands_of("express"))
    assert (
        domain.promised_delivery(shipped_to_store, express_only, HOLIDAYS, at("2026-11-24T15:00"))
        is None
    )


def test_a_method_s_bands_are_read_nearest_first() -> None:
    assert [b.from_km for b in TRANSIT.bands_of("standard")] == [0, 300, 1000, 2000]
    assert TRANSIT.bands_of("same_day") == []


def test_a_shipment_promises_its_ship_day_at_the_location_plus_transit() -> None:
    # 03:00 UTC on the 26th is still the evening of the 25th in New York.
    promised = domain.promised_after_shipment(route(), TRANSIT, HOLIDAYS, at("2026-11-26T03:00:00"))
    assert promised == date(2026, 11, 30)
    express = domain.promised_after_shipment(
        route("express"), TRANSIT, HOLIDAYS, at("2026-11-30T15:00:00")
    )
    assert express == date(2026, 12, 1)


def test_the_carrier_s_estimate_wins_over_the_transit_table() -> None:
    promised = domain.promised_after_shipment(
        route(), TRANSIT, HOLIDAYS, at("2026-11-26T03:00:00"), date(2026, 12, 3)
    )
    assert promised == date(2026, 12, 3)
    assert (
        domain.promised_after_shipment(
            route("same_day"), TRANSIT, HOLIDAYS, at("2026-11-26T03:00:00")
        )
        is None
    )
