"""The event log's vocabulary at capture: known types and their payloads, subscribers' type
filters, and the event a progress step without typed events stands for."""

from __future__ import annotations

from oms.events.v1 import events_pb2

from services.capture.domain import events as vocabulary
from services.capture.domain.events import EventDraft, derived_event


def test_every_type_carries_a_payload_the_event_message_has() -> None:
    oneof = {f.name for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"].fields}
    assert set(vocabulary.EVENT_TYPES.values()) <= oneof


def test_an_unknown_type_or_another_types_payload_is_a_problem() -> None:
    assert vocabulary.type_problem("shipment.shipped", "shipment_changed") == ""
    assert vocabulary.type_problem("shipment.shipped", "") == ""
    assert "unknown event type" in vocabulary.type_problem("shipment.teleported", "")
    assert "shipment_changed" in vocabulary.type_problem("shipment.shipped", "lines_changed")


def test_a_filter_names_a_type_or_a_known_family() -> None:
    assert vocabulary.filter_problem("refund.issued") == ""
    assert vocabulary.filter_problem("shipment.*") == ""
    assert "family" in vocabulary.filter_problem("bogus.*")
    assert vocabulary.filter_problem("shipment") != ""


def test_lifecycle_kinds_become_their_events() -> None:
    assert derived_event("lifecycle.started", "pending", "processing") == EventDraft(
        "order.processing", {"from_status": "pending", "to_status": "processing"}
    )
    assert derived_event("payment.authorized", "processing", "authorized") == EventDraft(
        "payment.authorized"
    )
    assert derived_event("fulfillment.rejected", "allocated", "") == EventDraft(
        "fulfillment.rejected", {"status": "rejected"}
    )
    assert derived_event("change.cancel", "allocated", "") == EventDraft("lines.canceled")


def test_exceptions_are_raised_by_category_escalations_and_resolutions_keep_their_type() -> None:
    assert derived_event("exception.payment", "processing", "on_hold") == EventDraft(
        "exception.raised", {"category": "payment"}
    )
    assert derived_event("exception.escalated", "on_hold", "").type == "exception.escalated"
    assert derived_event("exception.resolved", "on_hold", "processing").type == (
        "exception.resolved"
    )


def test_an_unknown_kind_is_an_event_only_when_it_moves_the_order_to_a_logged_status() -> None:
    assert derived_event("note.added", "allocated", "") is None
    assert derived_event("something.else", "fulfilled", "closed") == EventDraft(
        "order.closed", {"from_status": "fulfilled", "to_status": "closed"}
    )
    assert derived_event("something.else", "processing", "allocated") is None
