"""Servicing's rules: process exceptions, return orders and changes to orders.

Pure: validation (every violation at once), status transitions, escalation, derived return
order status, change ids and how the workflow's refusals read as errors. No I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform import limits
from oms_platform.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)

# The vocabulary of the design brief, as stored and logged (lower case).
PAYMENT = "payment"
FULFILLMENT = "fulfillment"
INVENTORY = "inventory"
FRAUD = "fraud"
CARRIER = "carrier"
INVOICING = "invoicing"
# Raised by a service whose outbox could not deliver to the order's workflow (a dead letter),
# not by the workflow: resolved by redelivering (retry) or giving up (skip) on the dead letter.
DELIVERY_FAILED = "delivery_failed"
CATEGORIES = (PAYMENT, FULFILLMENT, INVENTORY, FRAUD, CARRIER, INVOICING, DELIVERY_FAILED)

LOW = "low"
MEDIUM = "medium"
HIGH = "high"
CRITICAL = "critical"
# In escalation order: escalating moves one step right (critical stays critical).
SEVERITIES = (LOW, MEDIUM, HIGH, CRITICAL)

NEW = "new"
TRIAGED = "triaged"
PAUSED = "paused"
IGNORED = "ignored"
VOIDED = "voided"
RESOLVED = "resolved"
STATUSES = (NEW, TRIAGED, PAUSED, IGNORED, VOIDED, RESOLVED)
# Final: nothing moves an exception out of these.
CLOSED_STATUSES = (IGNORED, VOIDED, RESOLVED)
# Where an agent may move an exception by hand (resolving goes through the workflow).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    NEW: (TRIAGED, PAUSED, IGNORED, VOIDED),
    TRIAGED: (PAUSED, IGNORED, VOIDED),
    PAUSED: (TRIAGED, IGNORED, VOIDED),
    IGNORED: (),
    VOIDED: (),
    RESOLVED: (),
}
MANUAL_STATUSES = (TRIAGED, PAUSED, IGNORED, VOIDED)

RETRY = "retry"
SKIP = "skip"
CANCEL_ORDER = "cancel"
RESOLUTION_ACTIONS = (RETRY, SKIP, CANCEL_ORDER)

DEFAULT_ACTOR = "agent"
MAX_MESSAGE_LENGTH = 2000
MAX_NOTE_LENGTH = 2000
MAX_ATTACHED_TO_LENGTH = 256
MAX_STEP_INPUT_LENGTH = 16 * 1024
MAX_KEY_LENGTH = 200
MAX_ACTOR_LENGTH = 200
MAX_REASON_LENGTH = 500
MAX_SKU_LENGTH = 64
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Bumped if the page token's content changes, so old tokens are refused, not misread.
_TOKEN_VERSION = 1


# ---- process exceptions ----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordProcessException:
    """A request to raise a process exception; category and severity are "" when not set."""

    idempotency_key: str
    order_id: str
    category: str
    severity: str
    attached_to: str
    message: str
    # The failed step's input, as JSON; "" when not about one step.
    step_input: str = ""


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
    # Set when resolved: the action, the agent's note, who, when, and the order's status after.
    resolution_action: str = ""
    resolution_note: str = ""
    resolved_by: str = ""
    resolved_at: datetime | None = None
    order_status: str = ""
    escalated_at: datetime | None = None
    # The last agent's note and name on a status change.
    note: str = ""
    updated_by: str = ""
    # What the failed step was asked to do (JSON).
    step_input: str = ""


@dataclass(frozen=True)
class Resolve:
    """An agent's resolution of a process exception."""

    process_exception_id: str
    action: str
    note: str = ""
    actor: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    """An agent moving a process exception to another status by hand."""

    process_exception_id: str
    status: str
    note: str = ""
    actor: str = ""


@dataclass(frozen=True)
class Escalate:
    """The workflow's escalation of an exception left unresolved."""

    process_exception_id: str
    idempotency_key: str
    message: str


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


def idempotency_key_for(order_id: str, idempotency_key: str) -> str:
    """The stored idempotency key: scoped to the order, so callers' keys cannot collide."""
    return f"pe:{order_id}:{idempotency_key}"


