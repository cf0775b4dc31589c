"""A cancel of everything that reaches the order's lifecycle before its first workflow task
completed, through the real services, Temporal dev server and worker.

An earlier attempt of that task may have run its steps (authorize, route and reserve) and been
lost with its worker, none of its markers recorded; the cancel then arrives before the retried
task. Here the lost attempt is played deterministically: no worker runs while the lifecycle
waits for its first task, the attempt's calls are made with the activities the worker runs and
the keys the lifecycle derives, and the cancel Update is admitted by the server before a worker
starts, so the retried task meets the cancel with its start (as servicing's Update meets an
order whose worker died).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from oms_platform import temporal
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from oms_tools.registry import start_service
from oms_tools.samples import sample_order
from services.payments.sim_store import read_operation_log
from tests.conftest import System, migrated_database, wait_for
from tests.integration.helpers import eventually, local_activities
from workflows import activity_names as names
from workflows.changes import cancel as canceling
from workflows.changes import steps
from workflows.ledger import Ledger
from workflows.state import LifecycleState
from workflows.types import (
    CANCEL_UPDATE,
    ChangeRequest,
    ChangeResult,
    OrderLifecycleInput,
    OrderLifecycleResult,
    order_workflow_id,
)
from workflows.worker import activities_for, build_worker

CANCELED = {capture_pb2.ORDER_STATUS_CANCELED}


@contextlib.asynccontextmanager
async def without_worker(
    base: Settings, postgres: EmbeddedPostgres, name: str, gateway_log: Path
) -> AsyncIterator[tuple[System, Callable[[], Any]]]:
    """The services and Temporal on a database of their own, and no worker yet: the second
    value builds the order worker when the test lets the lifecycle run."""
    settings = replace(
        base,
        database_url=await migrated_database(postgres, name),
        task_queue=f"{name.replace('_', '-')}-{uuid.uuid4().hex[:8]}",
        outbox_poll_seconds=0.05,
        gateway_log_path=str(gateway_log),
        **{f"{service}_port": free_port() for service in SERVICES},  # type: ignore[arg-type]
    )
    running = {service: await start_service(service, settings) for service in SERVICES}
    client = await temporal.connect(settings)
    try:
        yield (
            System(settings=settings, client=client, services=running),
            lambda: build_worker(client, settings),
        )
    finally:
        await asyncio.gather(*(svc.stop(0.5) for svc in running.values()))
        await temporal.close(client)


async def started_lifecycle(client: Client, order_id: str) -> OrderLifecycleInput:
    """The lifecycle capture's relay started for the order, as its start event carries it."""
    handle = client.get_workflow_handle(order_workflow_id(order_id))
    deadline = time.monotonic() + 30
    while True:
        try:
            history = await handle.fetch_history()
            break
        except RPCError as error:
            assert error.status == RPCStatusCode.NOT_FOUND, error
            assert time.monotonic() < deadline, "capture's relay did not start the lifecycle"
            await asyncio.sleep(0.1)
    started = history.events[0].workflow_execution_started_event_attributes
    [order] = await client.data_converter.decode(started.input.payloads, [OrderLifecycleInput])
    assert isinstance(order, OrderLifecycleInput)
    return order


class LostFirstAttempt:
    """The first workflow task's steps, made as the lifecycle makes them (same activities,
    same inputs and keys) by a worker that then died before the task completed."""

    def __init__(self, settings: Settings, order: OrderLifecycleInput) -> None:
        self.order = order
        self._activities = {fn.__name__: fn for fn in activities_for(settings)}

    async def activity(self, name: str, arg: Any, **_: Any) -> Any:
        return await ActivityEnvironment().run(self._activities[name], arg)

    async def run(self) -> None:
        order = self.order
        await self.activity(
            names.AUTHORIZE_PAYMENT, steps.order_authorization(order, order.grand_total_minor, 1)
        )
        pending = Ledger(Ledger.of(order).state).unallocated()
        await steps.route(
            self,  # type: ignore[arg-type]
            pending,
            "initial:1",
            reservation_id=order.reservation_id,
        )


