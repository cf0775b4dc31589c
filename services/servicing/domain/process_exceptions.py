"""Process exceptions: failures that need a human — raising, resolving, moving by hand and
escalating one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.servicing.domain.common import (
    MAX_ACTOR_LENGTH,
    MAX_NOTE_LENGTH,
    actor_of,
    enum_violations,
    required,
    too_long,
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

MAX_MESSAGE_LENGTH = 2000
MAX_ATTACHED_TO_LENGTH = 256
MAX_STEP_INPUT_LENGTH = 16 * 1024


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


def idempotency_key_for(order_id: str, idempotency_key: str) -> str:
    """The stored idempotency key: scoped to the order, so callers' keys cannot collide."""
    return f"pe:{order_id}:{idempotency_key}"


def escalation_key_for(process_exception_id: str, idempotency_key: str) -> str:
    """The stored idempotency key of an escalation, scoped to the exception."""
    return f"pe-escalate:{process_exception_id}:{idempotency_key}"


def validate_record(request: RecordProcessException) -> None:
    """Raise InvalidArgument listing every rule `request` breaks."""
    violations: list[FieldViolation] = []
    if not request.order_id.strip():
        violations.append(FieldViolation("order_id", "is required"))
    if not request.idempotency_key.strip():
        violations.append(FieldViolation("idempotency_key", "is required"))
    violations += enum_violations("category", request.category, CATEGORIES)
    violations += enum_violations("severity", request.severity, SEVERITIES)
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
    violations = required("process_exception_id", request.process_exception_id)
    violations += enum_violations("action", request.action, RESOLUTION_ACTIONS)
    violations += too_long("note", request.note, MAX_NOTE_LENGTH)
    violations += too_long("actor", request.actor, MAX_ACTOR_LENGTH)
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
    violations = required("process_exception_id", request.process_exception_id)
    if request.status == RESOLVED:
        violations.append(FieldViolation("status", "resolve through ResolveProcessException"))
    else:
        violations += enum_violations("status", request.status, MANUAL_STATUSES)
    violations += too_long("note", request.note, MAX_NOTE_LENGTH)
    violations += too_long("actor", request.actor, MAX_ACTOR_LENGTH)
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
    violations = required("process_exception_id", request.process_exception_id)
    violations += required("idempotency_key", request.idempotency_key)
    violations += too_long("message", request.message, MAX_MESSAGE_LENGTH)
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
