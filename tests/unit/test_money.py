"""oms_platform.money: exact allocation, per-unit shares and formatting."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oms_platform import money

EXPONENTS = {0: "JPY", 2: "USD", 3: "BHD"}


@st.composite
def totals_in_a_currency(draw: st.DrawFn) -> int:
    """An amount of up to a million major units in a currency of exponent 0, 2 or 3."""
    exp = draw(st.sampled_from(sorted(EXPONENTS)))
    assert money.exponent(EXPONENTS[exp]) == exp
    return draw(st.integers(min_value=-(10 ** (6 + exp)), max_value=10 ** (6 + exp)))


@given(
    total=totals_in_a_currency(), weights=st.lists(st.integers(0, 10_000), min_size=1, max_size=30)
)
def test_allocated_parts_always_sum_to_the_total(total: int, weights: list[int]) -> None:
    parts = money.allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total


@given(
    total=totals_in_a_currency(), weights=st.lists(st.integers(0, 10_000), min_size=1, max_size=30)
)
def test_equal_weights_get_parts_at_most_one_unit_apart(total: int, weights: list[int]) -> None:
    parts = money.allocate(total, weights)
    for weight in set(weights):
        same = [p for p, w in zip(parts, weights, strict=True) if w == weight]
        assert max(same) - min(same) <= 1


@given(total=totals_in_a_currency(), count=st.integers(1, 50))
def test_an_even_split_differs_by_at_most_one_unit(total: int, count: int) -> None:
    parts = money.allocate(total, [1] * count)
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1


@given(
    total=totals_in_a_currency(), weights=st.lists(st.integers(0, 10_000), min_size=1, max_size=30)
)
def test_parts_have_the_sign_of_the_total(total: int, weights: list[int]) -> None:
    parts = money.allocate(total, weights)
    assert all(p >= 0 for p in parts) if total >= 0 else all(p <= 0 for p in parts)


@given(
    total=totals_in_a_currency(),
    cuts=st.lists(st.integers(1, 7), min_size=1, max_size=6),
)
def test_shares_of_consecutive_shipments_add_up_to_the_line_total(
    total: int, cuts: list[int]
) -> None:
    quantity = sum(cuts)
    before = 0
    shares = []
    for now in cuts:
        shares.append(money.share(total, quantity, before, now))
        before += now
    assert sum(shares) == total


def test_allocate_gives_the_remainder_to_the_earliest_largest_remainders() -> None:
    assert money.allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert money.allocate(-100, [1, 1, 1]) == [-34, -33, -33]
    assert money.allocate(5, [0, 0]) == [3, 2]


def test_allocate_refuses_negative_weights_and_nonzero_totals_over_nothing() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        money.allocate(10, [1, -1])
    with pytest.raises(ValueError, match="no weights"):
        money.allocate(10, [])
    assert money.allocate(0, []) == []


def test_share_refuses_quantities_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        money.share(1000, 3, 2, 2)
    with pytest.raises(ValueError, match="out of range"):
        money.share(1000, 3, -1, 1)


def _share_by_listing_units(total: int, quantity_total: int, before: int, now: int) -> int:
    """The per-unit definition `share` had before it was a closed form: list every unit."""
    if now < 0 or before < 0 or before + now > quantity_total:
        raise ValueError("quantities out of range")
    units = money.allocate(total, [1] * quantity_total)
    return sum(units[before : before + now])


@st.composite
def unit_ranges(draw: st.DrawFn) -> tuple[int, int, int, int]:
    total = draw(st.integers(-(10**12), 10**12) | st.integers(-50, 50))
    quantity_total = draw(st.integers(0, 300))
    before = draw(st.integers(0, quantity_total))
    now = draw(st.integers(0, quantity_total - before))
    return total, quantity_total, before, now


@settings(max_examples=2_000)
@given(case=unit_ranges())
def test_share_equals_the_sum_of_the_listed_units_shares(
    case: tuple[int, int, int, int],
) -> None:
    total, quantity_total, before, now = case
    try:
        expected = _share_by_listing_units(total, quantity_total, before, now)
    except ValueError:
        with pytest.raises(ValueError):
            money.share(total, quantity_total, before, now)
        return
    assert money.share(total, quantity_total, before, now) == expected


def test_share_over_no_units_is_zero_of_zero_and_refuses_anything_else() -> None:
    assert money.share(0, 0, 0, 0) == 0
    with pytest.raises(ValueError, match="no weights"):
        money.share(5, 0, 0, 0)


def test_share_of_a_million_units_is_immediate() -> None:
    # Listing a billion units used to take gigabytes; the closed form takes no time at all.
    total = 10**12 + 7
    parts = [money.share(total, 10**9, before, 10**8) for before in range(0, 10**9, 10**8)]
    assert sum(parts) == total
    assert parts[0] == 10**8 * 1_000 + 7 and parts[1] == 10**8 * 1_000


def test_format_minor_uses_the_currency_exponent() -> None:
    assert money.format_minor(1999, "USD") == "19.99 USD"
    assert money.format_minor(1500, "JPY") == "1500 JPY"
    assert money.format_minor(1234, "BHD") == "1.234 BHD"
    assert money.format_minor(-5, "USD") == "-0.05 USD"


def test_known_currencies_are_iso_codes_oms_accepts() -> None:
    assert money.is_known_currency("EUR")
    assert not money.is_known_currency("usd")
    assert not money.is_known_currency("XYZ")


@given(
    total=totals_in_a_currency().filter(lambda t: t >= 0),
    basis_points=st.integers(0, 10_000),
)
def test_a_percentage_is_within_half_a_minor_unit_and_never_more_than_the_whole(
    total: int, basis_points: int
) -> None:
    part = money.percent_of(total, basis_points)
    assert 0 <= part <= total
    assert abs(Fraction(part) - Fraction(total * basis_points, 10_000)) <= Fraction(1, 2)
    assert money.percent_of(total, 10_000) == total
    assert money.percent_of(-total, basis_points) == -part


def test_a_percentage_rounds_half_away_from_zero() -> None:
    assert money.percent_of(4_995, 1_000) == 500
    assert money.percent_of(4_994, 1_000) == 499
    assert money.percent_of(-4_995, 1_000) == -500
    with pytest.raises(ValueError, match="non-negative"):
        money.percent_of(100, -1)
