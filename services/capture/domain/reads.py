"""Capture's domain, reading orders: page sizes and ListOrders' filter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from oms_platform.errors import FieldViolation, InvalidArgument
from services.capture.domain.submission import MAX_REF_LENGTH

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    """The page size to use: the default when unset, at most MAX_PAGE_SIZE."""
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class OrderFilter:
    """ListOrders' filters; empty values match everything. Created range is [from, to)."""

    statuses: tuple[str, ...] = ()
    channel: str = ""
    shopper_id: str = ""
    created_from: datetime | None = None
    created_to: datetime | None = None
    sku: str = ""
    # Only late orders: not fulfilled nor canceled, promised for a day before this one.
    late_before: date | None = None


def check_filter(f: OrderFilter) -> None:
    """Raise InvalidArgument when the filter cannot match anything sensible."""
    violations: list[FieldViolation] = []
    if f.created_from is not None and f.created_to is not None and f.created_to <= f.created_from:
        violations.append(FieldViolation("created_to", "must be after created_from"))
    if len(f.sku) > MAX_REF_LENGTH:
        violations.append(FieldViolation("sku", f"must be at most {MAX_REF_LENGTH} characters"))
    if violations:
        raise InvalidArgument(violations)
