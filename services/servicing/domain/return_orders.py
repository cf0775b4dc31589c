"""Return orders (RMAs): units of an order expected back, what came back, and the reasons
and conditions servicing keeps per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.servicing.domain.common import (
    MAX_REASON_LENGTH,
    Item,
    item_violations,
    required,
    too_long,
)

CONDITIONS = ("new", "opened", "used", "damaged", "defective")

RETURN_OPEN = "open"
RETURN_PARTIALLY_RECEIVED = "partially_received"
RETURN_RECEIVED = "received"


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
    violations = required("order_id", request.order_id)
    violations += required("idempotency_key", request.idempotency_key)
    violations += required("return_order_id", request.return_order_id)
    violations += too_long("reason", request.reason, MAX_REASON_LENGTH)
    if not request.lines:
        violations.append(FieldViolation("lines", "at least one line is expected back"))
    violations += item_violations("lines", request.lines)
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
    violations = required("order_id", request.order_id)
    violations += required("idempotency_key", request.idempotency_key)
    violations += required("return_order_id", request.return_order_id)
    violations += too_long("reason", request.reason, MAX_REASON_LENGTH)
    if not request.accepted and not request.rejected:
        violations.append(FieldViolation("accepted", "nothing received: give accepted or rejected"))
    violations += item_violations("accepted", request.accepted)
    violations += item_violations("rejected", request.rejected)
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
