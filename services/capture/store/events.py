"""Capture's store, the event log: events written with the change that caused them, given
their place in the log by the sequencer, read back in order.

Why two steps. A sequence drawn when a row is written is not commit order: a transaction that
drew 7 may commit after one that drew 8, and a reader that has seen 8 would never see 7. So a
change writes its events unsequenced (`append_events`, in its own transaction), and the
sequencer (`sequence_pass`) numbers what has committed, in write order, while it holds the
log's head row: one sequencer at a time, whichever replica, so every sequence it gives is
above every sequence already visible, and the log is gap-free and never reordered. Events of
one order are written under that order's lock, so write order is the order's own order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from oms.events.v1 import events_pb2

from oms_platform.redaction import erase_text
from services.capture.store.common import Conn

# Postgres NOTIFY channels: events written (the sequencer wakes), events sequenced (readers
# wake; the payload is the new head).
EVENTS_WRITTEN_CHANNEL = "oms_capture_events_written"
EVENTS_SEQUENCED_CHANNEL = "oms_capture_events_sequenced"

# The events, and a wake-up for the sequencer when the transaction commits (only when
# something new was written), in one round trip.
SQL_APPEND_EVENTS = """
WITH written AS (
    INSERT INTO order_events (event_id, order_id, type, channel, occurred_at, body)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::bytea[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT pg_notify($7, '') FROM (SELECT 1 FROM written LIMIT 1) AS any_written"""


# One pass of the sequencer, two statements in one transaction. First the head, locked (SKIP
# LOCKED: another replica's sequencer is at it, nothing to do here).
SQL_LOCK_HEAD = "SELECT seq FROM event_log_head FOR UPDATE SKIP LOCKED"

# Then, in a statement of its own so its snapshot is taken after the lock and sees every
# sequence the previous holder committed: number the oldest committed unsequenced events after
# the head in write order, and move the head. recorded_at is this statement's clock (one
# reading for the batch), not the transaction's start (now()): an event committed after that
# start would otherwise be recorded before it occurred.
SQL_SEQUENCE_PENDING = """
WITH next AS (
    SELECT e.id, $1::bigint + row_number() OVER (ORDER BY e.id) AS seq
    FROM (SELECT id FROM order_events WHERE seq IS NULL ORDER BY id LIMIT $2) AS e
), stamp AS MATERIALIZED (
    SELECT clock_timestamp() AS at
), numbered AS (
    UPDATE order_events AS o SET seq = next.seq, recorded_at = stamp.at
    FROM next, stamp WHERE o.id = next.id
    RETURNING next.seq
)
UPDATE event_log_head SET seq = (SELECT max(seq) FROM numbered)
WHERE EXISTS (SELECT 1 FROM numbered)
RETURNING seq"""

SQL_HEAD = "SELECT seq FROM event_log_head"

# What a LogFilter matches ($3 types or families, $4 channels, $5 order ids; empty: all).
_MATCHING = """
  AND (cardinality($3::text[]) = 0 OR type = ANY($3) OR split_part(type, '.', 1) || '.*' = ANY($3))
  AND (cardinality($4::text[]) = 0 OR channel = ANY($4))
  AND (cardinality($5::text[]) = 0 OR order_id = ANY($5))"""

SQL_READ_EVENTS = f"""
SELECT seq, recorded_at, body FROM order_events
WHERE seq >= $1 AND seq <= $2{_MATCHING}
ORDER BY seq
LIMIT $6"""

SQL_FIRST_SEQUENCE_AT = """
SELECT coalesce(min(seq), (SELECT seq FROM event_log_head) + 1) FROM order_events
WHERE recorded_at >= $1"""

SQL_CURSOR = "SELECT seq FROM event_cursors WHERE consumer = $1"

# Erasure: the events of the erased orders, locked, and one rewritten body.
SQL_EVENTS_OF_ORDERS = """
SELECT id, body FROM order_events WHERE order_id = ANY($1::text[]) ORDER BY id FOR UPDATE"""
SQL_REWRITE_BODY = "UPDATE order_events SET body = $2 WHERE id = $1"
# And those still parked (store/parked_events.py), logged later as erased.
SQL_PARKED_OF_ORDERS = """
SELECT id, body FROM parked_events WHERE order_id = ANY($1::text[]) ORDER BY id FOR UPDATE"""
SQL_REWRITE_PARKED_BODY = "UPDATE parked_events SET body = $2 WHERE id = $1"

# For the metrics: how far behind the sequencer is (the oldest unsequenced event's time: the
# table keeps no write time, and a step's events occur when it is recorded, so this is close),
# and how far each consumer's cursor is behind the head.
SQL_UNSEQUENCED_AGE = """
SELECT coalesce(extract(epoch FROM now() - min(occurred_at)), 0) FROM order_events
WHERE seq IS NULL"""
SQL_CURSOR_DISTANCES = """
SELECT consumer, (SELECT seq FROM event_log_head) - seq AS behind FROM event_cursors"""
# A consumer's cursor, locked; a new consumer's starts at $2, or at the head when $2 is null.
SQL_LOCK_CURSOR = """
INSERT INTO event_cursors (consumer, seq)
VALUES ($1, coalesce($2::bigint, (SELECT seq FROM event_log_head)))
ON CONFLICT (consumer) DO UPDATE SET seq = event_cursors.seq
RETURNING seq"""
# A consumer's batch, after its cursor is locked: the head, read in this statement of its own
# so its snapshot is taken after the lock (it sees every sequence the previous holder of the
# cursor took); the last sequence looked at (`upto`: the head, at most $2); and the events
# from $1 up to it that match, as SQL_READ_EVENTS reads them. One row with no event when none
# matches.
SQL_BATCH_AFTER = f"""
WITH bound AS (
    SELECT least(seq, $2::bigint) AS upto FROM event_log_head
)
SELECT bound.upto, e.seq, e.recorded_at, e.body
FROM bound LEFT JOIN LATERAL (
    SELECT seq, recorded_at, body FROM order_events
    WHERE seq >= $1 AND seq <= bound.upto{_MATCHING}
    ORDER BY seq
    LIMIT $6
) AS e ON true
ORDER BY e.seq"""
SQL_MOVE_CURSOR = "UPDATE event_cursors SET seq = $2 WHERE consumer = $1"


@dataclass(frozen=True)
class LogFilter:
    """What a reader wants: event types (or families, "shipment.*"), channels, order ids;
    empty means all."""

    types: Sequence[str] = ()
    channels: Sequence[str] = ()
    order_ids: Sequence[str] = ()


async def append_events(conn: Conn, events: Sequence[events_pb2.Event]) -> None:
    """Write events in the caller's transaction, unsequenced (an event id already written is
    left as it is), and wake the sequencer when the transaction commits."""
    if not events:
        return
    await conn.execute(
        SQL_APPEND_EVENTS,
        [e.event_id for e in events],
        [e.order_id for e in events],
        [e.type for e in events],
        [e.channel for e in events],
        [e.occurred_at.ToDatetime(tzinfo=UTC) for e in events],
        [e.SerializeToString() for e in events],
        EVENTS_WRITTEN_CHANNEL,
    )


class Pass(NamedTuple):
    """One sequencer pass: the new head (None: nothing numbered), how many events it
    numbered, and whether another sequencer held the head (try again shortly: what it did
    not see is still unsequenced)."""

    head: int | None
    numbered: int
    busy: bool


async def sequence_pass(conn: Conn, limit: int = 1000) -> Pass:
    """One pass of the sequencer in its own transaction; readers are woken on commit."""
    async with conn.transaction():
        before = await conn.fetchval(SQL_LOCK_HEAD)
        if before is None:
            return Pass(None, 0, True)
        after = await conn.fetchval(SQL_SEQUENCE_PENDING, before, limit)
        if after is None:
            return Pass(None, 0, False)
        await conn.execute("SELECT pg_notify($1, $2)", EVENTS_SEQUENCED_CHANNEL, str(after))
    return Pass(int(after), int(after) - int(before), False)


async def sequence_pending(conn: Conn, limit: int = 1000) -> tuple[int | None, int]:
    """One pass of the sequencer in its own transaction: (the new head, how many events it
    numbered); (None, 0) when there was nothing to number or another sequencer holds the head.
    Readers are woken on commit."""
    done = await sequence_pass(conn, limit)
    return done.head, done.numbered


# Payload fields that are free text a person may have written (a cancel's or return's reason):
# cleared when the order's shopper is erased. Processors' decline reasons and fraud reasons are
# oms's or the processor's words; identifying terms are still taken out of them.
_REASON_FIELDS = ("reason",)
_SCREENED_FIELDS = ("decline_reason",)


def erased_event(event: events_pb2.Event, terms: Sequence[str]) -> events_pb2.Event:
    """The event without its free text: reasons cleared, identifying terms taken out of the
    other texts; ids, types, money and quantities as they were."""
    out = events_pb2.Event()
    out.CopyFrom(event)
    kind = out.WhichOneof("payload")
    if kind is None:
        return out
    payload = getattr(out, kind)
    names = {f.name for f in payload.DESCRIPTOR.fields}
    for name in _REASON_FIELDS:
        if name in names:
            payload.ClearField(name)
    for name in _SCREENED_FIELDS:
        if name in names:
            setattr(payload, name, erase_text(getattr(payload, name), terms))
    if kind == "order_captured":
        erased = [erase_text(r, terms) for r in payload.fraud_reasons]
        del payload.fraud_reasons[:]
        payload.fraud_reasons.extend(erased)
    return out


async def erase_events(conn: Conn, order_ids: Sequence[str], terms: Sequence[str]) -> int:
    """Erase the free text of these orders' events, in the caller's transaction; returns how
    many events changed (0 when repeated)."""
    changed = 0
    for read, rewrite in (
        (SQL_EVENTS_OF_ORDERS, SQL_REWRITE_BODY),
        (SQL_PARKED_OF_ORDERS, SQL_REWRITE_PARKED_BODY),
    ):
        for row in await conn.fetch(read, list(order_ids)):
            event = events_pb2.Event.FromString(row["body"])
            erased = erased_event(event, terms)
            if erased != event:
                await conn.execute(rewrite, row["id"], erased.SerializeToString())
                changed += 1
    return changed


async def unsequenced_age(conn: Conn) -> float:
    """Seconds since the oldest event still waiting for the sequencer occurred (0: none)."""
    return max(0.0, float(await conn.fetchval(SQL_UNSEQUENCED_AGE)))


async def cursor_distances(conn: Conn) -> dict[str, int]:
    """How many sequences each consumer's cursor is behind the head."""
    return {r["consumer"]: int(r["behind"]) for r in await conn.fetch(SQL_CURSOR_DISTANCES)}


async def head(conn: Conn) -> int:
    """The last sequence given (0: the log is empty)."""
    return int(await conn.fetchval(SQL_HEAD))


async def first_sequence_at(conn: Conn, at: datetime) -> int:
    """The first sequence recorded at or after `at` (head + 1 when none is yet)."""
    return int(await conn.fetchval(SQL_FIRST_SEQUENCE_AT, at))


async def read_events(
    conn: Conn, from_seq: int, to_seq: int, where: LogFilter, limit: int
) -> list[events_pb2.Event]:
    """Events with `from_seq` <= sequence <= `to_seq` matching `where`, in sequence order, at
    most `limit`, each with its sequence and recorded_at filled in."""
    rows = await conn.fetch(
        SQL_READ_EVENTS,
        from_seq,
        to_seq,
        list(where.types),
        list(where.channels),
        list(where.order_ids),
        limit,
    )
    return [event_of(r["body"], r["seq"], r["recorded_at"]) for r in rows]


def event_of(body: bytes, seq: int, recorded_at: datetime) -> events_pb2.Event:
    """A logged event as readers get it: its stored body with the sequence and time the
    sequencer gave it."""
    event = events_pb2.Event.FromString(body)
    event.sequence = seq
    event.recorded_at.FromDatetime(recorded_at)
    return event


async def lock_cursor(conn: Conn, consumer: str, start: int | None = None) -> int:
    """A consumer's position (the last sequence it took), locked until the caller's
    transaction ends so one replica at a time advances it; a new consumer starts at `start`
    (None: the head)."""
    return int(await conn.fetchval(SQL_LOCK_CURSOR, consumer, start))


async def move_cursor(conn: Conn, consumer: str, seq: int) -> None:
    """Record that a consumer took everything up to `seq`, in the caller's transaction."""
    await conn.execute(SQL_MOVE_CURSOR, consumer, seq)


@dataclass(frozen=True)
class Batch:
    """What a consumer takes next: the matching events after its cursor, the sequence up to
    which it has now looked (its cursor's next value, whether or not anything matched), and
    the cursor it started from."""

    events: list[events_pb2.Event]
    upto: int
    after: int


async def next_batch(
    conn: Conn, consumer: str, where: LogFilter, limit: int, start: int | None = None
) -> Batch:
    """A consumer's next events, inside the caller's transaction: its cursor is locked (one
    replica at a time takes a batch), at most `limit` sequences past it are looked at. The
    caller writes what it makes of them and then `move_cursor(conn, consumer, batch.upto)` in
    the same transaction. A new consumer starts after `start` (default: the head now, so it
    takes only what is sequenced from here on)."""
    cursor = await lock_cursor(conn, consumer, start)
    rows = await conn.fetch(
        SQL_BATCH_AFTER,
        cursor + 1,
        cursor + limit,
        list(where.types),
        list(where.channels),
        list(where.order_ids),
        limit,
    )
    upto = int(rows[0]["upto"])
    if upto <= cursor:
        return Batch([], cursor, cursor)
    taken = [event_of(r["body"], r["seq"], r["recorded_at"]) for r in rows if r["seq"] is not None]
    return Batch(taken, upto, cursor)
