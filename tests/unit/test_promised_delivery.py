"""The promise a fulfillment order carries, without a database: the same count as
EstimateDelivery for the route it took, from a backorder's supply day, for a store pickup, and
again from the day a parcel left (or the carrier's estimate)."""

from __future__ import annotations

from datetime import date

from services.fulfillment import domain
from services.fulfillment.domain import Route
from tests.unit.test_fulfillment_promise import EAST, HOLIDAYS, NYC, TRANSIT, WEST, at, estimate


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
