"""Upkeep of the transit-time table (fulfillment's domain/transit.py), without a database: which
edits the rules let through, and what the bands then promise."""

from __future__ import annotations

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument
from services.fulfillment import domain
from services.fulfillment.domain.transit import MAX_BANDS_PER_METHOD, MAX_TRANSIT_METHODS

Band = domain.TransitBand

SEEDED = domain.TransitTable(
    (
        Band("standard", 0, 2),
        Band("standard", 300, 3),
        Band("standard", 1000, 4),
        Band("express", 0, 1),
        Band("express", 300, 1),
    )
)


def violations(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def test_each_band_ends_where_the_next_of_its_method_starts_and_the_last_has_no_end() -> None:
    rows = [(r.band.delivery_method, r.band.from_km, r.to_km) for r in domain.transit_rows(SEEDED)]
    assert rows == [
        ("express", 0, 300),
        ("express", 300, None),
        ("standard", 0, 300),
        ("standard", 300, 1000),
        ("standard", 1000, None),
    ]
    assert [r.band.from_km for r in domain.transit_rows(SEEDED, "express")] == [0, 300]
    assert domain.transit_rows(SEEDED, "pigeon") == []


def test_a_new_start_splits_the_band_it_falls_in_and_an_existing_start_changes_its_days() -> None:
    assert domain.check_transit_band(Band("standard", 150, 5), SEEDED, new_method=False)
    assert not domain.check_transit_band(Band("standard", 300, 6), SEEDED, new_method=False)

    split = domain.TransitTable((*SEEDED.bands, Band("standard", 150, 5)))
    assert split.transit_days("standard", 149.9) == 2
    assert split.transit_days("standard", 150) == 5
    assert split.transit_days("standard", 299) == 5
    assert split.transit_days("standard", 300) == 3


def test_malformed_bands_are_refused_naming_every_field_and_its_rule() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_transit_band(Band("Two Day", -1, 61))
    assert violations(raised) == {
        "delivery_method": "must be lower-case letters, digits, '-' or '_', starting with a "
        "letter (e.g. 'two_day')",
        "from_km": "must be from 0 to 20,000 km",
        "transit_days": "must be from 0 to 60 business days",
    }
    with pytest.raises(InvalidArgument) as far:
        domain.validate_transit_band(Band("", 20_001, 0))
    assert violations(far) == {
        "delivery_method": "is required",
        "from_km": "must be from 0 to 20,000 km",
    }
    with pytest.raises(InvalidArgument) as pickup:
        domain.validate_transit_band(Band("pickup", 0, 0))
    assert violations(pickup) == {
        "delivery_method": "pickup is collected at a store: no carrier carries it"
    }
    domain.validate_transit_band(Band("two_day", 20_000, 0))


def test_a_method_the_table_has_not_got_is_added_only_on_purpose_from_0_km() -> None:
    with pytest.raises(InvalidArgument) as typo:
        domain.check_transit_band(Band("standrad", 0, 2), SEEDED, new_method=False)
    assert violations(typo) == {
        "delivery_method": "unknown delivery method 'standrad' (known: express, standard); "
        "set new_method to add it"
    }
    with pytest.raises(InvalidArgument) as not_from_zero:
        domain.check_transit_band(Band("two_day", 300, 2), SEEDED, new_method=True)
    assert violations(not_from_zero) == {
        "from_km": "a new delivery method's first band starts at 0 km"
    }
    assert domain.check_transit_band(Band("two_day", 0, 2), SEEDED, new_method=True)


def test_bands_per_method_and_methods_are_capped() -> None:
    full = domain.TransitTable(tuple(Band("standard", km, 2) for km in range(MAX_BANDS_PER_METHOD)))
    with pytest.raises(FailedPrecondition, match="has 50 bands, the most a method may have"):
        domain.check_transit_band(Band("standard", 900, 3), full, new_method=False)
    # Changing a band of a full method adds none.
    assert not domain.check_transit_band(Band("standard", 7, 3), full, new_method=False)

    many = domain.TransitTable(tuple(Band(f"m{i}", 0, 1) for i in range(MAX_TRANSIT_METHODS)))
    with pytest.raises(FailedPrecondition, match="at most 20 delivery methods"):
        domain.check_transit_band(Band("one_more", 0, 1), many, new_method=True)


def test_the_0_km_band_is_deleted_last_and_an_absent_band_deletes_nothing() -> None:
    with pytest.raises(FailedPrecondition) as first:
        domain.check_transit_band_removal(SEEDED, "standard", 0)
    assert first.value.message == (
        "from_km: the 0 km band of delivery method 'standard' is deleted last: delete its "
        "bands from 300 and 1,000 km first"
    )
    assert domain.check_transit_band_removal(SEEDED, "standard", 300) == Band("standard", 300, 3)
    assert domain.check_transit_band_removal(SEEDED, "standard", 250) is None
    assert domain.check_transit_band_removal(SEEDED, "pigeon", 0) is None
    alone = domain.TransitTable((Band("overnight", 0, 1),))
    assert domain.check_transit_band_removal(alone, "overnight", 0) == Band("overnight", 0, 1)
