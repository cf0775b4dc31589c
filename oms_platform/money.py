"""Money arithmetic in integer minor units: currency exponents and exact allocation.

Standard library only; domain modules of every service use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Money:
    """An amount in minor units of `currency`: the one money value every domain shares."""

    amount_minor: int
    currency: str


# ISO 4217 minor-unit exponents for the currencies oms accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CAD": 2, "AUD": 2, "NZD": 2, "CHF": 2, "SEK": 2,
    "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "MXN": 2, "BRL": 2, "INR": 2, "CNY": 2,
    "HKD": 2, "SGD": 2, "ZAR": 2, "AED": 2, "SAR": 2, "TRY": 2, "ILS": 2,
    "JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0,
    "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3,
}  # fmt: skip


def is_known_currency(code: str) -> bool:
    """True for an ISO 4217 code oms accepts."""
    return code in CURRENCY_EXPONENTS


def exponent(code: str) -> int:
    """Digits after the decimal point in `code`'s minor unit."""
    return CURRENCY_EXPONENTS[code]


def format_minor(amount_minor: int, code: str) -> str:
    """Human form, e.g. 1999 USD -> '19.99 USD', 1500 JPY -> '1500 JPY'."""
    exp = CURRENCY_EXPONENTS.get(code, 2)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d} {code}" if exp else f"{sign}{whole} {code}"


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` minor units in proportion to `weights`, exactly (largest remainder).

    The parts always sum to `total`. Ties in remainder go to the earlier weight, so the
    result is deterministic. All-zero weights split evenly.
    """
    if not weights:
        if total:
            raise ValueError("cannot allocate a non-zero total over no weights")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative")
    basis = list(weights) if sum(weights) > 0 else [1] * len(weights)
    denominator = sum(basis)
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    floors = [magnitude * w // denominator for w in basis]
    remainders = [magnitude * w % denominator for w in basis]
    leftover = magnitude - sum(floors)
    order = sorted(range(len(basis)), key=lambda i: (-remainders[i], i))
    for i in order[:leftover]:
        floors[i] += 1
    return [sign * part for part in floors]


def share(total: int, quantity_total: int, quantity_before: int, quantity_now: int) -> int:
    """Exact share of `total` for units `quantity_before+1 .. quantity_before+quantity_now`.

    Units are priced by allocating `total` evenly over `quantity_total` units, so invoicing a
    line in several parts always adds up to the line total.
    """
    if quantity_now < 0 or quantity_before < 0 or quantity_before + quantity_now > quantity_total:
        raise ValueError("quantities out of range")
    if quantity_total == 0:
        if total:
            raise ValueError("cannot allocate a non-zero total over no weights")
        return 0
    # `allocate(total, [1] * quantity_total)` in closed form, so a line of a million units
    # costs no more than a line of one: every unit gets the floor of the even split, and the
    # remainder goes one unit each to the earliest units (equal weights tie on remainder).
    sign = -1 if total < 0 else 1
    each, remainder = divmod(abs(total), quantity_total)
    extra = min(max(remainder - quantity_before, 0), quantity_now)
    return sign * (each * quantity_now + extra)


def percent_of(amount_minor: int, basis_points: int) -> int:
    """`basis_points` (1 = 0.01%) of `amount_minor`, rounded half away from zero to the minor
    unit, in integers only: e.g. 10% (1000) of 4995 is 500."""
    if basis_points < 0:
        raise ValueError("basis points must be non-negative")
    sign = -1 if amount_minor < 0 else 1
    return sign * ((abs(amount_minor) * basis_points + 5_000) // 10_000)
