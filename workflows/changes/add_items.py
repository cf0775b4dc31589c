"""Adding items: new lines or more units of existing ones, before anything shipped. Routed and
reserved first, then the difference authorized on the order's payment methods; when a unit
finds no location or the payment is declined, the fulfillment orders just made are canceled
and the change refused: nothing stays reserved, held or changed."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError

from workflows import order_events
from workflows.changes.steps import Steps, authorize_more, cancel_placed, money, refusal, route
from workflows.ledger import AddItemsPlan, ChangeRefused
from workflows.types import (
    CANCELED,
    PENDING,
    ChangeRequest,
    ChangeResult,
    LineQuantityChange,
)


def check_allowed(steps: Steps, *, now: bool) -> None:
    """Refuse (ChangeRefused) adding items to an order in a state that does not allow it.
    `now`: under the lock, where the payment must be authorized already; before it, an order
    whose lifecycle has begun is authorized by the time the lock is free."""
    status = steps.state.status
    if steps.done or status == CANCELED:
        raise ChangeRefused(f"order is {status if not steps.done else 'closed'}; no more changes")
    if steps.waiting_on:
        raise ChangeRefused(
            f"order is on hold for process exception {steps.waiting_on}; resolve it first"
        )
    if (not steps.authorized) if now else status == PENDING:
        raise ChangeRefused("the order's payment is not authorized yet; add items once it is")


def plan(steps: Steps, request: ChangeRequest) -> AddItemsPlan:
    """The lines and units the request adds (ChangeRefused when it may not)."""
    return steps.ledger.plan_add_items(
        steps.order.order_id,
        request.change_id,
        request.new_lines,
        request.increases,
        [g.delivery_group_id for g in steps.order.delivery_groups],
    )


def check(steps: Steps, request: ChangeRequest) -> None:
    """The validator's checks, before the Update enters history."""
    check_allowed(steps, now=False)
    plan(steps, request)


async def add_items(steps: Steps, request: ChangeRequest) -> ChangeResult:
    """Add the items: placed, authorized, recorded, then taken into the order."""
    order, ledger = steps.order, steps.ledger
    try:
        # The state may have moved on while this waited for the lock.
        check_allowed(steps, now=True)
        added = plan(steps, request)
    except ChangeRefused as refused:
        raise refusal(refused) from None
    step = f"change:{request.change_id}"
    # Safe to await: the lock keeps shipments and other changes out until this ends.
    placed = await route(
        steps, added.routing_lines(), f"add:{request.change_id}", added.new_lines()
    )
    if placed.unallocated:
        await cancel_placed(steps, placed, "added items could not be placed")
        raise ApplicationError(
            "no location can ship "
            + ", ".join(f"{u.quantity} x {u.sku}" for u in placed.unallocated)
            + "; nothing was added",
            type="FAILED_PRECONDITION",
        )
    amount = added.total_minor
    if amount > 0:
        declined = await _authorize(steps, amount, request.change_id)
        if declined:
            await cancel_placed(steps, placed, "payment for added items declined")
            raise ApplicationError(
                f"payment of {money(steps, amount)} for the added items was declined "
                f"({declined}); nothing was added",
                type="FAILED_PRECONDITION",
            )
    grand_total = order.grand_total_minor + amount
    result = ChangeResult(
        change_id=request.change_id,
        kind="add_items",
        summary=f"Added {added.units} unit(s) ({len(added.new_lines())} new line(s)) for "
        f"{money(steps, amount)}; authorized {money(steps, amount)} more, order total now "
        f"{money(steps, grand_total)}: {request.reason or 'items added'}",
        lines=added.items(),
        fulfillment_order_ids=[fo.fulfillment_order_id for fo in placed.fulfillment_orders],
        authorized_minor=amount,
        grand_total_minor=grand_total,
    )
    events = [
        order_events.lines_changed(
            "lines.added",
            order_events.lines(ledger, added.items(), added.routing_lines()),
            request.reason or "items added",
            amount,
        ),
        *([order_events.payment("payment.authorized", amount)] if amount > 0 else []),
        *order_events.allocated(placed.fulfillment_orders),
    ]
    try:
        await steps.progress(
            "",
            "change.add_items",
            result.summary,
            [
                LineQuantityChange(line.order_line_id, allocated=line.quantity)
                for fo in placed.fulfillment_orders
                for line in fo.lines
            ],
            actor=request.actor,
            step=step,
            added_lines=added.additions(),
            events=events,
        )
    except ActivityError:
        # Capture refused the order's new record: take the reservations back.
        await cancel_placed(steps, placed, "added items could not be recorded")
        raise
    # The order as it is now: its lines (ledger and input agree) and grand total.
    ledger.apply_add_items(added)
    position = {line.order_line_id: i for i, line in enumerate(order.lines)}
    for units in added.added:
        if units.new_line:
            order.lines.append(units.line)
        else:
            order.lines[position[units.line.order_line_id]] = units.line
    order.grand_total_minor = grand_total
    for fo in placed.fulfillment_orders:
        ledger.add_fulfillment_order(fo)
    # The progress above went out before the total and locations moved.
    steps.publish()
    return steps.record(request.change_id, result)


async def _authorize(steps: Steps, amount: int, change_id: str) -> str:
    """Hold `amount` more on the order's payment methods, as an authorization of its own;
    returns why it was declined ("" when approved)."""
    try:
        auth = await authorize_more(steps, amount, "add", change_id, with_additional_methods=True)
    except ActivityError as refused:  # e.g. the payment method is no longer valid
        return f"payment refused: {refused.cause or refused}"
    return "" if auth.approved else auth.decline_reason or "declined"


def preview(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    """What adding items would add and authorize (stock is only known by routing)."""
    check_allowed(steps, now=False)
    added = plan(steps, request)
    result.lines = added.items()
    result.authorized_minor = added.total_minor
    result.grand_total_minor = steps.order.grand_total_minor + added.total_minor
    result.summary = (
        f"would add {added.units} unit(s) ({len(added.new_lines())} new line(s)) and "
        f"authorize {money(steps, added.total_minor)} more; order total "
        f"{money(steps, result.grand_total_minor)}"
    )
    return result
