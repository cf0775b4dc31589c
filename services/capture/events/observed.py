"""Events other oms services observed: the changes the order's workflow is not told of (a
warehouse accepting, picking or packing a fulfillment order), recorded by the owning service in
its outbox with the change and delivered here (RecordOrderEvents) to be written to the log.

Each order's events are written under that order's lock, as a progress step's are, so what
one order's log says keeps the order its writers committed in. The caller's event ids are
kept: the same event delivered again (a relay that died after delivering) is written once.
A step of a fulfillment order the log has not yet told of as allocated is parked until it
has (store/parked_events.py): the warehouse can be heard before the lifecycle reports the
allocation.
"""

from __future__ import annotations

from collections.abc import Sequence

from oms.events.v1 import events_pb2

from oms_platform import auth, limits
from oms_platform.errors import FieldViolation, InvalidArgument, NotFound
from services.capture.domain import events as vocabulary
from services.capture.store import events as log
from services.capture.store import parked_events as parked
from services.capture.store.common import Conn

# The channels of the named orders, locked like a progress step locks its order; in id order,
# so two calls naming the same orders cannot deadlock.
SQL_LOCK_ORDER_CHANNELS = """
SELECT id, channel FROM orders WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"""


def check(events: Sequence[events_pb2.Event]) -> None:
    """Refuse events missing what only their writer knows (InvalidArgument naming
    `events[i].<field>`, every violation at once)."""
    violations: list[FieldViolation] = []
    if not events:
        violations.append(FieldViolation("events", "at least one event is required"))
    for i, event in enumerate(events):
        where = f"events[{i}]"
        for name in ("event_id", "order_id", "type"):
            if not getattr(event, name):
                violations.append(FieldViolation(f"{where}.{name}", "is required"))
        payload = event.WhichOneof("payload")
        # A known type carrying its own payload (the log's one vocabulary).
        problem = vocabulary.type_problem(event.type, payload or "") if event.type else ""
        if problem:
            violations.append(FieldViolation(f"{where}.type", problem))
        if not event.HasField("occurred_at"):
            violations.append(FieldViolation(f"{where}.occurred_at", "is required"))
        if payload is None:
            violations.append(FieldViolation(f"{where}.payload", "one payload is required"))
    if violations:
        raise InvalidArgument(violations)


async def record(conn: Conn, events: Sequence[events_pb2.Event]) -> None:
    """Write checked events to the log in the caller's transaction, each with its order's
    channel (NotFound naming the first unknown order: nothing is written)."""
    order_ids = sorted({e.order_id for e in events})
    rows = await conn.fetch(SQL_LOCK_ORDER_CHANNELS, order_ids)
    channels = {r["id"]: r["channel"] for r in rows}
    for order_id in order_ids:
        if order_id not in channels:
            raise NotFound(f"order {limits.echo(order_id)} not found")
    known = await parked.allocated(conn, order_ids)
    # A step behind a parked one waits too, so a fulfillment order's steps keep their order.
    held = await parked.waiting(conn, order_ids)
    writing, parking = [], []
    for given in events:
        event = events_pb2.Event()
        event.CopyFrom(given)
        event.channel = channels[event.order_id]
        event.ClearField("sequence")
        event.ClearField("recorded_at")
        if not event.actor:
            event.actor = auth.actor()
        fulfillment_order = parked.fulfillment_order_of(event)
        if fulfillment_order and (fulfillment_order not in known or fulfillment_order in held):
            held.add(fulfillment_order)
            parking.append(event)
        else:
            writing.append(event)
    await log.append_events(conn, writing)
    await parked.park(conn, parking)
