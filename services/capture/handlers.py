"""Capture's use cases that span several store calls: submitting and importing orders.

Each opens its unit of work on the pool, asks the domain, and stores what it decides. An
idempotency key keeps the id of its order (protobuf bytes, written in the same statement as
the order); a repeated submission is answered with that order as it is now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg
import grpc
from oms.capture.v1 import capture_pb2 as pb
from oms.events.v1 import events_pb2

from oms_platform import limits
from oms_platform.errors import AlreadyExists, DomainError, FieldViolation, InvalidArgument
from oms_platform.grpcutil import refusal_for
from services.capture import convert, domain, store
from services.capture.events import written
from services.capture.store import events as event_log
from workflows.types import WORKFLOW_NAME, order_workflow_id

Clock = Callable[[], datetime]

# Imported orders are written this many at a time, each batch in one transaction.
IMPORT_BATCH_SIZE = 500
# ImportOrders takes at most this many orders per stream; the ones past it are refused by name.
MAX_IMPORT_ORDERS = 100_000


def utc_now() -> datetime:
    """The capture clock."""
    return datetime.now(UTC)


def capture_key(submission: domain.OrderSubmission) -> str:
    """Where SubmitOrder and ImportOrders keep a channel's idempotency key."""
    return f"submit:{submission.channel}:{submission.idempotency_key}"


def _key_reused(submission: domain.OrderSubmission) -> AlreadyExists:
    return AlreadyExists(
        "idempotency_key",
        f"idempotency key {limits.echo(submission.idempotency_key)} was already used with a "
        f"different order",
    )


def _start(order: domain.Order) -> tuple[str, str, dict[str, object]]:
    return order_workflow_id(order.order_id), WORKFLOW_NAME, convert.lifecycle_payload(order)


# ---- SubmitOrder ----------------------------------------------------------------------------


async def submit_order(
    pool: asyncpg.Pool,
    submission: domain.OrderSubmission,
    fingerprint: bytes,
    policy: domain.FraudPolicy,
    clock: Clock = utc_now,
) -> pb.SubmitOrderResponse:
    """Validate, screen and store an order, or answer a repeated submission.

    One round trip: a single statement matches the shopper and stores everything. With the
    velocity rule on, the shopper is first matched, locked and their recent orders counted,
    all in one transaction with that statement.

    The one handler that answers in protobuf: SubmitOrder's idempotency key, its stored
    answer and the order go in that single statement (the front door's speed depends on it),
    so the answer is encoded here rather than at the edge; a replay returns those bytes.
    """
    domain.check_submission(submission)  # before any I/O: nothing is stored for a bad order
    key = capture_key(submission)
    async with pool.acquire() as conn:
        for attempt in range(3):
            try:
                if policy.counts_orders:
                    async with conn.transaction():
                        response = await _capture(conn, submission, key, fingerprint, policy, clock)
                else:
                    response = await _capture(conn, submission, key, fingerprint, policy, clock)
                break
            except store.ShopperTaken:
                # A concurrent order created this person's shopper first: match it now.
                if attempt == 2:
                    raise
        if response is not None:
            return response
        return await _replay(conn, submission, key, fingerprint)


async def _capture(
    conn: store.Conn,
    submission: domain.OrderSubmission,
    key: str,
    fingerprint: bytes,
    policy: domain.FraudPolicy,
    clock: Clock,
) -> pb.SubmitOrderResponse | None:
    details = submission.shopper
    assert details is not None  # validated
    recent = 0
    if policy.counts_orders:
        # Orders of one shopper are screened one at a time: the count sees the previous one.
        match = await store.find_shopper(conn, submission.channel, details)
        if not match.is_new:
            await store.lock_shopper(conn, match.shopper.shopper_id)
            recent = await store.count_orders_since(
                conn, match.shopper.shopper_id, clock() - domain.SCREENING_WINDOW
            )
    # The shopper is matched in the same statement that stores the order; until then the
    # order carries what the channel said about them.
    unmatched = domain.Shopper(
        shopper_id="",
        kind=details.kind,
        email=domain.normalize_email(details.email),
        name=details.name,
        phone=details.phone,
        company=details.company,
        channel_customer_id=details.channel_customer_id.strip(),
    )
    order = domain.capture_order(submission, store.new_id, unmatched, at=clock(), checked=True)
    order = domain.screened(order, policy, recent)
    shopper = await store.capture_order(
        conn,
        key,
        fingerprint,
        _stored_answer(order.order_id),
        details,
        store.new_id(),
        order,
        domain.capture_events(order),
        _start(order),
        written.order_captured(order, key, "order.captured", domain.captured_actor(order.channel)),
    )
    if shopper is None:
        return None
    return pb.SubmitOrderResponse(order=convert.order_to_pb(replace(order, shopper=shopper)))


