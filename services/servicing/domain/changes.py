"""Changes to orders — cancel, return, receive a return, exchange, reship, appease, add items
— as servicing validates, records and sends them to the order's workflow, and how they end
(completed with an outcome, refused, failed).
"""

from __future__ import annotations

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
from oms_platform.postal import PostalAddress, address_violations
from services.servicing.domain.common import (
    MAX_ACTOR_LENGTH,
    MAX_NOTE_LENGTH,
    MAX_REASON_LENGTH,
    Item,
    actor_of,
    enum_violations,
    item_violations,
    required,
    too_long,
)
from services.servicing.domain.return_orders import CONDITIONS, LineNote

MAX_KEY_LENGTH = 200
MAX_SKU_LENGTH = 64

CANCEL = "cancel"
RETURN = "return"
RECEIVE_RETURN = "receive_return"
EXCHANGE = "exchange"
RESHIP = "reship"
APPEASE = "appease"
ADD_ITEMS = "add_items"
ADDRESS_CHANGE = "address_change"
CHANGE_KINDS = (
    CANCEL, RETURN, RECEIVE_RETURN, EXCHANGE, RESHIP, APPEASE, ADD_ITEMS, ADDRESS_CHANGE,
)  # fmt: skip
# Kinds whose outcome can be computed without changing anything.
PREVIEWABLE = (CANCEL, RETURN, EXCHANGE, RESHIP, APPEASE, ADD_ITEMS, ADDRESS_CHANGE)

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
    add_items (new_lines and increases, before anything shipped), address_change
    (delivery_group_id and address, before any unit of the group shipped).
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
    delivery_group_id: str = ""
    address: PostalAddress | None = None


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
    # Address change: whether the group's units moved, and where they ship from afterwards.
    rerouted: bool = False
    location_ids: tuple[str, ...] = ()


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
        violations += required("return_order_id", order.return_order_id)
    else:
        violations += required("order_id", order.order_id)
    if not preview:
        violations += required("idempotency_key", order.idempotency_key)
        violations += too_long("idempotency_key", order.idempotency_key, MAX_KEY_LENGTH)
        violations += too_long("actor", order.actor, MAX_ACTOR_LENGTH)
        if order.kind == RESHIP:
            violations += enum_violations("reason", order.reason, RESHIP_REASONS)
        elif order.kind != RECEIVE_RETURN:
            violations += required("reason", order.reason)
        violations += too_long("reason", order.reason, MAX_REASON_LENGTH)
        violations += too_long("note", order.note, MAX_NOTE_LENGTH)
    violations += _KIND_RULES[order.kind](order)
    if violations:
        raise InvalidArgument(violations)


def _cancel_rules(order: ChangeOrder) -> list[FieldViolation]:
    return item_violations("lines", order.lines)  # no lines: the whole order


def _return_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations = _at_least_one("lines", order.lines, "return")
    violations += item_violations("lines", order.lines)
    violations += _note_violations("lines", order.line_notes)
    if order.return_fee_minor < 0:
        violations.append(FieldViolation("return_fee_minor", "must not be negative"))
    return violations


def _receive_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not order.lines and not order.rejected_lines:
        violations.append(FieldViolation("accepted", "nothing received: give accepted or rejected"))
    violations += item_violations("accepted", order.lines)
    violations += item_violations("rejected", order.rejected_lines)
    violations += _note_violations("accepted", order.line_notes)
    violations += _note_violations("rejected", order.rejected_notes)
    for i in range(len(order.rejected_lines)):
        note = order.rejected_notes[i] if i < len(order.rejected_notes) else None
        if note is None or not note.rejection_reason.strip():
            violations.append(FieldViolation(f"rejected[{i}].reason", "is required"))
        else:
            violations += too_long(
                f"rejected[{i}].reason", note.rejection_reason, MAX_REASON_LENGTH
            )
    return violations


def _exchange_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations = _at_least_one("lines", order.lines, "exchange")
    violations += item_violations("lines", order.lines)
    violations += _note_violations("lines", order.line_notes)
    for i in range(len(order.lines)):
        sku = order.replacement_skus[i] if i < len(order.replacement_skus) else ""
        price = (
            order.replacement_unit_prices_minor[i]
            if i < len(order.replacement_unit_prices_minor)
            else 0
        )
        violations += required(f"lines[{i}].replacement_sku", sku)
        violations += too_long(f"lines[{i}].replacement_sku", sku, MAX_SKU_LENGTH)
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
    return violations + item_violations("lines", order.lines)


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
        violations += required(f"new_lines[{i}].sku", line.sku)
        violations += too_long(f"new_lines[{i}].sku", line.sku, MAX_SKU_LENGTH)
        violations += too_long(f"new_lines[{i}].name", line.name, MAX_REASON_LENGTH)
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


def _address_change_rules(order: ChangeOrder) -> list[FieldViolation]:
    violations = required("delivery_group_id", order.delivery_group_id)
    if order.address is None:
        return [*violations, FieldViolation("address", "is required")]
    return violations + address_violations("address", order.address)


_KIND_RULES = {
    CANCEL: _cancel_rules,
    RETURN: _return_rules,
    RECEIVE_RETURN: _receive_rules,
    EXCHANGE: _exchange_rules,
    RESHIP: _reship_rules,
    APPEASE: _appease_rules,
    ADD_ITEMS: _add_items_rules,
    ADDRESS_CHANGE: _address_change_rules,
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


def rerouted_preview(
    allowed: ChangeOutcome,
    rerouted: bool,
    from_location_ids: Sequence[str],
    to_location_ids: Sequence[str],
) -> ChangeOutcome:
    """An address change's preview as the workflow `allowed` it, with where routing would
    ship the group's units from at the new address (`rerouted`: they would leave
    `from_location_ids`)."""
    verdict = (
        f"; its units would move from {', '.join(from_location_ids)} to "
        f"{', '.join(to_location_ids)}"
        if rerouted
        else f"; it would still ship from {', '.join(to_location_ids)}"
    )
    return replace(
        allowed,
        summary=allowed.summary + verdict,
        rerouted=rerouted,
        location_ids=tuple(to_location_ids),
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


def _at_least_one(name: str, items: Sequence[Item], what: str) -> list[FieldViolation]:
    return [] if items else [FieldViolation(name, f"at least one line to {what}")]


def _note_violations(name: str, notes: Sequence[LineNote]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for i, note in enumerate(notes):
        violations += too_long(f"{name}[{i}].reason", note.reason, MAX_REASON_LENGTH)
        violations += _condition_violations(f"{name}[{i}]", note)
    return violations


def _condition_violations(prefix: str, note: LineNote) -> list[FieldViolation]:
    if not note.condition or note.condition in CONDITIONS:
        return []
    return [FieldViolation(f"{prefix}.condition", f"must be one of {', '.join(CONDITIONS)}")]
