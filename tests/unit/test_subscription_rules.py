"""A subscription's rules without Temporal: changes, cycles and payment outcomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workflows import subscription_rules as rules
from workflows.ledger import ChangeRefused
from workflows.subscription_state import SubscriptionState
from workflows.subscription_types import (
    ACTIVE,
    CHANGE_CYCLE_DAY,
    CHANGE_PLAN,
    CYCLE_ORDERED,
    MONTHLY,
    PAUSE,
    PAUSED,
    PAYMENT_FAILED,
    PAYMENT_PAST_DUE,
    SUBSCRIPTION_PAST_DUE,
    CadenceData,
    CycleView,
    PlanData,
    PlanItemData,
    SubscriptionChangeRequest,
    SubscriptionPaymentEvent,
)
from workflows.types import Address, PaymentMethodData

BASIC = PlanData(
    "plan-basic",
    "Basic",
    [PlanItemData("SKU-COFFEE", "Coffee", 1, 2000)],
    "EUR",
    CadenceData(MONTHLY, 1, "00:00"),
    "UTC",
)
JAN_1 = datetime(2027, 1, 1, tzinfo=UTC)


def a_subscription(**overrides: object) -> SubscriptionState:
    state = SubscriptionState(
        subscription_id="sub-1",
        plan=BASIC,
        delivery_address=Address("1 Main St", "Berlin", "10115", "DE"),
        delivery_method="standard",
        payment_method=PaymentMethodData("card", "tok_visa"),
        after=JAN_1.isoformat(),
    )
    for name, value in overrides.items():
        setattr(state, name, value)
    return state


def request(kind: str, **fields: object) -> SubscriptionChangeRequest:
    return SubscriptionChangeRequest(kind=kind, actor="shopper", idempotency_key="k", **fields)  # type: ignore[arg-type]


def test_a_pause_names_the_cycles_it_skips_and_changes_only_a_copy() -> None:
    state = a_subscription()
    made = rules.change(state, request(PAUSE, until="2027-02-15T00:00:00+00:00"), JAN_1)
    assert made.result.summary == (
        "Paused until 2027-02-15 00:00 UTC; cycles 1 and 2 will not be ordered"
    )
    assert (made.state.status, state.status) == (PAUSED, ACTIVE)
    assert rules.start_cycle(made.state).action == rules.SKIP_CYCLE


def test_a_pause_is_refused_while_a_payment_is_past_due() -> None:
    state = a_subscription(status=SUBSCRIPTION_PAST_DUE)
    with pytest.raises(ChangeRefused, match="past due"):
        rules.change(state, request(PAUSE), JAN_1)


def test_a_new_cycle_day_counts_from_now_never_from_the_past() -> None:
    state = a_subscription(
        after=datetime(2027, 1, 1, tzinfo=UTC).isoformat(), after_inclusive=False
    )
    now = datetime(2027, 1, 20, tzinfo=UTC)
    made = rules.change(state, request(CHANGE_CYCLE_DAY, day=15), now)
    assert rules.due_at(made.state) == datetime(2027, 2, 15, tzinfo=UTC)


def test_changing_back_to_the_current_plan_drops_the_pending_one() -> None:
    deluxe = PlanData("plan-deluxe", "Deluxe", BASIC.items, "EUR", BASIC.cadence, "UTC", 500)
    state = rules.change(a_subscription(), request(CHANGE_PLAN, plan=deluxe), JAN_1).state
    assert state.pending_plan == deluxe
    back = rules.change(state, request(CHANGE_PLAN, plan=BASIC), JAN_1).state
    assert (back.pending_plan, back.pending_plan_from_cycle) == (None, 0)


def test_a_payment_outcome_delivered_twice_counts_once() -> None:
    state = a_subscription(open_cycles=[CycleView(1, "", CYCLE_ORDERED, "order-1")])
    event = SubscriptionPaymentEvent(1, "order-1", PAYMENT_PAST_DUE, 1, "card_declined")
    assert rules.take_payment(state, event, JAN_1).cycle is not None
    assert rules.take_payment(state, event, JAN_1).cycle is None
    assert state.status == SUBSCRIPTION_PAST_DUE


def test_the_last_failed_retry_suspends_the_subscription() -> None:
    state = a_subscription(open_cycles=[CycleView(1, "", CYCLE_ORDERED, "order-1")])
    failed = SubscriptionPaymentEvent(1, "order-1", PAYMENT_FAILED, 4, "card_declined")
    outcome = rules.take_payment(state, failed, JAN_1)
    assert outcome.record is not None
    assert (outcome.record.kind, outcome.record.actor) == ("suspended", "workflow")
    assert state.status == PAUSED and state.paused_until == ""
    assert state.suspended_reason == "cycle 1's payment failed after 4 attempts (card_declined)"
    assert state.open_cycles == []


def test_an_order_canceled_while_past_due_settles_its_cycle() -> None:
    # What the lifecycle tells the subscription when its past-due order is canceled: the
    # failure at the attempt the past-due outcome already named (tests/workflow/test_dunning.py).
    state = a_subscription(open_cycles=[CycleView(1, "", CYCLE_ORDERED, "order-1")])
    past_due = SubscriptionPaymentEvent(1, "order-1", PAYMENT_PAST_DUE, 1, "card_declined")
    failed = SubscriptionPaymentEvent(
        1, "order-1", PAYMENT_FAILED, 1, "order canceled while past due"
    )
    rules.take_payment(state, past_due, JAN_1)
    outcome = rules.take_payment(state, failed, JAN_1)
    assert outcome.cycle is not None and outcome.cycle.status == "failed"
    assert state.open_cycles == [] and not state.past_due()
    assert state.status == PAUSED  # suspended, as after a last failed retry
