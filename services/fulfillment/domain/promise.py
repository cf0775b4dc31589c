"""Fulfillment domain, delivery promises: business days per country, the day a location ships
an order placed at a given moment (its cut-off and processing days, in its own time zone), a
carrier's transit days by delivery method and distance band, and the estimate per delivery
method that checkout shows.

Pure: the clock comes in as `now`, public holidays through the `Holidays` port (an adapter
over a holiday database implements it), and the locations, stock and transit times as a
snapshot the store read. Which locations would ship is routing's choice, made as for an order.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from oms_platform import limits
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.postal import PostalAddress
from services.fulfillment.domain.common import Coordinates, ProcessingSchedule, haversine_km
from services.fulfillment.domain.inventory import Location
from services.fulfillment.domain.routing import (
    PICKUP,
    Allocation,
    Candidate,
    DeliveryGroup,
    RoutingLine,
    RoutingPolicy,
    route,
)

# The moments an order may be estimated for: years every country's holidays are known for,
# and far from the ends of what a date can hold.
EARLIEST_ORDER = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_ORDER = datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
# Unplaced items a reason names before it says how many more there are.
_NAMED_SHORTAGES = 5
# Every real calendar has a business day within a year; past that the holiday data is wrong.
_MAX_DAYS_WITHOUT_BUSINESS_DAY = 366
# The one delivery group an estimate routes.
_ESTIMATE_GROUP = "estimate"


# ---- business days ---------------------------------------------------------------------------


class Holidays(Protocol):
    """Public holidays and weekends by country (ISO 3166-1 alpha-2, upper case)."""

    def weekend(self, country_code: str) -> frozenset[int]:
        """The weekdays (Monday 0 … Sunday 6) that are not business days."""
        ...

    def holiday(self, country_code: str, day: date) -> str | None:
        """The name of the public holiday on `day`; None on any other day."""
        ...


@dataclass(frozen=True)
class BusinessCalendar:
    """The business days of one country: neither its weekend nor its public holidays.
    Locations work them, and carriers deliver on them."""

    country_code: str
    holidays: Holidays

    def is_business_day(self, day: date) -> bool:
        """True when `day` is worked."""
        if day.weekday() in self.holidays.weekend(self.country_code):
            return False
        return self.holidays.holiday(self.country_code, day) is None

    def next_business_day(self, day: date) -> date:
        """The first business day after `day`."""
        for n in range(1, _MAX_DAYS_WITHOUT_BUSINESS_DAY + 1):
            candidate = day + timedelta(days=n)
            if self.is_business_day(candidate):
                return candidate
        raise ValueError(f"no business day in {self.country_code} within a year after {day}")

    def add_business_days(self, day: date, count: int) -> date:
        """`count` business days after `day`; with none, `day` when it is a business day and
        the next one when it is not."""
        if count == 0:
            return day if self.is_business_day(day) else self.next_business_day(day)
        for _ in range(count):
            day = self.next_business_day(day)
        return day


def processing_starts(
    ordered_at: datetime, schedule: ProcessingSchedule, calendar: BusinessCalendar
) -> date:
    """The business day a location starts an order placed at `ordered_at` (aware): the day it
    is there, in the location's time zone, when that is a business day and the order came
    before the cut-off; otherwise the next business day."""
    local = ordered_at.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
    day = local.date()
    if calendar.is_business_day(day) and local.time() < schedule.cutoff:
        return day
    return calendar.next_business_day(day)


def ship_date(
    ordered_at: datetime, schedule: ProcessingSchedule, calendar: BusinessCalendar
) -> date:
    """The day the parcel leaves: the location's processing days after processing starts."""
    start = processing_starts(ordered_at, schedule, calendar)
    return calendar.add_business_days(start, schedule.processing_days)


# ---- transit times ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TransitBand:
    """Business days a carrier takes by one delivery method over distances from `from_km` up
    to the next band's start (the method's last band has no end)."""

    delivery_method: str
    from_km: int
    transit_days: int


