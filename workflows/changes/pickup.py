"""Store pickup not collected: fulfillment canceled a pickup fulfillment order whose deadline
passed (its stock is back); the order cancels those units, gives their money back (what was
only authorized is released) and ends when nothing else is left."""

from __future__ import annotations

from workflows.changes.cancel import end_when_all_canceled
from workflows.changes.steps import Steps, cancel_units
from workflows.types import FulfillmentOrderData, ItemQuantity


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
