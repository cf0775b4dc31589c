"""SubscriptionWorkflow on the time-skipping server, with stand-in activities registered by name.

The stand-ins record the cycle orders the workflow submits (deduplicated by key, as capture
does) and the progress it reports to servicing; the tests move time from cycle to cycle and
send the payment outcomes a cycle's order lifecycle would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows.subscription import SubscriptionWorkflow
from workflows.subscription_types import (
    ACTIVE,
    CANCEL,
    CHANGE_CYCLE_DAY,
    CHANGE_PAYMENT_METHOD,
    CHANGE_PLAN,
    CYCLE_ORDERED,
    CYCLE_PAID,
    CYCLE_SKIPPED,
    MONTHLY,
    PAUSE,
    PAUSED,
    PAYMENT_PAID,
    PAYMENT_PAST_DUE,
    RESUME,
    RETRY_PAYMENT_SIGNAL,
    SKIP,
    SUBSCRIPTION_CANCELED,
    SUBSCRIPTION_CHANGE_UPDATE,
    SUBSCRIPTION_PAST_DUE,
    SUBSCRIPTION_PAYMENT_SIGNAL,
    SUBSCRIPTION_PREVIEW_QUERY,
    SUBSCRIPTION_STATE_QUERY,
    WEEKLY,
    CadenceData,
    CycleOrderInput,
    CycleOrderResult,
    CycleView,
    PlanData,
    PlanItemData,
    RetryPayment,
    SubscriberData,
    SubscriptionChangeRequest,
    SubscriptionChangeResult,
    SubscriptionInput,
    SubscriptionPaymentEvent,
    SubscriptionProgressInput,
    SubscriptionView,
    cycle_order_key,
    subscription_workflow_id,
)
from workflows.types import Address, PaymentMethodData, order_workflow_id

BASIC = PlanData(
    plan_id="plan-basic",
    name="Basic box",
    items=[PlanItemData("SKU-COFFEE", "Coffee beans 1kg", 2, 1500)],
    currency="EUR",
    cadence=CadenceData(MONTHLY, 1, "09:00"),
    timezone="Europe/Berlin",
    shipping_minor=500,
    tax_minor=240,
)
DELUXE = PlanData(
    plan_id="plan-deluxe",
    name="Deluxe box",
    items=[
        PlanItemData("SKU-COFFEE", "Coffee beans 1kg", 2, 1500),
        PlanItemData("SKU-MUG", "Mug", 1, 1200),
    ],
    currency="EUR",
    cadence=CadenceData(MONTHLY, 1, "09:00"),
    timezone="Europe/Berlin",
    shipping_minor=500,
    tax_minor=336,
)
CARD = PaymentMethodData("card", "tok_visa_declining")
NEW_CARD = PaymentMethodData("card", "tok_mastercard")


@dataclass
class Services:
    """Capture's SubmitOrder and servicing's RecordSubscriptionProgress, as stand-ins."""

    orders: dict[str, CycleOrderInput] = field(default_factory=dict)
    progress: list[SubscriptionProgressInput] = field(default_factory=list)
    # Set to hold each placement until the test releases it (`placing` says one started).
    hold: asyncio.Event | None = None
    placing: asyncio.Event = field(default_factory=asyncio.Event)
    # Each placement attempt's start-to-close timeout, as the activity was given it.
    timeouts: list[timedelta | None] = field(default_factory=list)

    def activities(self) -> list[Any]:
        @activity.defn(name="submit_cycle_order")
        async def submit_cycle_order(order: CycleOrderInput) -> CycleOrderResult:
            self.placing.set()
            self.timeouts.append(activity.info().start_to_close_timeout)
            if self.hold is not None:
                await self.hold.wait()
            key = cycle_order_key(order.subscription_id, order.cycle)
            duplicate = key in self.orders
            self.orders.setdefault(key, order)
            return CycleOrderResult(f"order-{order.cycle}", duplicate)

        @activity.defn(name="record_subscription_progress")
        async def record_subscription_progress(progress: SubscriptionProgressInput) -> None:
            if all(p.idempotency_key != progress.idempotency_key for p in self.progress):
                self.progress.append(progress)

        return [submit_cycle_order, record_subscription_progress]

    def cycles(self) -> dict[int, CycleView]:
        """Each cycle as last recorded."""
        return {c.number: c for p in self.progress for c in p.cycles}

    def changes(self) -> list[tuple[str, str, int]]:
        """The recorded history of changes: (kind, actor, effective cycle)."""
        return [
            (p.change.kind, p.change.actor, p.change.effective_cycle)
            for p in self.progress
            if p.change is not None
        ]


@workflow.defn(name="StandInOrder")
class StandInOrder:
    """A cycle's order lifecycle, as far as a subscription sees it: it takes retries."""

    def __init__(self) -> None:
        self.retries: list[RetryPayment] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: len(self.retries) > 0)

    @workflow.signal(name=RETRY_PAYMENT_SIGNAL)
    def retry_payment(self, retry: RetryPayment) -> None:
        self.retries.append(retry)

    @workflow.query(name="retries")
    def taken(self) -> list[RetryPayment]:
        return self.retries


