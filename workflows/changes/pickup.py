"""Store pickup not collected: fulfillment canceled a pickup fulfillment order whose deadline
passed (its stock is back); the order cancels those units, gives their money back (what was
only authorized is released) and ends when nothing else is left.

Ship-to-store promised again: the transfer to the store left its warehouse on another day than
planned, so the fulfillment order is promised for another day; the order's promise follows.
No quantity bucket moves (the units stay allocated until the shopper collects them)."""

from __future__ import annotations

import dataclasses

from workflows import order_events
from workflows.changes.cancel import end_when_all_canceled
from workflows.changes.steps import Steps, cancel_units
from workflows.types import FulfillmentEvent, FulfillmentOrderData, ItemQuantity

TRANSFER_REPROMISED = "transfer_repromised"


async def not_collected(
    steps: Steps, fo: FulfillmentOrderData, items: list[ItemQuantity], reason: str
) -> None:
    """Cancel the units of `fo` fulfillment canceled (no more than the order still has open
    there: a cancel may have taken some first), as a cancel of the order's own."""
    open_units = steps.ledger.open_units.get(fo.fulfillment_order_id, {})
    units = [
        ItemQuantity(i.order_line_id, min(i.quantity, open_units.get(i.order_line_id, 0)))
        for i in items
    ]
    units = [u for u in units if u.quantity > 0]
    if not units:
        return
    was = steps.state.status
    await cancel_units(
        steps,
        units,
        reason,
        f"not-collected:{fo.fulfillment_order_id}",
        void_when_all_canceled=True,
        canceled_by_fulfillment=fo.fulfillment_order_id,
    )
    await end_when_all_canceled(steps, was, reason, reason)


async def transfer_repromised(
    steps: Steps, fo: FulfillmentOrderData, event: FulfillmentEvent
) -> None:
    """Record a ship-to-store fulfillment order's new promise (its transfer left for the
    store): the order's delivery group is promised again from it, as after a shipment."""
    now = dataclasses.replace(fo, promised_delivery_date=event.promised_delivery_date)
    steps.ledger.relocate(now)
    await steps.progress(
        "",
        "fulfillment.repromised",
        f"{event.reason[:1].upper()}{event.reason[1:]}; now promised for "
        f"{event.promised_delivery_date}",
        actor=f"warehouse:{fo.location_id}",
        step=f"repromised:{event.event_id}",
        holds=("fulfillment", f"fulfillment_order:{fo.fulfillment_order_id}"),
        events=[
            order_events.fulfillment_order(
                "fulfillment.repromised",
                now,
                "in_transit_to_store",
                order_events.routed_lines(fo.lines),
                event.reason,
            )
        ],
    )
