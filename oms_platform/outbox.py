"""Durable outbox: a service records "start this workflow", "signal that workflow" or "log this
event of the order" in the same transaction as its own change; a relay delivers the rows
afterwards, to Temporal (start, signal) or to capture's event log (event).

A crash between commit and delivery loses nothing (the row stays), a Temporal outage only
delays delivery, and delivery is idempotent: starting a workflow whose id already exists
counts as done, signals carry a key the workflow deduplicates on, and events carry the id the
log keeps them under. An event row is keyed by its order's workflow id, so the rows of one
order (signals and events) are delivered in the order they were recorded; the event rows a
pass meets first for each order go to capture in one call (`event_sink`), the others in runs
between the workflow's signals.

Every replica of a service runs a relay on the same outbox. A batch is claimed with
`FOR UPDATE SKIP LOCKED`, so relays share the rows, and a row is deleted in the transaction
that delivered it: each row is delivered once (again only if a relay dies after delivering
and before committing, which the idempotency above absorbs). Each workflow gets its rows in
the order they were recorded (a row recorded after another committed goes after it): a relay
never delivers a row while an earlier row of the same workflow is held by another relay,
postponed after a failure, or dead-lettered (SQL_CLAIM_BATCH). Rows of different workflows
have no order between them, and two transactions recording for one workflow at the same time
have none either.

A row Temporal or capture refuses for good (an invalid argument, a payload over its size limit,
a payload that cannot be encoded, an event of an order capture does not know) is not retried
forever: after `dead_letter_after` refusals it moves to
the schema's dead-letter table, with its error, and the owning service is told (it raises a
process exception an agent resolves). Later rows of the same workflow wait behind an open dead
letter, so a workflow's events keep their order; redelivering puts the row back under its own
id, ahead of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import grpc
import structlog
from google.protobuf import json_format
from oms.events.v1 import events_pb2
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from oms_platform import metrics, tracing
from oms_platform.backoff import Backoff
from oms_platform.errors import FailedPrecondition, NotFound, clip
from oms_platform.listen import Listener, subscribed, woken
from oms_platform.pacing import FrontDoorPacer

log = structlog.get_logger("oms.outbox")

# A Temporal call that takes longer than this fails the row's delivery for now; it is retried.
RPC_TIMEOUT = timedelta(seconds=5)
# Refusals (failures retrying cannot fix) before a row is dead-lettered (setting
# outbox_dead_letter_after).
DEAD_LETTER_AFTER = 5
# An error kept on a row or a dead letter is cut to this length (Temporal echoes input).
MAX_ERROR_LENGTH = 500
# How long the relay waits before telling the owning service about dead letters again after
# that failed (servicing down), doubling up to the cap; and how often it looks for dead
# letters left unreported (by another replica) when nothing new is made.
REPORT_RETRY_SECONDS = 1.0
REPORT_RETRY_CAP_SECONDS = 30.0
# The longest a relay waits between passes while Temporal or Postgres is away (the first
# wait is its poll interval).
RELAY_RETRY_CAP_SECONDS = 5.0

# Dead letters: open until redelivered (back in the outbox) or discarded (given up on).
OPEN = "open"
REDELIVERED = "redelivered"
DISCARDED = "discarded"

# Row kinds: a workflow to start, a signal to a workflow, an event for capture's log.
START = "start"
SIGNAL = "signal"
EVENT = "event"

# What a failed delivery was. Transient failures back off and retry for ever; the others are
# refusals, counted towards dead-lettering.
TRANSIENT = "transient"
INVALID_ARGUMENT = "invalid_argument"
FAILED_PRECONDITION = "failed_precondition"
PAYLOAD_TOO_LARGE = "payload_too_large"
ENCODE_ERROR = "encode_error"
# Capture does not know the event's order.
NOT_FOUND = "not_found"
UNEXPECTED = "unexpected"

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL,
    workflow_id   text NOT NULL,
    name          text NOT NULL,
    payload       jsonb NOT NULL,
    attempts      int NOT NULL DEFAULT 0,
    last_error    text,
    available_at  timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (available_at, id);
-- A claim looks for earlier rows of the same workflow (their order is kept across relays).
CREATE INDEX IF NOT EXISTS outbox_workflow ON outbox (workflow_id, id);
-- Failures retrying cannot fix, counted apart from attempts (which count outages too).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS refusals int NOT NULL DEFAULT 0;
-- The trace context (W3C headers) of the transaction that wrote the row, so its delivery
-- continues that trace (oms_platform/tracing.py); NULL while tracing is off.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS trace_context jsonb;
-- Rows Temporal refused for good. The id is the outbox row's: a redelivery reinserts the row
-- under it, so it goes ahead of the rows of its workflow that waited behind it.
CREATE TABLE IF NOT EXISTS outbox_dead_letters (
    id               bigint PRIMARY KEY,
    kind             text NOT NULL,
    workflow_id      text NOT NULL,
    name             text NOT NULL,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    attempts         int NOT NULL,
    error            text NOT NULL,
    error_kind       text NOT NULL,
    status           text NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'redelivered', 'discarded')),
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    -- How many times this row was dead-lettered (a redelivery may be refused again); part of
    -- the process exception's idempotency key.
    times            int NOT NULL DEFAULT 1,
    -- When the owning service raised the process exception; NULL: still to do.
    reported_at      timestamptz,
    settled_at       timestamptz,
    settled_by       text NOT NULL DEFAULT '',
    note             text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_dead_letters_open
    ON outbox_dead_letters (workflow_id) WHERE status = 'open';
-- A dead letter keeps its row's trace context, so a redelivery still continues that trace.
ALTER TABLE outbox_dead_letters ADD COLUMN IF NOT EXISTS trace_context jsonb;
-- The kinds of row. A schema made before 'event' rows has the table's first CHECK
-- (outbox_kind_check, start and signal only): it is replaced once, by name, so restarts leave
-- the table alone (adding a CHECK scans the table under an exclusive lock).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'outbox'::regclass AND conname = 'outbox_kind_known') THEN
        ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_kind_check;
        ALTER TABLE outbox ADD CONSTRAINT outbox_kind_known
            CHECK (kind IN ('start', 'signal', 'event'));
    END IF;
END
$$"""

