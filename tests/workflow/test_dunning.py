"""Dunning on the time-skipping server: a subscription's cycle order whose payment is declined
waits past due, retries on its schedule (or at once with a new payment method), tells its
subscription every outcome, and after the last declined retry is canceled like any declined
order. The subscription is a stand-in workflow that records the signals it receives."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.history import patches_asked
from tests.workflow.subscription_stand_in import SubscriptionStandIn
from tests.workflow.test_order_lifecycle import (
    Services,
    an_order,
    change,
    ship_everything,
    until,
    update,
)
from workflows.lifecycle import OrderLifecycle
from workflows.subscription_types import (
    PAYMENT_FAILED,
    PAYMENT_PAID,
    PAYMENT_PAST_DUE,
    RETRY_PAYMENT_SIGNAL,
    RetryPayment,
    SubscriptionPaymentEvent,
    subscription_workflow_id,
)
from workflows.types import (
    ALLOCATED,
    APPEASE_UPDATE,
    AUTHORIZED,
    CANCEL_UPDATE,
    CANCELED,
    FULFILLED,
    LIFECYCLE_BASELINE,
    PAST_DUE,
    PROCESSING,
    OrderLifecycleInput,
    OrderLifecycleResult,
    PaymentEventData,
    PaymentMethodData,
    order_workflow_id,
)

DAY = 86400
SCHEDULE = [1 * DAY, 3 * DAY, 7 * DAY]


def a_cycle_order(subscription_id: str, **overrides: Any) -> OrderLifecycleInput:
    values: dict[str, Any] = {"subscription_cycle": 3, "payment_retry_seconds": SCHEDULE}
    return an_order(subscription_id=subscription_id, **{**values, **overrides})


class Run:
    """An order's lifecycle and, unless told otherwise, its stand-in subscription."""

    def __init__(
        self, env: WorkflowEnvironment, services: Services, *, subscription_running: bool = True
    ) -> None:
        self.env, self.services = env, services
        self.subscription_id = str(uuid.uuid4())
        self.subscription_running = subscription_running
        self.queue = f"wf-dunning-{uuid.uuid4()}"
        self.worker = Worker(
            env.client,
            task_queue=self.queue,
            workflows=[OrderLifecycle, SubscriptionStandIn],
            activities=services.activities(),
        )
        self.subscription: WorkflowHandle[Any, None] | None = None

    async def start(self, order: OrderLifecycleInput) -> WorkflowHandle[Any, OrderLifecycleResult]:
        if self.subscription_running:
            self.subscription = await self.env.client.start_workflow(
                SubscriptionStandIn.run,
                id=subscription_workflow_id(self.subscription_id),
                task_queue=self.queue,
            )
        return await self.env.client.start_workflow(
            OrderLifecycle.run, order, id=order_workflow_id(order.order_id), task_queue=self.queue
        )

    async def told(self) -> list[SubscriptionPaymentEvent]:
        assert self.subscription is not None
        told: list[SubscriptionPaymentEvent] = await self.subscription.query(
            "payments", result_type=list[SubscriptionPaymentEvent]
        )
        return told

    async def stop(self) -> None:
        # Still running unless time skipped to its (ten-year) timeout once the order ended.
        if self.subscription is not None:
            described = await self.subscription.describe()
            if described.status == WorkflowExecutionStatus.RUNNING:
                await self.subscription.terminate("test over")


def authorizations(services: Services) -> list[tuple[str, str, int]]:
    return [
        (a.idempotency_key.split(":", 1)[1], a.payment_method.token, a.amount_minor)
        for a in services.named("authorize")
    ]


