"""Cancel: some units, or everything, not shipped yet."""

from __future__ import annotations

from workflows import billing, order_events, versions
from workflows.changes.steps import (
    Steps,
    cancel_units,
    money,
    refusal,
    void,
)
from workflows.ledger import ChangeRefused, Ledger
from workflows.types import CANCELED, ChangeRequest, ChangeResult


def check(ledger: Ledger, request: ChangeRequest) -> None:
    """Refuse (ChangeRefused) a cancel the buckets do not allow."""
    ledger.plan_cancel(request.lines)


async def cancel(steps: Steps, request: ChangeRequest) -> ChangeResult:
    """Cancel the units asked for (empty: all not shipped), give their money back, and end
    the order when nothing is left."""
    try:
        steps.ledger.plan_cancel(request.lines)
    except ChangeRefused as refused:  # the state moved on while this waited
        raise refusal(refused) from None
    # Patched: when nothing is left, the void is part of the memo's payments call.
    folded = steps.has_change(versions.CREDIT_MEMO_AND_REFUND)
    was = steps.state.status
    result = await cancel_units(
        steps,
        request.lines,
        request.reason or "canceled",
        f"change:{request.change_id}",
        void_when_all_canceled=folded,
    )
    if not folded and steps.ledger.all_canceled():
        await void(steps, request.reason or "every line canceled")
    await end_when_all_canceled(steps, was, result.summary, request.reason or "canceled")
    result.change_id, result.kind = request.change_id, "cancel"
    return steps.record(request.change_id, result)


async def end_when_all_canceled(steps: Steps, was: str, summary: str, reason: str) -> None:
    """A cancel that left every line canceled ends the order: tell capture (from the status
    `was` before the cancel); otherwise nothing."""
    if not steps.ledger.all_canceled():
        return
    await steps.progress(
        "",
        "order.canceled",
        f"Order canceled: {summary}",
        events=[order_events.order_status("order.canceled", was, CANCELED, reason)],
    )


def preview(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    """What the cancel would give back (units' money; shipping is known once it happens)."""
    plan = steps.ledger.plan_cancel(request.lines)
    result.lines = plan
    result.credited_minor = billing.cancel_credit_minor(steps.ledger, plan)
    result.summary = f"would give back {money(steps, result.credited_minor)}"
    return result
