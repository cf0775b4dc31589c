"""The postal address as a pure value, shared by every service's domain.

Standard library only, like `money`: domain modules import it. Fields in the order capture has
always constructed them positionally (the required four first); every field defaults to empty
because fulfillment keeps a blank address when a shopper's data was erased.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PostalAddress:
    """A postal address; which fields are required is each use case's rule, not the type's."""

    line1: str = ""
    city: str = ""
    postal_code: str = ""
    country_code: str = ""
    line2: str = ""
    region: str = ""
