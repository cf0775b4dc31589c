"""Returns: open a return order (RMA), refunding at once when no return is wanted, and receive
what comes back (accepted units refunded less any fee, rejected ones go back to the shopper)."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from workflows import activity_names as names
from workflows import billing, order_events
from workflows.changes.replacements import replace_on_receipt
from workflows.changes.steps import (
    Steps,
    check_return_window,
    give_back,
    memo,
    money,
    refunded,
    refusal,
)
from workflows.ledger import ChangeRefused
from workflows.state import ReturnOrder
from workflows.types import (
    ChangeRequest,
    ChangeResult,
    EventData,
    LineQuantityChange,
    ReceiptInput,
    ReturnOrderInput,
)


def check(steps: Steps, request: ChangeRequest) -> None:
    """Refuse (ChangeRefused) a return the window or the buckets do not allow."""
    check_return_window(steps)
    steps.ledger.plan_return(request.lines)


async def open_return(
    steps: Steps, request: ChangeRequest, *, exchange: bool, record: bool = True
) -> ChangeResult:
    """Record a return order and the units it expects; `record` False leaves recording the
    change to the caller (an exchange adds to it first)."""
    ledger, order, state = steps.ledger, steps.order, steps.state
    try:
        plan = ledger.plan_return(request.lines)
    except ChangeRefused as refused:
        raise refusal(refused) from None
    step = f"change:{request.change_id}"
    return_order_id = f"{order.order_id}-R{len(state.returns) + 1}"
    await steps.activity(
        names.CREATE_RETURN_ORDER,
        ReturnOrderInput(
            order.order_id,
            f"{order.order_id}:rma:{request.change_id}",
            return_order_id,
            request.reason,
            plan,
        ),
    )
    rma = ReturnOrder(
        return_order_id,
        {i.order_line_id: i.quantity for i in plan},
        fee_minor=request.return_fee_minor,
        exchange=exchange,
    )
    state.returns[return_order_id] = rma
    for item in plan:
        ledger.lines[item.order_line_id].return_initiated += item.quantity
    result = ChangeResult(
        change_id=request.change_id,
        kind="exchange" if exchange else "return",
        summary=f"Return {return_order_id} opened for {sum(i.quantity for i in plan)} unit(s): "
        f"{request.reason or 'no reason given'}",
        lines=plan,
        return_order_id=return_order_id,
    )
    events = [requested(steps, result, request.reason)]
    if request.refund_without_return and not exchange:
        memo_made, refund = await give_back(
            steps,
            memo(
                steps,
                step,
                reason=f"refund without return: {request.reason}",
                kind="return",
                lines=ledger.credit_lines_for_return(plan),
                fee_minor=request.return_fee_minor,
            ),
            step,
        )
        rma.refunded_up_front = True
        rma.fee_charged = True
        result.credit_memo_id = memo_made.credit_memo_id
        result.credited_minor = memo_made.total_minor
        result.refunded_minor = refund.refunded_minor
        result.summary += f"; refunded {money(steps, memo_made.total_minor)} without return"
        events += refunded(memo_made, refund, "return")
    if not record:
        return result
    await steps.progress(
        "",
        "change.return" if not exchange else "change.exchange",
        result.summary,
        [LineQuantityChange(i.order_line_id, return_initiated=i.quantity) for i in plan],
        actor=request.actor,
        step=step,
        events=events,
    )
    return steps.record(request.change_id, result)


def requested(steps: Steps, opened: ChangeResult, reason: str) -> EventData:
    """return.requested for the return order a change opened (open: nothing received yet)."""
    return order_events.return_order(
        "return.requested",
        opened.return_order_id,
        "open",
        order_events.lines(steps.ledger, opened.lines),
        reason,
    )


def replaced(steps: Steps, result: ChangeResult) -> list[EventData]:
    """What shipping an exchange's replacements did: their fulfillment orders, and what a
    cheaper replacement's difference gave back (`replacements.ship` put both on `result`):
    refund.issued for money sent back from captures, payment.voided for what was released
    from holds, as for any other change (steps.refunded)."""
    ledger = steps.ledger
    events = [
        *order_events.allocated(
            ledger.fulfillment_orders[fo_id] for fo_id in result.fulfillment_order_ids
        ),
        *order_events.refund(result.credit_memo_id, result.refunded_minor, "exchange"),
    ]
    if result.released_minor > 0:
        events.append(order_events.payment("payment.voided", result.released_minor))
    return events


def check_receipt(steps: Steps, request: ChangeRequest) -> None:
    """Refuse a receipt of units the return order does not expect (ApplicationError)."""
    rma = steps.state.returns.get(request.return_order_id)
    if rma is None:
        raise ApplicationError(
            f"return_order_id: no return {request.return_order_id!r} on this order",
            type="NOT_FOUND",
        )
    received: dict[str, int] = {}
    for item in [*request.lines, *request.rejected_lines]:
        if item.quantity <= 0:
            raise ApplicationError("quantities must be > 0", type="INVALID_ARGUMENT")
        received[item.order_line_id] = received.get(item.order_line_id, 0) + item.quantity
    if not received:
        raise ApplicationError("lines: nothing received", type="INVALID_ARGUMENT")
    for line_id, quantity in received.items():
        if quantity > rma.outstanding(line_id):
            raise ApplicationError(
                f"return {rma.return_order_id} expects {rma.outstanding(line_id)} more unit(s) "
                f"of line {line_id}, not {quantity}",
                type="FAILED_PRECONDITION",
            )


async def receive(steps: Steps, request: ChangeRequest) -> ChangeResult:
    """Items came back: accepted ones are refunded (less any return fee), or replaced when an
    exchange ships on receipt; rejected ones go back to the shopper."""
    ledger, order = steps.ledger, steps.order
    rma = steps.state.returns[request.return_order_id]
    step = f"change:{request.change_id}"
    await steps.activity(
        names.RECORD_RETURN_RECEIPT,
        ReceiptInput(
            order.order_id,
            f"{order.order_id}:receipt:{request.change_id}",
            rma.return_order_id,
            request.lines,
            request.rejected_lines,
            request.reason,
        ),
    )
    for item in [*request.lines, *request.rejected_lines]:
        rma.received[item.order_line_id] = rma.received.get(item.order_line_id, 0) + item.quantity
    result = ChangeResult(
        change_id=request.change_id,
        kind="receive_return",
        summary="",
        lines=request.lines,
        return_order_id=rma.return_order_id,
    )
    accepted_units = sum(i.quantity for i in request.lines)
    refund_lines = request.lines if not rma.exchange else []
    # An exchange that ships on receipt: replacements for what was accepted; when they cannot
    # ship, the accepted units are refunded instead.
    events: list[EventData] = []
    if rma.replacements and request.lines:
        if await replace_on_receipt(steps, rma, request, result):
            events += replaced(steps, result)
        else:
            refund_lines = request.lines
    if refund_lines and not rma.refunded_up_front:
        fee = rma.fee_due()
        rma.fee_charged = True
        memo_made, refund = await give_back(
            steps,
            memo(
                steps,
                step,
                reason=f"return {rma.return_order_id} received",
                kind="return",
                lines=ledger.credit_lines_for_return(refund_lines),
                fee_minor=fee,
            ),
            step,
        )
        result.credit_memo_id = memo_made.credit_memo_id
        result.credited_minor += memo_made.total_minor
        result.refunded_minor += refund.refunded_minor
        events += refunded(memo_made, refund, "return")
    for item in request.lines:
        ledger.lines[item.order_line_id].returned += item.quantity
    for item in request.rejected_lines:
        ledger.lines[item.order_line_id].return_initiated -= item.quantity
    result.summary = (
        f"Return {rma.return_order_id}: received {accepted_units} unit(s) accepted, "
        f"{sum(i.quantity for i in request.rejected_lines)} rejected"
        + result.summary
        + (f"; refunded {money(steps, result.refunded_minor)}" if result.refunded_minor else "")
    )
    received = order_events.return_order(
        "return.received",
        rma.return_order_id,
        "partially_received" if rma.open() else "received",
        order_events.lines(ledger, request.lines),
        request.reason,
    )
    await steps.progress(
        "",
        "return.received",
        result.summary,
        [LineQuantityChange(i.order_line_id, returned=i.quantity) for i in request.lines]
        + [
            LineQuantityChange(i.order_line_id, return_initiated=-i.quantity)
            for i in request.rejected_lines
        ],
        actor=request.actor,
        step=step,
        events=[received, *events],
    )
    return steps.record(request.change_id, result)


def preview(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    """What the return would give back, less its fee."""
    check_return_window(steps)
    plan = steps.ledger.plan_return(request.lines)
    result.credited_minor = (
        billing.return_credit_minor(steps.ledger, plan) - request.return_fee_minor
    )
    result.summary = f"would give back {money(steps, result.credited_minor)}"
    return result
