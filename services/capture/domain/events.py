"""The event log's vocabulary at capture: which event types exist and which payload each
carries, what a subscriber's type filter may name, and the one event capture derives from a
progress step that brought no typed events of its own (a lifecycle that predates typed events).

Pure: an event here is a draft (type, payload kind, payload fields); the edge turns it into
oms.events.v1.Event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Payload kinds: the names of the oneof fields of oms.events.v1.Event.
ORDER_CAPTURED = "order_captured"
ORDER_STATUS_CHANGED = "order_status_changed"
PAYMENT_CHANGED = "payment_changed"
FULFILLMENT_ORDER_CHANGED = "fulfillment_order_changed"
SHIPMENT_CHANGED = "shipment_changed"
LINES_CHANGED = "lines_changed"
RETURN_ORDER_CHANGED = "return_order_changed"
REFUND_ISSUED = "refund_issued"
PROCESS_EXCEPTION_CHANGED = "process_exception_changed"

# Every event type of the log and the payload it carries (README "Events").
EVENT_TYPES: Mapping[str, str] = {
    "order.captured": ORDER_CAPTURED,
    "order.imported": ORDER_CAPTURED,
    "order.processing": ORDER_STATUS_CHANGED,
    "order.fulfilled": ORDER_STATUS_CHANGED,
    "order.closed": ORDER_STATUS_CHANGED,
    "order.canceled": ORDER_STATUS_CHANGED,
    "payment.authorized": PAYMENT_CHANGED,
    "payment.declined": PAYMENT_CHANGED,
    "payment.captured": PAYMENT_CHANGED,
    "payment.voided": PAYMENT_CHANGED,
    **{
        f"fulfillment.{verb}": FULFILLMENT_ORDER_CHANGED
        for verb in (
            "allocated",
            "accepted",
            "picked",
            "packed",
            "rejected",
            "canceled",
            "rerouted",
            "backordered",
            "released",
            "repromised",
            "ready_for_pickup",
            "in_transit_to_store",
        )
    },
    "shipment.shipped": SHIPMENT_CHANGED,
    "shipment.delivered": SHIPMENT_CHANGED,
    "shipment.delivery_failed": SHIPMENT_CHANGED,
    "lines.canceled": LINES_CHANGED,
    "lines.added": LINES_CHANGED,
    "order.appeased": LINES_CHANGED,
    "order.reshipped": LINES_CHANGED,
    "order.exchanged": LINES_CHANGED,
    "order.address_changed": LINES_CHANGED,
    "return.requested": RETURN_ORDER_CHANGED,
    "return.received": RETURN_ORDER_CHANGED,
    "return.closed": RETURN_ORDER_CHANGED,
    "return.canceled": RETURN_ORDER_CHANGED,
    "refund.issued": REFUND_ISSUED,
    "exception.raised": PROCESS_EXCEPTION_CHANGED,
    "exception.escalated": PROCESS_EXCEPTION_CHANGED,
    "exception.resolved": PROCESS_EXCEPTION_CHANGED,
}

# The families a filter may name as "<family>.*".
FAMILIES = frozenset(t.split(".", 1)[0] for t in EVENT_TYPES)


@dataclass(frozen=True)
class EventDraft:
    """An event as the domain decides it: its type and its payload's fields (by payload kind),
    before capture gives it an id, an order, a channel, a time and an actor."""

    type: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def payload(self) -> str:
        """The payload kind (oneof field of oms.events.v1.Event) the type carries."""
        return EVENT_TYPES[self.type]


def type_problem(event_type: str, payload: str) -> str:
    """Why an event of `event_type` carrying payload kind `payload` ('' = none) cannot be
    logged, or '' when it can."""
    expected = EVENT_TYPES.get(event_type)
    if expected is None:
        return (
            f"unknown event type {event_type[:64]!r}: must be one of the types README "
            "'Events' lists"
        )
    if payload and payload != expected:
        return f"an event of type {event_type} carries the {expected} payload, not {payload}"
    return ""


def filter_problem(wanted: str) -> str:
    """Why a subscriber's type filter entry is not a known type or "<family>.*", or ''."""
    if wanted in EVENT_TYPES:
        return ""
    if wanted.endswith(".*") and wanted[:-2] in FAMILIES:
        return ""
    return (
        f"unknown event type {wanted[:64]!r}: name a type README 'Events' lists or a family "
        f"as '<family>.*' ({', '.join(sorted(FAMILIES))})"
    )


# Timeline kinds of lifecycle and change steps, and the event type each becomes. Kinds not here
# are decided below (fulfillment.<verb>, exception.<category>) or by the status change alone.
_KIND_TO_TYPE: Mapping[str, str] = {
    "lifecycle.started": "order.processing",
    "order.fulfilled": "order.fulfilled",
    "order.closed": "order.closed",
    "order.canceled": "order.canceled",
    "payment.authorized": "payment.authorized",
    "payment.declined": "payment.declined",
    "payment.captured": "payment.captured",
    "payment.voided": "payment.voided",
    "shipment.shipped": "shipment.shipped",
    "shipment.delivered": "shipment.delivered",
    "shipment.delivery_failed": "shipment.delivery_failed",
    "return.received": "return.received",
    "change.cancel": "lines.canceled",
    "change.add_items": "lines.added",
    "change.appease": "order.appeased",
    "change.reship": "order.reshipped",
    "change.exchange": "order.exchanged",
    "change.address": "order.address_changed",
    "change.return": "return.requested",
    "exception.escalated": "exception.escalated",
    "exception.resolved": "exception.resolved",
}


def derived_event(kind: str, status_before: str, status_after: str) -> EventDraft | None:
    """The one event a progress step without typed events stands for: from its timeline
    `kind` and the order's status before and after (`status_after` '' = unchanged); None when
    it is no event of the log."""
    changed = bool(status_after) and status_after != status_before
    event_type = _KIND_TO_TYPE.get(kind, "")
    fields: dict[str, Any] = {}
    family, _, rest = kind.partition(".")
    if not event_type and family == "fulfillment" and f"fulfillment.{rest}" in EVENT_TYPES:
        event_type = kind
        fields = {"status": rest}
    elif not event_type and family == "exception" and rest:
        event_type, fields = "exception.raised", {"category": rest}
    elif not event_type and changed and f"order.{status_after}" in EVENT_TYPES:
        event_type = f"order.{status_after}"
    if not event_type:
        return None
    if EVENT_TYPES[event_type] == ORDER_STATUS_CHANGED:
        fields = {"from_status": status_before, "to_status": status_after or status_before}
    return EventDraft(event_type, fields)