# A row and the relay's wake-up in one statement (one round trip): the notification is sent
# when the transaction commits, and not at all if it rolls back.
SQL_ENQUEUE = """
WITH added AS (
    INSERT INTO outbox (kind, workflow_id, name, payload, trace_context)
    VALUES ($1, $2, $3, $4, $5)
    RETURNING id
)
SELECT pg_notify($6, '') FROM added"""
SQL_NOTIFY = "SELECT pg_notify($1, '')"
# A batch of due rows, locked so that the relays of other replicas skip them. A workflow's
# rows keep their order: a row waits while an earlier row of its workflow has an open dead
# letter or is postponed (a failed delivery, due later), and `blocked` marks a row with an
# earlier row of its workflow outside this batch: another relay holds that one (it was skipped
# as locked), so this one waits for a later pass, after that relay has delivered it. The
# statement's snapshot sees a row another relay deletes until that relay commits, so a row is
# never taken ahead of one still being delivered.
SQL_CLAIM_BATCH = """
WITH claimed AS (
    SELECT id, kind, workflow_id, name, payload, refusals, trace_context FROM outbox AS o
    WHERE available_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM outbox_dead_letters AS d
          WHERE d.workflow_id = o.workflow_id AND d.status = 'open')
      AND NOT EXISTS (
          SELECT 1 FROM outbox AS e
          WHERE e.workflow_id = o.workflow_id AND e.id < o.id AND e.available_at > now())
    ORDER BY id
    LIMIT $1
    FOR UPDATE OF o SKIP LOCKED
)
SELECT c.*, EXISTS (
    SELECT 1 FROM outbox AS e
    WHERE e.workflow_id = c.workflow_id AND e.id < c.id
      AND e.id NOT IN (SELECT id FROM claimed)) AS blocked
FROM claimed AS c
ORDER BY c.id"""
SQL_DELETE_DELIVERED = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
SQL_POSTPONE = """
UPDATE outbox SET attempts = attempts + 1, last_error = $2,
    refusals = refusals + CASE WHEN $3 THEN 1 ELSE 0 END,
    available_at = now()
        + least(interval '30 seconds', interval '200 milliseconds' * power(2, attempts))
WHERE id = $1"""
# Moves a row to the dead letters; a row dead-lettered before (then redelivered) reopens.
SQL_DEAD_LETTER = """
WITH moved AS (DELETE FROM outbox WHERE id = $1 RETURNING *)
INSERT INTO outbox_dead_letters
    (id, kind, workflow_id, name, payload, created_at, attempts, error, error_kind, trace_context)
SELECT id, kind, workflow_id, name, payload, created_at, attempts + 1, $2, $3, trace_context
FROM moved
ON CONFLICT (id) DO UPDATE SET
    status = 'open', attempts = EXCLUDED.attempts, error = EXCLUDED.error,
    error_kind = EXCLUDED.error_kind, dead_lettered_at = now(),
    times = outbox_dead_letters.times + 1, reported_at = NULL, settled_at = NULL,
    settled_by = '', note = ''"""
