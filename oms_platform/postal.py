"""The postal address as a pure value, shared by every service's domain.

Standard library (and the platform's limits and errors) only, like `money`: domain modules
import it. Fields in the order capture has
always constructed them positionally (the required four first); every field defaults to empty
because fulfillment keeps a blank address when a shopper's data was erased.
"""

from __future__ import annotations

from dataclasses import dataclass

from oms_platform import limits
from oms_platform.errors import FieldViolation

# A postal code is short everywhere; the other lines are one line of text each.
MAX_POSTAL_CODE_LENGTH = 32


@dataclass(frozen=True)
class PostalAddress:
    """A postal address; which fields are required is each use case's rule, not the type's."""

    line1: str = ""
    city: str = ""
    postal_code: str = ""
    country_code: str = ""
    line2: str = ""
    region: str = ""


def address_violations(path: str, address: PostalAddress) -> list[FieldViolation]:
    """Every rule a ship-to or billing address breaks, named `<path>.<field>`: line1, city,
    postal code and a known country required, each line within one line of text."""
    out: list[FieldViolation] = []

    def required(name: str, value: str, max_length: int) -> None:
        if not value.strip():
            out.append(FieldViolation(f"{path}.{name}", "is required"))
        else:
            limit(name, value, max_length)

    def limit(name: str, value: str, max_length: int) -> None:
        if len(value) > max_length:
            out.append(FieldViolation(f"{path}.{name}", f"must be at most {max_length} characters"))

    required("line1", address.line1, limits.MAX_NAME_LENGTH)
    limit("line2", address.line2, limits.MAX_NAME_LENGTH)
    required("city", address.city, limits.MAX_NAME_LENGTH)
    limit("region", address.region, limits.MAX_NAME_LENGTH)
    required("postal_code", address.postal_code, MAX_POSTAL_CODE_LENGTH)
    if not address.country_code:
        out.append(FieldViolation(f"{path}.country_code", "is required"))
    else:
        out += limits.country_code_violations(f"{path}.country_code", address.country_code)
    return out