@dataclass(frozen=True)
class TransitTable:
    """Transit days by delivery method and distance band."""

    bands: tuple[TransitBand, ...]

    def methods(self) -> list[str]:
        """Every delivery method with transit times, by name."""
        return sorted({band.delivery_method for band in self.bands})

    def bands_of(self, delivery_method: str) -> list[TransitBand]:
        """The method's bands, nearest first (none for a method without transit times)."""
        return sorted(
            (b for b in self.bands if b.delivery_method == delivery_method),
            key=lambda b: b.from_km,
        )

    def transit_days(self, delivery_method: str, distance_km: float | None) -> int | None:
        """Days for a distance (unknown: the longest band); None for a method without bands."""
        bands = self.bands_of(delivery_method)
        if not bands:
            return None
        if distance_km is None:
            return bands[-1].transit_days
        chosen = bands[0]
        for band in bands:
            if distance_km >= band.from_km:
                chosen = band
        return chosen.transit_days


# ---- the question and the answer -------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryItem:
    """Units of one SKU."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class DeliveryQuestion:
    """What checkout asks: these items, to this address, by these methods (none: every
    method with transit times), ordered at this moment (None: now)."""

    items: tuple[DeliveryItem, ...]
    address: PostalAddress
    delivery_methods: tuple[str, ...] = ()
    ordered_at: datetime | None = None


def validate_delivery_question(question: DeliveryQuestion) -> None:
    """Items with SKUs and positive units, an address with a country, named methods asked
    once, a moment in the years promises are made for; InvalidArgument naming every field."""
    violations: list[FieldViolation] = []
    if not question.items:
        violations.append(FieldViolation("items", "at least one item is required"))
    for i, item in enumerate(question.items):
        if not item.sku:
            violations.append(FieldViolation(f"items[{i}].sku", "is required"))
        if item.quantity <= 0:
            violations.append(FieldViolation(f"items[{i}].quantity", "must be positive"))
    if not question.address.country_code:
        violations.append(
            FieldViolation("address.country_code", "is required: its business days count")
        )
    seen: dict[str, int] = {}
    for i, method in enumerate(question.delivery_methods):
        if not method:
            violations.append(FieldViolation(f"delivery_methods[{i}]", "is required"))
        elif method in seen:
            violations.append(
                FieldViolation(
                    f"delivery_methods[{i}]", f"repeats delivery_methods[{seen[method]}]"
                )
            )
        seen.setdefault(method, i)
    at = question.ordered_at
    if at is not None and not EARLIEST_ORDER <= at <= LATEST_ORDER:
        violations.append(FieldViolation("ordered_at", "must be from 2000-01-01 to 2099-12-31"))
    if violations:
        raise InvalidArgument(violations)


@dataclass(frozen=True)
class PromisedShipment:
    """The parcel one location would send: what, when it leaves, when it arrives."""

    location_id: str
    items: tuple[DeliveryItem, ...]
    ship_date: date
    delivery_date: date
    # Whole kilometres to the address; None when the address could not be located.
    distance_km: int | None
    transit_days: int


@dataclass(frozen=True)
class DeliveryEstimate:
    """What can be promised for one delivery method: its parcels, or why there is none."""

    delivery_method: str
    shipments: tuple[PromisedShipment, ...] = ()
    reason: str = ""

    @property
    def promised(self) -> bool:
        """True when every item can be promised."""
        return not self.reason

    @property
    def ship_date(self) -> date | None:
        """The day everything has shipped (the last parcel's)."""
        return max((s.ship_date for s in self.shipments), default=None)

    @property
    def delivery_date(self) -> date | None:
        """The day everything has arrived (the last parcel's)."""
        return max((s.delivery_date for s in self.shipments), default=None)


@dataclass(frozen=True)
class PromiseSnapshot:
    """What an estimate reads: routing's candidates and their availability, where the address
    is (None: unknown), every location by id, and the transit times."""

    candidates: Sequence[Candidate]
    availability: Mapping[tuple[str, str], int]
    destination: Coordinates | None
    locations: Mapping[str, Location]
    transit: TransitTable


def estimate_delivery(
    question: DeliveryQuestion,
    snapshot: PromiseSnapshot,
    holidays: Holidays,
    policy: RoutingPolicy,
    now: datetime,
) -> list[DeliveryEstimate]:
    """One estimate per delivery method asked (every method with transit times when none
    was), each routed on the snapshot as an order would be, reserving nothing."""
    ordered_at = question.ordered_at or now
    methods = question.delivery_methods or tuple(snapshot.transit.methods())
    lines = tuple(
        RoutingLine(f"items[{i}]", item.sku, item.quantity) for i, item in enumerate(question.items)
    )
    country = question.address.country_code.upper()
    return [
        _estimate(method, question.address, lines, snapshot, holidays, policy, ordered_at, country)
        for method in methods
    ]


def _estimate(
    method: str,
    address: PostalAddress,
    lines: tuple[RoutingLine, ...],
    snapshot: PromiseSnapshot,
    holidays: Holidays,
    policy: RoutingPolicy,
    ordered_at: datetime,
    country: str,
) -> DeliveryEstimate:
    if snapshot.transit.transit_days(method, None) is None:
        return DeliveryEstimate(
            method, reason=f"no transit times are set for delivery method {limits.echo(method)}"
        )
    group = DeliveryGroup(_ESTIMATE_GROUP, address, lines, method)
    plan = route(
        [group],
        snapshot.candidates,
        snapshot.availability,
        {_ESTIMATE_GROUP: snapshot.destination},
        policy,
    )
    [placed] = plan.groups
    if placed.unallocated:
        return DeliveryEstimate(method, reason=_shortage(placed.unallocated))
    return DeliveryEstimate(
        method,
        tuple(
            _shipment(allocation, method, snapshot, holidays, ordered_at, country)
            for allocation in placed.allocations
        ),
    )


def _shipment(
    allocation: Allocation,
    method: str,
    snapshot: PromiseSnapshot,
    holidays: Holidays,
    ordered_at: datetime,
    country: str,
) -> PromisedShipment:
    """The parcel of one allocation."""
    location = snapshot.locations[allocation.location_id]
    leaves = _leaves(location, holidays, ordered_at, country)
    arrival = _arrival(
        location, leaves, method, snapshot.destination, country, snapshot.transit, holidays
    )
    assert arrival is not None  # the method has bands: checked before routing
    return PromisedShipment(
        location_id=location.location_id,
        items=tuple(DeliveryItem(line.sku, line.quantity) for line in allocation.lines),
        ship_date=leaves,
        delivery_date=arrival.day,
        distance_km=None if arrival.distance_km is None else round(arrival.distance_km),
        transit_days=arrival.transit_days,
    )


def _leaves(location: Location, holidays: Holidays, ordered_at: datetime, country: str) -> date:
    """The day a parcel of an order placed at `ordered_at` leaves `location`, which works its
    own country's business days (the address's when it names no country)."""
    works = BusinessCalendar(location.address.country_code.upper() or country, holidays)
    return ship_date(ordered_at, location.schedule, works)


@dataclass(frozen=True)
class _Arrival:
    """How a parcel is carried: the distance (None: unknown), the carrier's business days
    for it, and the day it arrives."""

    distance_km: float | None
    transit_days: int
    day: date


def _arrival(
    origin: Location,
    leaves: date,
    delivery_method: str,
    destination: Coordinates | None,
    country: str,
    transit: TransitTable,
    holidays: Holidays,
) -> _Arrival | None:
    """A parcel that leaves `origin` on `leaves` by `delivery_method`, carried the method's
    transit days for the distance to `destination` (unknown: the longest band) in the
    business days of `country` (where it is delivered); None for a method without transit
    times."""
    distance = None if destination is None else haversine_km(origin.coordinates, destination)
    days = transit.transit_days(delivery_method, distance)
    if days is None:
        return None
    return _Arrival(
        distance, days, BusinessCalendar(country, holidays).add_business_days(leaves, days)
    )


# ---- the promise a fulfillment order carries --------------------------------------------------


# A ship-to-store transfer travels from the warehouse to the store as this method's parcels do.
TRANSFER_METHOD = "standard"


@dataclass(frozen=True)
class Route:
    """The route one fulfillment order takes: from its location, by its group's delivery
    method, to its group's address (`destination`: where that address is; None: unknown).
    A pickup's `pickup_store` is the store the shopper collects at: the location itself, or
    the store a warehouse ships it to (ship-to-store)."""

    location: Location
    delivery_method: str
    country_code: str
    destination: Coordinates | None
    pickup_store: Location | None = None

    @property
    def transfer_to(self) -> Location | None:
        """The store a ship-to-store fulfillment order's units travel to; None for any other."""
        store = self.pickup_store
        if self.delivery_method != PICKUP or store is None:
            return None
        return None if store.location_id == self.location.location_id else store


def promised_delivery(
    route: Route,
    transit: TransitTable,
    holidays: Holidays,
    ordered_at: datetime,
    available_on: date | None = None,
) -> date | None:
    """The day a fulfillment order routed at `ordered_at` is promised to arrive, counted as
    EstimateDelivery counts it for the same location, method and address. A backordered one
    (`available_on`: the day its supply is expected) starts processing that day at the
    earliest. Pickup at a store: the day it is ready there; shipped to the store from a
    warehouse, the day the transfer reaches the store (the warehouse's ship day plus the
    transit days of `TRANSFER_METHOD` from the warehouse to the store, in the store's
    business days). None for a method without transit times."""
    location = route.location
    country = route.country_code.upper()
    if available_on is not None:
        supply_day = datetime.combine(
            available_on, time.min, tzinfo=zoneinfo.ZoneInfo(location.schedule.timezone)
        )
        ordered_at = max(ordered_at, supply_day)
    leaves = _leaves(location, holidays, ordered_at, country)
    if route.delivery_method == PICKUP:
        store = route.transfer_to
        if store is None:
            return leaves
        arrival = _transfer_arrival(route, store, leaves, transit, holidays)
    else:
        arrival = _arrival(
            location, leaves, route.delivery_method, route.destination, country, transit, holidays
        )
    return None if arrival is None else arrival.day


def _transfer_arrival(
    route: Route, store: Location, leaves: date, transit: TransitTable, holidays: Holidays
) -> _Arrival | None:
    """A ship-to-store transfer that leaves its warehouse on `leaves`: carried as a
    `TRANSFER_METHOD` parcel to the store, in the store's business days."""
    return _arrival(
        route.location,
        leaves,
        TRANSFER_METHOD,
        store.coordinates,
        store.address.country_code.upper() or route.country_code.upper(),
        transit,
        holidays,
    )


def promised_after_transfer(
    route: Route, transit: TransitTable, holidays: Holidays, shipped_at: datetime
) -> date | None:
    """The day a ship-to-store fulfillment order whose transfer left its warehouse at
    `shipped_at` is promised at the store: the ship day (at the warehouse) plus the transit
    days of `TRANSFER_METHOD` to the store, as `promised_delivery` counts from the planned ship
    day. None for any other route, or without transit times for the method."""
    store = route.transfer_to
    if store is None:
        return None
    zone = zoneinfo.ZoneInfo(route.location.schedule.timezone)
    arrival = _transfer_arrival(route, store, shipped_at.astimezone(zone).date(), transit, holidays)
    return None if arrival is None else arrival.day


def promised_after_shipment(
    route: Route,
    transit: TransitTable,
    holidays: Holidays,
    shipped_at: datetime,
    carrier_estimate: date | None = None,
) -> date | None:
    """The day a parcel that left at `shipped_at` is promised to arrive: the carrier's own
    estimate when it gave one, otherwise the ship day (at the location) plus the method's
    transit days for the distance. None for a method without transit times."""
    if carrier_estimate is not None:
        return carrier_estimate
    location = route.location
    shipped_on = shipped_at.astimezone(zoneinfo.ZoneInfo(location.schedule.timezone)).date()
    arrival = _arrival(
        location,
        shipped_on,
        route.delivery_method,
        route.destination,
        route.country_code.upper(),
        transit,
        holidays,
    )
    return None if arrival is None else arrival.day


def _shortage(unallocated: Sequence[RoutingLine]) -> str:
    """Why a method cannot be promised: the units no location that may ship them has."""
    named = ", ".join(
        f"{line.quantity} of {limits.echo(line.sku)} ({line.order_line_id})"
        for line in unallocated[:_NAMED_SHORTAGES]
    )
    more = len(unallocated) - _NAMED_SHORTAGES
    tail = f" and {more} more items" if more > 0 else ""
    return f"not in stock at any location that can ship it: {named}{tail}"
