"""SubscriptionsService over real gRPC, real Postgres and a real Temporal dev server: plans and
subscriptions validated and idempotent, the outbox starting each subscription's workflow,
changes previewed and made through it, the workflow's progress building the history agents
read, who may call what, masked payment tokens, and the `oms` CLI round trip.

The workflow is the real SubscriptionWorkflow on the real order worker (workflows/worker.py),
its progress recorded by servicing's RecordSubscriptionProgress. Every subscription starts
two New Years ahead, so no cycle falls due while the module runs: the workflow never orders
one, and capture (whose cycle-order activity the worker registers) is not running at all."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2
from oms.subscriptions.v1 import subscriptions_pb2 as pb
from oms.subscriptions.v1 import subscriptions_pb2_grpc
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from oms_platform import auth, temporal
from oms_platform.grpcutil import field_violations
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from oms_tools.registry import start_service
from services.servicing.lifecycles import LifecycleUnavailable
from services.servicing.subscription_workflows import SubscriptionWorkflows
from tests.callers import channel_as, oms_cli, persona_channel
from tests.conftest import migrated_database
from workflows import activity_names, cadence
from workflows.subscription_types import (
    PAUSE,
    PAUSED,
    SUBSCRIPTION_STATE_QUERY,
    SubscriptionChangeRequest,
    SubscriptionInput,
    SubscriptionView,
    subscription_workflow_id,
)
from workflows.worker import build_worker

if TYPE_CHECKING:
    from oms.subscriptions.v1.subscriptions_pb2_grpc import SubscriptionsServiceAsyncStub

SPREAD_SECONDS = 600
# Every subscription's earliest first cycle: far enough ahead that none falls due here.
START = datetime(datetime.now(UTC).year + 2, 1, 1, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


@dataclass
class Subscriptions:
    """Servicing alone on a database of its own, and the order worker running the real
    SubscriptionWorkflow and its activities."""

    settings: Settings
    client: Client
    service: RunningService
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def stub(self, role: str = "", **identity: Any) -> SubscriptionsServiceAsyncStub:
        """A stub calling as `role` (none: a persona the access table allows, agent first);
        channels are kept for the module."""
        address = self.settings.address_of("servicing")
        key = f"{role}:{sorted(identity.items())}"
        if key not in self.channels:
            self.channels[key] = (
                channel_as(self.settings, address, role, **identity)
                if role
                else persona_channel(self.settings, address, {auth.AGENT: "agent:ada"})
            )
        return subscriptions_pb2_grpc.SubscriptionsServiceStub(self.channels[key])

    async def workflow(self, subscription_id: str) -> WorkflowHandle[Any, Any]:
        """The subscription's workflow, once the outbox relay has started it."""
        handle = self.client.get_workflow_handle(subscription_workflow_id(subscription_id))
        deadline = time.monotonic() + 30
        while True:
            try:
                await handle.describe()
                return handle
            except RPCError:
                assert time.monotonic() < deadline, "the subscription's workflow never started"
                await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def subs(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[Subscriptions]:
    settings = replace(
        settings_with_temporal,
        database_url=await migrated_database(postgres, "oms_subscriptions"),
        task_queue=f"oms-subscriptions-{os.getpid()}",
        servicing_port=free_port(),
        outbox_poll_seconds=0.05,
        subscription_spread_seconds=SPREAD_SECONDS,
        subscription_minute_cadence=True,
        servicing_update_timeout_seconds=10.0,
        # Nothing listens here: no cycle falls due (START), so the workflow never submits a
        # cycle's order; that it never tried is checked when the module ends.
        capture_port=free_port(),
    )
    service = await start_service("servicing", settings)
    client = await temporal.connect(settings)
    try:
        async with build_worker(client, settings):
            yield Subscriptions(settings, client, service)
        checked, tried = await cycle_orders_tried(client, settings.task_queue)
        assert checked and tried == [], (checked, tried)
    finally:
        await service.stop(0.5)
        await temporal.close(client)


async def cycle_orders_tried(client: Client, task_queue: str) -> tuple[int, list[str]]:
    """How many workflow runs on `task_queue` were looked at, and those that ever scheduled a
    cycle's order at capture."""
    checked, tried = 0, []
    async for listed in client.list_workflows(f"TaskQueue = '{task_queue}'"):
        checked += 1
        handle = client.get_workflow_handle(listed.id, run_id=listed.run_id)
        for event in (await handle.fetch_history()).events:
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == activity_names.SUBMIT_CYCLE_ORDER:
                tried.append(listed.id)
    return checked, tried


def due(subscription_id: str, local: datetime) -> datetime:
    """When a cycle dated `local` (the plan's wall clock) starts for this subscription: in UTC,
    after its spread offset."""
    return local.astimezone(UTC) + cadence.spread_offset(subscription_id, SPREAD_SECONDS)


def when(at: datetime) -> str:
    """An instant as the workflow's summaries say it."""
    return at.strftime("%Y-%m-%d %H:%M UTC")


def a_key() -> str:
    return f"key-{uuid.uuid4()}"


def overridden(request: Any, overrides: dict[str, Any]) -> Any:
    """`request` with some fields replaced (messages and lists whole)."""
    for name, value in overrides.items():
        field = getattr(request, name)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        elif hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def a_plan(**overrides: Any) -> pb.CreatePlanRequest:
    request: pb.CreatePlanRequest = pb.CreatePlanRequest(
        idempotency_key=a_key(),
        name="Coffee, monthly",
        items=[pb.PlanItem(sku="SKU-BEANS", name="Beans 1 kg", quantity=2, unit_price_minor=1500)],
        currency="EUR",
        shipping_minor=490,
        tax_minor=0,
        cadence=pb.Cadence(monthly_on_day=1, at_local_time="07:30"),
        timezone="Europe/Berlin",
    )
    return overridden(request, overrides)


def a_subscription(plan_id: str, **overrides: Any) -> pb.CreateSubscriptionRequest:
    request = pb.CreateSubscriptionRequest(
        idempotency_key=a_key(),
        plan_id=plan_id,
        channel="web",
        subscriber=pb.Subscriber(email="ada@example.com", name="Ada Lovelace"),
        delivery_address=common_pb2.PostalAddress(
            line1="1 Main St", city="Berlin", postal_code="10115", country_code="DE"
        ),
        delivery_method="standard",
        payment_method=payments_pb2.PaymentMethod(
            type=payments_pb2.PAYMENT_METHOD_TYPE_CARD, token="tok_visa_4242"
        ),
        start_at=Timestamp(seconds=int(START.timestamp())),
    )
    return overridden(request, overrides)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def a_live_subscription(subs: Subscriptions, plan_id: str = "") -> pb.Subscription:
    stub = subs.stub()
    if not plan_id:
        plan_id = (await stub.CreatePlan(a_plan(), timeout=10)).plan.plan_id
    made = await stub.CreateSubscription(a_subscription(plan_id), timeout=10)
    await reported(subs, made.subscription.subscription_id)
    return made.subscription


async def reported(
    subs: Subscriptions,
    subscription_id: str,
    until: Callable[[pb.GetSubscriptionResponse], bool] | None = None,
) -> pb.GetSubscriptionResponse:
    """GetSubscription once the workflow's progress reports have reached servicing: by default
    its first ("started": the next cycle's time, which servicing does not know before), or
    until `until(view)` holds. Polled for up to 10 s: progress is recorded asynchronously."""
    await subs.workflow(subscription_id)
    deadline = time.monotonic() + 10
    while True:
        view: pb.GetSubscriptionResponse = await subs.stub().GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=subscription_id), timeout=10
        )
        if (until or (lambda v: v.subscription.HasField("next_cycle_at")))(view):
            return view
        assert time.monotonic() < deadline, f"no such progress recorded: {view}"
        await asyncio.sleep(0.1)


