"""The events capture writes to the log, as oms.events.v1.Event: an order captured or imported,
and a progress step's events (typed by the workflow, or derived by the domain from the step's
timeline kind), completed with what only capture knows (id, order, channel, time, actor)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2

from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.outbox import event_id
from services.capture import domain
from services.capture.domain import events as vocabulary


def order_captured(order: domain.Order, key: str, event_type: str, actor: str) -> events_pb2.Event:
    """`order.captured` / `order.imported` for a new order, its id drawn from the capture's
    idempotency key (a retried capture names the same event). The shopper id is left to the
    caller when the shopper is matched later (SubmitOrder's statement)."""
    assert order.created_at is not None
    event = events_pb2.Event(
        event_id=event_id(key),
        type=event_type,
        order_id=order.order_id,
        channel=order.channel,
        actor=actor,
    )
    event.occurred_at.FromDatetime(order.created_at)
    payload = event.order_captured
    payload.channel_order_ref = order.channel_order_ref
    payload.grand_total.CopyFrom(
        common_pb2.Money(amount_minor=order.totals.grand_total_minor, currency=order.currency)
    )
    payload.lines.extend(
        events_pb2.LineQuantity(
            order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantities.ordered
        )
        for line in order.lines
    )
    if order.shopper.shopper_id:
        payload.shopper_id = order.shopper.shopper_id
    payload.fraud_reasons.extend(order.fraud_reasons)
    return event


def check_step_events(events: Sequence[events_pb2.Event]) -> None:
    """Refuse a step's typed events whose type is unknown or whose payload is another type's
    (InvalidArgument naming `events[i].type`)."""
    violations = []
    for i, event in enumerate(events):
        problem = vocabulary.type_problem(event.type, event.WhichOneof("payload") or "")
        if problem:
            violations.append(FieldViolation(f"events[{i}].type", problem))
    if violations:
        raise InvalidArgument(violations)


def from_draft(draft: vocabulary.EventDraft) -> events_pb2.Event:
    """An event of the draft's type with its payload's plain fields set."""
    event = events_pb2.Event(type=draft.type)
    getattr(event, draft.payload).SetInParent()
    for name, value in draft.fields.items():
        setattr(getattr(event, draft.payload), name, value)
    return event


def completed(
    events: Sequence[events_pb2.Event],
    key: str,
    order_id: str,
    channel: str,
    at: datetime | None,
    actor: str,
) -> list[events_pb2.Event]:
    """A step's events as the log keeps them: ids from the step's key and place, the order and
    its channel (whatever the caller said), the step's time (or now) and actor unless given."""
    out = []
    for i, given in enumerate(events):
        event = stamped(given, channel, actor)
        event.event_id = event_id(f"{key}:{i}")
        event.order_id = order_id
        if not event.HasField("occurred_at"):
            event.occurred_at.FromDatetime(at or datetime.now(UTC))
        out.append(event)
    return out


def stamped(given: events_pb2.Event, channel: str, actor: str) -> events_pb2.Event:
    """A copy of `given` as capture writes it: its order's channel, the actor unless the
    writer named one, and no sequence or recorded time (the sequencer gives those)."""
    event = events_pb2.Event()
    event.CopyFrom(given)
    event.channel = channel
    event.ClearField("sequence")
    event.ClearField("recorded_at")
    if not event.actor:
        event.actor = actor
    return event