_DEAD_LETTER_COLUMNS = """
    id, kind, workflow_id, name, error, error_kind, attempts, times, status,
    dead_lettered_at, created_at, settled_at, settled_by, note,
    octet_length(payload::text) AS payload_bytes,
    (SELECT count(*) FROM outbox AS o WHERE o.workflow_id = d.workflow_id) AS waiting"""
SQL_UNREPORTED = f"""
SELECT {_DEAD_LETTER_COLUMNS} FROM outbox_dead_letters AS d
WHERE status = 'open' AND reported_at IS NULL
ORDER BY id
LIMIT $1"""
SQL_MARK_REPORTED = """
UPDATE outbox_dead_letters SET reported_at = now() WHERE id = $1 AND times = $2"""
# Newest first; $1: statuses ('{}' for every one), $2: ids below this (0: from the newest).
SQL_LIST_DEAD_LETTERS = f"""
SELECT {_DEAD_LETTER_COLUMNS} FROM outbox_dead_letters AS d
WHERE (cardinality($1::text[]) = 0 OR status = ANY($1::text[]))
  AND ($2::bigint = 0 OR id < $2)
ORDER BY id DESC
LIMIT $3"""
SQL_GET_DEAD_LETTER = f"SELECT {_DEAD_LETTER_COLUMNS} FROM outbox_dead_letters AS d WHERE id = $1"
SQL_SETTLE = """
UPDATE outbox_dead_letters SET status = $2, settled_at = now(), settled_by = $3, note = $4
WHERE id = $1 AND status = 'open'
RETURNING id"""
# Back into the outbox under its own id, as if new (no attempts, due now).
SQL_REQUEUE = """
INSERT INTO outbox (id, kind, workflow_id, name, payload, created_at, trace_context)
SELECT id, kind, workflow_id, name, payload, created_at, trace_context FROM outbox_dead_letters
WHERE id = $1"""


@dataclass(frozen=True)
class DeadLetter:
    """An outbox row Temporal refused for good, as an operator or agent sees it (the payload
    itself is not shown: it may hold personal data)."""

    id: int
    schema: str
    kind: str
    workflow_id: str
    name: str
    error: str
    error_kind: str
    attempts: int
    times: int
    status: str
    dead_lettered_at: datetime
    created_at: datetime
    payload_bytes: int
    # Rows of the same workflow waiting in the outbox behind this one.
    waiting: int
    settled_at: datetime | None = None
    settled_by: str = ""
    note: str = ""