async def cancel_admitted_before_any_worker(
    client: Client, order_id: str
) -> asyncio.Task[ChangeResult]:
    """Send the cancel of everything (the Update servicing sends) and return once the server
    has admitted it: the next workflow task carries it with the lifecycle's start."""
    workflow_id = order_workflow_id(order_id)
    update_id = str(uuid.uuid4())
    handle = client.get_workflow_handle(workflow_id)
    sent = asyncio.create_task(
        handle.execute_update(
            CANCEL_UPDATE,
            ChangeRequest(change_id=update_id, kind="cancel", reason="shopper asked"),
            id=update_id,
            result_type=ChangeResult,
        )
    )
    ask = PollWorkflowExecutionUpdateRequest(
        namespace=client.namespace,
        update_ref=UpdateRef(
            workflow_execution=WorkflowExecution(workflow_id=workflow_id), update_id=update_id
        ),
        identity="test",
        wait_policy=WaitPolicy(
            lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
        ),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            polled = await client.workflow_service.poll_workflow_execution_update(
                ask, timeout=timedelta(seconds=5)
            )
            if polled.stage >= ask.wait_policy.lifecycle_stage:
                return sent
        except RPCError as error:
            assert error.status == RPCStatusCode.NOT_FOUND, error
        assert time.monotonic() < deadline and not sent.done(), "the cancel was not admitted"
        await asyncio.sleep(0.05)


async def available(
    fulfillment: fulfillment_pb2_grpc.FulfillmentServiceStub, skus: list[str]
) -> dict[str, int]:
    answer = await fulfillment.GetAvailability(
        fulfillment_pb2.GetAvailabilityRequest(skus=skus), timeout=10
    )
    return {sku: answer.total_available[sku] for sku in skus}


def released_at_gateway(gateway_log: Path, authorization: payments_pb2.Authorization) -> int:
    """What the simulated gateway's own log shows released of `authorization` (voids and
    reversals that succeeded)."""
    return sum(
        op.amount_minor
        for op in read_operation_log(gateway_log)
        if op.reference == authorization.gateway_reference
        and op.kind in ("void", "reverse")
        and op.result.succeeded
    )


def all_canceled(listed: fulfillment_pb2.ListFulfillmentOrdersResponse) -> bool:
    return all(
        fo.status == fulfillment_pb2.FULFILLMENT_ORDER_STATUS_CANCELED
        for fo in listed.fulfillment_orders
    )


@dataclass
class Submitted:
    """The sample order submitted while no worker runs, and what the tests read it with."""

    capture: capture_pb2_grpc.CaptureServiceStub
    payments: payments_pb2_grpc.PaymentsServiceStub
    fulfillment: fulfillment_pb2_grpc.FulfillmentServiceStub
    skus: list[str]
    before: dict[str, int]  # the skus' stock before the order
    order_id: str
    order: OrderLifecycleInput  # as capture's relay started its lifecycle


async def submitted_without_worker(system: System) -> Submitted:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    submitted = sample_order()
    skus = sorted({line.sku for line in submitted.lines})
    before = await available(fulfillment, skus)
    order_id = (await capture.SubmitOrder(submitted, timeout=10)).order.order_id
    order = await started_lifecycle(system.client, order_id)
    return Submitted(capture, payments, fulfillment, skus, before, order_id, order)


@dataclass
class AfterCancel:
    """What a cancel admitted before any worker left, once a worker ran the lifecycle."""

    result: ChangeResult
    view: capture_pb2.GetOrderResponse
    lifecycle: OrderLifecycleResult
    money: payments_pb2.GetPaymentSummaryResponse
    fulfillment_orders: fulfillment_pb2.ListFulfillmentOrdersResponse
    steps_run: list[str]
    stock: dict[str, int]


async def canceled_with_a_worker(
    system: System, worker: Callable[[], Any], order_id: str, skus: list[str]
) -> AfterCancel:
    """Cancel the whole order while no worker runs, then start one: the cancel's answer, and
    the order as capture, the lifecycle, payments and fulfillment leave it (`skus`' stock)."""
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    cancel = await cancel_admitted_before_any_worker(system.client, order_id)
    async with worker():
        result = await cancel
        view = await wait_for(capture, order_id, CANCELED)
        lifecycle = await system.client.get_workflow_handle(
            order_workflow_id(order_id), result_type=OrderLifecycleResult
        ).result()
    return AfterCancel(
        result=result,
        view=view,
        lifecycle=lifecycle,
        money=await payments.GetPaymentSummary(
            payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
        ),
        fulfillment_orders=await fulfillment.ListFulfillmentOrders(
            fulfillment_pb2.ListFulfillmentOrdersRequest(order_id=order_id), timeout=10
        ),
        steps_run=await local_activities(system.client, order_id),
        stock=await available(fulfillment, skus),
    )


async def test_a_cancel_meeting_the_start_after_a_lost_first_attempt_releases_its_hold_and_stock(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    gateway_log = tmp_path / "gateway.log"
    async with without_worker(
        settings_with_temporal, postgres, "oms_lost_first_attempt", gateway_log
    ) as (system, worker):
        it = await submitted_without_worker(system)
        capture, payments, fulfillment = it.capture, it.payments, it.fulfillment
        skus, before, order_id, order = it.skus, it.before, it.order_id, it.order
        await LostFirstAttempt(system.settings, order).run()
        # What the lost attempt left: a hold, and fulfillment orders reserving the stock.
        held = await payments.GetPaymentSummary(
            payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
        )
        [authorization] = held.authorizations
        assert authorization.status == payments_pb2.AUTHORIZATION_STATUS_APPROVED
        placed = await fulfillment.ListFulfillmentOrders(
            fulfillment_pb2.ListFulfillmentOrdersRequest(order_id=order_id), timeout=10
        )
        assert placed.fulfillment_orders
        assert await available(fulfillment, skus) != before

        left = await canceled_with_a_worker(system, worker, order_id, skus)
        result, view, lifecycle, money = left.result, left.view, left.lifecycle, left.money
        after, steps_run, stock_after = left.fulfillment_orders, left.steps_run, left.stock
        timeline = await capture.GetOrderTimeline(
            capture_pb2.GetOrderTimelineRequest(order_id=order_id), timeout=10
        )

    # The order is canceled, before its lifecycle took a step of its own.
    assert result.order_status == "canceled" and lifecycle.status == "canceled"
    assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED
    assert names.AUTHORIZE_PAYMENT not in steps_run
    assert names.CREATE_FULFILLMENT_ORDERS not in steps_run

    # The hold is gone: payments' view of the order and the gateway both say so.
    [voided] = money.authorizations
    assert voided.authorization_id == authorization.authorization_id
    assert voided.status == payments_pb2.AUTHORIZATION_STATUS_VOIDED
    assert money.summary.captured.amount_minor == 0
    assert money.summary.released.amount_minor == authorization.amount.amount_minor
    assert released_at_gateway(gateway_log, authorization) == authorization.amount.amount_minor

    # The stock is back: every fulfillment order canceled, availability as before the order.
    assert [fo.fulfillment_order_id for fo in after.fulfillment_orders] == [
        fo.fulfillment_order_id for fo in placed.fulfillment_orders
    ]
    assert all_canceled(after)
    assert stock_after == before
    # And the timeline says so.
    kinds = [event.kind for event in timeline.events]
    assert "fulfillment.canceled" in kinds and "order.canceled" in kinds, kinds


async def test_a_cancel_meeting_the_start_with_nothing_held_cancels_cleanly(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    async with without_worker(
        settings_with_temporal, postgres, "oms_cancel_before_start", tmp_path / "gateway.log"
    ) as (system, worker):
        it = await submitted_without_worker(system)
        skus, before, order_id = it.skus, it.before, it.order_id
        left = await canceled_with_a_worker(system, worker, order_id, skus)
        result, view, lifecycle, money = left.result, left.view, left.lifecycle, left.money
        fos, steps_run, stock_after = left.fulfillment_orders, left.steps_run, left.stock

    assert result.order_status == "canceled" and lifecycle.status == "canceled"
    assert lifecycle.reason == "canceled before processing began"
    assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED
    # Fulfillment was asked, and found nothing to release; nothing was held anywhere.
    assert steps_run.count(names.CANCEL_ORDER_FULFILLMENT_ORDERS) == 1, steps_run
    assert names.AUTHORIZE_PAYMENT not in steps_run
    assert list(fos.fulfillment_orders) == []
    assert stock_after == before
    assert list(money.authorizations) == [] and list(money.captures) == []
    assert money.summary.captured.amount_minor == 0
    assert money.summary.released.amount_minor == 0
    kinds = [event.kind for event in view.timeline]
    assert "fulfillment.canceled" not in kinds and "order.canceled" in kinds, kinds


class LostCancelAttempt:
    """A whole-order cancel Update run by the lifecycle's own code, steps and keys in the
    order's first workflow task, which then *failed*: Temporal drops a failed task's Updates,
    so the caller's retry of the same change meets a later task. Its calls to fulfillment and
    payments were made; its progress report was not sent (the lifecycle sends reports at the
    end of a section)."""

    def __init__(self, settings: Settings, order: OrderLifecycleInput) -> None:
        self.order = order
        self.state = LifecycleState(ledger=Ledger.of(order).state)
        self.ledger = Ledger(self.state.ledger)
        self.authorized = False
        self._activities = {fn.__name__: fn for fn in activities_for(settings)}

    async def activity(self, name: str, arg: Any, **_: Any) -> Any:
        return await ActivityEnvironment().run(self._activities[name], arg)

    async def progress(self, status: str, *_: Any, **__: Any) -> None:
        if status:
            self.state.status = status

    def has_change(self, patch_id: str) -> bool:
        return True  # a run started by this code takes every patch

    def task_mark(self) -> int:
        return 3  # the first task: started, task scheduled, task started

    def record(self, change_id: str, result: ChangeResult) -> ChangeResult:
        return result


async def test_a_cancel_retried_after_its_failed_task_voids_the_hold_placed_in_between(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The cancel's first attempt voided when nothing was held yet; the lifecycle then
    authorized and routed the order; the retried cancel must release both."""
    gateway_log = tmp_path / "gateway.log"
    async with without_worker(
        settings_with_temporal, postgres, "oms_cancel_after_failed_task", gateway_log
    ) as (system, worker):
        it = await submitted_without_worker(system)
        payments, fulfillment = it.payments, it.fulfillment
        skus, before, order_id, order = it.skus, it.before, it.order_id, it.order
        change_id = str(uuid.uuid4())
        request = ChangeRequest(change_id=change_id, kind="cancel", reason="shopper asked")
        lost = await canceling.cancel(LostCancelAttempt(system.settings, order), request)
        assert lost.order_status == "canceled"  # as that attempt saw it

        async def money() -> payments_pb2.GetPaymentSummaryResponse:
            return await payments.GetPaymentSummary(
                payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
            )

        async def fulfillment_orders() -> fulfillment_pb2.ListFulfillmentOrdersResponse:
            return await fulfillment.ListFulfillmentOrders(
                fulfillment_pb2.ListFulfillmentOrdersRequest(order_id=order_id), timeout=10
            )

        async with worker():
            # The retried task carried no Update: the lifecycle authorized and routed.
            held = await eventually(money, lambda m: len(m.authorizations) == 1, "authorized")
            [authorization] = held.authorizations
            assert authorization.status == payments_pb2.AUTHORIZATION_STATUS_APPROVED
            placed = await eventually(
                fulfillment_orders, lambda f: len(f.fulfillment_orders) > 0, "routed"
            )
            handle = system.client.get_workflow_handle(order_workflow_id(order_id))
            result = await handle.execute_update(
                CANCEL_UPDATE, request, id=change_id, result_type=ChangeResult
            )
            lifecycle = await system.client.get_workflow_handle(
                order_workflow_id(order_id), result_type=OrderLifecycleResult
            ).result()
        after, left = await money(), await fulfillment_orders()
        stock_after = await available(fulfillment, skus)

    assert result.order_status == "canceled" and lifecycle.status == "canceled"
    # The hold placed after the first attempt is released, at payments and nothing captured.
    [voided] = after.authorizations
    assert voided.authorization_id == authorization.authorization_id
    assert voided.status == payments_pb2.AUTHORIZATION_STATUS_VOIDED
    assert after.summary.captured.amount_minor == after.summary.authorized.amount_minor == 0
    assert released_at_gateway(gateway_log, authorization) == authorization.amount.amount_minor
    # The fulfillment orders routed in between are canceled and their stock is back.
    assert {fo.fulfillment_order_id for fo in left.fulfillment_orders} == {
        fo.fulfillment_order_id for fo in placed.fulfillment_orders
    }
    assert all_canceled(left)
    assert stock_after == before