def _stored_answer(order_id: str) -> bytes:
    """What an idempotency key keeps: the order's id (a replay answers with the order as it
    is by then)."""
    return pb.SubmitOrderResponse(order=pb.Order(order_id=order_id)).SerializeToString()


async def _replay(
    conn: store.Conn, submission: domain.OrderSubmission, key: str, fingerprint: bytes
) -> pb.SubmitOrderResponse:
    """The answer to a key seen before: its order as it is now, marked duplicate."""
    stored = await store.stored_capture(conn, key)
    if stored is None:
        raise _key_in_use(submission)
    stored_fingerprint, stored_response = stored
    if stored_fingerprint != fingerprint:
        raise _key_reused(submission)
    if stored_response is None:
        raise _key_in_use(submission)
    response = pb.SubmitOrderResponse.FromString(stored_response)
    current = await store.load_orders(conn, [response.order.order_id])
    if current:
        response.order.CopyFrom(convert.order_to_pb(current[0]))
    response.duplicate = True
    return response


# ---- ImportOrders ---------------------------------------------------------------------------


@dataclass
class ImportItem:
    """One streamed order: its position, the order, how to store it, and its outcome."""

    index: int
    submission: domain.OrderSubmission
    options: domain.ImportOptions
    fingerprint: bytes
    order_id: str = ""
    duplicate: bool = False
    error: DomainError | None = None
    # Why it was not stored when no one order was at fault (the database away): the edge
    # answers it as any failure (UNAVAILABLE, …); the order may be sent again.
    failure: Exception | None = None
    # Set while the batch is written.
    order: domain.Order | None = None
    response: bytes = b""
    same_as: ImportItem | None = field(default=None, repr=False)

    @classmethod
    def refused(cls, index: int, error: DomainError) -> ImportItem:
        """An order refused before it could be read (past the limits): only its error counts."""
        empty = domain.OrderSubmission(
            idempotency_key="",
            channel="",
            channel_order_ref="",
            shopper=None,
            currency="",
            delivery_groups=(),
            lines=(),
            discounts=(),
            grand_total=None,
            payment_method=None,
        )
        return cls(index, empty, domain.ImportOptions(), b"", error=error)


async def import_batch(
    pool: asyncpg.Pool,
    items: Sequence[ImportItem],
    policy: domain.FraudPolicy,
    clock: Clock = utc_now,
) -> None:
    """Validate and store a batch of imported orders in one transaction, recording each
    item's outcome on it. Duplicates and conflicts are per item; they never fail the batch."""
    now = clock()
    live: list[ImportItem] = []
    for item in items:
        if item.error is not None:  # refused at the edge already
            continue
        violations = domain.validation_errors(item.submission) + domain.import_violations(
            item.options, now
        )
        if violations:
            item.error = InvalidArgument(violations)
        else:
            live.append(item)
    live = _first_of_each_key_and_ref(live)
    async with pool.acquire() as conn, conn.transaction():
        # Keys seen before answer as SubmitOrder would: duplicate or ALREADY_EXISTS.
        seen = await store.stored_captures(conn, [capture_key(i.submission) for i in live])
        fresh: list[ImportItem] = []
        for item in live:
            known = seen.get(capture_key(item.submission))
            if known is None:
                fresh.append(item)
            else:
                _answer_known_key(item, known)
        taken = await store.taken_channel_order_refs(
            conn, [(i.submission.channel, i.submission.channel_order_ref) for i in fresh]
        )
        ready: list[ImportItem] = []
        for item in fresh:
            s = item.submission
            if (s.channel, s.channel_order_ref) in taken:
                item.error = store.channel_ref_taken(s.channel, s.channel_order_ref)
            else:
                ready.append(item)
        shoppers = await store.match_shoppers(
            conn,
            [(i.submission.channel, i.submission.shopper) for i in ready],  # type: ignore[misc]
        )
        for item, shopper in zip(ready, shoppers, strict=True):
            order = domain.capture_order(
                item.submission, store.new_id, shopper, at=now, checked=True
            )
            if item.options.historical:
                order = domain.historical_order(order, item.options)
            else:
                # Velocity is a live-traffic rule; a backfill is screened on amount and address.
                order = domain.screened(order, policy, 0)
            item.order = order
            item.response = _stored_answer(order.order_id)
        claimed = await store.claim_capture_keys(
            conn, [(capture_key(i.submission), i.fingerprint, i.response) for i in ready]
        )
        rows = store.OrderRows.empty()
        writing: list[ImportItem] = []
        raced: list[ImportItem] = []
        for item in ready:
            if capture_key(item.submission) not in claimed:
                raced.append(item)
                continue
            assert item.order is not None
            if item.options.historical:
                rows.add(item.order, [domain.imported_event(item.order)], None)
            else:
                rows.add(item.order, domain.capture_events(item.order), _start(item.order))
            writing.append(item)
        if raced:  # imported concurrently by someone else since we looked
            again = await store.stored_captures(conn, [capture_key(i.submission) for i in raced])
            for item in raced:
                known = again.get(capture_key(item.submission))
                if known is None:
                    item.error = _key_in_use(item.submission)
                else:
                    _answer_known_key(item, known)
        stored = await store.import_orders(conn, rows)
        lost: list[str] = []
        imported: list[events_pb2.Event] = []
        for item in writing:
            assert item.order is not None
            if item.order.order_id in stored:
                item.order_id = item.order.order_id
                imported.append(
                    written.order_captured(
                        item.order, capture_key(item.submission), "order.imported", "import"
                    )
                )
            else:
                s = item.submission
                item.error = store.channel_ref_taken(s.channel, s.channel_order_ref)
                lost.append(capture_key(s))
        await store.release_keys(conn, lost)
        await event_log.append_events(conn, imported)
    for item in items:
        if item.same_as is not None:
            _copy_outcome(item, item.same_as)