def escalation_key_for(process_exception_id: str, idempotency_key: str) -> str:
    """The stored idempotency key of an escalation, scoped to the exception."""
    return f"pe-escalate:{process_exception_id}:{idempotency_key}"


def actor_of(actor: str) -> str:
    """Who did it: the given actor, or "agent" when none was given."""
    return actor.strip() or DEFAULT_ACTOR


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
    if len(request.step_input) > MAX_STEP_INPUT_LENGTH:
        violations.append(
            FieldViolation("step_input", f"must be at most {MAX_STEP_INPUT_LENGTH} characters")
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
        step_input=request.step_input,
    )


def validate_resolution(request: Resolve) -> None:
    """Raise InvalidArgument listing every rule a resolution breaks."""
    violations = _required("process_exception_id", request.process_exception_id)
    violations += _enum_violations("action", request.action, RESOLUTION_ACTIONS)
    violations += _too_long("note", request.note, MAX_NOTE_LENGTH)
    violations += _too_long("actor", request.actor, MAX_ACTOR_LENGTH)
    if violations:
        raise InvalidArgument(violations)


def validate_delivery_resolution(exception: ProcessException, action: str) -> None:
    """A delivery failure is retried (redelivered) or skipped (given up); no workflow waits on
    it, so it cannot cancel the order."""
    if exception.category == DELIVERY_FAILED and action == CANCEL_ORDER:
        raise FailedPrecondition(
            f"process exception {exception.id} is a delivery failure: resolve it with retry "
            f"(deliver again) or skip (give up on the delivery), then cancel the order"
        )


def is_resolution_replay(exception: ProcessException, action: str) -> bool:
    """True when `exception` was already resolved with `action` (answer with what is stored).

    Raises FailedPrecondition when it was resolved otherwise, ignored or voided."""
    if exception.status == RESOLVED:
        if exception.resolution_action == action:
            return True
        raise FailedPrecondition(
            f"process exception {exception.id} was already resolved with "
            f"{exception.resolution_action}"
        )
    if exception.status in CLOSED_STATUSES:
        raise FailedPrecondition(
            f"process exception {exception.id} is {exception.status}; it cannot be resolved"
        )
    return False


def resolved(
    exception: ProcessException, request: Resolve, order_status: str, now: datetime
) -> ProcessException:
    """`exception` once the order's workflow took the resolution."""
    is_resolution_replay(exception, request.action)
    return replace(
        exception,
        status=RESOLVED,
        resolution_action=request.action,
        resolution_note=request.note,
        resolved_by=actor_of(request.actor),
        resolved_at=now,
        order_status=order_status,
        updated_at=now,
        updated_by=actor_of(request.actor),
    )


def validate_status_update(request: StatusUpdate) -> None:
    """Raise InvalidArgument listing every rule a status update breaks."""
    violations = _required("process_exception_id", request.process_exception_id)
    if request.status == RESOLVED:
        violations.append(FieldViolation("status", "resolve through ResolveProcessException"))
    else:
        violations += _enum_violations("status", request.status, MANUAL_STATUSES)
    violations += _too_long("note", request.note, MAX_NOTE_LENGTH)
    violations += _too_long("actor", request.actor, MAX_ACTOR_LENGTH)
    if violations:
        raise InvalidArgument(violations)


def with_status(
    exception: ProcessException, request: StatusUpdate, now: datetime
) -> ProcessException:
    """`exception` moved to the requested status; unchanged if it is already there.

    Raises FailedPrecondition for a move the lifecycle of an exception does not allow."""
    validate_status_update(request)
    if exception.status == request.status:
        return exception
    if request.status not in TRANSITIONS[exception.status]:
        allowed = ", ".join(TRANSITIONS[exception.status]) or "nothing (it is closed)"
        raise FailedPrecondition(
            f"process exception {exception.id} is {exception.status}; it can move to {allowed}"
        )
    return replace(
        exception,
        status=request.status,
        note=request.note,
        updated_by=actor_of(request.actor),
        updated_at=now,
    )


