"""Replacements for exchanged units: placed and reserved, the price difference charged (a
dearer item) or refunded (a cheaper one), shipped at no charge. Shared by an exchange that
ships at once and one that ships when its return is received."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from workflows import activity_names as names
from workflows import billing
from workflows.changes.steps import (
    Steps,
    authorize_more,
    cancel_placed,
    capture,
    give_back,
    memo,
    money,
    route,
)
from workflows.state import Replacement, ReturnOrder
from workflows.types import (
    ChangeRequest,
    ChangeResult,
    ChargeLineData,
    FulfillmentOrderData,
    InvoiceInput,
    InvoiceResult,
    ItemQuantity,
    RouteResult,
    RoutingLineData,
)


async def place(
    steps: Steps, change_id: str, items: list[ItemQuantity], replacements: dict[str, Replacement]
) -> RouteResult | None:
    """Route and reserve replacements for `items`; None (and nothing reserved) when some
    cannot be placed."""
    placed = await route(
        steps,
        [
            RoutingLineData(
                f"{i.order_line_id}:exchange:{change_id}",
                replacements[i.order_line_id].sku,
                i.quantity,
            )
            for i in items
        ],
        f"exchange:{change_id}",
    )
    if placed.unallocated:
        await cancel_placed(steps, placed, "the replacement could not be placed")
        return None
    return placed


async def charge_difference(
    steps: Steps, amount: int, fo: FulfillmentOrderData, change_id: str
) -> int:
    """Authorize, invoice and capture what a dearer replacement costs more; ApplicationError
    (FAILED_PRECONDITION) when the payment is declined."""
    order, state = steps.order, steps.state
    auth = await authorize_more(steps, amount, "exchange", change_id, with_additional_methods=False)
    if not auth.approved:
        raise ApplicationError(
            f"the price difference was declined: {auth.decline_reason}",
            type="FAILED_PRECONDITION",
        )
    invoice: InvoiceResult = await steps.activity(
        names.CREATE_INVOICE,
        InvoiceInput(
            order_id=order.order_id,
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key=f"{order.order_id}:invoice:exchange:{change_id}",
            currency=order.currency,
            lines=[ChargeLineData(f"exchange:{change_id}", fo.lines[0].sku, 1, amount, 0, 0, 1, 0)],
            shipping_minor=0,
        ),
        result_type=InvoiceResult,
    )
    state.invoiced_minor += invoice.total_minor
    captured = await capture(steps, invoice)
    state.captured_minor += captured
    return captured


async def ship(
    steps: Steps,
    placed: RouteResult,
    items: list[ItemQuantity],
    difference: int,
    step: str,
    result: ChangeResult,
) -> None:
    """The replacements are on their way at no charge; refund the returned units' share
    beyond a cheaper replacement (a dearer one was charged before)."""
    ledger = steps.ledger
    for item in items:
        ledger.lines[item.order_line_id].credited_for_return += item.quantity
    for fo in placed.fulfillment_orders:
        ledger.add_fulfillment_order(fo, no_charge=True)
    if difference < 0:
        memo_made, refund = await give_back(
            steps,
            memo(
                steps,
                step,
                reason="exchange for a cheaper item",
                kind="appeasement",
                appeasement_minor=-difference,
            ),
            step,
        )
        result.credit_memo_id = memo_made.credit_memo_id
        result.credited_minor = memo_made.total_minor
        result.refunded_minor = refund.refunded_minor
        result.released_minor = refund.released_minor
    result.fulfillment_order_ids += [fo.fulfillment_order_id for fo in placed.fulfillment_orders]
    moved = (
        f"charged {money(steps, difference)}" if difference > 0
        else f"refunded {money(steps, -difference)}" if difference < 0
        else "no money moves"
    )  # fmt: skip
    result.summary += f"; replacement ships now, {moved}"


async def replace_on_receipt(
    steps: Steps, rma: ReturnOrder, request: ChangeRequest, result: ChangeResult
) -> bool:
    """Ship the replacements of what an exchange's receipt accepted and settle the price
    difference; False (nothing reserved or charged) when they cannot ship or the difference
    is declined."""
    change_id = request.change_id
    placed = await place(steps, change_id, request.lines, rma.replacements)
    if placed is None:
        result.summary = "; no location can ship the replacement, refunded instead"
        return False
    # The restocking fee the policy charges on the exchange, settled with the first difference.
    fee = rma.fee_due()
    difference = billing.exchange_difference(steps.ledger, request.lines, rma.replacements, fee)
    if difference > 0:
        try:
            result.charged_minor = await charge_difference(
                steps, difference, placed.fulfillment_orders[0], change_id
            )
        except ApplicationError as declined:
            await cancel_placed(steps, placed, "the price difference was declined")
            result.summary = f"; {declined.message}, refunded instead"
            return False
    await ship(steps, placed, request.lines, difference, f"change:{change_id}", result)
    if fee:
        rma.fee_charged = True
    return True
