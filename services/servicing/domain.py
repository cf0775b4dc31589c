"""Process exceptions: failures that need a human, raised by the order workflow.

Pure: validation of what may be recorded, the listing query and its keyset cursor. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from oms_platform.errors import FieldViolation, InvalidArgument

# The vocabulary of the design brief, as stored and logged (lower case).
PAYMENT = "payment"
FULFILLMENT = "fulfillment"
INVENTORY = "inventory"
FRAUD = "fraud"
CARRIER = "carrier"
INVOICING = "invoicing"
CATEGORIES = (PAYMENT, FULFILLMENT, INVENTORY, FRAUD, CARRIER, INVOICING)

LOW = "low"
MEDIUM = "medium"
HIGH = "high"
SEVERITIES = (LOW, MEDIUM, HIGH)

NEW = "new"
TRIAGED = "triaged"
PAUSED = "paused"
IGNORED = "ignored"
VOIDED = "voided"
RESOLVED = "resolved"
STATUSES = (NEW, TRIAGED, PAUSED, IGNORED, VOIDED, RESOLVED)

MAX_MESSAGE_LENGTH = 2000
MAX_ATTACHED_TO_LENGTH = 256
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Bumped if the page token's content changes, so old tokens are refused, not misread.
_TOKEN_VERSION = 1


@dataclass(frozen=True)
class RecordProcessException:
    """A request to raise a process exception; category and severity are "" when not set."""

    idempotency_key: str
    order_id: str
    category: str
    severity: str
    attached_to: str
    message: str


@dataclass(frozen=True)
class ProcessException:
    """A failure that needs a human, as stored."""

    id: str
    order_id: str
    category: str
    severity: str
    status: str
    attached_to: str
    message: str
    created_at: datetime
    updated_at: datetime


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


@dataclass(frozen=True)
class Page:
    """One page of exceptions, newest first, and the cursor of the next page if any."""

    process_exceptions: tuple[ProcessException, ...]
    next_cursor: Cursor | None


def idempotency_key_for(order_id: str, idempotency_key: str) -> str:
    """The stored idempotency key: scoped to the order, so callers' keys cannot collide."""
    return f"pe:{order_id}:{idempotency_key}"


def validate_record(request: RecordProcessException) -> None:
    """Raise InvalidArgument listing every rule `request` breaks."""
    violations: list[FieldViolation] = []
    if not request.order_id.strip():
        violations.append(FieldViolation("order_id", "is required"))
    if not request.idempotency_key.strip():
        violations.append(FieldViolation("idempotency_key", "is required"))
    violations += _enum_violations("category", request.category, CATEGORIES)
    violations += _enum_violations("severity", request.severity, SEVERITIES)
    if not request.message.strip():
        violations.append(FieldViolation("message", "is required"))
    elif len(request.message) > MAX_MESSAGE_LENGTH:
        violations.append(
            FieldViolation("message", f"must be at most {MAX_MESSAGE_LENGTH} characters")
        )
    if len(request.attached_to) > MAX_ATTACHED_TO_LENGTH:
        violations.append(
            FieldViolation("attached_to", f"must be at most {MAX_ATTACHED_TO_LENGTH} characters")
        )
    if violations:
        raise InvalidArgument(violations)


def new_process_exception(
    request: RecordProcessException, exception_id: str, now: datetime
) -> ProcessException:
    """A freshly raised exception (status new) from a valid request."""
    validate_record(request)
    return ProcessException(
        id=exception_id,
        order_id=request.order_id,
        category=request.category,
        severity=request.severity,
        status=NEW,
        attached_to=request.attached_to,
        message=request.message,
        created_at=now,
        updated_at=now,
    )


def list_query(
    order_id: str,
    statuses: Sequence[str],
    categories: Sequence[str],
    page_size: int,
    page_token: str,
) -> ListQuery:
    """Validate a listing request; raise InvalidArgument listing every bad field.

    page_size 0 means the default; above the maximum it is lowered to the maximum.
    """
    violations: list[FieldViolation] = []
    for i, status in enumerate(statuses):
        violations += _enum_violations(f"statuses[{i}]", status, STATUSES)
    for i, category in enumerate(categories):
        violations += _enum_violations(f"categories[{i}]", category, CATEGORIES)
    if page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    status_filter = tuple(sorted(set(statuses)))
    category_filter = tuple(sorted(set(categories)))
    after: Cursor | None = None
    if page_token:
        try:
            after = decode_page_token(
                page_token, _filter_fingerprint(order_id, status_filter, category_filter)
            )
        except ValueError as error:
            violations.append(FieldViolation("page_token", str(error)))
    if violations:
        raise InvalidArgument(violations)
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return ListQuery(order_id, status_filter, category_filter, size, after)


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
    fingerprint = _filter_fingerprint(query.order_id, query.statuses, query.categories)
    return encode_page_token(page.next_cursor, fingerprint)


def encode_page_token(cursor: Cursor, fingerprint: str) -> str:
    """An opaque token for `cursor`, bound to the filters it was issued for."""
    body = {
        "v": _TOKEN_VERSION,
        "t": cursor.created_at.isoformat(),
        "i": cursor.id,
        "f": fingerprint,
    }
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str) -> Cursor:
    """The cursor in `token`; ValueError (with the reason) if it is not one we issued for
    these filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("is not a valid page token") from None
    if not isinstance(body, dict) or body.get("v") != _TOKEN_VERSION:
        raise ValueError("is not a valid page token")
    created, exception_id, issued_for = body.get("t"), body.get("i"), body.get("f")
    if not (isinstance(created, str) and isinstance(exception_id, str) and exception_id):
        raise ValueError("is not a valid page token")
    if issued_for != fingerprint:
        raise ValueError("was issued for different filters")
    try:
        created_at = datetime.fromisoformat(created)
    except ValueError:
        raise ValueError("is not a valid page token") from None
    if created_at.tzinfo is None:
        raise ValueError("is not a valid page token")
    return Cursor(created_at, exception_id)


def _filter_fingerprint(order_id: str, statuses: Sequence[str], categories: Sequence[str]) -> str:
    # A token is only meaningful for the filters it was issued under (AIP-158).
    canonical = json.dumps([order_id, sorted(set(statuses)), sorted(set(categories))])
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _enum_violations(name: str, value: str, allowed: tuple[str, ...]) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(name, "must be set")]
    if value not in allowed:
        return [FieldViolation(name, f"must be one of {', '.join(allowed)}")]
    return []