# ---- plans ------------------------------------------------------------------------------------


async def test_a_plan_with_bad_fields_is_refused_naming_each(subs: Subscriptions) -> None:
    request = a_plan(
        name="",
        items=[],
        currency="ZZZ",
        shipping_minor=-1,
        cadence=pb.Cadence(monthly_on_day=30, at_local_time="25:00"),
        timezone="Mars/Olympus_Mons",
    )
    request.items.add(sku="", quantity=0, unit_price_minor=-5)

    error = await refused(subs.stub().CreatePlan(request, timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in field_violations(error)} == {
        "name",
        "items[0].sku",
        "items[0].quantity",
        "items[0].unit_price_minor",
        "currency",
        "shipping_minor",
        "cadence.monthly_on_day",
        "cadence.at_local_time",
        "timezone",
    }


async def test_a_plan_without_a_cadence_is_refused(subs: Subscriptions) -> None:
    request = a_plan()
    request.ClearField("cadence")

    error = await refused(subs.stub().CreatePlan(request, timeout=10))

    assert [f for f, _ in field_violations(error)] == ["cadence"]


async def test_a_plan_is_created_once_per_key(subs: Subscriptions) -> None:
    stub = subs.stub(auth.MERCHANDISER)
    request = a_plan(cadence=pb.Cadence(minutes=5))

    first = await stub.CreatePlan(request, timeout=10)
    again = await stub.CreatePlan(request, timeout=10)
    reused = await refused(stub.CreatePlan(a_plan(idempotency_key=request.idempotency_key)))

    assert first.plan.plan_id and again.plan.plan_id == first.plan.plan_id
    assert first.plan.price_per_cycle.amount_minor == 2 * 1500 + 490
    assert first.plan.cadence.minutes == 5
    assert reused.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await subs.stub(auth.STOREFRONT).ListPlans(pb.ListPlansRequest(), timeout=10)
    assert [p.plan_id for p in listed.plans].count(first.plan.plan_id) == 1


# ---- subscriptions ----------------------------------------------------------------------------


async def test_a_subscription_with_bad_fields_is_refused_naming_each(subs: Subscriptions) -> None:
    request = a_subscription(
        "no-such-plan",
        channel="moon",
        subscriber=pb.Subscriber(email="not-an-email"),
        delivery_address=common_pb2.PostalAddress(city="Berlin", country_code="DE"),
        payment_method=payments_pb2.PaymentMethod(type=payments_pb2.PAYMENT_METHOD_TYPE_CARD),
    )

    error = await refused(subs.stub().CreateSubscription(request, timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in field_violations(error)} == {
        "channel",
        "subscriber.email",
        "delivery_address.line1",
        "delivery_address.postal_code",
        "payment_method.token",
    }


async def test_a_subscription_to_an_unknown_plan_is_refused(subs: Subscriptions) -> None:
    error = await refused(subs.stub().CreateSubscription(a_subscription("no-such-plan")))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == [("plan_id", "no plan 'no-such-plan'")]


async def test_a_subscription_starts_its_workflow_once_through_the_outbox(
    subs: Subscriptions,
) -> None:
    stub = subs.stub()
    plan = (await stub.CreatePlan(a_plan(), timeout=10)).plan
    request = a_subscription(plan.plan_id)

    made = await stub.CreateSubscription(request, timeout=10)
    again = await stub.CreateSubscription(request, timeout=10)
    sid = made.subscription.subscription_id
    view = await reported(subs, sid)
    handle = await subs.workflow(sid)
    # What the outbox started the workflow with, as its history holds it.
    first = (await handle.fetch_history()).events[0]
    [started] = await subs.client.data_converter.decode(
        first.workflow_execution_started_event_attributes.input.payloads, [SubscriptionInput]
    )
    holds: SubscriptionView = await handle.query(
        SUBSCRIPTION_STATE_QUERY, result_type=SubscriptionView
    )
    # The plan's first cycle on or after START: the 1st at 07:30 in Berlin.
    first_due = due(sid, START.replace(hour=7, minute=30, tzinfo=BERLIN))

    assert (made.duplicate, again.duplicate) == (False, True)
    assert again.subscription.subscription_id == sid
    assert made.subscription.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    assert started.subscription_id == sid
    assert started.spread_seconds == SPREAD_SECONDS
    assert started.plan.plan_id == plan.plan_id and started.plan.items[0].quantity == 2
    # The workflow gets the real token; readers see its last four.
    assert started.payment_method.token == "tok_visa_4242"
    assert made.subscription.payment_method.token == "…4242"
    assert (holds.status, holds.next_cycle, holds.next_cycle_at) == (
        "active",
        1,
        first_due.isoformat(),
    )
    assert holds.payment_method is not None and holds.payment_method.token == "tok_visa_4242"
    # The workflow's first progress report: when cycle 1 is due, which only it knows.
    assert view.subscription.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    assert view.subscription.next_cycle == 1
    assert view.subscription.next_cycle_at.ToDatetime(UTC) == first_due


# ---- changes ----------------------------------------------------------------------------------


async def test_a_previewed_change_changes_nothing_and_a_made_one_is_made_once(
    subs: Subscriptions,
) -> None:
    subscription = await a_live_subscription(subs)
    stub = subs.stub()
    until = Timestamp(seconds=int(time.time()) + 30 * 86400)
    pause = pb.ChangeSubscriptionRequest(
        subscription_id=subscription.subscription_id,
        idempotency_key=a_key(),
        reason="on holiday",
        pause=pb.Pause(until=until),
    )

    preview = await stub.ChangeSubscription(
        pb.ChangeSubscriptionRequest(
            subscription_id=subscription.subscription_id, preview=True, pause=pb.Pause()
        ),
        timeout=15,
    )
    made = await stub.ChangeSubscription(pause, timeout=15)
    again = await stub.ChangeSubscription(pause, timeout=15)
    handle = await subs.workflow(subscription.subscription_id)
    holds: SubscriptionView = await handle.query(
        SUBSCRIPTION_STATE_QUERY, result_type=SubscriptionView
    )
    # The workflow's report of the change, as servicing records it for agents to read.
    view = await reported(
        subs,
        subscription.subscription_id,
        until=lambda v: (
            v.subscription.status == pb.SUBSCRIPTION_STATUS_PAUSED and len(v.changes) > 1
        ),
    )

    assert preview.subscription.status == pb.SUBSCRIPTION_STATUS_PAUSED
    assert preview.summary == "Paused until resumed; no cycle is ordered from cycle 1 on"
    # Paused until resumed: the next cycle is not ordered, so it costs nothing.
    assert preview.next_cycle_amount.amount_minor == 0
    assert preview.next_cycle_amount.currency == "EUR"
    assert made.subscription.status == pb.SUBSCRIPTION_STATUS_PAUSED
    assert made.subscription.paused_until.seconds == until.seconds
    paused_until = when(until.ToDatetime(UTC))
    assert made.summary == f"Paused until {paused_until}; cycle 1 is due after it and still ordered"
    assert made.next_cycle_amount.amount_minor == 3490
    assert (made.duplicate, again.duplicate) == (False, True)
    assert again.summary == made.summary
    assert made.subscription.payment_method.token == "…4242"
    # Applied once: the preview and the repeated key changed nothing more.
    assert (holds.status, holds.paused_until) == (PAUSED, until.ToDatetime(UTC).isoformat())
    assert view.subscription.status == pb.SUBSCRIPTION_STATUS_PAUSED
    assert view.subscription.paused_until == until
    assert [
        (c.change_id, c.kind, c.actor, c.reason, c.summary, c.effective_cycle)
        for c in view.changes[1:]
    ] == [(pause.idempotency_key, "paused", "agent:ada", "on holiday", made.summary, 1)]


async def test_a_change_the_workflow_refuses_answers_failed_precondition(
    subs: Subscriptions,
) -> None:
    subscription = await a_live_subscription(subs)
    resume = pb.ChangeSubscriptionRequest(
        subscription_id=subscription.subscription_id,
        idempotency_key=a_key(),
        resume=pb.Resume(),
    )

    error = await refused(subs.stub().ChangeSubscription(resume, timeout=15))
    preview = await refused(
        subs.stub().ChangeSubscription(
            pb.ChangeSubscriptionRequest(
                subscription_id=subscription.subscription_id, preview=True, resume=pb.Resume()
            ),
            timeout=15,
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "the subscription is active; only a paused one resumes"
    assert preview.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert preview.details() == "the subscription is active; only a paused one resumes"


async def test_a_plan_change_sends_the_plan_whole_from_the_next_cycle(
    subs: Subscriptions,
) -> None:
    subscription = await a_live_subscription(subs)
    stub = subs.stub()
    bigger = (
        await stub.CreatePlan(
            a_plan(
                name="Coffee, large",
                items=[pb.PlanItem(sku="SKU-BEANS", quantity=3, unit_price_minor=1500)],
            ),
            timeout=10,
        )
    ).plan
    in_dollars = (await stub.CreatePlan(a_plan(currency="USD"), timeout=10)).plan

    made = await stub.ChangeSubscription(
        pb.ChangeSubscriptionRequest(
            subscription_id=subscription.subscription_id,
            idempotency_key=a_key(),
            change_plan=pb.ChangePlan(plan_id=bigger.plan_id),
        ),
        timeout=15,
    )
    wrong_currency = await refused(
        stub.ChangeSubscription(
            pb.ChangeSubscriptionRequest(
                subscription_id=subscription.subscription_id,
                idempotency_key=a_key(),
                change_plan=pb.ChangePlan(plan_id=in_dollars.plan_id),
            )
        )
    )
    no_change = await refused(
        stub.ChangeSubscription(
            pb.ChangeSubscriptionRequest(subscription_id=subscription.subscription_id)
        )
    )

    assert made.summary == (
        "From cycle 1: plan Coffee, large at 49.90 EUR a cycle (was 34.90 EUR); "
        "no proration, a cycle already ordered keeps its price"
    )
    assert made.effective_cycle == 1
    assert made.subscription.pending_plan_id == bigger.plan_id
    assert made.next_cycle_amount.amount_minor == 3 * 1500 + 490
    assert wrong_currency.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(wrong_currency)] == ["change_plan.plan_id"]
    assert {f for f, _ in field_violations(no_change)} == {"idempotency_key", "change"}


# ---- the workflow's progress ------------------------------------------------------------------


async def test_recorded_progress_is_the_history_get_subscription_answers(
    subs: Subscriptions,
) -> None:
    subscription = await a_live_subscription(subs)
    sid = subscription.subscription_id
    workflow = subs.stub(auth.WORKFLOW)
    due = Timestamp(seconds=1_800_000_000)
    ordered = pb.RecordSubscriptionProgressRequest(
        idempotency_key=f"{sid}:cycle:1:ordered",
        subscription=pb.Subscription(
            subscription_id=sid,
            plan_id=subscription.plan_id,
            status=pb.SUBSCRIPTION_STATUS_ACTIVE,
            next_cycle=2,
            next_cycle_at=Timestamp(seconds=due.seconds + 30 * 86400),
        ),
        cycles=[
            pb.Cycle(
                number=1,
                due_at=due,
                status=pb.CYCLE_STATUS_ORDERED,
                order_id="order-1",
                plan_id=subscription.plan_id,
                amount=common_pb2.Money(amount_minor=3490, currency="EUR"),
            ),
            pb.Cycle(
                number=2,
                due_at=Timestamp(seconds=due.seconds + 30 * 86400),
                status=pb.CYCLE_STATUS_SCHEDULED,
            ),
        ],
    )
    past_due = pb.RecordSubscriptionProgressRequest(
        idempotency_key=f"{sid}:cycle:1:past_due",
        subscription=pb.Subscription(
            subscription_id=sid,
            plan_id=subscription.plan_id,
            status=pb.SUBSCRIPTION_STATUS_PAST_DUE,
            next_cycle=2,
        ),
        cycles=[
            pb.Cycle(
                number=1,
                due_at=due,
                status=pb.CYCLE_STATUS_PAST_DUE,
                order_id="order-1",
                amount=common_pb2.Money(amount_minor=3490, currency="EUR"),
                payment_attempts=1,
                decline_reason="card_declined",
                next_payment_retry_at=Timestamp(seconds=due.seconds + 86400),
            )
        ],
        change=pb.SubscriptionChangeRecord(
            change_id=f"{sid}:skip:3",
            kind="skipped",
            actor="agent:ada",
            reason="travelling",
            summary="Cycle 3 will not be ordered",
            effective_cycle=3,
            at=Timestamp(seconds=int(time.time()) + 5),
        ),
    )

    await workflow.RecordSubscriptionProgress(ordered, timeout=10)
    await workflow.RecordSubscriptionProgress(past_due, timeout=10)
    await workflow.RecordSubscriptionProgress(past_due, timeout=10)  # a retried activity
    view = await subs.stub().GetSubscription(
        pb.GetSubscriptionRequest(subscription_id=sid), timeout=10
    )
    agent_records = await refused(subs.stub(auth.AGENT).RecordSubscriptionProgress(ordered))

    assert view.subscription.status == pb.SUBSCRIPTION_STATUS_PAST_DUE
    assert view.subscription.next_cycle == 2
    # Who subscribed, where it ships and how it pays stay as created.
    assert view.subscription.subscriber.email == "ada@example.com"
    assert view.subscription.delivery_address.city == "Berlin"
    assert view.subscription.payment_method.token == "…4242"
    assert view.plan.plan_id == subscription.plan_id
    assert [(c.number, c.status, c.order_id) for c in view.cycles] == [
        (1, pb.CYCLE_STATUS_PAST_DUE, "order-1"),
        (2, pb.CYCLE_STATUS_SCHEDULED, ""),
    ]
    assert view.cycles[0].decline_reason == "card_declined"
    assert view.cycles[0].payment_attempts == 1
    # What the workflow recorded for the cycle reads back: its amount and its next retry.
    assert view.cycles[0].amount == common_pb2.Money(amount_minor=3490, currency="EUR")
    assert view.cycles[0].next_payment_retry_at == Timestamp(seconds=due.seconds + 86400)
    assert view.cycles[0].due_at == due
    assert [(c.kind, c.actor, c.effective_cycle) for c in view.changes] == [
        ("created", "agent:ada", 1),
        ("skipped", "agent:ada", 3),
    ]
    assert agent_records.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_progress_for_an_unknown_subscription_is_not_found(subs: Subscriptions) -> None:
    error = await refused(
        subs.stub(auth.WORKFLOW).RecordSubscriptionProgress(
            pb.RecordSubscriptionProgressRequest(
                idempotency_key="k",
                subscription=pb.Subscription(
                    subscription_id="nobody",
                    plan_id="p",
                    status=pb.SUBSCRIPTION_STATUS_ACTIVE,
                    next_cycle=1,
                ),
            )
        )
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND


# ---- who may call what ------------------------------------------------------------------------


async def test_storefronts_see_and_change_only_their_channels_subscriptions(
    subs: Subscriptions,
) -> None:
    plan = (await subs.stub().CreatePlan(a_plan(), timeout=10)).plan
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    web = subs.stub(auth.STOREFRONT, channels=["web"])
    store = subs.stub(auth.STOREFRONT, channels=["store"])
    on_web = await web.CreateSubscription(
        a_subscription(plan.plan_id, subscriber=pb.Subscriber(email=email)), timeout=10
    )
    on_store = await store.CreateSubscription(
        a_subscription(plan.plan_id, channel="store", subscriber=pb.Subscriber(email=email)),
        timeout=10,
    )

    seen_by_store = await store.ListSubscriptions(
        pb.ListSubscriptionsRequest(shopper_email=email.upper()), timeout=10
    )
    seen_by_agent = await subs.stub(auth.AGENT).ListSubscriptions(
        pb.ListSubscriptionsRequest(shopper_email=email), timeout=10
    )
    other_channel = await refused(
        store.GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=on_web.subscription.subscription_id)
        )
    )
    create_on_other = await refused(
        store.CreateSubscription(a_subscription(plan.plan_id, channel="web"))
    )
    storefront_plan = await refused(store.CreatePlan(a_plan()))
    warehouse_reads = await refused(
        subs.stub(auth.WAREHOUSE).ListSubscriptions(pb.ListSubscriptionsRequest())
    )

    assert [s.subscription_id for s in seen_by_store.subscriptions] == [
        on_store.subscription.subscription_id
    ]
    assert [s.subscription_id for s in seen_by_agent.subscriptions] == [
        on_store.subscription.subscription_id,
        on_web.subscription.subscription_id,
    ]
    assert all(s.payment_method.token == "…4242" for s in seen_by_agent.subscriptions)
    assert other_channel.code() == grpc.StatusCode.PERMISSION_DENIED
    assert create_on_other.code() == grpc.StatusCode.PERMISSION_DENIED
    assert storefront_plan.code() == grpc.StatusCode.PERMISSION_DENIED
    assert warehouse_reads.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_subscriptions_list_in_pages_by_plan_and_status(subs: Subscriptions) -> None:
    stub = subs.stub()
    plan = (await stub.CreatePlan(a_plan(), timeout=10)).plan
    made = [
        (await stub.CreateSubscription(a_subscription(plan.plan_id), timeout=10)).subscription
        for _ in range(3)
    ]

    first = await stub.ListSubscriptions(
        pb.ListSubscriptionsRequest(plan_id=plan.plan_id, page_size=2), timeout=10
    )
    second = await stub.ListSubscriptions(
        pb.ListSubscriptionsRequest(
            plan_id=plan.plan_id, page_size=2, page_token=first.next_page_token
        ),
        timeout=10,
    )
    canceled = await stub.ListSubscriptions(
        pb.ListSubscriptionsRequest(plan_id=plan.plan_id, status=pb.SUBSCRIPTION_STATUS_CANCELED),
        timeout=10,
    )
    active = await stub.ListSubscriptions(
        pb.ListSubscriptionsRequest(plan_id=plan.plan_id, status=pb.SUBSCRIPTION_STATUS_ACTIVE),
        timeout=10,
    )
    other_filters = await refused(
        stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(page_size=2, page_token=first.next_page_token)
        )
    )

    newest_first = [s.subscription_id for s in reversed(made)]
    assert [s.subscription_id for s in first.subscriptions] == newest_first[:2]
    assert [s.subscription_id for s in second.subscriptions] == newest_first[2:]
    assert second.next_page_token == ""
    assert list(canceled.subscriptions) == []
    assert [s.subscription_id for s in active.subscriptions] == newest_first
    assert [f for f, _ in field_violations(other_filters)] == ["page_token"]


# ---- the CLI ----------------------------------------------------------------------------------


async def test_the_cli_creates_shows_changes_and_lists(subs: Subscriptions) -> None:
    async def oms(*args: str) -> tuple[int, str, str]:
        return await oms_cli(subs.settings, *args)

    code, planned, err = await oms(
        "plan", "create", "--name", "Tea", "--item", "SKU-TEA,2,900", "--currency", "EUR",
        "--monthly", "15", "--timezone", "Europe/Berlin", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    plan_id = json.loads(planned)["plan"]["plan_id"]
    code, created, err = await oms(
        "subscription", "create", "--plan", plan_id, "--email", "cli@example.com",
        "--start", START.isoformat(), "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    sid = json.loads(created)["subscription"]["subscription_id"]
    await subs.workflow(sid)
    # Monthly on the 15th at midnight in Berlin: cycle 3 is March's.
    cycle_3 = due(sid, START.replace(month=3, day=15, tzinfo=BERLIN))

    preview = await oms("subscription", "pause", sid, "--preview")
    paused = await oms("subscription", "pause", sid, "--reason", "moving house")
    skipped = await oms("subscription", "skip", sid, "--cycle", "3")
    bad_day = await oms("subscription", "change", sid, "--day", "30")
    shown = await oms("subscription", "show", sid)
    listed = await oms("subscription", "list", "--plan", plan_id)
    plans = await oms("plan", "list")

    assert preview[0] == 0
    assert "(preview) Paused until resumed; no cycle is ordered from cycle 1 on\n" in preview[1]
    assert paused[0] == 0 and "[paused]" in paused[1]
    assert skipped[0] == 0
    assert f"Cycle 3 (due {when(cycle_3)}) will not be ordered\n" in skipped[1]
    assert bad_day[0] == 1 and "change_cycle_day.day" in bad_day[2]
    assert shown[0] == 0 and f"subscription {sid}" in shown[1] and "created by" in shown[1]
    assert "…" in shown[1] and "tok_" not in shown[1]
    assert listed[0] == 0 and sid in listed[1]
    assert plans[0] == 0 and f"{plan_id}  Tea" in plans[1]


# ---- a workflow not started yet, or ended -----------------------------------------------------


async def test_a_change_for_a_workflow_not_started_yet_asks_for_a_retry(
    subs: Subscriptions,
) -> None:
    workflows = SubscriptionWorkflows(
        lambda: asyncio.sleep(0, subs.client),
        timedelta(seconds=5),
        start_wait=timedelta(seconds=0.3),
        start_poll=timedelta(seconds=0.1),
    )
    pause = SubscriptionChangeRequest(kind=PAUSE, actor="agent:ada", idempotency_key="k")

    with pytest.raises(LifecycleUnavailable) as error:
        await workflows.change(f"not-started-{uuid.uuid4()}", pause, "k")

    assert "has not started yet; retry with the same request" in str(error.value)


async def test_a_change_after_cancel_answers_that_the_subscription_ended(
    subs: Subscriptions,
) -> None:
    subscription = await a_live_subscription(subs)
    stub = subs.stub()
    await stub.ChangeSubscription(
        pb.ChangeSubscriptionRequest(
            subscription_id=subscription.subscription_id,
            idempotency_key=a_key(),
            cancel=pb.Cancel(),
        ),
        timeout=15,
    )
    handle = await subs.workflow(subscription.subscription_id)
    await handle.result()

    error = await refused(
        stub.ChangeSubscription(
            pb.ChangeSubscriptionRequest(
                subscription_id=subscription.subscription_id,
                idempotency_key=a_key(),
                skip=pb.Skip(),
            ),
            timeout=15,
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"subscription {subscription.subscription_id} has ended"
