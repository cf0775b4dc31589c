"""Fulfillment domain: the value types and helpers its subdomains share — where a place is,
how far apart two places are, when a location works, what a store accepts shipped to it, and
how a count reads in a sentence."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import time

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class Coordinates:
    """A point on Earth in degrees."""

    latitude: float
    longitude: float


def haversine_km(a: Coordinates, b: Coordinates) -> float:
    """Great-circle distance between two points, in kilometres."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


# What a location that never said otherwise works by: orders before 14:00 UTC start the same
# business day and ship one business day later.
DEFAULT_TIMEZONE = "UTC"
DEFAULT_CUTOFF = time(14, 0)
DEFAULT_PROCESSING_DAYS = 1


@dataclass(frozen=True)
class ProcessingSchedule:
    """When a location works an order: its IANA time zone, the local time of day orders must
    come before to start processing that business day, and business days until it ships."""

    timezone: str = DEFAULT_TIMEZONE
    cutoff: time = DEFAULT_CUTOFF
    processing_days: int = DEFAULT_PROCESSING_DAYS


@dataclass(frozen=True)
class ShipToStore:
    """A store's ship-to-store setting: whether it accepts pickup orders it has not got the
    units for, shipped to it from a warehouse; from any warehouse when `from_location_ids` is
    empty, else only from those."""

    accepted: bool = False
    from_location_ids: tuple[str, ...] = ()

    def ships_from(self, location_id: str) -> bool:
        """Whether a warehouse may ship to the store (given that it accepts)."""
        return not self.from_location_ids or location_id in self.from_location_ids


def normalize_postal_code(postal_code: str) -> str:
    """Upper case without spaces or dashes, the form postal prefixes are matched against."""
    return "".join(ch for ch in postal_code.upper() if ch.isalnum())


def plural(n: int, word: str) -> str:
    """`n word`, with an s unless n is one (routing decisions and refusals are read by people)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
