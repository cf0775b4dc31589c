"""Appeasement: goodwill, an amount or a percentage, on one line or the whole order."""

from __future__ import annotations

from workflows import billing, order_events
from workflows.changes.steps import Steps, give_back, memo, money, refunded, refusal
from workflows.ledger import ChangeRefused
from workflows.types import ChangeRequest, ChangeResult, EventData


def amount(steps: Steps, request: ChangeRequest) -> tuple[int, bool]:
    """The goodwill asked for, and whether it comes off what will be charged (ChangeRefused
    when the order does not allow it)."""
    return billing.appeasement_amount(
        steps.state,
        steps.ledger,
        steps.order.delivery_groups,
        steps.order.currency,
        request.lines,
        request.amount_minor,
        request.percent_basis_points,
    )


async def appease(steps: Steps, request: ChangeRequest) -> ChangeResult:
    """Give goodwill: refunded from what was charged, or taken off what will be."""
    try:
        goodwill, before_charging = amount(steps, request)
    except ChangeRefused as refused:
        raise refusal(refused) from None
    step = f"change:{request.change_id}"
    reason = request.reason or "appeasement"
    if before_charging:
        return await _before_charging(steps, request, goodwill, reason, step)
    memo_made, refund = await give_back(
        steps,
        memo(steps, step, reason=reason, kind="appeasement", appeasement_minor=goodwill),
        step,
    )
    billing.record_appeasement(steps.state, request.lines, goodwill)
    result = ChangeResult(
        change_id=request.change_id,
        kind="appease",
        summary=f"Goodwill of {money(steps, goodwill)}: {reason}",
        lines=request.lines,
        credit_memo_id=memo_made.credit_memo_id,
        credited_minor=memo_made.total_minor,
        refunded_minor=refund.refunded_minor,
        released_minor=refund.released_minor,
    )
    await steps.progress(
        "",
        "change.appease",
        result.summary,
        actor=request.actor,
        step=step,
        events=[
            _appeased(steps, request, goodwill, reason),
            *refunded(memo_made, refund, "appeasement"),
        ],
    )
    return steps.record(request.change_id, result)


def _appeased(steps: Steps, request: ChangeRequest, goodwill: int, reason: str) -> EventData:
    """order.appeased: the goodwill, and the lines it was given on (none: the whole order)."""
    return order_events.lines_changed(
        "order.appeased", order_events.lines(steps.ledger, request.lines), reason, goodwill
    )


async def _before_charging(
    steps: Steps, request: ChangeRequest, goodwill: int, reason: str, step: str
) -> ChangeResult:
    """Nothing has been charged for it yet: the goodwill comes off the invoices to come, so
    less is captured (what the authorization held beyond that is released at settlement)."""
    billing.record_goodwill_before_charging(steps.state, request.lines, goodwill)
    result = ChangeResult(
        change_id=request.change_id,
        kind="appease",
        summary=f"Goodwill of {money(steps, goodwill)}: {reason}; taken off what will be charged",
        lines=request.lines,
        credited_minor=goodwill,
    )
    # Nothing goes back (less is charged later), so no refund.issued.
    await steps.progress(
        "",
        "change.appease",
        result.summary,
        actor=request.actor,
        step=step,
        events=[_appeased(steps, request, goodwill, reason)],
    )
    return steps.record(request.change_id, result)


def preview(steps: Steps, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
    """What the goodwill would give."""
    result.credited_minor, _ = amount(steps, request)
    result.summary = f"would give back {money(steps, result.credited_minor)}"
    return result
