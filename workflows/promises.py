"""Delivery promises as the lifecycle reports them to capture: pure and deterministic.

Fulfillment promises each fulfillment order a delivery date when it is created and again
when a parcel of it ships. A delivery group is promised the latest date of its fulfillment
orders that still count (units waiting to ship, or units shipped); one whose units were all
taken off (rejected, moved, canceled) no longer does. Each progress report carries the groups
whose promise changed since the last report, so capture's record follows without another call.
"""

from __future__ import annotations

from workflows.ledger import Ledger
from workflows.state import PromiseState
from workflows.types import DeliveryPromiseData, FulfillmentOrderData


def shipped(state: PromiseState, fulfillment_order_id: str, promised_delivery_date: str) -> None:
    """A parcel of the fulfillment order left; it is promised for `promised_delivery_date`
    now ("": as before)."""
    state.shipped[fulfillment_order_id] = promised_delivery_date


def fulfillment_order_promise(ledger: Ledger, state: PromiseState, fo: FulfillmentOrderData) -> str:
    """The day a fulfillment order is promised for, "" when it promises nothing (no date was
    made, or none of its units is left to ship and none shipped)."""
    fo_id = fo.fulfillment_order_id
    if fo_id in state.shipped:
        return state.shipped[fo_id] or fo.promised_delivery_date
    if ledger.is_open(fo_id):
        return fo.promised_delivery_date
    return ""


def group_promises(ledger: Ledger, state: PromiseState) -> dict[str, str]:
    """Delivery group id -> the latest promise of its fulfillment orders ("" for none), for
    every group that has had a fulfillment order."""
    out: dict[str, str] = {}
    for fo in ledger.state.fulfillment_orders:
        day = fulfillment_order_promise(ledger, state, fo)
        # ISO dates compare as strings; "" sorts before every date.
        out[fo.delivery_group_id] = max(out.get(fo.delivery_group_id, ""), day)
    return out


def changes(ledger: Ledger, state: PromiseState) -> list[DeliveryPromiseData]:
    """The groups whose promise differs from the one last reported (by group id), taken as
    reported now."""
    changed = [
        DeliveryPromiseData(group, day)
        for group, day in sorted(group_promises(ledger, state).items())
        if state.reported.get(group, "") != day
    ]
    for promise in changed:
        state.reported[promise.delivery_group_id] = promise.promised_delivery_date
    return changed