Handle = WorkflowHandle[Any, Any]


@dataclass
class Running:
    env: WorkflowEnvironment
    services: Services
    subscription_id: str
    handle: Handle
    queue: str

    async def idle(self) -> None:
        """Until the latest run's history ends with no workflow task in flight. The
        time-skipping server sometimes never answers a query sent while a workflow task
        continues the run as new, and its clock stops skipping after that; queries wait
        for this first."""
        latest = self.env.client.get_workflow_handle(self.handle.id)
        busy = {
            EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        }
        for _ in range(1000):
            history = await latest.fetch_history()
            if history.events and history.events[-1].event_type not in busy:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the subscription never went idle")

    async def state(self) -> SubscriptionView:
        await self.idle()
        return await across_runs(
            lambda: self.handle.query(SUBSCRIPTION_STATE_QUERY, result_type=SubscriptionView)
        )

    async def change(self, kind: str, actor: str = "shopper", **fields: Any) -> Any:
        key = fields.pop("idempotency_key", str(uuid.uuid4()))
        request = SubscriptionChangeRequest(kind=kind, actor=actor, idempotency_key=key, **fields)
        return await across_runs(
            lambda: self.handle.execute_update(
                SUBSCRIPTION_CHANGE_UPDATE, request, result_type=SubscriptionChangeResult
            )
        )

    async def preview(self, kind: str, **fields: Any) -> SubscriptionChangeResult:
        request = SubscriptionChangeRequest(kind=kind, actor="shopper", **fields)
        await self.idle()
        return await across_runs(
            lambda: self.handle.query(
                SUBSCRIPTION_PREVIEW_QUERY, request, result_type=SubscriptionChangeResult
            )
        )

    async def pay(self, cycle: int, outcome: str, attempt: int, reason: str = "") -> None:
        event = SubscriptionPaymentEvent(cycle, f"order-{cycle}", outcome, attempt, reason)
        await across_runs(lambda: self.handle.signal(SUBSCRIPTION_PAYMENT_SIGNAL, event))

    async def to_next_cycle(self) -> int:
        """Move time to just past the next cycle's due time and wait for it to be taken."""
        view = await self.state()
        due = datetime.fromisoformat(view.next_cycle_at)
        now = await self.env.get_current_time()
        await self.env.sleep(due - now + timedelta(seconds=1))
        await until(lambda: view.next_cycle in self.services.cycles())
        return view.next_cycle

    async def sleep_until(self, at: datetime) -> None:
        await self.env.sleep(at - await self.env.get_current_time())


async def across_runs(call: Callable[[], Any]) -> Any:
    """Call the subscription as servicing does: again when the call reached a run just as it
    continued as new (the server answers "completed workflow")."""
    for _ in range(50):
        try:
            return await call()
        except RPCError as error:
            if "completed" not in error.message.lower() and error.status != RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError("no open run")


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def subscribe(
    env: WorkflowEnvironment, services: Services, plan: PlanData = BASIC, **overrides: Any
) -> tuple[Worker, Running]:
    queue = f"sub-test-{uuid.uuid4()}"
    worker = Worker(
        env.client,
        task_queue=queue,
        workflows=[SubscriptionWorkflow, StandInOrder],
        activities=services.activities(),
    )
    subscription_id = f"sub-{uuid.uuid4()}"
    start = await env.get_current_time()
    values: dict[str, Any] = {
        "subscription_id": subscription_id,
        "plan": plan,
        "channel": "web",
        "subscriber": SubscriberData("ada@example.com", "Ada Lovelace"),
        "delivery_address": Address("1 Main St", "Berlin", "10115", "DE"),
        "delivery_method": "standard",
        "payment_method": CARD,
        "start_at": start.astimezone(UTC).isoformat(),
    }
    values.update(overrides)
    await env.client.start_workflow(
        SubscriptionWorkflow.run,
        SubscriptionInput(**values),
        id=subscription_workflow_id(subscription_id),
        task_queue=queue,
    )
    # Not the handle start_workflow answers: that one names the first run, and each cycle is
    # a run of its own.
    handle = env.client.get_workflow_handle(subscription_workflow_id(subscription_id))
    return worker, Running(env, services, subscription_id, handle, queue)


