"""A subscription's rules, pure: when its next cycle is due, what each change does (or, in a
preview, would do), what a cycle does when it comes, and how a payment outcome moves it.

The workflow holds a `SubscriptionState` and hands it here; nothing here has a clock, I/O or
Temporal. A change is computed on a copy, so the Update's validator, its preview query and
the Update itself run the very same code and only the Update keeps the result.

Rules stated once:
- A cycle due while the subscription is paused (until a later date, or until resumed) is
  skipped and recorded as skipped; a pause that ends before a cycle's due time lets it come.
- While a cycle's payment is past due, the next cycle is not placed: it waits until the past
  due one is settled (paid: placed then, late; failed: the subscription is suspended, so it
  is skipped as paused).
- Cancel at period end: no cycle after the one already ordered; the subscription ends when
  the next cycle falls due, without ordering it.
- A plan change takes effect from the next cycle not yet ordered; no proration.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime

from oms_platform.money import format_minor
from workflows import cadence
from workflows.ledger import ChangeRefused
from workflows.subscription_state import KEPT_CHANGES, SubscriptionState
from workflows.subscription_types import (
    ACTIVE,
    CANCEL,
    CHANGE_ADDRESS,
    CHANGE_CYCLE_DAY,
    CHANGE_KINDS,
    CHANGE_PAYMENT_METHOD,
    CHANGE_PLAN,
    CYCLE_FAILED,
    CYCLE_ORDERED,
    CYCLE_PAID,
    CYCLE_PAST_DUE,
    CYCLE_SKIPPED,
    MONTHLY,
    PAUSE,
    PAUSED,
    PAYMENT_FAILED,
    PAYMENT_METHOD_TYPES,
    PAYMENT_PAID,
    PAYMENT_PAST_DUE,
    RESUME,
    SKIP,
    SUBSCRIPTION_CANCELED,
    SUBSCRIPTION_PAST_DUE,
    ChangeRecordData,
    CycleView,
    PlanData,
    SubscriptionChangeRequest,
    SubscriptionChangeResult,
    SubscriptionPaymentEvent,
    SubscriptionView,
)

# What each change kind is called in the subscription's history.
RECORD_KINDS = {
    PAUSE: "paused",
    RESUME: "resumed",
    SKIP: "skipped",
    CHANGE_PLAN: "plan_changed",
    CHANGE_ADDRESS: "address_changed",
    CHANGE_PAYMENT_METHOD: "payment_method_changed",
    CHANGE_CYCLE_DAY: "cycle_day_changed",
    CANCEL: "canceled",
}
# The actor of what the workflow does on its own (a pause running out, a suspension).
WORKFLOW_ACTOR = "workflow"
# How far ahead a cycle can be skipped.
MAX_SKIP_AHEAD = 60
# How many cycles a pause's summary names before it says "and later".
_NAMED_CYCLES = 24

# What a cycle does when it falls due.
ORDER = "order"
SKIP_CYCLE = "skip"
END = "end"


# ---- the schedule ------------------------------------------------------------------------------


def plan_for(state: SubscriptionState, cycle: int) -> PlanData:
    """The plan cycle `cycle` is ordered on (a pending plan from its cycle on)."""
    if state.pending_plan is not None and cycle >= state.pending_plan_from_cycle:
        return state.pending_plan
    return state.plan


def cycle_date(state: SubscriptionState) -> datetime:
    """The next cycle's date by its plan's cadence (before the spread)."""
    plan = plan_for(state, state.cycle)
    return cadence.next_cycle_date(
        plan.cadence,
        plan.timezone,
        cadence.parse_instant(state.after),
        inclusive=state.after_inclusive,
        day=state.cycle_day if plan.cadence.kind == MONTHLY else 0,
    )


def due_at(state: SubscriptionState) -> datetime:
    """When the next cycle starts: its date plus this subscription's spread offset."""
    return cycle_date(state) + cadence.spread_offset(state.subscription_id, state.spread_seconds)


