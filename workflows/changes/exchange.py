"""Exchange: a return plus replacements, which ship at once (or, by the deployment's setting,
when the return is received); the price difference is charged or refunded as they ship."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from workflows import billing, order_events
from workflows.changes import replacements as replacing
from workflows.changes.returns import check as check_return
from workflows.changes.returns import open_return, replaced, requested
from workflows.changes.steps import Steps, cancel_placed, money, refusal
from workflows.ledger import ChangeRefused
from workflows.state import Replacement
from workflows.types import ChangeRequest, ChangeResult, LineQuantityChange


def check(steps: Steps, request: ChangeRequest) -> dict[str, Replacement]:
    """Refuse (ChangeRefused) an exchange the order does not allow; returns each line's
    replacement."""
    check_return(steps, request)
    if len(request.replacement_skus) != len(request.lines) or len(
        request.replacement_unit_prices_minor
    ) != len(request.lines):
        raise ChangeRefused(
            "replacement_skus and replacement_unit_prices_minor: one per line",
            "INVALID_ARGUMENT",
        )
    if any(price < 0 for price in request.replacement_unit_prices_minor):
        raise ChangeRefused("replacement_unit_prices_minor: must be >= 0", "INVALID_ARGUMENT")
    return {
        item.order_line_id: Replacement(sku, price)
        for item, sku, price in zip(
            request.lines,
            request.replacement_skus,
            request.replacement_unit_prices_minor,
            strict=True,
        )
    }


async def exchange(steps: Steps, request: ChangeRequest) -> ChangeResult:
    """The replacements are placed first, so an exchange that cannot ship changes nothing."""
    try:
        replacements = check(steps, request)
    except ChangeRefused as refused:  # the state moved on while this waited
        raise refusal(refused) from None
    if steps.order.exchange_ships_on_receipt:
        result = await open_return(steps, request, exchange=True, record=False)
        steps.state.returns[result.return_order_id].replacements = replacements
        result.summary += "; the replacement ships once the return is received"
        if request.return_fee_minor:
            result.summary += f", {_with_fee(steps, request.return_fee_minor)}"
        return await _record(steps, request, result)
    step = f"change:{request.change_id}"
    placed = await replacing.place(steps, request.change_id, request.lines, replacements)
    if placed is None:
        raise ApplicationError(
            "no location can ship the replacement "
            + ", ".join(
                f"{i.quantity} x {replacements[i.order_line_id].sku}" for i in request.lines
            ),
            type="FAILED_PRECONDITION",
        )
    fee = request.return_fee_minor
    difference = billing.exchange_difference(steps.ledger, request.lines, replacements, fee)
    charged = 0
    if difference > 0:
        try:
            charged = await replacing.charge_difference(
                steps, difference, placed.fulfillment_orders[0], request.change_id
            )
        except ApplicationError:
            await cancel_placed(steps, placed, "the price difference was declined")
            raise
    result = await open_return(steps, request, exchange=True, record=False)
    result.charged_minor = charged
    await replacing.ship(steps, placed, request.lines, difference, step, result)
    if fee:
        # Settled with the difference: the return's receipt withholds nothing more.
        steps.state.returns[result.return_order_id].fee_charged = True
        result.summary += f" ({_with_fee(steps, fee)})"
    return await _record(steps, request, result)


def _with_fee(steps: Steps, fee_minor: int) -> str:
    """How an exchange's summary names the restocking fee it charges."""
    return f"with a restocking fee of {money(steps, fee_minor)}"


async def _record(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    reason = request.reason
    exchanged = order_events.lines_changed(
        "order.exchanged", order_events.lines(steps.ledger, request.lines), reason
    )
    await steps.progress(
        "",
        "change.exchange",
        result.summary,
        [LineQuantityChange(i.order_line_id, return_initiated=i.quantity) for i in request.lines],
        actor=request.actor,
        step=f"change:{request.change_id}",
        events=[exchanged, requested(steps, result, reason), *replaced(steps, result)],
    )
    return steps.record(request.change_id, result)


def preview(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    """What an exchange would charge or refund (whether the replacements are in stock is known
    only when routing places them)."""
    fee = request.return_fee_minor
    difference = billing.exchange_difference(
        steps.ledger, request.lines, check(steps, request), fee
    )
    if difference > 0:
        result.charged_minor = difference
        moved = f"would charge {money(steps, difference)}"
    elif difference < 0:
        result.credited_minor = -difference
        moved = f"would refund {money(steps, -difference)}"
    else:
        moved = "no money would move"
    ships = "when the return is received" if steps.order.exchange_ships_on_receipt else "now"
    if fee:
        moved += f" ({_with_fee(steps, fee)})"
    result.summary = f"{moved}; the replacement would ship {ships}, stock permitting"
    return result