async def test_a_declined_cycle_waits_past_due_and_is_paid_on_the_second_retry(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(declines=2)
    run = Run(time_skipping_env, services)
    order = a_cycle_order(run.subscription_id)
    total = order.grand_total_minor
    async with run.worker:
        handle = await run.start(order)
        await until(services, "payment.declined")
        assert await handle.query("status") == PAST_DUE
        # Retry 1 (a day after the decline) is declined too; retry 2 (day 3) is approved.
        await time_skipping_env.sleep(timedelta(days=3, minutes=1))
        await until(services, "fulfillment.allocated")
        told = await run.told()
        await ship_everything(handle)
        result = await handle.result()
        await run.stop()

    assert result.status == FULFILLED
    assert result.captured_minor == total
    assert authorizations(services) == [
        ("authorize", "tok_visa", total),
        ("authorize:2", "tok_visa", total),
        ("authorize:3", "tok_visa", total),
    ]
    assert services.statuses[:5] == [PROCESSING, PAST_DUE, PAST_DUE, AUTHORIZED, ALLOCATED]
    assert [(t.outcome, t.attempt, t.cycle, t.order_id) for t in told] == [
        (PAYMENT_PAST_DUE, 1, 3, order.order_id),
        (PAYMENT_PAST_DUE, 2, 3, order.order_id),
        (PAYMENT_PAID, 3, 3, order.order_id),
    ]
    assert told[0].reason == "card_declined"
    # Each past-due report names the next retry of the schedule counted from the first decline.
    first, second = (datetime.fromisoformat(t.next_retry_at) for t in told[:2])
    assert second - first == timedelta(days=2)
    payments = services.events("payment.declined", "payment.authorized")
    assert [(e.type, e.payment) for e in payments] == [
        ("payment.declined", PaymentEventData(total, decline_reason="card_declined")),
        ("payment.declined", PaymentEventData(total, decline_reason="card_declined")),
        ("payment.authorized", PaymentEventData(total)),
    ]
    past_due = [p for p in services.named("progress") if p.kind == "payment.declined"]
    assert [p.idempotency_key for p in past_due] == [
        f"{order.order_id}:progress:past-due:1",
        f"{order.order_id}:progress:past-due:2",
    ]
    assert "retry 1 of 3" in past_due[0].summary and "retry 2 of 3" in past_due[1].summary
    assert services.named("exception") == []


async def test_a_new_payment_method_retries_a_past_due_order_at_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(declines=1)
    run = Run(time_skipping_env, services)
    order = a_cycle_order(run.subscription_id)
    async with run.worker:
        handle = await run.start(order)
        await until(services, "payment.declined")
        await handle.signal(
            RETRY_PAYMENT_SIGNAL, RetryPayment(PaymentMethodData("card", "tok_mastercard"))
        )
        # At once: time stands still here (nothing waits on a result), so a retry that waited
        # for the schedule's first day would never come.
        await until(services, "fulfillment.allocated")
        told = await run.told()
        await ship_everything(handle)
        result = await handle.result()
        await run.stop()

    assert result.status == FULFILLED
    assert authorizations(services) == [
        ("authorize", "tok_visa", order.grand_total_minor),
        ("authorize:2", "tok_mastercard", order.grand_total_minor),
    ]
    assert [(t.outcome, t.attempt) for t in told] == [(PAYMENT_PAST_DUE, 1), (PAYMENT_PAID, 2)]
    assert services.statuses[:4] == [PROCESSING, PAST_DUE, AUTHORIZED, ALLOCATED]


async def test_the_last_declined_retry_cancels_the_order_and_tells_the_subscription(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(approve=False)
    run = Run(time_skipping_env, services)
    order = a_cycle_order(run.subscription_id)
    async with run.worker:
        handle = await run.start(order)
        result = await handle.result()
        told = await run.told()
        await run.stop()

    assert result.status == CANCELED
    assert result.reason == "payment declined: card_declined"
    assert [a[0] for a in authorizations(services)] == [
        "authorize",
        "authorize:2",
        "authorize:3",
        "authorize:4",
    ]
    assert [(t.outcome, t.attempt) for t in told] == [
        (PAYMENT_PAST_DUE, 1),
        (PAYMENT_PAST_DUE, 2),
        (PAYMENT_PAST_DUE, 3),
        (PAYMENT_FAILED, 4),
    ]
    assert told[-1].reason == "payment declined: card_declined"
    [exception] = services.named("exception")
    assert exception.category == "payment"
    assert exception.attached_to == "authorization:auth-4"
    assert services.statuses == [PROCESSING, PAST_DUE, PAST_DUE, PAST_DUE, CANCELED, CANCELED]
    assert services.named("route") == []
    assert services.event_types()[-3:] == ["payment.declined", "lines.canceled", "order.canceled"]


async def test_a_cancel_while_past_due_ends_the_wait_and_the_order(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(approve=False)
    run = Run(time_skipping_env, services)
    order = a_cycle_order(run.subscription_id)
    async with run.worker:
        handle = await run.start(order)
        await until(services, "payment.declined")
        # A change other than a cancel waits until the order is paid.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update(handle, APPEASE_UPDATE, change("appease", amount_minor=100))
        assert "past due" in str(refused.value.cause)
        canceled = await update(handle, CANCEL_UPDATE, change("cancel", reason="shopper left"))
        result = await handle.result()
        told = await run.told()
        await run.stop()

    assert canceled.order_status == CANCELED
    assert result.status == CANCELED
    assert len(services.named("authorize")) == 1
    assert [(t.outcome, t.attempt, t.reason) for t in told] == [
        (PAYMENT_PAST_DUE, 1, "card_declined"),
        (PAYMENT_FAILED, 1, "order canceled while past due"),
    ]
    assert services.statuses == [PROCESSING, PAST_DUE, CANCELED]


async def test_an_order_whose_subscription_is_gone_is_still_dunned_and_canceled(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(approve=False)
    run = Run(time_skipping_env, services, subscription_running=False)
    order = a_cycle_order(run.subscription_id, payment_retry_seconds=[60])
    async with run.worker:
        handle = await run.start(order)
        result = await handle.result()

    assert result.status == CANCELED
    assert len(services.named("authorize")) == 2
    assert services.statuses == [PROCESSING, PAST_DUE, CANCELED, CANCELED]


@pytest.mark.parametrize(
    ("baseline", "asked"),
    [(LIFECYCLE_BASELINE, set()), (0, {"dunning", "batched-progress", "local-activities"})],
    ids=["at the baseline", "started before baselines"],
)
async def test_a_cycle_paid_at_once_tells_the_subscription(
    time_skipping_env: WorkflowEnvironment, baseline: int, asked: set[str]
) -> None:
    services = Services()
    run = Run(time_skipping_env, services)
    order = a_cycle_order(run.subscription_id, baseline=baseline)
    async with run.worker:
        handle = await run.start(order)
        await until(services, "fulfillment.allocated")
        told = await run.told()
        history = await handle.fetch_history()
        await handle.terminate("test over")
        await run.stop()

    # A run at the baseline takes dunning without asking; one started before asks for it.
    if asked:
        assert asked <= patches_asked(history)
    else:
        assert patches_asked(history) == set()
    assert [(t.outcome, t.attempt, t.next_retry_at) for t in told] == [(PAYMENT_PAID, 1, "")]
    assert services.statuses == [PROCESSING, AUTHORIZED, ALLOCATED]


async def test_a_declined_order_that_is_no_subscriptions_is_canceled_at_once_as_ever(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(approve=False)
    # A dunning schedule without a subscription (capture never writes one) changes nothing.
    run = Run(time_skipping_env, services, subscription_running=False)
    # Started before baselines: such a run asks for each patch, and never for dunning.
    order = an_order(payment_retry_seconds=SCHEDULE, baseline=0)
    async with run.worker:
        handle = await run.start(order)
        result = await handle.result()
        history = await handle.fetch_history()

    assert result.status == CANCELED
    assert len(services.named("authorize")) == 1
    assert services.statuses == [PROCESSING, CANCELED, CANCELED]  # as ever: lines, then order
    assert services.event_types()[:1] == ["order.processing"]
    assert "payment.declined" in services.event_types()
    assert "dunning" not in patches_asked(history) and "local-activities" in patches_asked(history)