def upcoming(state: SubscriptionState, count: int) -> list[tuple[int, datetime]]:
    """The next `count` cycles and when each starts (skips and pauses aside)."""
    ahead = copy.deepcopy(state)
    cycles = []
    for _ in range(count):
        date = cycle_date(ahead)
        cycles.append(
            (ahead.cycle, date + cadence.spread_offset(ahead.subscription_id, ahead.spread_seconds))
        )
        advance(ahead, date)
    return cycles


def advance(state: SubscriptionState, date: datetime) -> None:
    """Move to the cycle after the one dated `date`."""
    state.after = cadence.format_instant(date)
    state.after_inclusive = False
    state.cycle += 1
    state.skipped = [c for c in state.skipped if c >= state.cycle]
    if state.pending_plan is not None and state.cycle > state.pending_plan_from_cycle:
        state.plan, state.pending_plan, state.pending_plan_from_cycle = state.pending_plan, None, 0


def paused_over(state: SubscriptionState, due: datetime) -> bool:
    """Whether a cycle starting at `due` falls in the subscription's pause."""
    if state.status != PAUSED:
        return False
    return not state.paused_until or due < cadence.parse_instant(state.paused_until)


def will_order(state: SubscriptionState, cycle: int, due: datetime) -> bool:
    """Whether cycle `cycle`, starting at `due`, will be ordered as things stand."""
    return not (
        state.status == SUBSCRIPTION_CANCELED
        or state.cancel_at_period_end
        or cycle in state.skipped
        or paused_over(state, due)
    )


def view(state: SubscriptionState) -> SubscriptionView:
    """The subscription as servicing records it."""
    next_at = "" if state.status == SUBSCRIPTION_CANCELED else cadence.format_instant(due_at(state))
    return SubscriptionView(
        subscription_id=state.subscription_id,
        plan=state.plan,
        status=state.status,
        next_cycle=state.cycle,
        next_cycle_at=next_at,
        paused_until=state.paused_until,
        skipped_cycles=list(state.skipped),
        pending_plan=state.pending_plan,
        pending_plan_from_cycle=state.pending_plan_from_cycle,
        cancel_at_period_end=state.cancel_at_period_end,
        suspended_reason=state.suspended_reason,
        delivery_address=state.delivery_address,
        delivery_method=state.delivery_method,
        payment_method=state.payment_method,
    )


# ---- cycles ------------------------------------------------------------------------------------


@dataclass
class CycleStart:
    """What the cycle falling due does: ORDER it on `plan`, SKIP_CYCLE it, or END the
    subscription (cancel at period end)."""

    number: int
    action: str
    plan: PlanData
    date: datetime
    due: datetime
    reason: str = ""


def start_cycle(state: SubscriptionState) -> CycleStart:
    """What the next cycle does now that it is due (the state is not changed)."""
    number = state.cycle
    date = cycle_date(state)
    due = date + cadence.spread_offset(state.subscription_id, state.spread_seconds)
    plan = plan_for(state, number)
    if state.cancel_at_period_end:
        return CycleStart(number, END, plan, date, due, "canceled at the end of the period")
    if number in state.skipped:
        return CycleStart(number, SKIP_CYCLE, plan, date, due, "skipped")
    if paused_over(state, due):
        return CycleStart(number, SKIP_CYCLE, plan, date, due, "paused")
    return CycleStart(number, ORDER, plan, date, due)


def skipped_cycle(start: CycleStart) -> CycleView:
    """The record of a cycle that was not ordered."""
    return CycleView(
        number=start.number,
        due_at=cadence.format_instant(start.due),
        status=CYCLE_SKIPPED,
        plan_id=start.plan.plan_id,
        decline_reason=start.reason,
    )


def ordered_cycle(start: CycleStart, order_id: str) -> CycleView:
    """The record of a cycle whose order capture accepted."""
    return CycleView(
        number=start.number,
        due_at=cadence.format_instant(start.due),
        status=CYCLE_ORDERED,
        order_id=order_id,
        plan_id=start.plan.plan_id,
        amount_minor=start.plan.price_minor(),
    )


