"""Backorders: fulfillment reports that a backordered fulfillment order got its units from
arriving supply (it is now its location's work), or is promised for another date. Neither
moves a quantity bucket: the units were allocated when the backorder was made, and stay so."""

from __future__ import annotations

import dataclasses

from workflows import order_events
from workflows.changes.steps import Steps
from workflows.types import FulfillmentEvent, FulfillmentOrderData, ItemQuantity

RELEASED = "backorder_released"
REPROMISED = "backorder_repromised"
KINDS = frozenset({RELEASED, REPROMISED})


async def on_event(steps: Steps, fo: FulfillmentOrderData, event: FulfillmentEvent) -> None:
    """Record a backorder's release or new promise date on the order."""
    ledger = steps.ledger
    attached_to = f"fulfillment_order:{fo.fulfillment_order_id}"
    if event.kind == RELEASED:
        items = [ItemQuantity(i.order_line_id, i.quantity) for i in event.items]
        units = sum(i.quantity for i in items)
        await steps.progress(
            "",
            "fulfillment.released",
            f"Backorder released: {units} unit(s) reserved at {fo.location_id} "
            f"({event.reason}); sent to the location",
            actor=f"warehouse:{fo.location_id}",
            step=f"released:{event.event_id}",
            holds=("fulfillment", attached_to),
            events=[
                order_events.fulfillment_order(
                    "fulfillment.released",
                    fo,
                    "allocated",
                    order_events.lines(ledger, items, fo.lines),
                    event.reason,
                )
            ],
        )
        return
    now = event.replacements[0] if event.replacements else fo
    ledger.relocate(
        dataclasses.replace(
            fo,
            location_id=now.location_id,
            promise_date=now.promise_date,
            promised_delivery_date=now.promised_delivery_date,
        )
    )
    await steps.progress(
        "",
        "fulfillment.repromised",
        f"Backorder at {now.location_id} now promised for {now.promise_date} ({event.reason})",
        step=f"repromised:{event.event_id}",
        holds=("fulfillment", attached_to),
        events=[
            order_events.fulfillment_order(
                "fulfillment.repromised",
                now,
                "backordered",
                order_events.routed_lines(fo.lines),
                event.reason,
            )
        ],
    )