def _dead_letter(schema: str, row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(schema=schema, **dict(row))


def channel_name(schema: str) -> str:
    """The NOTIFY channel a schema's relay listens on."""
    return f"oms_outbox_{schema}"


def _described(error: BaseException) -> str:
    """An error as an operator reads it: Temporal's or capture's status and message, or the
    exception."""
    if isinstance(error, RPCError):
        return f"{error.status.name}: {error.message}"
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def classify(error: BaseException) -> str:
    """What a failed delivery was: TRANSIENT (retry for ever, backing off) or the kind of
    refusal (counted towards dead-lettering)."""
    if isinstance(error, RPCError):
        message = str(error.message).lower()
        # Temporal's blob limit answers INVALID_ARGUMENT; gRPC's message limit,
        # RESOURCE_EXHAUSTED: both are the payload's size, not an overloaded server.
        if "size exceeds" in message or "larger than max" in message:
            return PAYLOAD_TOO_LARGE
        if error.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.OUT_OF_RANGE):
            return INVALID_ARGUMENT
        if error.status == RPCStatusCode.FAILED_PRECONDITION:
            return FAILED_PRECONDITION
        # UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (rate limits), CANCELLED,
        # INTERNAL, and a namespace or permission problem, which every row shares: the
        # deployment is at fault, not this row, so nothing is dead-lettered for it.
        return TRANSIENT
    if isinstance(error, grpc.aio.AioRpcError):
        return _classify_capture(error)
    # Network, timeouts (TimeoutError is an OSError), the client not connected (RuntimeError),
    # Postgres (the codec's key vault) away.
    if isinstance(error, OSError | RuntimeError | asyncpg.PostgresError | asyncpg.InterfaceError):
        return TRANSIENT
    # The payload cannot become a Temporal payload (JSON conversion, a malformed row).
    if isinstance(error, TypeError | ValueError | KeyError):
        return ENCODE_ERROR
    return UNEXPECTED


def _classify_capture(error: grpc.aio.AioRpcError) -> str:
    """What capture's answer to an event delivery was: the event's fault (a refusal) or the
    deployment's (retried for ever, like Temporal's)."""
    code = error.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (error.details() or ""):
        return PAYLOAD_TOO_LARGE
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return INVALID_ARGUMENT
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FAILED_PRECONDITION
    if code == grpc.StatusCode.NOT_FOUND:
        return NOT_FOUND
    # UNAVAILABLE (capture down), DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, and
    # UNAUTHENTICATED / PERMISSION_DENIED, which every row shares (a deployment's keys or
    # access table): retried, never dead-lettered.
    return TRANSIENT


# Delivers event rows' payloads (oms.events.v1.Event as JSON) to the log, in order, raising
# what the delivery failed with.
EventSink = Callable[[Sequence[Any]], Awaitable[None]]


def event_id(key: str) -> str:
    """The stable id of the event a change makes, in the log's form ("evt_" and 26 hex digits):
    the same key (an idempotency key with the event's place in that change, or a fulfillment
    order's change) always gives the same id, whichever service wrote the event."""
    return "evt_" + hashlib.sha256(key.encode()).hexdigest()[:26]


def event_payload(event: events_pb2.Event) -> dict[str, Any]:
    """An event as an outbox row keeps it (JSON an operator can read)."""
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def _leading_events(rows: Sequence[asyncpg.Record]) -> list[asyncpg.Record]:
    """The event rows a workflow's rows start with (delivered together, before its next
    Temporal row)."""
    run: list[asyncpg.Record] = []
    for row in rows:
        if row["kind"] != EVENT:
            break
        run.append(row)
    return run


