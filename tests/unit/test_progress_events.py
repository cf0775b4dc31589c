"""The lifecycle's typed events as the progress activity sends them: each payload in its own
oneof field of oms.events.v1.Event, money in the report's currency, nothing capture fills in,
and within what capture's request guard accepts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from oms_platform import request_limits
from workflows import order_events
from workflows.activities import _progress
from workflows.changes.returns import replaced
from workflows.ledger import Ledger
from workflows.state import LedgerState
from workflows.types import (
    ChangeResult,
    EventData,
    EventLineData,
    FulfillmentOrderData,
    ItemQuantity,
    ProgressInput,
    RoutingLineData,
)

MUG = EventLineData("line-2", "SKU-MUG", 1)
FO = FulfillmentOrderData("fo-1", "wh-east", "dg-1", [RoutingLineData("line-2", "SKU-MUG", 1)])


def report(*events: EventData) -> ProgressInput:
    return ProgressInput(
        order_id="o-1",
        idempotency_key="o-1:progress:x",
        status="",
        kind="x",
        summary="x",
        currency="EUR",
        events=list(events),
    )


EVERY_PAYLOAD = [
    (order_events.order_status("order.canceled", "allocated", "canceled"), "order_status_changed"),
    (order_events.payment("payment.captured", 4050, "inv-1"), "payment_changed"),
    (*order_events.allocated([FO]), "fulfillment_order_changed"),
    (order_events.shipment("shipment.shipped", "s1", FO, "UPS", "1Z", [MUG]), "shipment_changed"),
    (order_events.lines_changed("order.appeased", [], "late", 700), "lines_changed"),
    (order_events.return_order("return.received", "R1", "received", [MUG]), "return_order_changed"),
    (*order_events.refund("cm-1", 1500, "return"), "refund_issued"),
    (
        order_events.process_exception("exception.raised", "pe-1", "payment"),
        "process_exception_changed",
    ),
]


@pytest.mark.parametrize(("event", "payload"), EVERY_PAYLOAD)
def test_each_event_carries_its_type_and_only_its_payload(event: EventData, payload: str) -> None:
    [sent] = _progress(report(event)).events

    assert sent.type == event.type
    assert sent.WhichOneof("payload") == payload
    # What capture fills in is left to it.
    assert (sent.event_id, sent.order_id, sent.channel, sent.actor) == ("", "", "", "")
    assert not sent.HasField("occurred_at")


def test_the_payloads_say_what_changed_with_money_in_the_orders_currency() -> None:
    captured, shipped, appeased, refunded = _progress(
        report(
            order_events.payment("payment.captured", 4050, "inv-1"),
            order_events.shipment("shipment.shipped", "s1", FO, "UPS", "1Z9", [MUG]),
            order_events.lines_changed("order.appeased", [], "late", 700),
            *order_events.refund("cm-1", 1500, "return"),
        )
    ).events

    assert (
        captured.payment_changed.amount.amount_minor,
        captured.payment_changed.amount.currency,
    ) == (
        4050,
        "EUR",
    )
    assert captured.payment_changed.invoice_id == "inv-1"
    ship = shipped.shipment_changed
    assert (ship.shipment_id, ship.fulfillment_order_id, ship.location_id) == (
        "s1",
        "fo-1",
        "wh-east",
    )
    assert (ship.carrier, ship.tracking_number) == ("UPS", "1Z9")
    assert [(x.order_line_id, x.sku, x.quantity) for x in ship.lines] == [("line-2", "SKU-MUG", 1)]
    assert appeased.lines_changed.amount.amount_minor == 700
    assert appeased.lines_changed.reason == "late"
    assert (refunded.refund_issued.credit_memo_id, refunded.refund_issued.cause) == (
        "cm-1",
        "return",
    )
    assert refunded.refund_issued.amount.amount_minor == 1500


def test_a_change_that_moved_no_money_leaves_its_amount_unset() -> None:
    [canceled] = _progress(
        report(order_events.lines_changed("lines.canceled", [MUG], "changed my mind"))
    ).events

    assert not canceled.lines_changed.HasField("amount")


def test_nothing_given_back_is_no_refund() -> None:
    assert order_events.refund("cm-1", 0, "cancel") == []


def test_a_replacement_line_takes_its_sku_from_the_fulfillment_order_that_carries_it() -> None:
    blue = RoutingLineData("line-2:exchange:c1", "SKU-MUG-BLUE", 1)
    lines = order_events.lines(
        Ledger(LedgerState(lines=[])), [ItemQuantity(blue.order_line_id, 1)], [blue]
    )

    assert lines == [EventLineData("line-2:exchange:c1", "SKU-MUG-BLUE", 1)]


def test_a_report_with_every_kind_of_event_passes_captures_request_guard() -> None:
    request = _progress(report(*(event for event, _ in EVERY_PAYLOAD)))

    assert request_limits.violations(request) == []


def test_an_exchange_logs_what_it_refunded_and_what_it_released_apart() -> None:
    """A cheaper replacement gives back the difference: the part refunded from captures is a
    refund.issued, the part released from holds (never charged) a payment.voided."""
    steps = SimpleNamespace(ledger=SimpleNamespace(fulfillment_orders={}))
    result = ChangeResult(
        change_id="x-1", kind="exchange", summary="", credit_memo_id="cm-1",
        refunded_minor=700, released_minor=300,
    )  # fmt: skip
    events = replaced(steps, result)  # type: ignore[arg-type]
    assert [e.type for e in events] == ["refund.issued", "payment.voided"]
    assert events[0].refund is not None and events[0].refund.amount_minor == 700
    assert events[1].payment is not None and events[1].payment.amount_minor == 300