def failed_cycle(start: CycleStart, reason: str) -> CycleView:
    """The record of a cycle whose order capture refused: nothing was ordered."""
    return CycleView(
        number=start.number,
        due_at=cadence.format_instant(start.due),
        status=CYCLE_FAILED,
        plan_id=start.plan.plan_id,
        amount_minor=start.plan.price_minor(),
        decline_reason=reason,
    )


def suspend(state: SubscriptionState, reason: str, at: datetime, step: str) -> ChangeRecordData:
    """Pause the subscription until someone resumes it, saying why (oms did it, not a
    person): a cycle's payment failed for good, or capture refused its order."""
    state.status = PAUSED
    state.paused_until = ""
    state.suspended_reason = reason
    return ChangeRecordData(
        change_id=f"{state.subscription_id}:{step}",
        kind="suspended",
        actor=WORKFLOW_ACTOR,
        summary=f"Suspended: {reason}; no cycle is ordered until the subscription is resumed",
        effective_cycle=state.cycle,
        at=cadence.format_instant(at),
        reason=reason,
    )


def pause_ended(state: SubscriptionState, now: datetime) -> bool:
    """Whether the subscription is paused until a moment that has come."""
    return (
        state.status == PAUSED
        and bool(state.paused_until)
        and cadence.parse_instant(state.paused_until) <= now
    )


def end_of_pause(state: SubscriptionState, now: datetime) -> ChangeRecordData | None:
    """Resume a subscription whose pause has run out, with its record; None otherwise."""
    if not pause_ended(state, now):
        return None
    until = cadence.parse_instant(state.paused_until)
    state.status = ACTIVE
    state.paused_until = ""
    return ChangeRecordData(
        change_id=f"{state.subscription_id}:resumed:{cadence.format_instant(until)}",
        kind="resumed",
        actor=WORKFLOW_ACTOR,
        summary=f"Pause ended; cycle {state.cycle} is due {_when(due_at(state))}",
        effective_cycle=state.cycle,
        at=cadence.format_instant(now),
        reason="pause ended",
    )


def end_at_period_end(
    state: SubscriptionState, start: CycleStart, now: datetime
) -> ChangeRecordData:
    """Cancel a subscription whose cancel at period end has come."""
    state.status = SUBSCRIPTION_CANCELED
    state.cancel_at_period_end = False
    return ChangeRecordData(
        change_id=f"{state.subscription_id}:canceled:period-end",
        kind="canceled",
        actor=WORKFLOW_ACTOR,
        summary=f"Canceled at the end of the period; cycle {start.number} was not ordered",
        effective_cycle=start.number,
        at=cadence.format_instant(now),
        reason="cancel at period end",
    )


# ---- payments ----------------------------------------------------------------------------------


@dataclass
class PaymentOutcome:
    """What a payment outcome changed: the cycle's record, and a suspension if it caused one."""

    cycle: CycleView | None = None
    record: ChangeRecordData | None = None