def validate_escalation(request: Escalate) -> None:
    """Raise InvalidArgument listing every rule an escalation breaks."""
    violations = _required("process_exception_id", request.process_exception_id)
    violations += _required("idempotency_key", request.idempotency_key)
    violations += _too_long("message", request.message, MAX_MESSAGE_LENGTH)
    if violations:
        raise InvalidArgument(violations)


def escalated(exception: ProcessException, request: Escalate, now: datetime) -> ProcessException:
    """`exception` one severity level up, with the reason appended to its message.

    A closed exception (resolved, ignored, voided) is returned unchanged: the escalation
    timer may fire just as an agent resolves it, and that is not an error."""
    if exception.status in CLOSED_STATUSES:
        return exception
    level = SEVERITIES.index(exception.severity)
    severity = SEVERITIES[min(level + 1, len(SEVERITIES) - 1)]
    line = f"Escalated to {severity}" + (f": {request.message}" if request.message else "")
    message = f"{exception.message}\n{line}"
    if len(message) > MAX_MESSAGE_LENGTH:  # keep the newest words: they say why it is urgent
        message = "…" + message[-(MAX_MESSAGE_LENGTH - 1) :]
    return replace(exception, severity=severity, message=message, escalated_at=now, updated_at=now)


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
        violations += _enum_violations(f"statuses[{i}]", status, STATUSES)
    for i, category in enumerate(categories):
        violations += _enum_violations(f"categories[{i}]", category, CATEGORIES)
    for i, severity in enumerate(severities):
        violations += _enum_violations(f"severities[{i}]", severity, SEVERITIES)
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


# ---- return orders ---------------------------------------------------------------------------

CONDITIONS = ("new", "opened", "used", "damaged", "defective")

RETURN_OPEN = "open"
RETURN_PARTIALLY_RECEIVED = "partially_received"
RETURN_RECEIVED = "received"


@dataclass(frozen=True)
class Item:
    """Units of one order line."""

    order_line_id: str
    quantity: int


@dataclass(frozen=True)
class ReturnOrderLine:
    """An order line on a return order: expected, accepted and rejected units."""

    order_line_id: str
    expected: int
    accepted: int = 0
    rejected: int = 0
    reason: str = ""
    condition: str = ""
    rejection_reason: str = ""

    @property
    def received(self) -> int:
        return self.accepted + self.rejected

    @property
    def outstanding(self) -> int:
        return self.expected - self.received


