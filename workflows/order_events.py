"""The typed events the lifecycle's progress reports carry to capture's event log: one builder
per kind of change, from what the workflow already holds (no I/O, no clock).

Event types and their payloads are the shared vocabulary (README "Events"). Only the type and
the payload are the workflow's to set; capture adds the event id, order, channel, time and
actor. Nothing personal goes in: ids, SKUs, quantities, money, statuses and reasons.
"""

from __future__ import annotations

from collections.abc import Iterable

from workflows.ledger import Ledger
from workflows.types import (
    EventData,
    EventLineData,
    FulfillmentOrderData,
    FulfillmentOrderEventData,
    ItemQuantity,
    LinesEventData,
    OrderStatusEventData,
    PaymentEventData,
    ProcessExceptionEventData,
    RefundEventData,
    ReturnOrderEventData,
    RoutingLineData,
    ShipmentEventData,
)


def lines(
    ledger: Ledger, items: Iterable[ItemQuantity], known: Iterable[RoutingLineData] = ()
) -> list[EventLineData]:
    """`items` with their SKUs: an order line's from the ledger, a replacement's (not an order
    line) from the fulfillment order lines `known` that carry it."""
    skus = {line.order_line_id: line.sku for line in known}
    skus.update({line_id: b.line.sku for line_id, b in ledger.lines.items()})
    return [
        EventLineData(i.order_line_id, skus.get(i.order_line_id, ""), i.quantity) for i in items
    ]


def routed_lines(routed: Iterable[RoutingLineData]) -> list[EventLineData]:
    """Fulfillment order lines as event lines."""
    return [EventLineData(line.order_line_id, line.sku, line.quantity) for line in routed]


def order_status(type_: str, from_status: str, to_status: str, reason: str = "") -> EventData:
    """order.processing, order.fulfilled, order.closed, order.canceled."""
    return EventData(type_, order_status=OrderStatusEventData(from_status, to_status, reason))


def payment(
    type_: str, amount_minor: int, invoice_id: str = "", decline_reason: str = ""
) -> EventData:
    """payment.authorized, payment.captured, payment.declined, payment.voided."""
    return EventData(type_, payment=PaymentEventData(amount_minor, invoice_id, decline_reason))


def allocated(fulfillment_orders: Iterable[FulfillmentOrderData]) -> list[EventData]:
    """fulfillment.allocated, one per fulfillment order created, with its lines
    (fulfillment.backordered for one promised from incoming supply, with its date)."""
    return [
        EventData(
            "fulfillment.backordered" if fo.promise_date else "fulfillment.allocated",
            fulfillment_order=FulfillmentOrderEventData(
                fo.fulfillment_order_id,
                fo.location_id,
                "backordered" if fo.promise_date else "allocated",
                routed_lines(fo.lines),
                f"promised for {fo.promise_date}" if fo.promise_date else "",
            ),
        )
        for fo in fulfillment_orders
    ]


def fulfillment_order(
    type_: str,
    fo: FulfillmentOrderData,
    status: str,
    event_lines: list[EventLineData],
    reason: str = "",
) -> EventData:
    """fulfillment.rejected, .rerouted, .canceled: what happened to (part of) one fulfillment
    order."""
    return EventData(
        type_,
        fulfillment_order=FulfillmentOrderEventData(
            fo.fulfillment_order_id, fo.location_id, status, event_lines, reason
        ),
    )


def shipment(
    type_: str,
    shipment_id: str,
    fo: FulfillmentOrderData,
    carrier: str = "",
    tracking_number: str = "",
    event_lines: list[EventLineData] | None = None,
) -> EventData:
    """shipment.shipped, shipment.delivered."""
    return EventData(
        type_,
        shipment=ShipmentEventData(
            shipment_id,
            fo.fulfillment_order_id,
            fo.location_id,
            carrier,
            tracking_number,
            event_lines or [],
        ),
    )


def lines_changed(
    type_: str, event_lines: list[EventLineData], reason: str = "", amount_minor: int = 0
) -> EventData:
    """lines.canceled, lines.added, order.appeased, order.reshipped, order.exchanged."""
    return EventData(type_, lines=LinesEventData(event_lines, reason, amount_minor))


def return_order(
    type_: str,
    return_order_id: str,
    status: str,
    event_lines: list[EventLineData],
    reason: str = "",
) -> EventData:
    """return.requested, return.received."""
    return EventData(
        type_, return_order=ReturnOrderEventData(return_order_id, status, event_lines, reason)
    )


def refund(credit_memo_id: str, given_back_minor: int, cause: str) -> list[EventData]:
    """refund.issued for money given back on a credit memo; none when nothing went back (a
    refund the gateway refused and an agent skipped)."""
    if given_back_minor <= 0:
        return []
    return [
        EventData("refund.issued", refund=RefundEventData(credit_memo_id, given_back_minor, cause))
    ]


def process_exception(
    type_: str, process_exception_id: str, category: str, resolution: str = ""
) -> EventData:
    """exception.raised, exception.escalated, exception.resolved."""
    return EventData(
        type_,
        process_exception=ProcessExceptionEventData(process_exception_id, category, resolution),
    )
