"""Dead letters at the edge: the OutboxService a service with an outbox serves, and the report
that turns a new dead letter into a process exception in servicing.

An agent never needs this module's RPCs: servicing resolves a DELIVERY_FAILED exception by
calling RedeliverDeadLetter or DiscardDeadLetter on the owning service as itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from oms.outbox.v1 import outbox_pb2 as pb
from oms.outbox.v1 import outbox_pb2_grpc
from oms.servicing.v1 import servicing_pb2 as spb

from oms_platform import auth, grpcutil, outbox
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.wire import timestamp_from_datetime

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_NOTE_LENGTH = 500
# servicing's RecordProcessException answers within this, or the report is tried again later.
REPORT_TIMEOUT_SECONDS = 10.0

STATUS_TO_PB: dict[str, pb.DeadLetterStatus.ValueType] = {
    outbox.OPEN: pb.DEAD_LETTER_STATUS_OPEN,
    outbox.REDELIVERED: pb.DEAD_LETTER_STATUS_REDELIVERED,
    outbox.DISCARDED: pb.DEAD_LETTER_STATUS_DISCARDED,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}

# What the agent reads about each kind of refusal (by Temporal, or capture for event rows).
KIND_IN_WORDS = {
    outbox.INVALID_ARGUMENT: "it was refused as invalid",
    outbox.FAILED_PRECONDITION: "it was refused in the receiver's current state",
    outbox.NOT_FOUND: "capture does not know the order",
    outbox.PAYLOAD_TOO_LARGE: "its payload is over the receiver's size limit",
    outbox.ENCODE_ERROR: "its payload could not be encoded",
    outbox.UNEXPECTED: "delivering it failed unexpectedly",
}


def attached_to(schema: str, dead_letter_id: int) -> str:
    """How a DELIVERY_FAILED process exception names its dead letter."""
    return f"dead_letter:{schema}:{dead_letter_id}"


def parse_attached_to(value: str) -> tuple[str, int] | None:
    """(service, dead letter id) from `attached_to`, or None when it names no dead letter."""
    prefix, _, rest = value.partition(":")
    service, _, number = rest.partition(":")
    if prefix != "dead_letter" or not service or not number.isdigit():
        return None
    return service, int(number)


def dead_letter_to_pb(letter: outbox.DeadLetter) -> pb.DeadLetter:
    """The wire form of a dead letter."""
    return pb.DeadLetter(
        dead_letter_id=letter.id,
        service=letter.schema,
        kind=letter.kind,
        workflow_id=letter.workflow_id,
        name=letter.name,
        error=letter.error,
        error_kind=letter.error_kind,
        attempts=letter.attempts,
        times=letter.times,
        status=STATUS_TO_PB[letter.status],
        created_at=timestamp_from_datetime(letter.created_at),
        dead_lettered_at=timestamp_from_datetime(letter.dead_lettered_at),
        payload_bytes=letter.payload_bytes,
        waiting=letter.waiting,
        settled_by=letter.settled_by,
        settled_at=timestamp_from_datetime(letter.settled_at),
        note=letter.note,
    )


def _check_note(note: str) -> None:
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidArgument(
            [FieldViolation("note", f"must be at most {MAX_NOTE_LENGTH} characters")]
        )


class OutboxServicer(outbox_pb2_grpc.OutboxServiceServicer):
    """OutboxService over one schema's outbox."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._schema = schema

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        violations = []
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            violations.append(FieldViolation("page_size", f"must be 0 to {MAX_PAGE_SIZE}"))
        if request.before_id < 0:
            violations.append(FieldViolation("before_id", "must not be negative"))
        unknown = [s for s in request.statuses if s not in STATUS_FROM_PB]
        if unknown:
            violations.append(FieldViolation("statuses", f"unknown status {unknown[0]}"))
        if violations:
            raise InvalidArgument(violations)
        letters = await outbox.list_dead_letters(
            self._pool,
            self._schema,
            tuple(STATUS_FROM_PB[s] for s in request.statuses),
            request.before_id,
            request.page_size or DEFAULT_PAGE_SIZE,
        )
        return pb.ListDeadLettersResponse(dead_letters=[dead_letter_to_pb(d) for d in letters])

    async def RedeliverDeadLetter(
        self, request: pb.RedeliverDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeliverDeadLetterResponse:
        _check_note(request.note)
        letter = await outbox.redeliver(
            self._pool, self._schema, request.dead_letter_id, auth.actor(), request.note
        )
        return pb.RedeliverDeadLetterResponse(dead_letter=dead_letter_to_pb(letter))

    async def DiscardDeadLetter(
        self, request: pb.DiscardDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> pb.DiscardDeadLetterResponse:
        _check_note(request.note)
        letter = await outbox.discard(
            self._pool, self._schema, request.dead_letter_id, auth.actor(), request.note
        )
        return pb.DiscardDeadLetterResponse(dead_letter=dead_letter_to_pb(letter))


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OutboxService"].full_name


def registration(pool: asyncpg.Pool, schema: str) -> grpcutil.Registration:
    """OutboxService for `schema`'s outbox, to add to a service's registrations (with
    SERVICE_NAME in its service names)."""
    return (outbox_pb2_grpc.add_OutboxServiceServicer_to_server, OutboxServicer(pool, schema))


def process_exception_reporter(
    servicing: Any, order_id_of: Callable[[str], str | None]
) -> Callable[[outbox.DeadLetter], Awaitable[None]]:
    """Raises a DELIVERY_FAILED process exception on the order of each new dead letter, through
    servicing's RecordProcessException as the calling service (idempotent per dead-lettering,
    so a report repeated after a crash records one exception). `order_id_of` maps a workflow id
    to its order id (None: not an order's workflow; nothing is raised)."""

    async def report(letter: outbox.DeadLetter) -> None:
        order_id = order_id_of(letter.workflow_id)
        if order_id is None:
            return
        what = {
            outbox.START: "start the order's lifecycle",
            outbox.EVENT: f"write the event {letter.name!r} to the order's event log",
        }.get(letter.kind, f"deliver the event {letter.name!r} to the order's lifecycle")
        message = (
            f"{letter.schema} could not {what}: {KIND_IN_WORDS.get(letter.error_kind, '')} "
            f"after {letter.attempts} attempts ({letter.error}). It waits in {letter.schema}'s "
            f"dead letters (id {letter.id}), with {letter.waiting} later events for the order "
            f"behind it. Fix the cause, then resolve with retry to deliver it again, or skip "
            f"to give up on it."
        )
        await servicing.RecordProcessException(
            spb.RecordProcessExceptionRequest(
                idempotency_key=f"dead_letter:{letter.schema}:{letter.id}:{letter.times}",
                order_id=order_id,
                category=spb.PROCESS_EXCEPTION_CATEGORY_DELIVERY_FAILED,
                severity=spb.PROCESS_EXCEPTION_SEVERITY_HIGH,
                attached_to=attached_to(letter.schema, letter.id),
                message=message[:2000],
            ),
            timeout=REPORT_TIMEOUT_SECONDS,
        )

    return report