async def enqueue(
    conn: asyncpg.Connection, schema: str, kind: str, workflow_id: str, name: str, payload: Any
) -> None:
    """Record a delivery in the caller's transaction and wake the relay on commit."""
    await conn.execute(
        SQL_ENQUEUE, kind, workflow_id, name, payload, tracing.carrier(), channel_name(schema)
    )


async def list_dead_letters(
    pool: asyncpg.Pool,
    schema: str,
    statuses: tuple[str, ...] = (),
    before_id: int = 0,
    limit: int = 100,
) -> list[DeadLetter]:
    """Dead letters newest first, of these statuses (all when empty), ids below `before_id`."""
    rows = await pool.fetch(SQL_LIST_DEAD_LETTERS, list(statuses), before_id, limit)
    return [_dead_letter(schema, r) for r in rows]


async def get_dead_letter(pool: asyncpg.Pool, schema: str, dead_letter_id: int) -> DeadLetter:
    """One dead letter; NotFound when there is none with this id."""
    row = await pool.fetchrow(SQL_GET_DEAD_LETTER, dead_letter_id)
    if row is None:
        raise NotFound(f"no dead letter {dead_letter_id} in {schema}'s outbox")
    return _dead_letter(schema, row)


async def redeliver(
    pool: asyncpg.Pool, schema: str, dead_letter_id: int, actor: str, note: str = ""
) -> DeadLetter:
    """Put a dead letter back in the outbox (under its own id, ahead of the rows waiting behind
    it) and wake the relay. Idempotent: an already redelivered one is answered as it is;
    a discarded one is FailedPrecondition."""
    return await _settle(pool, schema, dead_letter_id, REDELIVERED, actor, note)


async def discard(
    pool: asyncpg.Pool, schema: str, dead_letter_id: int, actor: str, note: str = ""
) -> DeadLetter:
    """Give up on a dead letter: it is never delivered, and the rows of its workflow waiting
    behind it are delivered. Idempotent; a redelivered one is FailedPrecondition."""
    return await _settle(pool, schema, dead_letter_id, DISCARDED, actor, note)


async def _settle(
    pool: asyncpg.Pool, schema: str, dead_letter_id: int, status: str, actor: str, note: str
) -> DeadLetter:
    async with pool.acquire() as conn, conn.transaction():
        settled = await conn.fetchval(
            SQL_SETTLE,
            dead_letter_id,
            status,
            clip(actor, MAX_ERROR_LENGTH),
            clip(note, MAX_ERROR_LENGTH),
        )
        if settled is not None:
            if status == REDELIVERED:
                await conn.execute(SQL_REQUEUE, dead_letter_id)
            await conn.execute(SQL_NOTIFY, channel_name(schema))
    letter = await get_dead_letter(pool, schema, dead_letter_id)
    if letter.status != status:
        raise FailedPrecondition(
            f"dead letter {dead_letter_id} is {letter.status}; it cannot be {status} now"
        )
    return letter