async def import_orders(
    pool: asyncpg.Pool, batch: list[ImportItem], policy: domain.FraudPolicy
) -> list[ImportItem]:
    """Store a batch in one transaction. If that fails for a reason that is no one order's
    (the database is away), every order of it carries that `failure`; otherwise the orders
    are stored again one by one, so only the order at fault carries its error."""
    try:
        await import_batch(pool, batch, policy)
        return batch
    except Exception as error:
        if len(batch) == 1 or refusal_for(error).code == grpc.StatusCode.UNAVAILABLE:
            for item in batch:
                item.failure = error
            return batch
    stored: list[ImportItem] = []
    for item in batch:
        stored += await import_orders(pool, [fresh(item)], policy)
    return stored


def fresh(item: ImportItem) -> ImportItem:
    """The item as it was streamed, its outcome forgotten (to store it again after its batch
    rolled back)."""
    return ImportItem(
        index=item.index,
        submission=item.submission,
        options=item.options,
        fingerprint=item.fingerprint,
    )


def _key_in_use(submission: domain.OrderSubmission) -> AlreadyExists:
    return AlreadyExists(
        "idempotency_key", f"idempotency key {limits.echo(submission.idempotency_key)} is in use"
    )


def _answer_known_key(item: ImportItem, known: tuple[bytes, bytes | None]) -> None:
    fingerprint, response = known
    if fingerprint != item.fingerprint:
        item.error = _key_reused(item.submission)
    elif response is None:
        item.error = _key_in_use(item.submission)
    else:
        item.order_id = pb.SubmitOrderResponse.FromString(response).order.order_id
        item.duplicate = True


def _first_of_each_key_and_ref(items: list[ImportItem]) -> list[ImportItem]:
    """Within one batch: a repeated key answers like its first use (same order: duplicate,
    else ALREADY_EXISTS); a repeated channel order reference under another key is refused."""
    by_key: dict[str, ImportItem] = {}
    by_ref: dict[tuple[str, str], ImportItem] = {}
    out: list[ImportItem] = []
    for item in items:
        s = item.submission
        first = by_key.get(capture_key(s))
        if first is not None:
            if first.fingerprint == item.fingerprint:
                item.same_as = first
            else:
                item.error = _key_reused(s)
            continue
        ref = (s.channel, s.channel_order_ref)
        if ref in by_ref:
            item.error = store.channel_ref_taken(*ref)
            continue
        by_key[capture_key(s)] = item
        by_ref[ref] = item
        out.append(item)
    return out


def _copy_outcome(item: ImportItem, first: ImportItem) -> None:
    item.order_id = first.order_id
    item.duplicate = bool(first.order_id)
    item.error = first.error


def violations_of(error: DomainError) -> list[FieldViolation]:
    """The field violations an error carries (none unless it is InvalidArgument)."""
    return error.violations if isinstance(error, InvalidArgument) else []
