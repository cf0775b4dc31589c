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
from services.capture.events import written
from services.capture.store import events as log
from services.capture.store import parked_events as parked
from services.capture.store.common import Conn


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
    channels = await parked.lock_orders(conn, order_ids)
    for order_id in order_ids:
        if order_id not in channels:
            raise NotFound(f"order {limits.echo(order_id)} not found")
    known = await parked.allocated(conn, order_ids)
    # A step behind a parked one waits too, so a fulfillment order's steps keep their order.
    held = await parked.waiting(conn, order_ids)
    writing, parking = [], []
    for given in events:
        event = written.stamped(given, channels[given.order_id], auth.actor())
        fulfillment_order = parked.fulfillment_order_of(event)
        if fulfillment_order and (fulfillment_order not in known or fulfillment_order in held):
            held.add(fulfillment_order)
            parking.append(event)
        else:
            writing.append(event)
    await log.append_events(conn, writing)
    await parked.park(conn, parking)