def take_payment(
    state: SubscriptionState, event: SubscriptionPaymentEvent, now: datetime
) -> PaymentOutcome:
    """Apply a cycle's payment outcome. An outcome already taken (an outbox delivering twice)
    or older than the last one taken changes nothing. A failure may come at the attempt a
    past-due outcome already named (the order canceled while past due): it settles the
    cycle."""
    cycle = next((c for c in state.open_cycles if c.number == event.cycle), None)
    if cycle is None:
        # Settled already, or from before a run's carried cycles: record what it says.
        cycle = CycleView(
            number=event.cycle, due_at="", status=CYCLE_ORDERED, order_id=event.order_id
        )
    elif event.attempt < cycle.payment_attempts or (
        event.attempt == cycle.payment_attempts
        and cycle.status != CYCLE_ORDERED
        and event.outcome == PAYMENT_PAST_DUE
    ):
        return PaymentOutcome()
    cycle.payment_attempts = event.attempt
    cycle.order_id = cycle.order_id or event.order_id
    outcome = PaymentOutcome(cycle=cycle)
    if event.outcome == PAYMENT_PAST_DUE:
        cycle.status = CYCLE_PAST_DUE
        cycle.next_payment_retry_at = event.next_retry_at
        cycle.decline_reason = event.reason
        if state.status == ACTIVE:
            state.status = SUBSCRIPTION_PAST_DUE
        return outcome
    cycle.next_payment_retry_at = ""
    state.open_cycles = [c for c in state.open_cycles if c.number != event.cycle]
    if event.outcome == PAYMENT_PAID:
        cycle.status = CYCLE_PAID
        cycle.decline_reason = ""
        if state.status == SUBSCRIPTION_PAST_DUE and not state.past_due():
            state.status = ACTIVE
    elif event.outcome == PAYMENT_FAILED:
        cycle.status = CYCLE_FAILED
        cycle.decline_reason = event.reason
        if state.status != SUBSCRIPTION_CANCELED:
            reason = f"cycle {event.cycle}'s payment failed after {event.attempt} attempts"
            if event.reason:
                reason += f" ({event.reason})"
            outcome.record = suspend(state, reason, now, f"suspended:cycle:{event.cycle}")
    return outcome


# ---- changes -----------------------------------------------------------------------------------


@dataclass
class ChangeOutcome:
    """A change computed: the state after it, the answer, its record, and the past-due
    orders to retry with the new payment method."""

    state: SubscriptionState
    result: SubscriptionChangeResult
    record: ChangeRecordData
    retry_orders: list[str] = field(default_factory=list)


def change(
    state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime
) -> ChangeOutcome:
    """What `request` does to the subscription at `now`, computed on a copy (ChangeRefused,
    with its gRPC status, when it is not allowed)."""
    if request.kind not in CHANGE_KINDS:
        raise ChangeRefused(
            f"kind: unknown change {request.kind!r} (one of {', '.join(CHANGE_KINDS)})",
            "INVALID_ARGUMENT",
        )
    if not request.actor:
        raise ChangeRefused("actor: required", "INVALID_ARGUMENT")
    if state.status == SUBSCRIPTION_CANCELED:
        raise ChangeRefused("the subscription is canceled; no more changes")
    after = copy.deepcopy(state)
    made = _CHANGES[request.kind](after, request, now)
    result = SubscriptionChangeResult(
        summary=made.summary,
        effective_cycle=made.effective_cycle,
        next_cycle_amount_minor=made.amount_minor,
        subscription=view(after),
    )
    record = ChangeRecordData(
        change_id=request.idempotency_key,
        kind=RECORD_KINDS[request.kind],
        actor=request.actor,
        summary=made.summary,
        effective_cycle=made.effective_cycle,
        at=cadence.format_instant(now),
        reason=request.reason,
    )
    if request.idempotency_key:
        after.changes[request.idempotency_key] = result
        while len(after.changes) > KEPT_CHANGES:
            del after.changes[next(iter(after.changes))]
    return ChangeOutcome(after, result, record, made.retry_orders)


@dataclass
class _Made:
    summary: str
    effective_cycle: int
    amount_minor: int
    retry_orders: list[str] = field(default_factory=list)


def _amount(state: SubscriptionState, cycle: int) -> int:
    """What cycle `cycle` will cost as things stand (0 when it will not be ordered)."""
    for number, due in upcoming(state, max(1, cycle - state.cycle + 1)):
        if number == cycle:
            return plan_for(state, cycle).price_minor() if will_order(state, cycle, due) else 0
    return 0


