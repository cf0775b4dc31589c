"""Issue 6: the worker is killed twice during a run of 200 orders, with whole-order cancels and
returns mixed in; every order still reaches its expected end state, its payments reconcile,
and no capture or refund happened twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import psutil
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2 as spb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform.samples import sample_order
from tests.e2e.conftest import DevStack
from tests.e2e.test_durability import kill

pytestmark = pytest.mark.e2e

ORDERS = 200
CONCURRENCY = 20
KILL_AFTER = (70, 140)  # submits
SETTLE_SECONDS = 240.0
TSHIRT = "SKU-TSHIRT-M"
SETTLED = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}

# A cancel sent right after SubmitOrder meets three answers that mean "not yet", each asked
# again with the same key: NOT_FOUND until capture's outbox has started the workflow; "closed"
# when the workflow started between servicing's Update and its describe call; and this
# refusal, from an Update that reaches the workflow in its first task, before run() set it up.
NOT_STARTED = "the order's lifecycle has not started yet"
# The only refusals of a whole-order cancel the test accepts: the warehouse shipped first,
# seen either when the Update is validated or when its fulfillment step runs.
SHIPPED_FIRST = ("nothing left to cancel: every unit shipped", "is shipped; cannot cancel")

T = TypeVar("T")


@dataclass
class Plan:
    """One order of the run: what was asked of it and what it should end as."""

    index: int
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    order_id: str = ""
    cancel: bool = False  # cancel the whole order as soon as it is submitted
    returned: bool = False  # return one T-shirt once delivered, then receive it
    canceled: bool | None = None  # the cancel's answer: True done, False refused (shipped)
    credited_minor: int = 0  # the received return's credit
    refunded_minor: int = 0  # and what it refunded


@dataclass
class Retries:
    """How often the run had to ask again, for the failure messages."""

    unavailable: int = 0  # the worker was down
    not_started: int = 0
    lifecycle_not_started: int = 0
    falsely_closed: int = 0


def worker_pid(stack: DevStack) -> int | None:
    assert stack.process is not None
    for child in psutil.Process(stack.process.pid).children(recursive=True):
        cmdline = child.cmdline()
        if "oms_platform.cli" in cmdline and cmdline[-1] == "worker":
            return int(child.pid)
    return None


async def kill_worker(stack: DevStack) -> int:
    """SIGKILL the worker, waiting first for the supervisor to have restarted it."""
    deadline = time.monotonic() + 30
    while worker_pid(stack) is None:
        assert time.monotonic() < deadline, "the supervisor did not restart the worker"
        await asyncio.sleep(0.2)
    return kill(stack, "worker")


async def again(
    call: Callable[[], Awaitable[T]], retries: Retries, *, not_started_ok: bool = False
) -> T:
    """Call until it answers: UNAVAILABLE (the worker is down) is asked again with the same
    request, hence the same idempotency key; so is NOT_FOUND for an order just submitted, whose
    workflow the outbox may not have started yet."""
    deadline = time.monotonic() + 150
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                retries.unavailable += 1
            elif error.code() == grpc.StatusCode.NOT_FOUND and not_started_ok:
                retries.not_started += 1
            elif not_started_ok and NOT_STARTED in (error.details() or ""):
                retries.lifecycle_not_started += 1
            elif not_started_ok and (error.details() or "").endswith(" is closed"):
                retries.falsely_closed += 1
            else:
                raise
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def test_killing_the_worker_during_200_orders_with_changes_loses_nothing(
    stack: DevStack,
) -> None:
    plans = [Plan(i, cancel=i % 5 == 1, returned=i % 5 == 3) for i in range(ORDERS)]
    retries = Retries()
    killed: list[int] = []
    submitted = 0
    limit = asyncio.Semaphore(CONCURRENCY)

    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('capture')}") as capture_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('servicing')}") as servicing_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('payments')}") as payments_channel,
    ):
        capture = capture_pb2_grpc.CaptureServiceStub(capture_channel)
        servicing = servicing_pb2_grpc.ServicingServiceStub(servicing_channel)
        payments = payments_pb2_grpc.PaymentsServiceStub(payments_channel)

        async def view_of(order_id: str) -> capture_pb2.GetOrderResponse:
            return await capture.GetOrder(
                capture_pb2.GetOrderRequest(order_id=order_id), timeout=10
            )

        async def submit(plan: Plan) -> None:
            nonlocal submitted
            request = sample_order(key=plan.key)
            response = await again(lambda: capture.SubmitOrder(request, timeout=30), retries)
            plan.order_id = response.order.order_id
            submitted += 1
            if submitted in KILL_AFTER:
                killed.append(await kill_worker(stack))
            if plan.cancel:
                await cancel(plan)

        async def cancel(plan: Plan) -> None:
            request = spb.SubmitCancelRequest(
                order_id=plan.order_id,
                idempotency_key=f"cancel-{plan.key}",
                actor="agent:e2e",
                reason="shopper changed her mind",
            )
            try:
                answer = await again(
                    lambda: servicing.SubmitCancel(request, timeout=60),
                    retries,
                    not_started_ok=True,
                )
            except grpc.aio.AioRpcError as error:
                details = error.details() or ""
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (
                    f"cancel of {plan.order_id}: {error.code().name} {details}"
                )
                assert any(reason in details for reason in SHIPPED_FIRST), details
                plan.canceled = False
                return
            assert answer.change.status == spb.CHANGE_STATUS_COMPLETED, answer.change
            assert answer.change.outcome.order_status == "canceled", (
                f"cancel of {plan.order_id} left it {answer.change.outcome.order_status}"
            )
            plan.canceled = True

        async def give_back(plan: Plan) -> None:
            deadline = time.monotonic() + SETTLE_SECONDS
            while True:
                view = await view_of(plan.order_id)
                if view.order.status == capture_pb2.ORDER_STATUS_FULFILLED:
                    break
                assert time.monotonic() < deadline, (
                    f"order {plan.order_id} to return is still "
                    f"{capture_pb2.OrderStatus.Name(view.order.status)}"
                )
                await asyncio.sleep(0.5)
            tshirt = next(line for line in view.order.lines if line.sku == TSHIRT)
            opening = spb.SubmitReturnRequest(
                order_id=plan.order_id,
                idempotency_key=f"return-{plan.key}",
                actor="agent:e2e",
                reason="too small",
                lines=[
                    spb.ReturnItem(
                        order_line_id=tshirt.order_line_id,
                        quantity=1,
                        reason="too small",
                        condition=spb.ITEM_CONDITION_OPENED,
                    )
                ],
            )
            opened = await again(lambda: servicing.SubmitReturn(opening, timeout=60), retries)
            assert opened.change.status == spb.CHANGE_STATUS_COMPLETED, opened.change
            receipt = spb.ReceiveReturnRequest(
                return_order_id=opened.change.outcome.return_order_id,
                order_id=plan.order_id,
                idempotency_key=f"receive-{plan.key}",
                actor="agent:e2e",
                accepted=[
                    spb.ReceivedItem(
                        order_line_id=tshirt.order_line_id,
                        quantity=1,
                        condition=spb.ITEM_CONDITION_NEW,
                    )
                ],
            )
            received = await again(lambda: servicing.ReceiveReturn(receipt, timeout=60), retries)
            assert received.change.status == spb.CHANGE_STATUS_COMPLETED, received.change
            plan.credited_minor = received.change.outcome.credited_minor
            plan.refunded_minor = received.change.outcome.refunded_minor

        async def run(plan: Plan) -> None:
            async with limit:
                await submit(plan)
            if plan.returned:
                await give_back(plan)

        started = time.monotonic()
        await asyncio.gather(*(run(plan) for plan in plans))
        assert len(killed) == len(KILL_AFTER)

        views: dict[str, capture_pb2.GetOrderResponse] = {}
        deadline = started + SETTLE_SECONDS
        while len(views) < len(plans):
            pending = [p.order_id for p in plans if p.order_id not in views]
            for order_id in pending:
                view = await view_of(order_id)
                if view.order.status in SETTLED and not view.missing_sections:
                    views[order_id] = view
            if len(views) < len(plans):
                if time.monotonic() > deadline:
                    stuck = [o for o in pending if o not in views]
                    named = {
                        o: capture_pb2.OrderStatus.Name((await view_of(o)).order.status)
                        for o in stuck[:5]
                    }
                    pytest.fail(f"{len(stuck)} orders unsettled, e.g. {named}; {retries}")
                await asyncio.sleep(1.0)

        for plan in plans:
            view = views[plan.order_id]
            status = capture_pb2.OrderStatus.Name(view.order.status)
            where = f"order {plan.index} {plan.order_id} ({status})"
            if plan.canceled:
                assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED, where
                assert all(li.quantities.canceled == li.quantity for li in view.order.lines)
            else:
                assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED, where
                assert all(li.quantities.fulfilled == li.quantity for li in view.order.lines)
            if plan.returned:
                tshirt = next(li for li in view.order.lines if li.sku == TSHIRT)
                assert (tshirt.quantities.return_initiated, tshirt.quantities.returned) == (1, 1)

            reconciliation = (
                await payments.GetReconciliation(
                    payments_pb2.GetReconciliationRequest(order_id=plan.order_id), timeout=10
                )
            ).reconciliation
            assert reconciliation.agrees, f"{where}: {reconciliation}"
            money = await payments.GetPaymentSummary(
                payments_pb2.GetPaymentSummaryRequest(order_id=plan.order_id), timeout=10
            )
            assert len(money.authorizations) == 1, where
            captures = [
                c for c in money.captures if c.status == payments_pb2.CAPTURE_STATUS_SUCCEEDED
            ]
            assert len(captures) == len(money.invoices), where
            assert len({c.gateway_reference for c in captures}) == len(captures), where
            assert money.summary.captured.amount_minor == money.summary.invoiced.amount_minor
            if plan.canceled:
                assert money.summary.captured.amount_minor == 0, where
                assert list(money.invoices) == [], where
            else:
                grand_total = view.order.totals.grand_total.amount_minor
                assert money.summary.captured.amount_minor == grand_total, where
            if plan.returned:
                [refund] = money.refunds
                assert refund.status == payments_pb2.REFUND_STATUS_SUCCEEDED, where
                assert plan.credited_minor > 0, where
                assert (
                    refund.amount.amount_minor
                    == money.summary.refunded.amount_minor
                    == plan.refunded_minor
                    == plan.credited_minor
                ), where
            else:
                assert list(money.refunds) == [], where

    cancels = [p.canceled for p in plans if p.cancel]
    print(
        f"\n{ORDERS} orders in {time.monotonic() - started:.0f}s; worker pids killed {killed}; "
        f"cancels done {cancels.count(True)}, refused {cancels.count(False)}; {retries}"
    )
