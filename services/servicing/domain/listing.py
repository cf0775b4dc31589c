"""Listing process exceptions: filters, pages newest first, and opaque page tokens bound to
the filters they were issued for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from oms_platform import limits
from oms_platform.errors import FieldViolation, InvalidArgument
from services.servicing.domain.common import enum_violations
from services.servicing.domain.process_exceptions import (
    CATEGORIES,
    SEVERITIES,
    STATUSES,
    ProcessException,
)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Bumped if the page token's content changes, so old tokens are refused, not misread.
_TOKEN_VERSION = 1


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last exception's (created_at, id), listing newest first."""

    created_at: datetime
    id: str


@dataclass(frozen=True)
class ListQuery:
    """A validated listing request: filters (empty matches everything), size and cursor."""

    order_id: str
    statuses: tuple[str, ...]
    categories: tuple[str, ...]
    page_size: int
    after: Cursor | None
    severities: tuple[str, ...] = ()
    created_before: datetime | None = None


@dataclass(frozen=True)
class Page:
    """One page of exceptions, newest first, and the cursor of the next page if any."""

    process_exceptions: tuple[ProcessException, ...]
    next_cursor: Cursor | None


def list_query(
    order_id: str,
    statuses: Sequence[str],
    categories: Sequence[str],
    page_size: int,
    page_token: str,
    *,
    severities: Sequence[str] = (),
    created_before: datetime | None = None,
) -> ListQuery:
    """Validate a listing request; raise InvalidArgument listing every bad field.

    page_size 0 means the default; above the maximum it is lowered to the maximum.
    """
    violations: list[FieldViolation] = []
    for i, status in enumerate(statuses):
        violations += enum_violations(f"statuses[{i}]", status, STATUSES)
    for i, category in enumerate(categories):
        violations += enum_violations(f"categories[{i}]", category, CATEGORIES)
    for i, severity in enumerate(severities):
        violations += enum_violations(f"severities[{i}]", severity, SEVERITIES)
    if page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    if created_before is not None and created_before.tzinfo is None:
        violations.append(FieldViolation("created_before", "must carry a time zone"))
    status_filter = tuple(sorted(set(statuses)))
    category_filter = tuple(sorted(set(categories)))
    severity_filter = tuple(sorted(set(severities)))
    after: Cursor | None = None
    if page_token:
        fingerprint = _filter_fingerprint(
            order_id, status_filter, category_filter, severity_filter, created_before
        )
        try:
            after = decode_page_token(page_token, fingerprint)
        except ValueError as error:
            violations.append(FieldViolation("page_token", str(error)))
    if violations:
        raise InvalidArgument(violations)
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return ListQuery(
        order_id, status_filter, category_filter, size, after, severity_filter, created_before
    )


def page_of(query: ListQuery, rows: Sequence[ProcessException]) -> Page:
    """The page for `query` from up to page_size + 1 rows fetched newest first.

    The extra row only tells whether another page exists; it is not returned.
    """
    items = tuple(rows[: query.page_size])
    if len(rows) <= query.page_size or not items:
        return Page(items, None)
    last = items[-1]
    return Page(items, Cursor(last.created_at, last.id))


def next_page_token(query: ListQuery, page: Page) -> str:
    """The opaque token of the page after `page`; "" at the end."""
    if page.next_cursor is None:
        return ""
    fingerprint = _filter_fingerprint(
        query.order_id, query.statuses, query.categories, query.severities, query.created_before
    )
    return encode_page_token(page.next_cursor, fingerprint)


def encode_page_token(cursor: Cursor, fingerprint: str) -> str:
    """An opaque token for `cursor`, bound to the filters it was issued for."""
    return limits.encode_page_token(
        {"v": _TOKEN_VERSION, "t": cursor.created_at.isoformat(), "i": cursor.id, "f": fingerprint}
    )


def decode_page_token(token: str, fingerprint: str) -> Cursor:
    """The cursor in `token`; ValueError (with the reason) if it is not one we issued for
    these filters."""
    try:
        body = limits.decode_page_token(token)
        if body.get("v") != _TOKEN_VERSION:
            raise ValueError("is not a valid page token")
        created_at = limits.token_time(body, "t")
        exception_id = limits.token_id(body, "i")
    except InvalidArgument:
        raise ValueError("is not a valid page token") from None
    if body.get("f") != fingerprint:
        raise ValueError("was issued for different filters")
    return Cursor(created_at, exception_id)


def _filter_fingerprint(
    order_id: str,
    statuses: Sequence[str],
    categories: Sequence[str],
    severities: Sequence[str] = (),
    created_before: datetime | None = None,
) -> str:
    # A token is only meaningful for the filters it was issued under (AIP-158).
    filters: list[object] = [order_id, sorted(set(statuses)), sorted(set(categories))]
    if severities or created_before is not None:  # tokens issued before these filters existed
        filters += [sorted(set(severities)), created_before.isoformat() if created_before else ""]
    canonical = json.dumps(filters)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