def _pause(state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime) -> _Made:
    if state.status == SUBSCRIPTION_PAST_DUE:
        raise ChangeRefused(
            "a cycle's payment is past due; change the payment method or cancel instead"
        )
    until = ""
    if request.until:
        at = _instant("until", request.until)
        if at <= now:
            raise ChangeRefused("until: must be in the future", "INVALID_ARGUMENT")
        until = cadence.format_instant(at)
    state.status = PAUSED
    state.paused_until = until
    if not until:
        summary = f"Paused until resumed; no cycle is ordered from cycle {state.cycle} on"
        return _Made(summary, state.cycle, 0)
    paused = [n for n, due in upcoming(state, _NAMED_CYCLES) if paused_over(state, due)]
    if not paused:
        summary = f"Paused until {_when(at)}; cycle {state.cycle} is due after it and still ordered"
    else:
        summary = f"Paused until {_when(at)}; {_cycles(paused)} will not be ordered"
    return _Made(summary, state.cycle, _amount(state, state.cycle))


def _resume(state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime) -> _Made:
    if state.status != PAUSED:
        raise ChangeRefused(f"the subscription is {state.status}; only a paused one resumes")
    state.status = ACTIVE
    state.paused_until = ""
    state.suspended_reason = ""
    summary = f"Resumed; cycle {state.cycle} is due {_when(due_at(state))}"
    return _Made(summary, state.cycle, _amount(state, state.cycle))


def _skip(state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime) -> _Made:
    cycle = request.cycle or state.cycle
    if cycle < state.cycle:
        raise ChangeRefused(
            f"cycle: cycle {cycle} is past (the next is {state.cycle})", "INVALID_ARGUMENT"
        )
    if cycle > state.cycle + MAX_SKIP_AHEAD:
        raise ChangeRefused(
            f"cycle: at most {MAX_SKIP_AHEAD} cycles ahead (the next is {state.cycle})",
            "INVALID_ARGUMENT",
        )
    if cycle in state.skipped:
        raise ChangeRefused(f"cycle: cycle {cycle} is already skipped")
    due = dict(upcoming(state, cycle - state.cycle + 1))[cycle]
    state.skipped = sorted([*state.skipped, cycle])
    return _Made(f"Cycle {cycle} (due {_when(due)}) will not be ordered", cycle, 0)


def _change_plan(
    state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime
) -> _Made:
    plan = request.plan
    if plan is None:
        raise ChangeRefused("plan: required", "INVALID_ARGUMENT")
    if plan.currency != state.plan.currency:
        raise ChangeRefused(
            f"plan: plan {plan.plan_id} is in {plan.currency}, the subscription in "
            f"{state.plan.currency}",
            "INVALID_ARGUMENT",
        )
    if not plan.items:
        raise ChangeRefused("plan.items: at least one item", "INVALID_ARGUMENT")
    current = plan_for(state, state.cycle)
    if plan.plan_id == current.plan_id:
        raise ChangeRefused(f"plan: cycle {state.cycle} is already on plan {plan.plan_id}")
    if (plan.cadence, plan.timezone) != (current.cadence, current.timezone):
        _count_from(state, now)
    if plan.plan_id == state.plan.plan_id:  # back to the plan in effect: nothing pending
        state.pending_plan, state.pending_plan_from_cycle = None, 0
    else:
        state.pending_plan, state.pending_plan_from_cycle = plan, state.cycle
    price = format_minor(plan.price_minor(), plan.currency)
    was = format_minor(current.price_minor(), current.currency)
    summary = (
        f"From cycle {state.cycle}: plan {plan.name} at {price} a cycle (was {was}); "
        "no proration, a cycle already ordered keeps its price"
    )
    return _Made(summary, state.cycle, _amount(state, state.cycle))


def _change_address(
    state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime
) -> _Made:
    address = request.delivery_address
    if address is None:
        raise ChangeRefused("delivery_address: required", "INVALID_ARGUMENT")
    for name in ("line1", "city", "postal_code", "country_code"):
        if not getattr(address, name).strip():
            raise ChangeRefused(f"delivery_address.{name}: required", "INVALID_ARGUMENT")
    state.delivery_address = address
    state.delivery_method = request.delivery_method or state.delivery_method
    summary = f"Cycles from {state.cycle} ship to the new address ({state.delivery_method})"
    return _Made(summary, state.cycle, _amount(state, state.cycle))


