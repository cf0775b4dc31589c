"""Address change: a delivery group goes to a new address before any of its units shipped.
Fulfillment keeps the address for routing and moves the group's unshipped units when routing
for the new address chooses other locations; capture's record shows the new address."""

from __future__ import annotations

from dataclasses import replace

from workflows import activity_names as names
from workflows import order_events
from workflows.changes.steps import Steps, refusal
from workflows.ledger import ChangeRefused, Ledger
from workflows.types import (
    Address,
    ChangeAddressInput,
    ChangeAddressResult,
    ChangeRequest,
    ChangeResult,
    DeliveryGroupAddressData,
    ItemQuantity,
    OrderLifecycleInput,
)


def check(
    order: OrderLifecycleInput, ledger: Ledger, request: ChangeRequest, status: str
) -> Address:
    """The new address; refused (ChangeRefused) for an unknown group, or one that has shipped
    (FAILED_PRECONDITION naming what shipped and the order's status)."""
    group_id = request.delivery_group_id
    if not any(g.delivery_group_id == group_id for g in order.delivery_groups):
        raise ChangeRefused(
            f"delivery_group_id: no delivery group {group_id!r} in this order", "INVALID_ARGUMENT"
        )
    if request.address is None:
        raise ChangeRefused("address: is required", "INVALID_ARGUMENT")
    shipped = sum(
        b.fulfilled for b in ledger.lines.values() if b.line.delivery_group_id == group_id
    )
    if shipped:
        raise ChangeRefused(
            f"delivery group {group_id} has shipped {shipped} unit(s); its address can no "
            f"longer change (order is {status})"
        )
    return request.address


async def change_address(steps: Steps, request: ChangeRequest) -> ChangeResult:
    """Keep the new address at fulfillment (which reroutes the group's unshipped units when
    routing chooses elsewhere), follow any move in the ledger, and tell capture."""
    order, ledger = steps.order, steps.ledger
    try:
        address = check(order, ledger, request, steps.state.status)
    except ChangeRefused as refused:  # the state moved on while this waited (a unit shipped)
        raise refusal(refused) from None
    group_id = request.delivery_group_id
    changed = ChangeAddressResult(rerouted=False)
    if any(fo.delivery_group_id == group_id for fo in ledger.fulfillment_orders.values()):
        # Routed already: fulfillment keeps the address and moves the units if it chooses so.
        # (Not routed yet: the group is routed for the new address when it is.)
        changed = await steps.activity(
            names.CHANGE_DELIVERY_ADDRESS,
            ChangeAddressInput(
                order_id=order.order_id,
                delivery_group_id=group_id,
                idempotency_key=f"{order.order_id}:address:{request.change_id}",
                address=address,
                reason=request.reason or "delivery address changed",
            ),
            result_type=ChangeAddressResult,
        )
    # Routing reads the group's address from the order from now on (rejections, additions).
    steps.order = replace(
        order,
        delivery_groups=[
            replace(g, address=address) if g.delivery_group_id == group_id else g
            for g in order.delivery_groups
        ],
    )
    # Each old fulfillment order gave up every unit it had not shipped.
    taken = {
        fo_id: ledger.open_items(fo_id)
        for fo_id in changed.canceled_fulfillment_order_ids
        if fo_id in ledger.fulfillment_orders
    }
    line_changes = ledger.reroute(taken, changed.replacements)
    moved = [item for items in taken.values() for item in items]
    events = [
        order_events.fulfillment_order(
            "fulfillment.canceled",
            ledger.fulfillment_orders[fo_id],
            "canceled",
            order_events.lines(ledger, items),
            "delivery address changed",
        )
        for fo_id, items in taken.items()
    ]
    where = (
        f"; rerouted from {', '.join(changed.from_location_ids)} to "
        f"{', '.join(changed.to_location_ids)}"
        if changed.rerouted
        else f"; still ships from {', '.join(changed.to_location_ids) or 'nowhere yet'}"
    )
    result = ChangeResult(
        change_id=request.change_id,
        kind="address_change",
        summary=f"Delivery group {group_id} sent to a new address{where}",
        lines=moved,
        fulfillment_order_ids=[fo.fulfillment_order_id for fo in changed.replacements],
        rerouted=changed.rerouted,
        location_ids=list(changed.to_location_ids),
    )
    group_lines = [
        ItemQuantity(line_id, b.ordered - b.canceled)
        for line_id, b in ledger.lines.items()
        if b.line.delivery_group_id == group_id and b.ordered > b.canceled
    ]
    await steps.progress(
        "",
        "change.address",
        result.summary,
        line_changes,
        actor=request.actor,
        step=f"change:{request.change_id}",
        events=[
            order_events.lines_changed(
                "order.address_changed",
                order_events.lines(ledger, group_lines),
                result.summary.removeprefix(f"Delivery group {group_id} sent to a new address; "),
            ),
            *events,
            *order_events.allocated(changed.replacements),
        ],
        delivery_group_addresses=[DeliveryGroupAddressData(group_id, address)],
    )
    steps.publish()
    return steps.record(request.change_id, result)


def preview(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    """Whether the order allows the change (where the units would ship from is fulfillment's
    to say: servicing asks it)."""
    check(steps.order, steps.ledger, request, steps.state.status)
    group_id = request.delivery_group_id
    where = sorted(
        {
            fo.location_id
            for fo_id, fo in steps.ledger.fulfillment_orders.items()
            if fo.delivery_group_id == group_id and steps.ledger.is_open(fo_id)
        }
    )
    result.summary = f"would send delivery group {group_id} to a new address"
    result.location_ids = where
    return result
