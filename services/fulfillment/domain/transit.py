"""Fulfillment domain, upkeep of the transit-time table: the rules every edit keeps, so that
EstimateDelivery always reads a table it can use.

A delivery method's bands are named by where they start (`from_km`); each runs to the next
band's start and the last has no end. So the bands of one method can neither overlap nor leave
a gap: setting a start the method has changes that band's days, a new start splits the band it
falls in, and deleting a band lets the one before it run on. On top of that:

- a method is a lower-case name (letters, digits, `-` and `_`, starting with a letter, at most
  64 characters), never `pickup`: the shopper collects it at a store, no carrier carries it;
- a method the table has not got is added only on purpose (`new_method`), with its band from
  0 km; that band is deleted last, so every method covers every distance from 0 km;
- a band starts from 0 to 20,000 km (no two places on Earth are farther apart along its
  surface) and takes 0 to 60 business days (the table's own check);
- a method has at most 50 bands, and at most 20 methods have transit times: an estimate that
  names no method estimates every one, and one request may name at most 20.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.fulfillment.domain.promise import TransitBand, TransitTable
from services.fulfillment.domain.routing import PICKUP

MAX_METHOD_LENGTH = 64
MAX_FROM_KM = 20_000
MAX_TRANSIT_DAYS = 60
MAX_BANDS_PER_METHOD = 50
MAX_TRANSIT_METHODS = limits.MAX_DELIVERY_METHODS

_METHOD_NAME = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True)
class TransitRow:
    """A band as upkeep shows it: where it starts and where it ends (None: the method's last
    band, which has no end)."""

    band: TransitBand
    to_km: int | None


def transit_rows(table: TransitTable, delivery_method: str = "") -> list[TransitRow]:
    """Every band (or one method's) by method and start, each with where it ends."""
    methods = [delivery_method] if delivery_method else table.methods()
    rows: list[TransitRow] = []
    for method in methods:
        bands = table.bands_of(method)
        ends: list[int | None] = [b.from_km for b in bands[1:]]
        rows += [TransitRow(band, end) for band, end in zip(bands, [*ends, None], strict=False)]
    return rows


def method_violations(delivery_method: str) -> list[FieldViolation]:
    """Why `delivery_method` cannot name a carrier's delivery method."""
    field = "delivery_method"
    if not delivery_method:
        return [FieldViolation(field, "is required")]
    if len(delivery_method) > MAX_METHOD_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_METHOD_LENGTH} characters")]
    if not _METHOD_NAME.fullmatch(delivery_method):
        return [
            FieldViolation(
                field,
                "must be lower-case letters, digits, '-' or '_', starting with a letter "
                "(e.g. 'two_day')",
            )
        ]
    if delivery_method == PICKUP:
        return [FieldViolation(field, "pickup is collected at a store: no carrier carries it")]
    return []


def validate_transit_band(band: TransitBand) -> None:
    """A carrier method's name, a start from 0 to 20,000 km and 0 to 60 business days;
    InvalidArgument naming every field that breaks its rule."""
    violations = method_violations(band.delivery_method)
    if not 0 <= band.from_km <= MAX_FROM_KM:
        violations.append(FieldViolation("from_km", f"must be from 0 to {MAX_FROM_KM:,} km"))
    if not 0 <= band.transit_days <= MAX_TRANSIT_DAYS:
        violations.append(
            FieldViolation("transit_days", f"must be from 0 to {MAX_TRANSIT_DAYS} business days")
        )
    if violations:
        raise InvalidArgument(violations)


def check_transit_band(band: TransitBand, table: TransitTable, new_method: bool) -> bool:
    """Whether setting `band` (already validated) fits the table: a known method, or a new one
    asked for on purpose starting at 0 km; within the caps on bands and methods. True when the
    band is new (its start is not one of the method's)."""
    method = band.delivery_method
    bands = table.bands_of(method)
    if not bands:
        known = ", ".join(table.methods()) or "none"
        if not new_method:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "delivery_method",
                        f"unknown delivery method {limits.echo(method)} (known: {known}); "
                        "set new_method to add it",
                    )
                ]
            )
        if band.from_km != 0:
            raise InvalidArgument(
                [FieldViolation("from_km", "a new delivery method's first band starts at 0 km")]
            )
        if len(table.methods()) >= MAX_TRANSIT_METHODS:
            raise FailedPrecondition(
                f"delivery_method: at most {MAX_TRANSIT_METHODS} delivery methods may have "
                f"transit times, and {known} have: delete one first"
            )
        return True
    if any(b.from_km == band.from_km for b in bands):
        return False
    if len(bands) >= MAX_BANDS_PER_METHOD:
        raise FailedPrecondition(
            f"from_km: delivery method {limits.echo(method)} has {len(bands)} bands, the most a "
            "method may have: change one or delete one first"
        )
    return True


def check_transit_band_removal(
    table: TransitTable, delivery_method: str, from_km: int
) -> TransitBand | None:
    """The band deleting (method, from_km) removes; None when the method has no band starting
    there. A method's 0 km band goes last: FailedPrecondition while it has others."""
    bands = table.bands_of(delivery_method)
    found = next((b for b in bands if b.from_km == from_km), None)
    if found is not None and from_km == 0 and len(bands) > 1:
        raise FailedPrecondition(
            f"from_km: the 0 km band of delivery method {limits.echo(delivery_method)} is "
            f"deleted last: delete its bands from {_starts(bands[1:])} km first"
        )
    return found


def _starts(bands: Sequence[TransitBand]) -> str:
    starts = [f"{b.from_km:,}" for b in bands]
    return starts[0] if len(starts) == 1 else f"{', '.join(starts[:-1])} and {starts[-1]}"