def refusal(error: WorkflowUpdateFailedError) -> tuple[str | None, str]:
    cause = error.cause
    assert isinstance(cause, ApplicationError)
    return cause.type, cause.message


async def test_twelve_monthly_cycles_with_a_pause_a_skip_an_upgrade_dunning_and_a_cancel(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, services = time_skipping_env, Services()
    worker, sub = await subscribe(env, services)
    async with worker:
        assert await sub.to_next_cycle() == 1
        assert await sub.to_next_cycle() == 2
        # Paused over cycle 3, until a day after it was due.
        cycle_3 = datetime.fromisoformat((await sub.state()).next_cycle_at)
        paused = await sub.change(PAUSE, until=(cycle_3 + timedelta(days=1)).isoformat())
        assert paused.summary.endswith("cycle 3 will not be ordered")
        assert paused.next_cycle_amount_minor == 0
        assert await sub.to_next_cycle() == 3
        assert (await sub.state()).status == PAUSED
        assert await sub.to_next_cycle() == 4  # the pause ran out on the way
        skipped = await sub.change(SKIP)
        assert skipped.effective_cycle == 5
        assert await sub.to_next_cycle() == 5
        assert await sub.to_next_cycle() == 6
        upgraded = await sub.change(CHANGE_PLAN, actor="agent:ana", plan=DELUXE)
        assert (upgraded.effective_cycle, upgraded.next_cycle_amount_minor) == (7, 5036)
        assert await sub.to_next_cycle() == 7

        # Cycle 7's payment is declined, retried with a new card, and paid on the second retry.
        order_7 = await env.client.start_workflow(
            StandInOrder.run, id=order_workflow_id("order-7"), task_queue=sub.queue
        )
        await sub.pay(7, PAYMENT_PAST_DUE, 1, "card_declined")
        await until(lambda: services.cycles()[7].status == "past_due")
        assert (await sub.state()).status == SUBSCRIPTION_PAST_DUE
        await sub.change(CHANGE_PAYMENT_METHOD, payment_method=NEW_CARD)
        assert await order_7.query("retries", result_type=list[RetryPayment]) == [
            RetryPayment(NEW_CARD, "")
        ]
        await sub.pay(7, PAYMENT_PAST_DUE, 2, "card_declined")
        # Cycle 8 falls due while cycle 7 is past due: it waits.
        cycle_8 = datetime.fromisoformat((await sub.state()).next_cycle_at)
        await sub.sleep_until(cycle_8 + timedelta(hours=1))
        assert cycle_order_key(sub.subscription_id, 8) not in services.orders
        await sub.pay(7, PAYMENT_PAID, 3)
        await until(lambda: 8 in services.cycles())
        assert (await sub.state()).status == ACTIVE

        for expected in (9, 10, 11, 12):
            assert await sub.to_next_cycle() == expected
        canceled = await sub.change(CANCEL, actor="agent:ana", reason="moving abroad")
        assert canceled.summary == "Canceled; cycle 13 and later will not be ordered"
        await sub.handle.result()

    ordered = [1, 2, 4, 6, 7, 8, 9, 10, 11, 12]
    assert list(services.orders) == [cycle_order_key(sub.subscription_id, n) for n in ordered]
    plans = {n: services.orders[cycle_order_key(sub.subscription_id, n)].plan for n in ordered}
    assert {n: p.plan_id for n, p in plans.items()} == {
        n: "plan-basic" if n < 7 else "plan-deluxe" for n in ordered
    }
    assert [plans[n].price_minor() for n in ordered] == [3740] * 4 + [5036] * 6
    assert [i.sku for i in plans[7].items] == ["SKU-COFFEE", "SKU-MUG"]
    methods = {
        n: services.orders[cycle_order_key(sub.subscription_id, n)].payment_method for n in ordered
    }
    assert [methods[n].token for n in ordered] == ["tok_visa_declining"] * 5 + [
        "tok_mastercard"
    ] * 5

    cycles = services.cycles()
    assert {n: c.status for n, c in cycles.items()} == {
        1: CYCLE_ORDERED,
        2: CYCLE_ORDERED,
        3: CYCLE_SKIPPED,
        4: CYCLE_ORDERED,
        5: CYCLE_SKIPPED,
        6: CYCLE_ORDERED,
        7: CYCLE_PAID,
        8: CYCLE_ORDERED,
        9: CYCLE_ORDERED,
        10: CYCLE_ORDERED,
        11: CYCLE_ORDERED,
        12: CYCLE_ORDERED,
    }
    assert (cycles[7].order_id, cycles[7].payment_attempts, cycles[7].amount_minor) == (
        "order-7",
        3,
        5036,
    )
    assert cycles[3].decline_reason == "paused"
    # Monthly on the 1st at 09:00 in Berlin, whatever the season.
    for cycle in cycles.values():
        due = datetime.fromisoformat(cycle.due_at)
        local = due.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.day, local.hour, local.minute) == (1, 9, 0)
    assert services.changes() == [
        ("paused", "shopper", 3),
        ("resumed", "workflow", 4),
        ("skipped", "shopper", 5),
        ("plan_changed", "agent:ana", 7),
        ("payment_method_changed", "shopper", 8),
        ("canceled", "agent:ana", 13),
    ]
    assert services.progress[-1].subscription.status == SUBSCRIPTION_CANCELED
    assert services.progress[-1].change is not None
    assert services.progress[-1].change.reason == "moving abroad"