def _change_payment_method(
    state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime
) -> _Made:
    method = request.payment_method
    if method is None:
        raise ChangeRefused("payment_method: required", "INVALID_ARGUMENT")
    if method.type not in PAYMENT_METHOD_TYPES:
        raise ChangeRefused(
            f"payment_method.type: one of {', '.join(PAYMENT_METHOD_TYPES)}", "INVALID_ARGUMENT"
        )
    if not method.token:
        raise ChangeRefused("payment_method.token: required", "INVALID_ARGUMENT")
    state.payment_method = method
    past_due = state.past_due()
    summary = f"Cycles from {state.cycle} are paid by the new {method.type}"
    if past_due:
        summary += f"; {_cycles([c.number for c in past_due])}'s payment is retried with it now"
    return _Made(summary, state.cycle, _amount(state, state.cycle), [c.order_id for c in past_due])


def _change_cycle_day(
    state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime
) -> _Made:
    plan = plan_for(state, state.cycle)
    if plan.cadence.kind != MONTHLY:
        raise ChangeRefused(
            f"day: plan {plan.plan_id} is not monthly (every {plan.cadence.value} "
            f"{plan.cadence.kind}); only a monthly plan has a cycle day"
        )
    if not cadence.valid_cycle_day(request.day):
        raise ChangeRefused("day: 1 to 28, or 31 for each month's last day", "INVALID_ARGUMENT")
    if request.day == (state.cycle_day or plan.cadence.value):
        raise ChangeRefused(f"day: cycles already fall on day {request.day}")
    state.cycle_day = request.day
    _count_from(state, now)
    day = "the last day" if request.day == cadence.LAST_DAY else f"day {request.day}"
    summary = (
        f"Cycles fall on {day} of the month; cycle {state.cycle} is due {_when(due_at(state))}"
    )
    return _Made(summary, state.cycle, _amount(state, state.cycle))


def _cancel(state: SubscriptionState, request: SubscriptionChangeRequest, now: datetime) -> _Made:
    if request.at_period_end:
        if state.cancel_at_period_end:
            raise ChangeRefused("the subscription already cancels at the end of the period")
        state.cancel_at_period_end = True
        summary = (
            f"Cancels at the end of the period: cycle {state.cycle} "
            f"(due {_when(due_at(state))}) and later will not be ordered"
        )
        return _Made(summary, state.cycle, 0)
    state.status = SUBSCRIPTION_CANCELED
    summary = f"Canceled; cycle {state.cycle} and later will not be ordered"
    if state.past_due():
        summary += f" ({_cycles([c.number for c in state.past_due()])}'s payment is still retried)"
    return _Made(summary, state.cycle, 0)


_CHANGES = {
    PAUSE: _pause,
    RESUME: _resume,
    SKIP: _skip,
    CHANGE_PLAN: _change_plan,
    CHANGE_ADDRESS: _change_address,
    CHANGE_PAYMENT_METHOD: _change_payment_method,
    CHANGE_CYCLE_DAY: _change_cycle_day,
    CANCEL: _cancel,
}


def _count_from(state: SubscriptionState, now: datetime) -> None:
    """Find the next cycle's date from now when a new cadence or cycle day would otherwise
    put it in the past (and so order it at once)."""
    if cadence.parse_instant(state.after) < now:
        state.after = cadence.format_instant(now)
        state.after_inclusive = False


def _instant(name: str, text: str) -> datetime:
    try:
        return cadence.parse_instant(text)
    except ValueError:
        raise ChangeRefused(f"{name}: not an ISO 8601 instant", "INVALID_ARGUMENT") from None


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _cycles(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"cycle {numbers[0]}"
    if len(numbers) >= _NAMED_CYCLES:
        return f"cycles {numbers[0]} to {numbers[-1]} and later"
    return "cycles " + ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"


def duplicate(result: SubscriptionChangeResult) -> SubscriptionChangeResult:
    """The answer to a change key seen before: its first answer, marked as such."""
    return replace(result, duplicate=True)