class OutboxRelay:
    """Delivers a schema's outbox rows to Temporal (and event rows to capture's log) in
    batches, in order per workflow, beside the relays of other replicas; moves the rows
    refused for good to the dead letters and reports them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        client_factory: Any,
        task_queue: str,
        start_options: Any = None,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
        prepare_start: Any = None,
        pacer: FrontDoorPacer | None = None,
        dead_letter_after: int = DEAD_LETTER_AFTER,
        on_dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
        event_sink: EventSink | None = None,
        listener: Listener | None = None,
        pass_interval_seconds: float = 0.0,
    ) -> None:
        self._pool = pool
        # The process's LISTEN connection: a commit's NOTIFY (any replica's) wakes the relay.
        # Without one the relay polls, and is woken by `wake` from its own process.
        self._listener = listener
        self._schema = schema
        self._client_factory = client_factory
        self._client: Client | None = None
        self._task_queue = task_queue
        # Callable(payload) -> dict of extra start_workflow kwargs (e.g. search attributes).
        self._start_options = start_options
        # Callable(payload) -> the workflow's argument, completed at start time (e.g. with
        # durations from this deployment's settings).
        self._prepare_start = prepare_start
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        # Passes start at most this often. Under load every commit wakes the relay, and a pass
        # per wake-up claims a row or two (or none: the previous pass took them) in a
        # transaction of its own; a pass every few tens of milliseconds takes the same rows in
        # far fewer, and delays each by at most that much.
        self._pass_interval = pass_interval_seconds
        # Paces starts while the front door is busy (see oms_platform/pacing.py).
        self._pacer = pacer
        self._dead_letter_after = max(1, dead_letter_after)
        # Told about each new dead letter (e.g. raises a process exception); called again,
        # later, until it returns without raising, so it must be idempotent.
        self._on_dead_letter = on_dead_letter
        # Where event rows go (fulfillment's sink: capture's RecordOrderEvents); a relay without
        # one refuses them.
        self._event_sink = event_sink
        self._report = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def schema(self) -> str:
        """The schema whose outbox this relay delivers."""
        return self._schema

    def wake(self) -> None:
        """Deliver now: a row was committed in this process (no NOTIFY needed)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever; cancel the task to stop. Temporal or Postgres being away is waited
        out here; anything unexpected is raised (the service supervises this task)."""
        reporter = (
            asyncio.create_task(self._report_dead_letters())
            if self._on_dead_letter is not None
            else None
        )
        backoff = Backoff(initial=self._poll_seconds, cap=RELAY_RETRY_CAP_SECONDS)
        last_pass = float("-inf")
        with subscribed(self._listener, channel_name(self._schema), lambda _: self._wake.set()):
            try:
                while True:
                    wait = last_pass + self._pass_interval - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    last_pass = time.monotonic()
                    # Cleared before the pass: a row committed while it runs (too late for its
                    # claim) wakes the relay for another pass instead of waiting for the poll.
                    self._wake.clear()
                    limit = self._batch_size
                    if self._pacer is not None:
                        limit = self._pacer.allowance(self._batch_size)
                        metrics.record_pace(self._schema, self._pacer.pace)
                        if limit == 0:
                            await asyncio.sleep(
                                min(self._poll_seconds, max(0.01, self._pacer.seconds_until_next()))
                            )
                            continue
                    try:
                        delivered = await self.deliver_once(limit)
                        if self._pacer is not None:
                            self._pacer.started(delivered)
                        backoff.reset()
                    except (
                        OSError,
                        asyncpg.PostgresError,
                        asyncpg.InterfaceError,
                        RuntimeError,
                    ) as error:
                        # Temporal or Postgres is away: back off instead of retrying on every
                        # NOTIFY; the rows wait, nothing is lost.
                        delay = backoff.delay_after(0.0)
                        log.warning(
                            "outbox relay pass failed",
                            schema=self._schema,
                            error=str(error),
                            retry_in=delay,
                        )
                        self._client = None
                        await asyncio.sleep(delay)
                        continue
                    if delivered >= limit:  # there may be more
                        continue
                    await woken(self._wake, self._poll_seconds)
            finally:
                if reporter is not None:
                    reporter.cancel()
                    await asyncio.gather(reporter, return_exceptions=True)

    async def deliver_once(self, limit: int | None = None) -> int:
        """Deliver one batch of due rows (at most `limit`, default the batch size); returns
        how many were delivered. Rows refused `dead_letter_after` times are dead-lettered."""
        dead_lettered = 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(SQL_CLAIM_BATCH, limit or self._batch_size)
            by_workflow: dict[str, list[asyncpg.Record]] = defaultdict(list)
            for row in rows:
                # A blocked row stays as it is, for a later pass (a blocked row's later rows
                # of the same workflow are blocked too).
                if not row["blocked"]:
                    by_workflow[row["workflow_id"]].append(row)
            if not by_workflow:
                return 0
            if self._client is None and any(row["kind"] != EVENT for row in rows):
                # Connected only for a batch with Temporal rows: events reach capture while
                # Temporal is away, unless a batch holds both (then all wait, as before).
                self._client = await self._client_factory()
            results = await self._deliver_groups(list(by_workflow.values()))
            delivered = [i for ok_ids, _ in results for i in ok_ids]
            for _, failures in results:
                for failure in failures:
                    if failure.kind == TRANSIENT or failure.refusals < self._dead_letter_after:
                        await conn.execute(
                            SQL_POSTPONE, failure.row_id, failure.error, failure.kind != TRANSIENT
                        )
                        continue
                    await conn.execute(SQL_DEAD_LETTER, failure.row_id, failure.error, failure.kind)
                    dead_lettered += 1
                    log.error(
                        "outbox row dead-lettered",
                        schema=self._schema,
                        outbox_id=failure.row_id,
                        workflow_id=failure.workflow_id,
                        error_kind=failure.kind,
                        error=failure.error,
                        refusals=failure.refusals,
                    )
            if delivered:
                await conn.execute(SQL_DELETE_DELIVERED, delivered)
        if delivered:
            kinds = {row["id"]: row["kind"] for row in rows}
            for kind, count in Counter(kinds[i] for i in delivered).items():
                metrics.OUTBOX_DELIVERED.labels(self._schema, kind).inc(count)
        if dead_lettered:
            self._report.set()  # tell the owning service now
        return len(delivered)

    async def _deliver_groups(
        self, groups: list[list[asyncpg.Record]]
    ) -> list[tuple[list[int], list[_Failure]]]:
        """Deliver each workflow's rows in order, the groups side by side. The event rows the
        groups start with go first, in one call for all of them."""
        leading = [_leading_events(group) for group in groups]
        starting = [run for run in leading if run]
        if self._event_sink is None or len(starting) < 2:
            return list(await asyncio.gather(*(self._deliver_in_order(g) for g in groups)))
        try:
            await self._deliver([row for run in starting for row in run])
        except Exception as error:  # classified: a row must not stop the relay
            kind = classify(error)
            if kind != TRANSIENT:
                # Some event is refused: find which, one workflow (then one row) at a time.
                return list(await asyncio.gather(*(self._deliver_in_order(g) for g in groups)))
            log.warning("outbox event delivery failed", error_kind=kind, error=str(error))
            # Capture is away: each group starting with events waits behind its first row;
            # the others go on to Temporal.
            waiting: list[tuple[list[int], list[_Failure]]] = [
                ([], [_Failure.of(run[0], error, kind)]) for run in starting
            ]
            others = [g for g, run in zip(groups, leading, strict=True) if not run]
            return waiting + list(
                await asyncio.gather(*(self._deliver_in_order(g) for g in others))
            )
        done: tuple[list[int], list[_Failure]] = ([r["id"] for run in starting for r in run], [])
        rest = [g[len(run) :] for g, run in zip(groups, leading, strict=True) if len(g) > len(run)]
        return [done, *await asyncio.gather(*(self._deliver_in_order(g) for g in rest))]

    async def _deliver_in_order(
        self, rows: list[asyncpg.Record]
    ) -> tuple[list[int], list[_Failure]]:
        """Deliver one workflow's rows in order, stopping at the first failure: a run of event
        rows in one call, each Temporal row alone."""
        ok: list[int] = []
        one_by_one = False
        while len(ok) < len(rows):
            row = rows[len(ok)]
            unit = [row]
            if row["kind"] == EVENT and not one_by_one:
                unit = _leading_events(rows[len(ok) :])
            try:
                await self._deliver(unit)
            except Exception as error:  # classified: a row must not stop the relay
                kind = classify(error)
                if len(unit) > 1 and kind != TRANSIENT:
                    # Which event is refused: each alone, so only that one is counted.
                    one_by_one = True
                    continue
                if kind == UNEXPECTED:
                    log.exception(
                        "outbox delivery failed unexpectedly", workflow_id=row["workflow_id"]
                    )
                else:
                    log.warning(
                        "outbox delivery failed",
                        workflow_id=row["workflow_id"],
                        error_kind=kind,
                        error=str(error),
                    )
                # The later rows of the workflow stay as they are: they wait behind this one,
                # postponed or dead-lettered (SQL_CLAIM_BATCH), so its events keep their order.
                return ok, [_Failure.of(row, error, kind)]
            ok.extend(r["id"] for r in unit)
        return ok, []

    async def _report_dead_letters(self) -> None:
        """Tell the owning service about dead letters it has not heard of: as soon as one is
        made, with back-off while it cannot be reached, and now and then for any another
        replica left unreported. Runs beside delivery, so a slow servicing never holds it up."""
        assert self._on_dead_letter is not None
        backoff = Backoff(initial=REPORT_RETRY_SECONDS, cap=REPORT_RETRY_CAP_SECONDS)
        while True:
            try:
                rows = await self._pool.fetch(SQL_UNREPORTED, 50)
                for row in rows:
                    await self._on_dead_letter(_dead_letter(self._schema, row))
                    await self._pool.execute(SQL_MARK_REPORTED, row["id"], row["times"])
            except Exception as error:  # reported later; delivery goes on meanwhile
                delay = backoff.delay_after(0.0)
                log.warning(
                    "dead letters not reported yet",
                    schema=self._schema,
                    error=str(error),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self._report.clear()
            await woken(self._report, REPORT_RETRY_CAP_SECONDS)

    async def _deliver(self, rows: list[asyncpg.Record]) -> None:
        """Deliver one Temporal row, or event rows in one call."""
        row = rows[0]
        # Continues the trace of the transaction that wrote the (first) row
        # (oms_platform/tracing.py).
        with tracing.continuing(
            row["trace_context"],
            f"outbox {row['kind']} {row['name']}"
            + (f" and {len(rows) - 1} more" if len(rows) > 1 else ""),
            **{tracing.WORKFLOW_ID: row["workflow_id"]},
        ):
            if row["kind"] == EVENT:
                if self._event_sink is None:
                    raise LookupError(f"the {self._schema} relay has no event sink")
                await self._event_sink([r["payload"] for r in rows])
                return
            assert len(rows) == 1
            await self._deliver_row(row)

    async def _deliver_row(self, row: asyncpg.Record) -> None:
        assert self._client is not None
        if row["kind"] == "start":
            extra = self._start_options(row["payload"]) if self._start_options else {}
            # Already started means delivered before: the row outlived a crash.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                argument = row["payload"]
                if self._prepare_start is not None:
                    argument = self._prepare_start(argument)
                await self._client.start_workflow(
                    row["name"],
                    argument,
                    id=row["workflow_id"],
                    task_queue=self._task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    rpc_timeout=RPC_TIMEOUT,
                    **extra,
                )
            return
        try:
            await self._client.get_workflow_handle(row["workflow_id"]).signal(
                row["name"], row["payload"], rpc_timeout=RPC_TIMEOUT
            )
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                # The workflow has completed; nothing is waiting for this event any more.
                log.warning(
                    "signal target gone", workflow_id=row["workflow_id"], signal=row["name"]
                )
                return
            raise


@dataclass(frozen=True)
class _Failure:
    """A row not delivered in this pass: why, and its refusals counting this one."""

    row_id: int
    workflow_id: str
    error: str
    kind: str
    refusals: int

    @staticmethod
    def of(row: asyncpg.Record, error: BaseException, kind: str) -> _Failure:
        """`row` failed with `error` of `kind`: a refusal counts, a transient failure not."""
        text = clip(_described(error), MAX_ERROR_LENGTH)
        refusals = row["refusals"] + (kind != TRANSIENT)
        return _Failure(row["id"], row["workflow_id"], text, kind, refusals)
