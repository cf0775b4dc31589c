"""Renewals ahead of a promised day: an order waiting on a backorder or a pre-order is charged
only when those goods ship, perhaps weeks after it was authorized, and a hold lapses sooner.

While such a fulfillment order is open, the lifecycle asks payments to keep the order's holds
until the latest promised day (payments owns the rule: which holds would lapse before it, and
how long before they lapse they are renewed) and sleeps on a timer until payments says the
next one falls due, then asks again. A declined renewal is handled as a declined capture is:
the order holds for an agent (retry asks again; skip stops renewing, so a lapsed hold is held
anew at capture as ever; cancel cancels what has not shipped).
"""

from __future__ import annotations

from datetime import timedelta

from workflows import activity_names as names
from workflows import order_events, versions
from workflows.changes.steps import Failed, Steps, as_json, money, try_activity, until_decided
from workflows.ledger import Ledger
from workflows.types import RenewInput, RenewResult


def promised_until(ledger: Ledger) -> str:
    """The latest promise date ("YYYY-MM-DD") of the open fulfillment orders waiting on
    incoming supply; "" when none waits."""
    return max(
        (
            fo.promise_date
            for fo_id, fo in ledger.fulfillment_orders.items()
            if fo.promise_date and ledger.is_open(fo_id)
        ),
        default="",
    )


async def next_wait(steps: Steps) -> timedelta | None:
    """Keep the holds alive while goods are awaited: ask payments when the promised day is
    new (or moved) or the renewal it said falls due has come; then how long to sleep until
    the next one (None: nothing to wake for). Runs under the lifecycle's lock."""
    promised = promised_until(steps.ledger)
    if not promised or not steps.has_change(versions.RENEW_AHEAD_OF_PROMISE):
        return None
    state = steps.state
    due = state.renew_at is not None and steps.now() >= state.renew_at
    if promised != state.renewal_promise_date or due:
        await renew(steps, promised)
    if state.renew_at is None:
        return None
    return max(state.renew_at - steps.now(), timedelta(0))


async def renew(steps: Steps, promised: str) -> None:
    """Ask payments to renew what is due for `promised` (each ask under a key of its own); a
    decline or refusal holds the order for an agent, as a failed capture does, except that a
    skip releases nothing: the order is still to be charged, from holds it keeps."""
    state = steps.state
    order_id = steps.order.order_id

    async def ask() -> RenewResult | Failed:
        state.renewal_requests += 1
        asked = RenewInput(order_id, f"{order_id}:renew:{state.renewal_requests}", promised)
        result, refused = await try_activity(
            steps, names.RENEW_AUTHORIZATIONS, asked, result_type=RenewResult
        )
        state.renewal_promise_date = promised
        if result is None:
            failure = f"refused: {refused}"
        else:
            failure = "" if result.approved else result.decline_reason or "declined"
        if result is not None and not failure:
            return result
        state.renew_at = None
        return Failed(
            f"Re-authorization ahead of goods promised for {promised} failed: {failure}",
            as_json(asked),
            # What shipped stays shipped (and charged); the rest is canceled, which gives back
            # its share and releases what the holds kept for it.
            "re-authorization declined; canceled by an agent",
        )

    # Skipped: no more renewals for this day; a hold lapsed by the shipment is held anew when
    # it is captured (CaptureInvoice's rule).
    result = await until_decided(
        steps,
        ask,
        "payment",
        f"order:{order_id}",
        lambda: f"renewal-cancel:{state.renewal_requests}",
        release_on_skip=False,
    )
    if result is None:
        return
    state.renew_at = (
        steps.now() + timedelta(seconds=result.renew_again_in_seconds)
        if result.renew_again
        else None
    )
    if result.renewed_minor:
        await steps.progress(
            "",
            "payment.reauthorized",
            f"Authorization of {money(steps, result.renewed_minor)} renewed ahead of "
            f"goods promised for {promised}",
            step=f"renewed:{state.renewal_requests}",
            events=[order_events.payment("payment.authorized", result.renewed_minor)],
        )
