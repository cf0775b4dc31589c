"""Reship: a parcel was lost or damaged; the same items ship again, at no charge."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from workflows import order_events
from workflows.changes.steps import Steps, cancel_placed, route
from workflows.ledger import ChangeRefused, Ledger
from workflows.types import ChangeRequest, ChangeResult, RoutingLineData


def check(ledger: Ledger, request: ChangeRequest) -> None:
    """Refuse (ChangeRefused) reshipping more than shipped."""
    if not request.lines:
        raise ChangeRefused("lines: at least one line to reship", "INVALID_ARGUMENT")
    for i, item in enumerate(request.lines):
        buckets = ledger.lines.get(item.order_line_id)
        if buckets is None or item.quantity <= 0:
            raise ChangeRefused(f"lines[{i}]: unknown line or quantity <= 0", "INVALID_ARGUMENT")
        if item.quantity > buckets.fulfilled:
            raise ChangeRefused(
                f"lines[{i}]: only {buckets.fulfilled} unit(s) of {buckets.line.sku} shipped"
            )


async def reship(steps: Steps, request: ChangeRequest) -> ChangeResult:
    """Place the units again; refused (nothing kept) when some cannot be placed."""
    step = f"change:{request.change_id}"
    placed = await route(
        steps,
        [
            RoutingLineData(
                i.order_line_id, steps.ledger.lines[i.order_line_id].line.sku, i.quantity
            )
            for i in request.lines
        ],
        f"reship:{request.change_id}",
    )
    if placed.unallocated:
        await cancel_placed(steps, placed, "reship could not be placed")
        raise ApplicationError(
            "no location can ship "
            + ", ".join(f"{u.quantity} x {u.sku}" for u in placed.unallocated),
            type="FAILED_PRECONDITION",
        )
    for fo in placed.fulfillment_orders:
        steps.ledger.add_fulfillment_order(fo, no_charge=True)
    result = ChangeResult(
        change_id=request.change_id,
        kind="reship",
        summary=f"Reshipping {sum(i.quantity for i in request.lines)} unit(s) at no "
        f"charge: {request.reason or 'parcel lost'}",
        lines=request.lines,
        fulfillment_order_ids=[fo.fulfillment_order_id for fo in placed.fulfillment_orders],
    )
    await steps.progress(
        "",
        "change.reship",
        result.summary,
        actor=request.actor,
        step=step,
        events=[
            order_events.lines_changed(
                "order.reshipped",
                order_events.lines(steps.ledger, request.lines),
                request.reason or "parcel lost",
            ),
            *order_events.allocated(placed.fulfillment_orders),
        ],
    )
    return steps.record(request.change_id, result)


def preview(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    """What the reship would do."""
    check(steps.ledger, request)
    units = sum(i.quantity for i in request.lines)
    result.summary = f"would ship {units} unit(s) again at no charge"
    return result