async def test_a_cycle_orders_placement_lost_with_its_worker_is_tried_again_within_30_s(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """An attempt running on a worker that dies never answers: the next attempt starts when
    the attempt's start-to-close timeout lapses. The call it makes (capture's SubmitOrder)
    has a 10 s deadline, so the timeout is a little longer than that and no more: the e2e
    test that kills the worker as a cycle falls due waits 90 s for the order. (Tried here with
    an attempt that never answers, the time-skipping server did not skip to the lapse: the
    sleep's call timed out. So the lapse itself is played by that e2e test only.)"""
    env, services = time_skipping_env, Services()
    worker, sub = await subscribe(env, services)
    async with worker:
        assert await sub.to_next_cycle() == 1
        # Ended: its next cycle, falling due while a later test skips time, would wait for a
        # worker of this test's queue for ever and hold the time-skipping server's clock.
        await sub.idle()
        await sub.handle.terminate("test over")
    [timeout] = services.timeouts
    assert timeout is not None
    # Imported here: the sandbox that checks this module's workflows must not load activities.
    from workflows.activities import DEADLINE_SECONDS

    assert timedelta(seconds=DEADLINE_SECONDS) < timeout <= timedelta(seconds=30)


async def test_a_change_racing_a_cycles_placement_applies_to_the_next_cycle_whole(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, services = time_skipping_env, Services(hold=asyncio.Event())
    worker, sub = await subscribe(env, services)
    async with worker:
        due = datetime.fromisoformat((await sub.state()).next_cycle_at)
        await sub.sleep_until(due + timedelta(seconds=1))
        await asyncio.wait_for(services.placing.wait(), 10)
        racing = asyncio.create_task(sub.change(CHANGE_PLAN, plan=DELUXE))
        await asyncio.sleep(0.5)
        assert not racing.done()  # waits for the placement
        assert services.hold is not None
        services.hold.set()
        upgraded = await racing
        assert upgraded.effective_cycle == 2
        assert await sub.to_next_cycle() == 2
        await sub.change(CANCEL)
        await sub.handle.result()
    assert [o.plan.plan_id for o in services.orders.values()] == ["plan-basic", "plan-deluxe"]


async def test_the_same_change_key_twice_answers_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, services = time_skipping_env, Services()
    worker, sub = await subscribe(env, services)
    async with worker:
        first = await sub.change(SKIP, idempotency_key="skip-once")
        again = await sub.change(SKIP, idempotency_key="skip-once")
        view = await sub.state()
        await sub.change(CANCEL)
        await sub.handle.result()
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.summary == first.summary and again.effective_cycle == first.effective_cycle == 1
    assert view.skipped_cycles == [1]
    assert [c[0] for c in services.changes()] == ["skipped", "canceled"]


async def test_refused_changes_never_enter_history(time_skipping_env: WorkflowEnvironment) -> None:
    env, services = time_skipping_env, Services()
    weekly = PlanData(
        "plan-weekly", "Weekly", BASIC.items, "EUR", CadenceData(WEEKLY, 1), "Europe/Berlin"
    )
    worker, sub = await subscribe(env, services, plan=weekly)
    dollars = PlanData("plan-usd", "US box", BASIC.items, "USD", BASIC.cadence, "America/New_York")
    async with worker:
        now = await env.get_current_time()
        refusals = []
        for kind, fields in [
            ("upgrade", {}),
            (RESUME, {}),
            (CHANGE_PLAN, {"plan": dollars}),
            (PAUSE, {"until": (now - timedelta(days=1)).isoformat()}),
            (CHANGE_CYCLE_DAY, {"day": 15}),
            (CHANGE_PAYMENT_METHOD, {"payment_method": PaymentMethodData("cash", "x")}),
        ]:
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await sub.change(kind, **fields)
            refusals.append(refusal(refused.value))
        # A preview of a refused change answers the refusal (a failed query would reach
        # servicing encrypted); it changes nothing either.
        previewed = await sub.preview(RESUME)
        assert (previewed.refusal_code, previewed.refusal) == (
            "FAILED_PRECONDITION",
            "the subscription is active; only a paused one resumes",
        )
        with pytest.raises(WorkflowUpdateFailedError) as no_key:
            await sub.change(SKIP, idempotency_key="")
        assert await sub.to_next_cycle() == 1
        with pytest.raises(WorkflowUpdateFailedError) as past:
            await sub.change(SKIP, cycle=1)
        await sub.change(CANCEL)
        await sub.handle.result()
    assert refusals == [
        (
            "INVALID_ARGUMENT",
            "kind: unknown change 'upgrade' (one of pause, resume, skip, change_plan, "
            "change_address, change_payment_method, change_cycle_day, cancel)",
        ),
        ("FAILED_PRECONDITION", "the subscription is active; only a paused one resumes"),
        (
            "INVALID_ARGUMENT",
            "plan: plan plan-usd is in USD, the subscription in EUR",
        ),
        ("INVALID_ARGUMENT", "until: must be in the future"),
        (
            "FAILED_PRECONDITION",
            "day: plan plan-weekly is not monthly (every 1 weeks); only a monthly plan has a "
            "cycle day",
        ),
        ("INVALID_ARGUMENT", "payment_method.type: one of card, gift_card, invoice_terms"),
    ]
    assert refusal(no_key.value) == ("INVALID_ARGUMENT", "idempotency_key: required")
    assert refusal(past.value) == ("INVALID_ARGUMENT", "cycle: cycle 1 is past (the next is 2)")
    assert [c[0] for c in services.changes()] == ["canceled"]


async def test_a_preview_changes_nothing(time_skipping_env: WorkflowEnvironment) -> None:
    env, services = time_skipping_env, Services()
    worker, sub = await subscribe(env, services)
    async with worker:
        before = await sub.state()
        preview = await sub.preview(CHANGE_PLAN, plan=DELUXE)
        after = await sub.state()
        await sub.change(CANCEL)
        await sub.handle.result()
    assert (preview.effective_cycle, preview.next_cycle_amount_minor) == (1, 5036)
    assert preview.subscription.pending_plan == DELUXE
    assert preview.summary.startswith("From cycle 1: plan Deluxe box at 50.36 EUR a cycle")
    assert before == after and after.pending_plan is None
    assert [c[0] for c in services.changes()] == ["canceled"]


async def test_cancel_at_period_end_orders_no_cycle_after_the_current_one(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, services = time_skipping_env, Services()
    worker, sub = await subscribe(env, services)
    async with worker:
        assert await sub.to_next_cycle() == 1
        ending = await sub.change(CANCEL, at_period_end=True)
        assert (await sub.state()).cancel_at_period_end
        assert await sub.to_next_cycle() == 2
        await sub.handle.result()
    assert ending.summary.startswith("Cancels at the end of the period: cycle 2")
    assert list(services.orders) == [cycle_order_key(sub.subscription_id, 1)]
    assert services.cycles()[2].status == CYCLE_SKIPPED
    assert services.changes() == [("canceled", "shopper", 2), ("canceled", "workflow", 2)]
    assert services.progress[-1].subscription.status == SUBSCRIPTION_CANCELED