@dataclass(frozen=True)
class ReturnOrder:
    """A return order (RMA): units of an order expected back."""

    id: str
    order_id: str
    reason: str
    lines: tuple[ReturnOrderLine, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def status(self) -> str:
        """Derived from the lines: open, partially received or received."""
        if all(line.outstanding == 0 for line in self.lines):
            return RETURN_RECEIVED
        if any(line.received for line in self.lines):
            return RETURN_PARTIALLY_RECEIVED
        return RETURN_OPEN


@dataclass(frozen=True)
class NewReturnOrder:
    """The workflow opening a return order."""

    order_id: str
    idempotency_key: str
    return_order_id: str
    reason: str
    lines: tuple[Item, ...]


@dataclass(frozen=True)
class Receipt:
    """Units that came back for a return order: accepted and rejected by inspection."""

    order_id: str
    idempotency_key: str
    return_order_id: str
    accepted: tuple[Item, ...]
    rejected: tuple[Item, ...]
    reason: str


@dataclass(frozen=True)
class LineNote:
    """What servicing knows about a returned line beyond its quantities."""

    order_line_id: str
    reason: str = ""
    condition: str = ""
    rejection_reason: str = ""


def return_order_key_for(order_id: str, idempotency_key: str) -> str:
    """The stored idempotency key of a CreateReturnOrder call."""
    return f"rma:{order_id}:{idempotency_key}"


def receipt_key_for(order_id: str, idempotency_key: str) -> str:
    """The stored idempotency key of a RecordReturnReceipt call."""
    return f"receipt:{order_id}:{idempotency_key}"


def validate_new_return_order(request: NewReturnOrder) -> None:
    """Raise InvalidArgument listing every rule `request` breaks."""
    violations = _required("order_id", request.order_id)
    violations += _required("idempotency_key", request.idempotency_key)
    violations += _required("return_order_id", request.return_order_id)
    violations += _too_long("reason", request.reason, MAX_REASON_LENGTH)
    if not request.lines:
        violations.append(FieldViolation("lines", "at least one line is expected back"))
    violations += _item_violations("lines", request.lines)
    if violations:
        raise InvalidArgument(violations)


def new_return_order(request: NewReturnOrder, now: datetime) -> ReturnOrder:
    """A return order with nothing received yet."""
    validate_new_return_order(request)
    return ReturnOrder(
        id=request.return_order_id,
        order_id=request.order_id,
        reason=request.reason,
        lines=tuple(ReturnOrderLine(i.order_line_id, i.quantity) for i in request.lines),
        created_at=now,
        updated_at=now,
    )


def validate_receipt(request: Receipt) -> None:
    """Raise InvalidArgument listing every rule `request` breaks."""
    violations = _required("order_id", request.order_id)
    violations += _required("idempotency_key", request.idempotency_key)
    violations += _required("return_order_id", request.return_order_id)
    violations += _too_long("reason", request.reason, MAX_REASON_LENGTH)
    if not request.accepted and not request.rejected:
        violations.append(FieldViolation("accepted", "nothing received: give accepted or rejected"))
    violations += _item_violations("accepted", request.accepted)
    violations += _item_violations("rejected", request.rejected)
    if violations:
        raise InvalidArgument(violations)


def received(rma: ReturnOrder, receipt: Receipt, now: datetime) -> ReturnOrder:
    """`rma` after `receipt`; FailedPrecondition if more comes back than is outstanding."""
    validate_receipt(receipt)
    if receipt.order_id != rma.order_id:
        raise FailedPrecondition(f"return order {rma.id} belongs to another order")
    lines = {line.order_line_id: line for line in rma.lines}
    for field, items in (("accepted", receipt.accepted), ("rejected", receipt.rejected)):
        for i, item in enumerate(items):
            line = lines.get(item.order_line_id)
            if line is None:
                raise FailedPrecondition(
                    f"{field}[{i}]: line {item.order_line_id} is not on return order {rma.id}"
                )
            if item.quantity > line.outstanding:
                raise FailedPrecondition(
                    f"{field}[{i}]: return order {rma.id} expects {line.outstanding} more "
                    f"unit(s) of line {item.order_line_id}, not {item.quantity}"
                )
            if field == "accepted":
                line = replace(line, accepted=line.accepted + item.quantity)
            else:
                line = replace(
                    line,
                    rejected=line.rejected + item.quantity,
                    rejection_reason=receipt.reason or line.rejection_reason,
                )
            lines[item.order_line_id] = line
    return replace(
        rma, lines=tuple(lines[line.order_line_id] for line in rma.lines), updated_at=now
    )


def with_line_notes(rma: ReturnOrder, notes: Sequence[LineNote], now: datetime) -> ReturnOrder:
    """`rma` with the reasons and conditions servicing was told (a note's empty fields keep
    what is there); notes for lines not on the return order are ignored."""
    by_line = {note.order_line_id: note for note in notes}
    lines = []
    for line in rma.lines:
        note = by_line.get(line.order_line_id)
        if note is not None:
            line = replace(
                line,
                reason=note.reason or line.reason,
                condition=note.condition or line.condition,
                rejection_reason=note.rejection_reason or line.rejection_reason,
            )
        lines.append(line)
    if tuple(lines) == rma.lines:
        return rma
    return replace(rma, lines=tuple(lines), updated_at=now)


# ---- changes to orders ----------------------------------------------------------------------

CANCEL = "cancel"
RETURN = "return"
RECEIVE_RETURN = "receive_return"
EXCHANGE = "exchange"
RESHIP = "reship"
APPEASE = "appease"
ADD_ITEMS = "add_items"
CHANGE_KINDS = (CANCEL, RETURN, RECEIVE_RETURN, EXCHANGE, RESHIP, APPEASE, ADD_ITEMS)
# Kinds whose outcome can be computed without changing anything.
PREVIEWABLE = (CANCEL, RETURN, EXCHANGE, RESHIP, APPEASE, ADD_ITEMS)

PENDING = "pending"
COMPLETED = "completed"
REFUSED = "refused"
FAILED = "failed"

LOST = "lost"
DAMAGED = "damaged"
RESHIP_REASONS = (LOST, DAMAGED)

# The workflow's preview answers with a summary starting with this when it would refuse.
REFUSED_PREFIX = "refused: "

_CHANGE_NAMESPACE = uuid.UUID("4c0f3a56-2f57-4d1a-9a8e-8f0e2f4b7c11")


@dataclass(frozen=True)
class NewLine:
    """A line to add before fulfillment; money in minor units of the order's currency.
    delivery_group_id "" means the order's first delivery group."""

    sku: str
    quantity: int
    unit_price_minor: int
    tax_minor: int = 0
    delivery_group_id: str = ""
    name: str = ""


@dataclass(frozen=True)
class LineIncrease:
    """More units of an order line (at its unit price), with the tax on them."""

    order_line_id: str
    quantity: int
    tax_minor: int = 0


@dataclass(frozen=True)
class ChangeOrder:
    """A change an agent asks for, as servicing validates, records and sends it.

    kind decides which fields matter: cancel (lines; none = everything not shipped), return
    (lines, refund_without_return, return_fee_minor, line_notes), receive_return
    (return_order_id, lines accepted, rejected_lines and their notes), exchange (lines with
    replacement_skus and replacement_unit_prices_minor, one each), reship (lines; reason lost
    or damaged, note), appease (at most one line, amount_minor or percent_basis_points),
    add_items (new_lines and increases, before anything shipped).
    """

    kind: str
    order_id: str
    idempotency_key: str = ""
    actor: str = ""
    reason: str = ""
    note: str = ""
    lines: tuple[Item, ...] = ()
    rejected_lines: tuple[Item, ...] = ()
    amount_minor: int = 0
    percent_basis_points: int = 0
    refund_without_return: bool = False
    return_fee_minor: int = 0
    return_order_id: str = ""
    replacement_skus: tuple[str, ...] = ()
    replacement_unit_prices_minor: tuple[int, ...] = ()
    # Per-line reasons and conditions servicing keeps on the return order, index-aligned
    # with `lines` and `rejected_lines` (empty when none were given).
    line_notes: tuple[LineNote, ...] = ()
    rejected_notes: tuple[LineNote, ...] = ()
    new_lines: tuple[NewLine, ...] = ()
    increases: tuple[LineIncrease, ...] = ()


@dataclass(frozen=True)
class ChangeOutcome:
    """What a change did (or would do); money in minor units of the order's currency."""

    summary: str
    lines: tuple[Item, ...] = ()
    credit_memo_id: str = ""
    credited_minor: int = 0
    refunded_minor: int = 0
    released_minor: int = 0
    charged_minor: int = 0
    fulfillment_order_ids: tuple[str, ...] = ()
    return_order_id: str = ""
    order_status: str = ""
    # Added items: newly authorized for them, and the order's grand total afterwards.
    authorized_minor: int = 0
    grand_total_minor: int = 0


@dataclass(frozen=True)
class Change:
    """A recorded change: what was asked, by whom and why, and how it ended."""

    change_id: str
    order_id: str
    kind: str
    status: str
    idempotency_key: str
    actor: str
    reason: str
    requested_lines: tuple[Item, ...]
    created_at: datetime
    outcome: ChangeOutcome | None = None
    refusal_code: str = ""
    refusal_message: str = ""
    completed_at: datetime | None = None


def change_id_for(order_id: str, kind: str, idempotency_key: str) -> str:
    """The change's id, derived from what identifies it, so a retried Submit finds it again
    (and sends the same Temporal Update id). A key reused for another kind is another change."""
    return "chg-" + str(uuid.uuid5(_CHANGE_NAMESPACE, f"{order_id}\x1f{kind}\x1f{idempotency_key}"))


def validate_change(order: ChangeOrder, *, preview: bool = False) -> None:
    """Raise InvalidArgument listing every rule `order` breaks (field names as in the API).

    A preview needs no idempotency key, actor or reason."""
    if order.kind not in CHANGE_KINDS:
        raise InvalidArgument([FieldViolation("kind", f"must be one of {', '.join(CHANGE_KINDS)}")])
    if preview and order.kind not in PREVIEWABLE:
        raise InvalidArgument([FieldViolation("kind", f"{order.kind} cannot be previewed")])
    violations: list[FieldViolation] = []
    if order.kind == RECEIVE_RETURN:
        violations += _required("return_order_id", order.return_order_id)
    else:
        violations += _required("order_id", order.order_id)
    if not preview:
        violations += _required("idempotency_key", order.idempotency_key)
        violations += _too_long("idempotency_key", order.idempotency_key, MAX_KEY_LENGTH)
        violations += _too_long("actor", order.actor, MAX_ACTOR_LENGTH)
        if order.kind == RESHIP:
            violations += _enum_violations("reason", order.reason, RESHIP_REASONS)
        elif order.kind != RECEIVE_RETURN:
            violations += _required("reason", order.reason)
        violations += _too_long("reason", order.reason, MAX_REASON_LENGTH)
        violations += _too_long("note", order.note, MAX_NOTE_LENGTH)
    violations += _KIND_RULES[order.kind](order)
    if violations:
        raise InvalidArgument(violations)


def _cancel_rules(order: ChangeOrder) -> list[FieldViolation]:
    return _item_violations("lines", order.lines)  # no lines: the whole order


def _return_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations = _at_least_one("lines", order.lines, "return")
    violations += _item_violations("lines", order.lines)
    violations += _note_violations("lines", order.line_notes)
    if order.return_fee_minor < 0:
        violations.append(FieldViolation("return_fee_minor", "must not be negative"))
    return violations


def _receive_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not order.lines and not order.rejected_lines:
        violations.append(FieldViolation("accepted", "nothing received: give accepted or rejected"))
    violations += _item_violations("accepted", order.lines)
    violations += _item_violations("rejected", order.rejected_lines)
    violations += _note_violations("accepted", order.line_notes)
    violations += _note_violations("rejected", order.rejected_notes)
    for i in range(len(order.rejected_lines)):
        note = order.rejected_notes[i] if i < len(order.rejected_notes) else None
        if note is None or not note.rejection_reason.strip():
            violations.append(FieldViolation(f"rejected[{i}].reason", "is required"))
        else:
            violations += _too_long(
                f"rejected[{i}].reason", note.rejection_reason, MAX_REASON_LENGTH
            )
    return violations


def _exchange_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations = _at_least_one("lines", order.lines, "exchange")
    violations += _item_violations("lines", order.lines)
    violations += _note_violations("lines", order.line_notes)
    for i in range(len(order.lines)):
        sku = order.replacement_skus[i] if i < len(order.replacement_skus) else ""
        price = (
            order.replacement_unit_prices_minor[i]
            if i < len(order.replacement_unit_prices_minor)
            else 0
        )
        violations += _required(f"lines[{i}].replacement_sku", sku)
        violations += _too_long(f"lines[{i}].replacement_sku", sku, MAX_SKU_LENGTH)
        if price < 0:
            violations.append(
                FieldViolation(f"lines[{i}].replacement_unit_price_minor", "must not be negative")
            )
        violations += limits.line_amount_violations(
            f"lines[{i}].replacement_unit_price_minor", order.lines[i].quantity, price
        )
    return violations


def _reship_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations = _at_least_one("lines", order.lines, "ship again")
    return violations + _item_violations("lines", order.lines)


def _appease_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(order.lines) > 1:
        violations.append(FieldViolation("order_line_id", "one line, or none for the order"))
    if order.amount_minor and order.percent_basis_points:
        violations.append(
            FieldViolation("goodwill", "give amount_minor or percent_basis_points, not both")
        )
    elif order.amount_minor < 0:
        violations.append(FieldViolation("amount_minor", "must be > 0"))
    elif order.percent_basis_points < 0 or order.percent_basis_points > 10_000:
        violations.append(
            FieldViolation("percent_basis_points", "must be between 1 and 10000 (100%)")
        )
    elif not order.amount_minor and not order.percent_basis_points:
        violations.append(
            FieldViolation("goodwill", "give amount_minor or percent_basis_points (> 0)")
        )
    return violations


def _add_items_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not order.new_lines and not order.increases:
        violations.append(FieldViolation("new_lines", "give at least one new line or increase"))
    for i, line in enumerate(order.new_lines):
        violations += _required(f"new_lines[{i}].sku", line.sku)
        violations += _too_long(f"new_lines[{i}].sku", line.sku, MAX_SKU_LENGTH)
        violations += _too_long(f"new_lines[{i}].name", line.name, MAX_REASON_LENGTH)
        if line.quantity <= 0:
            violations.append(FieldViolation(f"new_lines[{i}].quantity", "must be > 0"))
        if line.unit_price_minor < 0:
            violations.append(
                FieldViolation(f"new_lines[{i}].unit_price_minor", "must not be negative")
            )
        if line.tax_minor < 0:
            violations.append(FieldViolation(f"new_lines[{i}].tax_minor", "must not be negative"))
        violations += limits.line_amount_violations(
            f"new_lines[{i}].unit_price_minor", line.quantity, line.unit_price_minor
        )
    seen: set[str] = set()
    for i, increase in enumerate(order.increases):
        if not increase.order_line_id.strip():
            violations.append(FieldViolation(f"increases[{i}].order_line_id", "is required"))
        elif increase.order_line_id in seen:
            violations.append(
                FieldViolation(f"increases[{i}].order_line_id", "appears more than once")
            )
        seen.add(increase.order_line_id)
        if increase.quantity <= 0:
            violations.append(
                FieldViolation(
                    f"increases[{i}].quantity",
                    "must be > 0 (lowering a quantity is a cancel: use SubmitCancel)",
                )
            )
        if increase.tax_minor < 0:
            violations.append(FieldViolation(f"increases[{i}].tax_minor", "must not be negative"))
    return violations


_KIND_RULES = {
    CANCEL: _cancel_rules,
    RETURN: _return_rules,
    RECEIVE_RETURN: _receive_rules,
    EXCHANGE: _exchange_rules,
    RESHIP: _reship_rules,
    APPEASE: _appease_rules,
    ADD_ITEMS: _add_items_rules,
}


def workflow_reason(order: ChangeOrder) -> str:
    """The reason the order's workflow records on the timeline."""
    if order.kind == RESHIP:
        return f"parcel {order.reason}" + (f": {order.note}" if order.note else "")
    if order.kind == RECEIVE_RETURN:
        rejections = sorted(
            {n.rejection_reason for n in order.rejected_notes if n.rejection_reason}
        )
        return "; ".join([r for r in [order.note, *rejections] if r])
    return order.reason


def new_change(order: ChangeOrder, change_id: str, now: datetime) -> Change:
    """A change as first recorded: pending until the workflow answers."""
    return Change(
        change_id=change_id,
        order_id=order.order_id,
        kind=order.kind,
        status=PENDING,
        idempotency_key=order.idempotency_key,
        actor=actor_of(order.actor),
        reason=workflow_reason(order),
        requested_lines=order.lines
        + order.rejected_lines
        + tuple(Item(i.order_line_id, i.quantity) for i in order.increases),
        created_at=now,
    )


def completed(change: Change, outcome: ChangeOutcome, now: datetime) -> Change:
    """`change` with the workflow's answer."""
    return replace(
        change,
        status=COMPLETED,
        outcome=outcome,
        refusal_code="",
        refusal_message="",
        completed_at=now,
    )


def refused(change: Change, error: DomainError, now: datetime) -> Change:
    """`change` refused by the workflow (nothing changed); a retry may be answered otherwise."""
    return replace(
        change,
        status=REFUSED,
        refusal_code=status_name(error),
        refusal_message=error.message,
        completed_at=now,
    )


def failed(change: Change, message: str, now: datetime) -> Change:
    """`change` accepted by the workflow but not finished (a step failed for good)."""
    return replace(
        change, status=FAILED, refusal_code="ABORTED", refusal_message=message, completed_at=now
    )


def status_name(error: DomainError) -> str:
    """The gRPC status name a domain error is answered with."""
    if isinstance(error, InvalidArgument):
        return "INVALID_ARGUMENT"
    if isinstance(error, NotFound):
        return "NOT_FOUND"
    if isinstance(error, AlreadyExists):
        return "ALREADY_EXISTS"
    return "FAILED_PRECONDITION"


_FIELD_MESSAGE = re.compile(
    r"^(?P<field>[a-z_][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z_][a-z0-9_]*)*): (?P<rest>.+)$", re.S
)


def violation_from_message(message: str) -> FieldViolation:
    """A workflow refusal such as "lines[0].quantity: must be > 0" as a field violation
    (the field it names, or "request" when it names none)."""
    match = _FIELD_MESSAGE.match(message)
    if match is None:
        return FieldViolation("request", message)
    return FieldViolation(match["field"], match["rest"])


def refusal(code: str, message: str) -> DomainError | None:
    """The domain error for a workflow's refusal (an ApplicationError type that is a gRPC
    status name); None when `code` is not a refusal (the change failed instead)."""
    if code == "INVALID_ARGUMENT":
        return InvalidArgument([violation_from_message(message)])
    if code == "FAILED_PRECONDITION":
        return FailedPrecondition(message)
    if code == "NOT_FOUND":
        return NotFound(message)
    if code == "ALREADY_EXISTS":
        return AlreadyExists("change", message)
    return None


def preview_refusal(summary: str, code: str = "") -> DomainError | None:
    """The error a preview answers with when the workflow says it would refuse; None if not.

    The workflow names the status (`code`); a preview from a lifecycle that does not is read
    from the message: one naming a field of the request ("lines[0].order_line_id: no line
    ...", "lines: ...") is INVALID_ARGUMENT, anything about the order's state ("lines[0]: only
    1 unit(s) ...", "return window closed on ...") is FAILED_PRECONDITION."""
    if not summary.startswith(REFUSED_PREFIX):
        return None
    message = summary.removeprefix(REFUSED_PREFIX)
    match = _FIELD_MESSAGE.match(message)
    if message.startswith("give exactly one of"):
        return InvalidArgument([FieldViolation("goodwill", message)])
    if code:
        return refusal(code, message) or FailedPrecondition(message)
    if match is not None and ("." in match["field"] or "[" not in match["field"]):
        return InvalidArgument([FieldViolation(match["field"], match["rest"])])
    return FailedPrecondition(message)


# ---- shared validation -----------------------------------------------------------------------


def _required(name: str, value: str) -> list[FieldViolation]:
    return [] if value.strip() else [FieldViolation(name, "is required")]


def _too_long(name: str, value: str, limit: int) -> list[FieldViolation]:
    return (
        [FieldViolation(name, f"must be at most {limit} characters")] if len(value) > limit else []
    )


def _at_least_one(name: str, items: Sequence[Item], what: str) -> list[FieldViolation]:
    return [] if items else [FieldViolation(name, f"at least one line to {what}")]


def _item_violations(name: str, items: Sequence[Item]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not item.order_line_id.strip():
            violations.append(FieldViolation(f"{name}[{i}].order_line_id", "is required"))
        elif item.order_line_id in seen:
            violations.append(
                FieldViolation(f"{name}[{i}].order_line_id", "appears more than once")
            )
        seen.add(item.order_line_id)
        if item.quantity <= 0:
            violations.append(FieldViolation(f"{name}[{i}].quantity", "must be > 0"))
    return violations


def _note_violations(name: str, notes: Sequence[LineNote]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for i, note in enumerate(notes):
        violations += _too_long(f"{name}[{i}].reason", note.reason, MAX_REASON_LENGTH)
        violations += _condition_violations(f"{name}[{i}]", note)
    return violations


def _condition_violations(prefix: str, note: LineNote) -> list[FieldViolation]:
    if not note.condition or note.condition in CONDITIONS:
        return []
    return [FieldViolation(f"{prefix}.condition", f"must be one of {', '.join(CONDITIONS)}")]


def _enum_violations(name: str, value: str, allowed: tuple[str, ...]) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(name, "must be set")]
    if value not in allowed:
        return [FieldViolation(name, f"must be one of {', '.join(allowed)}")]
    return []
