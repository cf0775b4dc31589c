"""OrderLifecycle on the time-skipping server, with stand-in activities registered by name.

The stand-ins record what the workflow asked for and keep the money the way payments would
(invoices, captures, credit memos, refunds), so each test checks the order of steps, the
quantities and the money.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from oms_platform.money import share
from tests.history import record
from workflows.lifecycle import OrderLifecycle
from workflows.types import (
    APPEASE_UPDATE,
    CANCEL_UPDATE,
    CANCELED,
    EXCHANGE_UPDATE,
    FULFILLED,
    LIFECYCLE_BASELINE,
    ON_HOLD,
    RECEIVE_RETURN_UPDATE,
    RESHIP_UPDATE,
    RESOLVE_EXCEPTION_UPDATE,
    RETURN_UPDATE,
    SHIPPED,
    Address,
    AuthorizeInput,
    AuthorizeResult,
    CanceledFulfillmentOrders,
    CancelFulfillmentOrderInput,
    CancelLinesInput,
    CancelOrderFulfillmentInput,
    CaptureInput,
    CaptureResult,
    ChangeRequest,
    ChangeResult,
    CreditMemoAndRefundInput,
    CreditMemoAndRefundResult,
    CreditMemoInput,
    CreditMemoResult,
    EscalateInput,
    EventData,
    EventLineData,
    FulfillmentEvent,
    FulfillmentOrderData,
    FulfillmentOrderEventData,
    InvoiceAndCaptureInput,
    InvoiceAndCaptureResult,
    InvoiceInput,
    InvoiceResult,
    ItemQuantity,
    LifecycleDeliveryGroup,
    LifecycleLine,
    LifecycleTimers,
    LinesEventData,
    OrderLifecycleInput,
    OrderLifecycleResult,
    OrderStatusEventData,
    PaymentEventData,
    PaymentMethodData,
    ProcessExceptionEventData,
    ProcessExceptionInput,
    ProgressBatchInput,
    ProgressInput,
    ReceiptInput,
    RefundEventData,
    RefundInput,
    RefundResult,
    Resolution,
    ResolutionResult,
    ReturnOrderEventData,
    ReturnOrderInput,
    RouteInput,
    RouteResult,
    RoutingLineData,
    ShipmentEventData,
    ShipmentItemData,
    VoidInput,
    order_workflow_id,
)


@dataclass
class Services:
    """Stand-ins for the four services, configurable per test."""

    approve: bool = True
    # How many times routing leaves the last line unplaced before stock "arrives".
    stockouts: int = 0
    capture_failures: int = 0
    # How many refunds the gateway refuses (a failed outcome, nothing given back).
    refund_failures: int = 0
    calls: list[tuple[str, Any]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    invoices: dict[str, int] = field(default_factory=dict)
    memos: dict[str, int] = field(default_factory=dict)
    captured: int = 0
    refunded: int = 0
    released: int = 0
    exceptions: list[str] = field(default_factory=list)
    fo_count: int = 0
    # Reports per progress batch, as sent.
    batches: list[int] = field(default_factory=list)
    # An activity name (or "progress:<kind>") that refuses non-retryably, to inject failures.
    refuse: str = ""
    # How many authorizations the gateway declines before it approves (with `approve`).
    declines: int = 0
    # Fulfillment orders an earlier, lost attempt of the first workflow task created (what a
    # cancel by order finds to cancel).
    left_by_a_lost_attempt: list[FulfillmentOrderData] = field(default_factory=list)

    def _maybe_refuse(self, name: str) -> None:
        if self.refuse == name:
            self.refuse = ""  # once: the undo that follows may call the same activity
            raise ApplicationError(f"{name} refused (injected)", non_retryable=True)

    def activities(self) -> list[Any]:
        @activity.defn(name="record_order_progress")
        async def record_order_progress(p: ProgressInput) -> None:
            self._maybe_refuse(f"progress:{p.kind}")
            self.calls.append(("progress", p))
            if p.status:
                self.statuses.append(p.status)

        @activity.defn(name="record_order_progress_batch")
        async def record_order_progress_batch(b: ProgressBatchInput) -> None:
            # As capture does it: one refused report refuses the batch and records none. The
            # injected refusal stays armed for the one-at-a-time reports that follow.
            if any(self.refuse == f"progress:{p.kind}" for p in b.steps):
                raise ApplicationError("a report was refused (injected)", non_retryable=True)
            self.batches.append(len(b.steps))
            for p in b.steps:
                await record_order_progress(p)

        @activity.defn(name="authorize_payment")
        async def authorize_payment(a: AuthorizeInput) -> AuthorizeResult:
            self._maybe_refuse("authorize_payment")
            self.calls.append(("authorize", a))
            approved = self.approve and len(self.named("authorize")) > self.declines
            n = len(self.named("authorize"))
            return AuthorizeResult(f"auth-{n}", approved, "" if approved else "card_declined")

        @activity.defn(name="create_fulfillment_orders")
        async def create_fulfillment_orders(r: RouteInput) -> RouteResult:
            self._maybe_refuse("create_fulfillment_orders")
            self.calls.append(("route", r))
            lines = [line for g in r.delivery_groups for line in g.lines]
            short = self.stockouts > 0 and len(lines) > 0
            if short:
                self.stockouts -= 1
            placed = lines[:-1] if short else lines
            fos = []
            if placed:
                self.fo_count += 1
                fos = [FulfillmentOrderData(f"fo-{self.fo_count}", "wh-east", "dg-1", placed)]
            return RouteResult(fos, lines[-1:] if short else [], ["wh-east ships it"])

        @activity.defn(name="cancel_fulfillment_order")
        async def cancel_fulfillment_order(c: CancelFulfillmentOrderInput) -> None:
            self.calls.append(("cancel_fo", c))

        @activity.defn(name="cancel_order_fulfillment_orders")
        async def cancel_order_fulfillment_orders(
            c: CancelOrderFulfillmentInput,
        ) -> CanceledFulfillmentOrders:
            self.calls.append(("cancel_order_fos", c))
            return CanceledFulfillmentOrders(self.left_by_a_lost_attempt)

        @activity.defn(name="cancel_fulfillment_order_lines")
        async def cancel_fulfillment_order_lines(c: CancelLinesInput) -> None:
            self.calls.append(("cancel_lines", c))

        @activity.defn(name="create_invoice")
        async def create_invoice(i: InvoiceInput) -> InvoiceResult:
            self._maybe_refuse("create_invoice")
            self.calls.append(("invoice", i))
            total = (
                i.shipping_minor
                - i.goodwill_minor
                + sum(
                    share(
                        line.gross_minor,
                        line.quantity_ordered,
                        line.quantity_invoiced_before,
                        line.quantity_to_invoice,
                    )
                    - share(
                        line.discount_minor,
                        line.quantity_ordered,
                        line.quantity_invoiced_before,
                        line.quantity_to_invoice,
                    )
                    + share(
                        line.tax_minor,
                        line.quantity_ordered,
                        line.quantity_invoiced_before,
                        line.quantity_to_invoice,
                    )
                    for line in i.lines
                )
            )
            invoice_id = f"inv-{len(self.invoices) + 1}"
            self.invoices[invoice_id] = total
            return InvoiceResult(invoice_id, total)

        @activity.defn(name="capture_invoice")
        async def capture_invoice(c: CaptureInput) -> CaptureResult:
            self._maybe_refuse("capture_invoice")
            self.calls.append(("capture", c))
            if self.capture_failures > 0:
                self.capture_failures -= 1
                return CaptureResult("cap-x", False, 0, "processor_unavailable")
            self.captured += self.invoices[c.invoice_id]
            return CaptureResult("cap-1", True, self.invoices[c.invoice_id])

        @activity.defn(name="invoice_and_capture")
        async def invoice_and_capture(r: InvoiceAndCaptureInput) -> InvoiceAndCaptureResult:
            # As payments does it: the invoice, then its capture; a refused capture is part
            # of the answer and the invoice stands.
            invoice = await create_invoice(r.invoice)
            try:
                made = await capture_invoice(
                    CaptureInput(invoice.invoice_id, r.capture_idempotency_key)
                )
            except ApplicationError as refused:
                return InvoiceAndCaptureResult(invoice, capture_refused=str(refused))
            return InvoiceAndCaptureResult(invoice, made)

        @activity.defn(name="void_authorization")
        async def void_authorization(v: VoidInput) -> None:
            self.calls.append(("void", v))

        @activity.defn(name="create_credit_memo")
        async def create_credit_memo(m: CreditMemoInput) -> CreditMemoResult:
            self.calls.append(("memo", m))
            total = (
                m.shipping_minor
                + m.appeasement_minor
                - m.fee_minor
                + sum(
                    share(c.gross_minor, c.quantity_ordered, c.first_unit, c.quantity_to_credit)
                    - share(
                        c.discount_minor, c.quantity_ordered, c.first_unit, c.quantity_to_credit
                    )
                    + share(c.tax_minor, c.quantity_ordered, c.first_unit, c.quantity_to_credit)
                    for c in m.lines
                )
            )
            memo_id = f"cm-{len(self.memos) + 1}"
            self.memos[memo_id] = total
            return CreditMemoResult(memo_id, total)

        @activity.defn(name="refund_credit_memo")
        async def refund_credit_memo(r: RefundInput) -> RefundResult:
            self.calls.append(("refund", r))
            amount = self.memos[r.credit_memo_id]
            if self.refund_failures > 0:
                self.refund_failures -= 1
                return RefundResult(0, 0, amount, failed=True, failure_reason="refund_rejected")
            refundable = self.captured - self.refunded
            refunded = min(amount, refundable)
            self.refunded += refunded
            self.released += amount - refunded
            return RefundResult(refunded, amount - refunded, 0)

        @activity.defn(name="credit_memo_and_refund")
        async def credit_memo_and_refund(r: CreditMemoAndRefundInput) -> CreditMemoAndRefundResult:
            # As payments does it: the memo, its refund, then (asked for, and the refund not
            # failed) the void, each as the separate call with the same key would make it.
            self.calls.append(("memo_and_refund", r))
            memo = await create_credit_memo(r.memo)
            refund = await refund_credit_memo(
                RefundInput(r.memo.order_id, memo.credit_memo_id, r.refund_idempotency_key)
            )
            if not r.void_idempotency_key or refund.failed:
                return CreditMemoAndRefundResult(memo, refund)
            await void_authorization(
                VoidInput(r.memo.order_id, r.void_idempotency_key, r.memo.reason)
            )
            return CreditMemoAndRefundResult(memo, refund, voided=True)

        @activity.defn(name="record_process_exception")
        async def record_process_exception(e: ProcessExceptionInput) -> str:
            self.calls.append(("exception", e))
            self.exceptions.append(f"pe-{len(self.exceptions) + 1}")
            return self.exceptions[-1]

        @activity.defn(name="escalate_process_exception")
        async def escalate_process_exception(e: EscalateInput) -> None:
            self.calls.append(("escalate", e))

        @activity.defn(name="create_return_order")
        async def create_return_order(r: ReturnOrderInput) -> None:
            self.calls.append(("rma", r))

        @activity.defn(name="record_return_receipt")
        async def record_return_receipt(r: ReceiptInput) -> None:
            self.calls.append(("receipt", r))

        return [
            record_order_progress,
            record_order_progress_batch,
            authorize_payment,
            create_fulfillment_orders,
            cancel_fulfillment_order,
            cancel_fulfillment_order_lines,
            cancel_order_fulfillment_orders,
            create_invoice,
            capture_invoice,
            invoice_and_capture,
            void_authorization,
            create_credit_memo,
            refund_credit_memo,
            credit_memo_and_refund,
            record_process_exception,
            escalate_process_exception,
            create_return_order,
            record_return_receipt,
        ]

    def named(self, name: str) -> list[Any]:
        return [payload for kind, payload in self.calls if kind == name]

    def kinds(self) -> list[str]:
        return [p.kind for p in self.named("progress")]

    def events(self, *types: str) -> list[EventData]:
        """The typed events capture was told, in the order they happened (only `types`, when
        some are named)."""
        told = [e for p in self.named("progress") for e in p.events]
        return [e for e in told if not types or e.type in types]

    def event_types(self) -> list[str]:
        return [e.type for e in self.events()]


def an_order(**overrides: Any) -> OrderLifecycleInput:
    values: dict[str, Any] = {
        "order_id": str(uuid.uuid4()),
        "channel": "web",
        "currency": "USD",
        "grand_total_minor": 2000 - 100 + 150 + 1500 + 500,
        "payment_method": PaymentMethodData("card", "tok_visa"),
        "delivery_groups": [
            LifecycleDeliveryGroup("dg-1", Address("1 Main St", "Newark", "07102", "US"), 500)
        ],
        "lines": [
            LifecycleLine("line-1", "dg-1", "SKU-TSHIRT-M", 2, 2000, 100, 150),
            LifecycleLine("line-2", "dg-1", "SKU-MUG", 1, 1500, 0, 0),
        ],
        "timers": LifecycleTimers(return_window_seconds=7 * 24 * 3600),
        # As capture starts every order today.
        "baseline": LIFECYCLE_BASELINE,
    }
    values.update(overrides)
    return OrderLifecycleInput(**values)


Handle = WorkflowHandle[Any, OrderLifecycleResult]


async def start(
    env: WorkflowEnvironment, services: Services, order: OrderLifecycleInput
) -> tuple[Worker, Handle]:
    queue = f"wf-test-{uuid.uuid4()}"
    worker = Worker(
        env.client, task_queue=queue, workflows=[OrderLifecycle], activities=services.activities()
    )
    handle = await env.client.start_workflow(
        OrderLifecycle.run, order, id=order_workflow_id(order.order_id), task_queue=queue
    )
    return worker, handle


def shipped(fo: str, shipment: str, items: list[tuple[str, int]]) -> FulfillmentEvent:
    return FulfillmentEvent(
        event_id=f"shipped:{shipment}",
        kind="shipped",
        fulfillment_order_id=fo,
        shipment_id=shipment,
        items=[ShipmentItemData(line, qty) for line, qty in items],
        carrier="UPS",
        tracking_number=f"1Z{shipment}",
    )


def delivered(fo: str, shipment: str) -> FulfillmentEvent:
    return FulfillmentEvent(f"delivered:{shipment}", "delivered", fo, shipment)


async def ship_everything(handle: Handle, fo: str = "fo-1", shipment: str = "s1") -> None:
    await handle.signal("fulfillment_event", shipped(fo, shipment, [("line-1", 2), ("line-2", 1)]))
    await handle.signal("fulfillment_event", delivered(fo, shipment))


async def until(services: Services, kind: str, count: int = 1) -> None:
    """Wait until the workflow has reported `count` timeline events of `kind`."""
    for _ in range(1500):
        if services.kinds().count(kind) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {kind!r} in {services.kinds()}")


async def update(handle: Handle, name: str, request: Any, result_type: Any = ChangeResult) -> Any:
    return await handle.execute_update(name, request, result_type=result_type)


async def update_across_runs(handle: Handle, name: str, request: Any) -> Any:
    """Send an Update as servicing does to an order that continues as new: sent again when it
    reached a run just as that run continued (the server answers "completed workflow")."""
    for _ in range(20):
        try:
            return await update(handle, name, request)
        except RPCError as error:
            if "completed" not in error.message.lower() and error.status != RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} found no open run")


def change(kind: str, **fields: Any) -> ChangeRequest:
    return ChangeRequest(
        change_id=str(uuid.uuid4()), kind=kind, reason=fields.pop("reason", kind), **fields
    )


# ---- the happy path ---------------------------------------------------------------------------


async def test_an_order_ships_is_captured_in_full_and_closes_after_the_return_window(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        result = await handle.result()
        await record(handle, "happy_path")

    assert result.status == FULFILLED
    assert result.invoiced_minor == result.captured_minor == order.grand_total_minor
    assert services.statuses == ["processing", "authorized", "allocated", SHIPPED, FULFILLED]
    assert services.kinds()[-1] == "order.closed"
    [auth] = services.named("authorize")
    assert auth.amount_minor == order.grand_total_minor
    assert auth.idempotency_key == f"{order.order_id}:authorize"
    [invoice] = services.named("invoice")
    assert invoice.shipping_minor == 500
    assert services.named("void") == []


async def test_progress_reaches_capture_in_one_call_per_step_in_the_order_it_happened(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        started = list(services.batches)
        await ship_everything(handle)
        await handle.result()

    assert services.kinds() == [
        "lifecycle.started", "payment.authorized", "fulfillment.allocated",
        "shipment.shipped", "payment.captured", "shipment.delivered",
        "order.fulfilled", "order.closed",
    ]  # fmt: skip
    # Every report went in a batch: the start's three before the order waits for the
    # warehouse, the shipment's two, the delivery with fulfilled before the return window is
    # waited out, and the close.
    assert started == [3]
    assert services.batches == [3, 2, 2, 1]
    keys = [p.idempotency_key for p in services.named("progress")]
    assert len(set(keys)) == len(keys)


async def test_an_updates_reports_are_recorded_before_it_answers(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        result = await update(handle, CANCEL_UPDATE, change("cancel"))
        # Before the lifecycle goes on: the cancel's reports are already with capture.
        assert services.kinds()[-2:] == ["change.cancel", "order.canceled"]
        assert services.batches[-1] == 2
        assert services.statuses[-1] == CANCELED == result.order_status
        await handle.result()


async def test_a_split_shipment_invoices_each_parcel_and_charges_shipping_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 1)]))
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s2", [("line-1", 1), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.signal("fulfillment_event", delivered("fo-1", "s2"))
        result = await handle.result()
        await record(handle, "split_shipment")

    first, second = services.named("invoice")
    assert (first.shipping_minor, second.shipping_minor) == (500, 0)
    assert second.lines[0].quantity_invoiced_before == 1
    assert sum(services.invoices.values()) == order.grand_total_minor == result.captured_minor
    assert "partially_shipped" in services.statuses


async def test_a_repeated_shipment_report_is_invoiced_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        event = shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        await handle.signal("fulfillment_event", event)
        await handle.signal("fulfillment_event", event)
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        result = await handle.result()

    assert len(services.named("invoice")) == 1
    assert result.captured_minor == order.grand_total_minor


# ---- payment ----------------------------------------------------------------------------------


async def test_a_declined_payment_cancels_the_order_and_reserves_nothing(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(approve=False), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        result = await handle.result()

    assert result.status == CANCELED
    assert "card_declined" in result.reason
    assert services.named("route") == []
    [exception] = services.named("exception")
    assert exception.category == "payment"
    assert services.statuses[-1] == CANCELED


async def test_an_authorization_that_never_answers_cancels_the_order_after_the_timeout(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order(timers=LifecycleTimers(authorization_timeout_seconds=3))
    attempts: list[int] = []

    # The first call fails and is retried; the retry never answers. (Failing every attempt
    # would cost real seconds: a local activity's retries back off inside the worker, which
    # the time-skipping server cannot skip, 15 s of them before durable timers take over.)
    @activity.defn(name="authorize_payment")
    async def gateway_down(a: AuthorizeInput) -> AuthorizeResult:
        attempts.append(activity.info().attempt)
        if len(attempts) == 1:
            raise RuntimeError("gateway unavailable")
        await asyncio.Event().wait()
        raise AssertionError("the step's timeout cancels the call")

    queue = f"wf-test-{uuid.uuid4()}"
    stand_ins = [
        a
        for a in services.activities()
        if a.__temporal_activity_definition.name != "authorize_payment"
    ]
    async with Worker(
        time_skipping_env.client, task_queue=queue, workflows=[OrderLifecycle],
        activities=[*stand_ins, gateway_down],
    ):  # fmt: skip
        result = await time_skipping_env.client.execute_workflow(
            OrderLifecycle.run, order, id=order_workflow_id(order.order_id), task_queue=queue
        )

    # Failed once, then retried (a hanging retry may itself be retried while the clock runs).
    assert attempts[:2] == [1, 2]
    assert result.status == CANCELED
    assert "could not be authorized within 0:00:03" in result.reason
    assert services.named("route") == []


async def test_a_failed_capture_holds_the_order_until_an_agent_retries(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(capture_failures=1), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "exception.payment")
        assert services.statuses[-1] == ON_HOLD
        [exception_id] = services.exceptions
        resolved = await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(exception_id, "retry", "gateway back"),
            ResolutionResult,
        )
        result = await handle.result()
        await record(handle, "capture_failure_retried")

    assert resolved.action == "retry"
    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor == services.captured
    captures = services.named("capture")
    assert len(captures) == 2 and len({c.idempotency_key for c in captures}) == 2


async def test_a_resolution_for_an_exception_the_order_is_not_waiting_on_is_refused(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update(
                handle, RESOLVE_EXCEPTION_UPDATE, Resolution("pe-404", "retry"), ResolutionResult
            )
        await ship_everything(handle)
        await handle.result()
    assert "not waiting on process exception pe-404" in str(refused.value.cause)


async def test_an_unresolved_exception_escalates_after_the_configured_time(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(capture_failures=1)
    order = an_order(timers=LifecycleTimers(escalate_after_seconds=3600))
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "exception.payment")
        await time_skipping_env.sleep(timedelta(hours=2))
        await until(services, "exception.escalated")
        await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(services.exceptions[0], "retry"),
            ResolutionResult,
        )
        await handle.result()
    [escalation] = services.named("escalate")
    assert escalation.process_exception_id == services.exceptions[0]


# ---- fraud and stock --------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "expected"), [("retry", FULFILLED), ("cancel", CANCELED)])
async def test_a_fraud_hold_waits_for_the_agent_to_approve_or_reject(
    time_skipping_env: WorkflowEnvironment, action: str, expected: str
) -> None:
    services, order = Services(), an_order(fraud_reasons=["amount above 1,000.00 USD"])
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "exception.fraud")
        assert services.named("authorize") == []
        await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(services.exceptions[0], action),
            ResolutionResult,
        )
        if action == "retry":
            await ship_everything(handle)
        result = await handle.result()

    assert result.status == expected
    assert services.named("exception")[0].category == "fraud"
    if action == "cancel":
        assert services.named("authorize") == [] and services.named("route") == []


async def test_out_of_stock_waits_and_ships_once_an_agent_retries_after_stock_arrives(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(stockouts=1), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "exception.inventory")
        await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(services.exceptions[0], "retry"),
            ResolutionResult,
        )
        await until(services, "fulfillment.allocated", 2)
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await handle.signal("fulfillment_event", shipped("fo-2", "s2", [("line-2", 1)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.signal("fulfillment_event", delivered("fo-2", "s2"))
        result = await handle.result()
        await record(handle, "backorder_retried")

    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor
    second_route = services.named("route")[1]
    assert [line.order_line_id for g in second_route.delivery_groups for line in g.lines] == [
        "line-2"
    ]


async def test_out_of_stock_canceled_by_the_agent_releases_reservations_then_voids(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(stockouts=1), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "exception.inventory")
        await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(services.exceptions[0], "cancel"),
            ResolutionResult,
        )
        result = await handle.result()

    assert result.status == CANCELED
    undo = [
        kind for kind, _ in services.calls if kind in {"cancel_lines", "memo", "refund", "void"}
    ]
    assert undo == ["cancel_lines", "memo", "refund", "void"]
    [released] = services.named("cancel_lines")
    assert [(i.order_line_id, i.quantity) for i in released.lines] == [("line-1", 2)]
    assert services.captured == 0


async def test_a_rejection_moves_the_lines_to_the_replacement_fulfillment_order(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await handle.signal(
            "fulfillment_event",
            FulfillmentEvent(
                "rejected:fo-1:k",
                "rejected",
                "fo-1",
                items=[ShipmentItemData("line-2", 1)],
                reason="damaged stock",
                replacements=[
                    FulfillmentOrderData(
                        "fo-9", "wh-west", "dg-1", [RoutingLineData("line-2", "SKU-MUG", 1)]
                    )
                ],
            ),
        )
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await handle.signal("fulfillment_event", shipped("fo-9", "s2", [("line-2", 1)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.signal("fulfillment_event", delivered("fo-9", "s2"))
        result = await handle.result()
        await record(handle, "rejection_rerouted")

    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor
    assert "fulfillment.rejected" in services.kinds()


# ---- changes ----------------------------------------------------------------------------------


async def test_canceling_one_unit_before_shipping_releases_only_its_share(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        result = await update(
            handle, CANCEL_UPDATE, change("cancel", lines=[ItemQuantity("line-1", 1)])
        )
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 1), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        final = await handle.result()
        await record(handle, "cancel_one_unit")

    # line-1: 2 units of 2000 gross, 100 discount, 150 tax -> the second unit is 950 + 75.
    assert result.credited_minor == 1000 - 50 + 75
    assert result.released_minor == result.credited_minor
    [cancel] = services.named("cancel_lines")
    assert [(i.order_line_id, i.quantity) for i in cancel.lines] == [("line-1", 1)]
    # Lines are left to charge: the memo's payments call gives back, and voids nothing.
    [asked] = services.named("memo_and_refund")
    assert asked.void_idempotency_key == "" and services.named("void") == []
    assert final.captured_minor + result.credited_minor == order.grand_total_minor


async def test_canceling_everything_before_shipping_voids_and_ends_canceled(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        result = await update(handle, CANCEL_UPDATE, change("cancel"))
        final = await handle.result()

    assert final.status == CANCELED and result.order_status == CANCELED
    assert result.credited_minor == order.grand_total_minor  # shipping included
    assert len(services.named("void")) == 1
    # The lifecycle is over: nothing more can be changed.
    with pytest.raises(RPCError):
        await update(handle, CANCEL_UPDATE, change("cancel"))


def payments_calls(services: Services) -> list[str]:
    """The payments calls in order (the combined one followed by what it did inside)."""
    kinds = {"authorize", "memo_and_refund", "memo", "refund", "void"}
    return [kind for kind, _ in services.calls if kind in kinds]


async def test_canceling_everything_before_shipping_gives_back_and_voids_in_one_payments_call(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        asked = change("cancel", reason="shopper changed their mind")
        result = await update(handle, CANCEL_UPDATE, asked)
        final = await handle.result()

    order_id = order.order_id
    # One payments call: the memo, its release and the void (no separate refund or void).
    assert payments_calls(services) == ["authorize", "memo_and_refund", "memo", "refund", "void"]
    [combined] = services.named("memo_and_refund")
    assert combined.refund_idempotency_key == f"{order_id}:refund:change:{asked.change_id}:1"
    # The void is keyed by the workflow task that asked it (VOID_PER_TASK).
    assert re.fullmatch(rf"{order_id}:void:task-\d+", combined.void_idempotency_key)
    [void] = services.named("void")
    assert (void.idempotency_key, void.reason) == (combined.void_idempotency_key, asked.reason)
    # The money: everything credited, released from the hold (nothing was taken), voided.
    assert result.credited_minor == result.released_minor == order.grand_total_minor
    assert result.refunded_minor == 0 and services.refunded == 0 and services.captured == 0
    assert services.released == order.grand_total_minor
    assert final.status == CANCELED and result.order_status == CANCELED
    assert services.statuses[-1] == CANCELED
    assert services.kinds()[-2:] == ["change.cancel", "order.canceled"]


async def test_a_release_that_fails_with_the_memo_holds_and_voids_once_the_agent_retried(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(refund_failures=1), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        asked = change("cancel")
        cancel = asyncio.create_task(update(handle, CANCEL_UPDATE, asked))
        for _ in range(500):
            if services.exceptions:
                break
            await asyncio.sleep(0.02)
        [exception] = services.named("exception")
        assert "refund_rejected" in exception.message
        # Nothing voided while the money is not back: the retry's release needs the hold.
        assert services.named("void") == []
        await resolve(handle, services, "retry")
        result = await cancel
        final = await handle.result()

    order_id = order.order_id
    step = f"change:{asked.change_id}"
    assert [r.idempotency_key for r in services.named("refund")] == [
        f"{order_id}:refund:{step}:1",
        f"{order_id}:refund:{step}:2",
    ]
    # The void comes after, as its own call with the key the memo's call would have used.
    assert payments_calls(services)[-2:] == ["refund", "void"]
    [void] = services.named("void")
    [combined] = services.named("memo_and_refund")
    assert (void.idempotency_key, void.reason) == (combined.void_idempotency_key, asked.reason)
    assert re.fullmatch(rf"{order_id}:void:task-\d+", void.idempotency_key)
    assert result.credited_minor == result.released_minor == order.grand_total_minor
    assert services.released == order.grand_total_minor and services.refunded == 0
    assert final.status == CANCELED and result.order_status == CANCELED


async def test_a_cancel_of_everything_sent_with_the_start_ends_the_order_before_any_step(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    # Sent before any worker runs, so the Update arrives in the workflow's first task.
    cancel = asyncio.create_task(update(handle, CANCEL_UPDATE, change("cancel")))
    await asyncio.sleep(0.5)
    async with worker:
        result = await cancel
        final = await handle.result()

    assert result.order_status == CANCELED and final.status == CANCELED
    assert result.credited_minor == order.grand_total_minor
    assert services.named("authorize") == [] and services.named("route") == []
    assert services.captured == 0 and "lifecycle.started" not in services.kinds()


async def test_a_cancel_sent_with_the_start_cancels_what_a_lost_first_attempt_routed(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    lines = [RoutingLineData("line-1", "SKU-TSHIRT-M", 2), RoutingLineData("line-2", "SKU-MUG", 1)]
    services = Services(
        left_by_a_lost_attempt=[FulfillmentOrderData("fo-lost", "wh-east", "dg-1", lines)]
    )
    order = an_order()
    worker, handle = await start(time_skipping_env, services, order)
    cancel = asyncio.create_task(update(handle, CANCEL_UPDATE, change("cancel")))
    await asyncio.sleep(0.5)
    async with worker:
        await cancel
        final = await handle.result()

    assert final.status == CANCELED and services.named("route") == []
    [asked] = services.named("cancel_order_fos")
    assert asked.order_id == order.order_id
    [told] = services.events("fulfillment.canceled")
    assert told.fulfillment_order is not None
    assert told.fulfillment_order.fulfillment_order_id == "fo-lost"
    assert told.fulfillment_order.status == "canceled"
    assert [(e.order_line_id, e.quantity) for e in told.fulfillment_order.lines] == [
        ("line-1", 2),
        ("line-2", 1),
    ]


async def test_a_partial_cancel_sent_with_the_start_authorizes_only_what_remains(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    cancel = asyncio.create_task(
        update(handle, CANCEL_UPDATE, change("cancel", lines=[ItemQuantity("line-2", 1)]))
    )
    await asyncio.sleep(0.5)
    async with worker:
        result = await cancel
        await until(services, "fulfillment.allocated")
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        final = await handle.result()

    assert result.credited_minor == 1500  # the mug, never held
    [authorization] = services.named("authorize")
    assert authorization.amount_minor == order.grand_total_minor - 1500
    [route] = services.named("route")
    assert [(line.order_line_id, line.quantity) for line in route.delivery_groups[0].lines] == [
        ("line-1", 2)
    ]
    assert final.status == FULFILLED and final.captured_minor == order.grand_total_minor - 1500


async def test_a_cancel_for_more_than_remains_is_refused_before_it_enters_history(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update(handle, CANCEL_UPDATE, change("cancel", lines=[ItemQuantity("line-1", 1)]))
        await handle.result()
    assert "only 0 unit(s) of SKU-TSHIRT-M can still be canceled" in str(refused.value.cause)
    assert services.named("cancel_lines") == []


async def test_a_partial_return_refunds_exactly_that_units_share_on_receipt(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        opened = await update(
            handle, RETURN_UPDATE, change("return", lines=[ItemQuantity("line-1", 1)])
        )
        received = await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=opened.return_order_id,
                lines=[ItemQuantity("line-1", 1)],
            ),
        )
        await handle.result()
        await record(handle, "partial_return")

    assert opened.return_order_id.endswith("-R1")
    assert received.refunded_minor == 1000 - 50 + 75 == services.refunded
    assert "return.received" in services.kinds()


async def test_a_return_sent_with_the_shipment_it_needs_waits_for_it_and_is_opened(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """As after a worker died mid-task: the shipment, its delivery and a return reach the
    next worker together. The return is checked once they are applied, not refused before."""
    services, order = Services(), an_order()
    queue = f"wf-test-{uuid.uuid4()}"

    def worker() -> Worker:  # caches nothing: the next one is handed the whole history
        return Worker(
            time_skipping_env.client,
            task_queue=queue,
            workflows=[OrderLifecycle],
            activities=services.activities(),
            max_cached_workflows=0,
        )

    handle = await time_skipping_env.client.start_workflow(
        OrderLifecycle.run, order, id=order_workflow_id(order.order_id), task_queue=queue
    )
    async with worker():
        await until(services, "fulfillment.allocated")
    # No worker: the shipment and its delivery wait in history; the return is asked meanwhile.
    await ship_everything(handle)
    opening = asyncio.create_task(
        update(handle, RETURN_UPDATE, change("return", lines=[ItemQuantity("line-1", 1)]))
    )
    await asyncio.sleep(0.5)
    assert not opening.done()
    async with worker():
        opened = await asyncio.wait_for(opening, 30)
    await handle.terminate("test over")  # leave the shared test server nothing running

    assert opened.return_order_id.endswith("-R1")
    kinds = services.kinds()
    assert kinds.index("shipment.shipped") < kinds.index("change.return")


async def test_a_return_after_the_window_is_refused_saying_when_it_closed(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order(timers=LifecycleTimers(return_window_seconds=3600))
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        # Keep the order open with a return, then let the window pass.
        opened = await update(
            handle, RETURN_UPDATE, change("return", lines=[ItemQuantity("line-2", 1)])
        )
        await time_skipping_env.sleep(timedelta(hours=2))
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update(handle, RETURN_UPDATE, change("return", lines=[ItemQuantity("line-1", 1)]))
        await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=opened.return_order_id,
                lines=[ItemQuantity("line-2", 1)],
            ),
        )
        await handle.result()
    assert "return window closed on" in str(refused.value.cause)


async def test_appeasement_refunds_a_share_of_the_line_and_never_more_than_was_captured(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        ten_percent = await update(
            handle,
            APPEASE_UPDATE,
            change("appease", lines=[ItemQuantity("line-2", 1)], percent_basis_points=1000),
        )
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update(
                handle,
                APPEASE_UPDATE,
                change("appease", lines=[ItemQuantity("line-2", 1)], percent_basis_points=10000),
            )
        await handle.result()

    assert ten_percent.refunded_minor == 150
    assert "exceeds" in str(refused.value.cause)
    assert services.refunded == 150


async def test_a_reship_sends_the_same_items_again_at_no_charge(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        result = await update(
            handle,
            RESHIP_UPDATE,
            change("reship", lines=[ItemQuantity("line-2", 1)], reason="parcel lost"),
        )
        [fo_id] = result.fulfillment_order_ids
        await handle.signal("fulfillment_event", shipped(fo_id, "s9", [("line-2", 1)]))
        await handle.signal("fulfillment_event", delivered(fo_id, "s9"))
        final = await handle.result()
        await record(handle, "reship")

    assert len(services.named("invoice")) == 1
    assert final.captured_minor == order.grand_total_minor
    assert (
        "at no charge"
        in [p for p in services.named("progress") if p.kind == "shipment.shipped"][-1].summary
    )


@pytest.mark.parametrize(
    ("price", "charged", "refunded"), [(1500, 0, 0), (1800, 300, 0), (1200, 0, 300)]
)
async def test_an_exchange_ships_a_replacement_and_settles_the_difference(
    time_skipping_env: WorkflowEnvironment, price: int, charged: int, refunded: int
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        result = await update(
            handle,
            EXCHANGE_UPDATE,
            change(
                "exchange",
                lines=[ItemQuantity("line-2", 1)],
                replacement_skus=["SKU-MUG-BLUE"],
                replacement_unit_prices_minor=[price],
            ),
        )
        [fo_id] = result.fulfillment_order_ids
        await handle.signal(
            "fulfillment_event", shipped(fo_id, "s9", [(f"line-2:exchange:{result.change_id}", 1)])
        )
        await handle.signal("fulfillment_event", delivered(fo_id, "s9"))
        await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=result.return_order_id,
                lines=[ItemQuantity("line-2", 1)],
            ),
        )
        await handle.result()

    assert result.charged_minor == charged
    assert result.refunded_minor == refunded
    assert services.refunded == refunded
    assert services.captured == order.grand_total_minor + charged


@pytest.mark.parametrize(
    "failing_step",
    ["progress:lifecycle.started", "authorize_payment", "progress:payment.authorized",
     "create_fulfillment_orders", "progress:fulfillment.allocated"],
)  # fmt: skip
async def test_a_step_refused_before_shipping_is_undone_in_reverse_and_the_order_canceled(
    time_skipping_env: WorkflowEnvironment, failing_step: str
) -> None:
    services, order = Services(refuse=failing_step), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        result = await handle.result()

    assert result.status == CANCELED
    assert "refused (injected)" in result.reason
    [exception] = services.named("exception")
    assert "refused (injected)" in exception.message
    assert json.loads(exception.step_input)["idempotency_key"].startswith(order.order_id)
    # What the step was asked is kept without the card token or the shipping address.
    for secret in ("tok_visa", "1 Main St", "Newark", "07102"):
        assert secret not in exception.step_input
    authorized = bool(services.named("authorize"))
    placed = [
        line for route in services.named("route") for g in route.delivery_groups for line in g.lines
    ]
    released = [
        (i.order_line_id, i.quantity) for c in services.named("cancel_lines") for i in c.lines
    ]
    # Whatever was reserved is released, whatever was authorized is released and voided.
    assert sorted(released) == sorted((line.order_line_id, line.quantity) for line in placed)
    assert len(services.named("void")) == (1 if authorized else 0)
    assert services.captured == 0
    undo = [
        kind for kind, _ in services.calls if kind in {"cancel_lines", "memo", "refund", "void"}
    ]
    if authorized:
        assert undo[-1] == "void" and undo.index("memo") < undo.index("refund")


# ---- refusals after shipping began: held for an agent, never undone -------------------------


async def resolve(handle: Handle, services: Services, action: str) -> ResolutionResult:
    """Resolve the exception the order waits on (the newest one)."""
    return await update(
        handle,
        RESOLVE_EXCEPTION_UPDATE,
        Resolution(services.exceptions[-1], action, f"agent chose {action}"),
        ResolutionResult,
    )


@pytest.mark.parametrize(
    ("failing_step", "category"),
    [("progress:shipment.shipped", "fulfillment"), ("create_invoice", "invoicing"),
     ("capture_invoice", "payment"), ("progress:payment.captured", "payment"),
     ("progress:shipment.delivered", "carrier"), ("progress:order.fulfilled", "fulfillment")],
)  # fmt: skip
async def test_a_step_refused_after_shipping_holds_the_order_and_a_retry_finishes_it_once(
    time_skipping_env: WorkflowEnvironment, failing_step: str, category: str
) -> None:
    services, order = Services(refuse=failing_step), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, f"exception.{category}")
        [exception] = services.named("exception")
        assert exception.category == category and "refused (injected)" in exception.message
        # The exception shows what the failed step was asked, so the agent sees what a retry does.
        asked = json.loads(exception.step_input)
        # (an invoice asked with its capture shows the invoice request inside)
        key = asked.get("idempotency_key") or asked["invoice"]["idempotency_key"]
        assert key.startswith(order.order_id)
        assert services.statuses[-1] == ON_HOLD
        await resolve(handle, services, "retry")
        result = await handle.result()

    assert result.status == FULFILLED
    # The step ran again and once: one invoice, captured in full, nothing released or voided.
    assert len(services.invoices) == 1
    assert result.captured_minor == result.invoiced_minor == order.grand_total_minor
    assert services.captured == order.grand_total_minor
    assert services.named("void") == [] and services.named("cancel_lines") == []
    assert services.kinds().count("shipment.shipped") == 1
    assert services.kinds().count("payment.captured") == 1


async def test_a_refused_invoice_skipped_by_the_agent_leaves_nothing_charged_or_held(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(refuse="create_invoice"), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "exception.invoicing")
        await resolve(handle, services, "skip")
        result = await handle.result()

    assert result.status == FULFILLED
    assert services.invoices == {} and services.captured == 0
    # What the authorization held is released once everything is delivered.
    [void] = services.named("void")
    assert void.idempotency_key == f"{order.order_id}:void:settled"


async def test_a_refused_capture_canceled_by_the_agent_cancels_what_has_not_shipped(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(refuse="capture_invoice"), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)])
        )  # the mug has not shipped
        await until(services, "exception.payment")
        await resolve(handle, services, "cancel")
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        result = await handle.result()

    assert result.status == FULFILLED
    [canceled] = services.named("cancel_lines")
    assert [(i.order_line_id, i.quantity) for i in canceled.lines] == [("line-2", 1)]
    assert services.captured == 0
    assert [v.idempotency_key for v in services.named("void")] == [f"{order.order_id}:void:settled"]


# ---- goodwill before anything is charged --------------------------------------------------


async def test_goodwill_on_a_line_before_shipping_is_taken_off_its_invoice(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        preview = await handle.query(
            "preview_change",
            change("appease", lines=[ItemQuantity("line-1", 2)], percent_basis_points=1000),
            result_type=ChangeResult,
        )
        ten_percent = await update(
            handle,
            APPEASE_UPDATE,
            change("appease", lines=[ItemQuantity("line-1", 2)], percent_basis_points=1000),
        )
        await ship_everything(handle)
        result = await handle.result()
        await record(handle, "goodwill_before_invoice")

    line_1 = 2000 - 100 + 150
    assert preview.credited_minor == ten_percent.credited_minor == line_1 // 10
    assert ten_percent.refunded_minor == 0 and ten_percent.credit_memo_id == ""
    [invoice] = services.named("invoice")
    assert invoice.goodwill_minor == line_1 // 10
    assert result.captured_minor == services.captured == order.grand_total_minor - line_1 // 10
    assert services.named("memo") == [] and services.refunded == 0
    assert len(services.named("void")) == 1  # the goodwill's share of the hold, released


async def test_goodwill_on_the_order_before_shipping_is_spread_over_the_invoices_to_come(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        # The first parcel (one T-shirt and shipping) is worth 950 + 75 + 500 = 1525.
        goodwill = await update(handle, APPEASE_UPDATE, change("appease", amount_minor=2000))
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 1)]))
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s2", [("line-1", 1), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.signal("fulfillment_event", delivered("fo-1", "s2"))
        result = await handle.result()

    assert goodwill.credited_minor == 2000
    assert [i.goodwill_minor for i in services.named("invoice")] == [1525, 475]
    assert services.captured == result.captured_minor == order.grand_total_minor - 2000


async def test_goodwill_before_shipping_never_exceeds_what_is_left_to_charge(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await update(
            handle, APPEASE_UPDATE, change("appease", lines=[ItemQuantity("line-2", 1)],
                                           amount_minor=1500)
        )  # fmt: skip
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update(
                handle,
                APPEASE_UPDATE,
                change("appease", amount_minor=order.grand_total_minor - 1500 + 1),
            )
        await ship_everything(handle)
        result = await handle.result()

    assert "still to be charged for the order" in str(refused.value.cause)
    assert result.captured_minor == order.grand_total_minor - 1500


# ---- exchanges: nothing half-done, and replacements that ship on receipt ---------------------


def exchange_mug(price: int) -> ChangeRequest:
    return change(
        "exchange",
        lines=[ItemQuantity("line-2", 1)],
        replacement_skus=["SKU-MUG-BLUE"],
        replacement_unit_prices_minor=[price],
    )


def exchange_both() -> ChangeRequest:
    """A T-shirt for another size and the mug for a blue one, at the same prices."""
    return change(
        "exchange",
        lines=[ItemQuantity("line-1", 1), ItemQuantity("line-2", 1)],
        replacement_skus=["SKU-TSHIRT-L", "SKU-MUG-BLUE"],
        replacement_unit_prices_minor=[1025, 1500],
    )


async def test_an_exchange_whose_replacement_cannot_ship_changes_nothing(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        services.stockouts = 1  # the blue mug is out of stock everywhere
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update(handle, EXCHANGE_UPDATE, exchange_both())
        # The mug can still be returned in full: the refused exchange opened no return.
        returned = await update(
            handle, RETURN_UPDATE, change("return", lines=[ItemQuantity("line-2", 1)])
        )
        await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=returned.return_order_id,
                lines=[ItemQuantity("line-2", 1)],
            ),
        )
        await handle.result()

    assert "no location can ship the replacement" in str(refused.value.cause)
    assert [r.return_order_id for r in services.named("rma")] == [returned.return_order_id]
    # The T-shirt's replacement had been placed: it was released again.
    [canceled] = services.named("cancel_fo")
    assert canceled.fulfillment_order_id == "fo-2"
    assert len(services.named("authorize")) == 1  # no difference was asked for
    assert services.refunded == 1500


async def test_an_exchange_that_ships_on_receipt_places_and_charges_only_when_received(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order(exchange_ships_on_receipt=True)
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        routes_before = len(services.named("route"))
        opened = await update(handle, EXCHANGE_UPDATE, exchange_mug(2000))
        assert len(services.named("route")) == routes_before  # nothing placed yet
        assert opened.fulfillment_order_ids == [] and opened.charged_minor == 0
        received = await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=opened.return_order_id,
                lines=[ItemQuantity("line-2", 1)],
            ),
        )
        [fo_id] = received.fulfillment_order_ids
        await handle.signal(
            "fulfillment_event",
            shipped(fo_id, "s9", [(f"line-2:exchange:{received.change_id}", 1)]),
        )
        await handle.signal("fulfillment_event", delivered(fo_id, "s9"))
        await handle.result()
        await record(handle, "exchange_ships_on_receipt")

    assert "ships once the return is received" in opened.summary
    assert received.charged_minor == 500 and received.refunded_minor == 0
    assert "replacement ships now, charged 5.00 USD" in received.summary
    assert services.captured == order.grand_total_minor + 500


async def test_an_exchanges_restocking_fee_is_charged_once_with_the_replacement_on_receipt(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order(exchange_ships_on_receipt=True)
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        # Both lines for others at the same prices; the policy charges a 1.50 USD fee.
        exchanged = exchange_both()
        exchanged.return_fee_minor = 150
        opened = await update(handle, EXCHANGE_UPDATE, exchanged)
        receipts = [
            await update(
                handle,
                RECEIVE_RETURN_UPDATE,
                change(
                    "receive_return",
                    return_order_id=opened.return_order_id,
                    lines=[ItemQuantity(line_id, 1)],
                ),
            )
            for line_id in ("line-1", "line-2")  # the units come back one at a time
        ]
        for n, (line_id, received) in enumerate(zip(("line-1", "line-2"), receipts, strict=True)):
            [fo_id] = received.fulfillment_order_ids
            parcel = f"s{n + 8}"
            item = f"{line_id}:exchange:{received.change_id}"
            await handle.signal("fulfillment_event", shipped(fo_id, parcel, [(item, 1)]))
            await handle.signal("fulfillment_event", delivered(fo_id, parcel))
        await handle.result()

    assert "with a restocking fee of 1.50 USD" in opened.summary
    assert [r.charged_minor for r in receipts] == [150, 0]
    assert [r.refunded_minor for r in receipts] == [0, 0]
    assert services.captured == order.grand_total_minor + 150


async def test_an_exchange_on_receipt_with_no_stock_refunds_what_came_back(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order(exchange_ships_on_receipt=True)
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        opened = await update(handle, EXCHANGE_UPDATE, exchange_both())
        services.stockouts = 1
        received = await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=opened.return_order_id,
                lines=[ItemQuantity("line-1", 1), ItemQuantity("line-2", 1)],
            ),
        )
        await handle.result()

    t_shirt = 1000 - 50 + 75  # the first unit's exact share of line-1
    assert received.fulfillment_order_ids == []
    assert received.refunded_minor == services.refunded == t_shirt + 1500
    assert "no location can ship the replacement, refunded instead" in received.summary
    [canceled] = services.named("cancel_fo")  # the T-shirt's placement was released
    assert canceled.fulfillment_order_id == "fo-2"


# ---- long histories ---------------------------------------------------------------------------


async def test_a_delivered_order_with_a_long_history_continues_as_new_and_keeps_its_state(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services()
    order = an_order(
        timers=LifecycleTimers(return_window_seconds=7 * 24 * 3600, continue_as_new_after_events=40)
    )
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        first = change("appease", lines=[ItemQuantity("line-2", 1)], percent_basis_points=1000)
        given = await update_across_runs(handle, APPEASE_UPDATE, first)
        # The same change, asked twice:
        again = await update_across_runs(handle, APPEASE_UPDATE, first)
        await update_across_runs(
            handle,
            APPEASE_UPDATE,
            change("appease", lines=[ItemQuantity("line-2", 1)], percent_basis_points=1000),
        )
        # What was refunded in earlier runs still counts: 90% more would exceed the capture.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update_across_runs(
                handle,
                APPEASE_UPDATE,
                change("appease", lines=[ItemQuantity("line-2", 1)], percent_basis_points=9000),
            )
        reship = await update_across_runs(
            handle, RESHIP_UPDATE, change("reship", lines=[ItemQuantity("line-1", 1)])
        )
        [fo] = reship.fulfillment_order_ids
        await handle.signal("fulfillment_event", shipped(fo, "s2", [("line-1", 1)]))
        await handle.signal("fulfillment_event", delivered(fo, "s2"))
        result = await handle.result()
        latest = await time_skipping_env.client.get_workflow_handle(handle.id).describe()
        first_run_handle = time_skipping_env.client.get_workflow_handle(
            handle.id, run_id=handle.first_execution_run_id
        )
        await record(first_run_handle, "continued_as_new_first_run")
        await record(
            time_skipping_env.client.get_workflow_handle(handle.id), "continued_as_new_last_run"
        )

    assert latest.run_id != handle.first_execution_run_id  # it continued as new
    first_run = [
        e.event_type
        async for e in time_skipping_env.client.get_workflow_handle(
            handle.id, run_id=handle.first_execution_run_id
        ).fetch_history_events()
    ]
    assert first_run[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert again == given and given.refunded_minor == 150
    assert "exceeds the 12.00 USD still refundable" in str(refused.value.cause)
    assert services.refunded == 300
    assert result.status == FULFILLED
    assert result.captured_minor == result.invoiced_minor == order.grand_total_minor
    assert services.kinds()[-1] == "order.closed"


# ---- the event log: what each progress report tells capture's log ----------------------------

TSHIRTS, MUG = EventLineData("line-1", "SKU-TSHIRT-M", 2), EventLineData("line-2", "SKU-MUG", 1)
ONE_TSHIRT = EventLineData("line-1", "SKU-TSHIRT-M", 1)
TSHIRT_UNIT = 1000 - 50 + 75  # one of line-1's two units: gross, less discount, plus tax


def status_event(type_: str, was: str, now: str, reason: str = "") -> EventData:
    return EventData(type_, order_status=OrderStatusEventData(was, now, reason))


def allocated_event(fo: str, location: str, lines: list[EventLineData]) -> EventData:
    return EventData(
        "fulfillment.allocated",
        fulfillment_order=FulfillmentOrderEventData(fo, location, "allocated", lines),
    )


def refund_event(memo: str, amount: int, cause: str) -> EventData:
    return EventData("refund.issued", refund=RefundEventData(memo, amount, cause))


def exception_event(type_: str, exception: str, category: str, resolution: str = "") -> EventData:
    return EventData(
        type_, process_exception=ProcessExceptionEventData(exception, category, resolution)
    )


async def test_the_happy_path_tells_the_log_each_step_with_its_quantities_money_and_parcel(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await handle.result()

    total = order.grand_total_minor
    assert services.events() == [
        status_event("order.processing", "pending", "processing"),
        EventData("payment.authorized", payment=PaymentEventData(total)),
        allocated_event("fo-1", "wh-east", [TSHIRTS, MUG]),
        EventData(
            "shipment.shipped",
            shipment=ShipmentEventData("s1", "fo-1", "wh-east", "UPS", "1Zs1", [TSHIRTS, MUG]),
        ),
        EventData("payment.captured", payment=PaymentEventData(total, invoice_id="inv-1")),
        EventData("shipment.delivered", shipment=ShipmentEventData("s1", "fo-1", "wh-east")),
        status_event("order.fulfilled", "shipped", "fulfilled"),
        status_event("order.closed", "fulfilled", "fulfilled", "return window closed"),
    ]
    # Every report carries its events (none is left to capture to guess from its kind), each
    # the one its step describes.
    assert all(p.events for p in services.named("progress"))
    kinds_with_events = [(p.kind, [e.type for e in p.events]) for p in services.named("progress")]
    assert kinds_with_events[3:5] == [
        ("shipment.shipped", ["shipment.shipped"]),
        ("payment.captured", ["payment.captured"]),
    ]


async def test_canceling_everything_tells_the_log_the_units_the_refund_and_the_cancel(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await update(handle, CANCEL_UPDATE, change("cancel", reason="changed my mind"))
        await handle.result()

    canceled = services.event_types()[3:]
    assert canceled == [
        "lines.canceled",
        "fulfillment.canceled",
        "payment.voided",
        "order.canceled",
    ]
    assert services.events(*canceled) == [
        EventData("lines.canceled", lines=LinesEventData([TSHIRTS, MUG], "changed my mind")),
        EventData(
            "fulfillment.canceled",
            fulfillment_order=FulfillmentOrderEventData(
                "fo-1", "wh-east", "canceled", [TSHIRTS, MUG], "changed my mind"
            ),
        ),
        # Nothing was captured yet: the whole authorization is released, shipping included;
        # no money was taken, so none is refunded (and the shopper is not told of a refund).
        EventData("payment.voided", payment=PaymentEventData(order.grand_total_minor)),
        status_event("order.canceled", "allocated", "canceled", "changed my mind"),
    ]


async def test_canceling_one_unit_leaves_its_fulfillment_order_open_in_the_log(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await update(handle, CANCEL_UPDATE, change("cancel", lines=[ItemQuantity("line-1", 1)]))
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 1), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.result()

    assert services.events("lines.canceled", "fulfillment.canceled", "payment.voided") == [
        EventData("lines.canceled", lines=LinesEventData([ONE_TSHIRT], "cancel")),
        # Still a unit of each line to ship: its status is what it was.
        EventData(
            "fulfillment.canceled",
            fulfillment_order=FulfillmentOrderEventData(
                "fo-1", "wh-east", "", [ONE_TSHIRT], "cancel"
            ),
        ),
        # Released from the authorization before anything was charged.
        EventData("payment.voided", payment=PaymentEventData(TSHIRT_UNIT)),
    ]
    assert "order.canceled" not in services.event_types()
    assert "refund.issued" not in services.event_types()


async def test_a_declined_payment_tells_the_log_the_decline_then_the_cancel(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(approve=False), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.result()

    assert services.events() == [
        status_event("order.processing", "pending", "processing"),
        EventData(
            "payment.declined",
            payment=PaymentEventData(order.grand_total_minor, decline_reason="card_declined"),
        ),
        # Nothing was reserved or held: the units are canceled, nothing is given back.
        EventData(
            "lines.canceled",
            lines=LinesEventData([TSHIRTS, MUG], "payment declined: card_declined"),
        ),
        status_event("order.canceled", "processing", "canceled", "payment declined: card_declined"),
    ]


async def test_a_return_tells_the_log_when_it_is_requested_received_and_refunded(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        opened = await update(
            handle,
            RETURN_UPDATE,
            change("return", lines=[ItemQuantity("line-1", 1)], reason="too small"),
        )
        await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=opened.return_order_id,
                lines=[ItemQuantity("line-1", 1)],
                reason="as new",
            ),
        )
        await handle.result()

    rma = opened.return_order_id
    assert services.events("return.requested", "return.received", "refund.issued") == [
        EventData(
            "return.requested",
            return_order=ReturnOrderEventData(rma, "open", [ONE_TSHIRT], "too small"),
        ),
        EventData(
            "return.received",
            return_order=ReturnOrderEventData(rma, "received", [ONE_TSHIRT], "as new"),
        ),
        refund_event("cm-1", TSHIRT_UNIT, "return"),
    ]
    [receipt] = [p for p in services.named("progress") if p.kind == "return.received"]
    assert [e.type for e in receipt.events] == ["return.received", "refund.issued"]


async def test_a_refund_without_return_tells_the_log_the_return_and_its_refund_at_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        opened = await update(
            handle,
            RETURN_UPDATE,
            change("return", lines=[ItemQuantity("line-2", 1)], refund_without_return=True),
        )
        await handle.terminate("test over")

    [report] = [p for p in services.named("progress") if p.kind == "change.return"]
    assert report.events == [
        EventData(
            "return.requested",
            return_order=ReturnOrderEventData(opened.return_order_id, "open", [MUG], "return"),
        ),
        refund_event("cm-1", 1500, "return"),
    ]


async def test_an_appeasement_tells_the_log_the_goodwill_and_its_refund(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        await update(
            handle,
            APPEASE_UPDATE,
            change("appease", amount_minor=700, reason="late delivery"),
        )
        await handle.terminate("test over")

    assert services.events("order.appeased", "refund.issued") == [
        EventData("order.appeased", lines=LinesEventData([], "late delivery", 700)),
        refund_event("cm-1", 700, "appeasement"),
    ]


async def test_goodwill_before_charging_tells_the_log_the_appeasement_but_no_refund(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await update(
            handle,
            APPEASE_UPDATE,
            change("appease", lines=[ItemQuantity("line-2", 1)], amount_minor=200),
        )
        await handle.terminate("test over")

    assert services.events("order.appeased", "refund.issued") == [
        EventData("order.appeased", lines=LinesEventData([MUG], "appease", 200)),
    ]


async def test_a_process_exception_tells_the_log_when_raised_escalated_and_resolved(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(stockouts=1)
    order = an_order(timers=LifecycleTimers(escalate_after_seconds=3600))
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "exception.inventory")
        await time_skipping_env.sleep(timedelta(hours=2))
        await until(services, "exception.escalated")
        await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(services.exceptions[0], "retry"),
            ResolutionResult,
        )
        await until(services, "fulfillment.allocated", 2)
        await handle.terminate("test over")

    [pe] = services.exceptions
    assert services.event_types()[:7] == [
        "order.processing", "payment.authorized", "fulfillment.allocated",
        "exception.raised", "exception.escalated", "exception.resolved", "fulfillment.allocated",
    ]  # fmt: skip
    assert services.events()[2:] == [
        allocated_event("fo-1", "wh-east", [TSHIRTS]),
        exception_event("exception.raised", pe, "inventory"),
        exception_event("exception.escalated", pe, "inventory"),
        exception_event("exception.resolved", pe, "inventory", "retry"),
        allocated_event("fo-2", "wh-east", [MUG]),
    ]


async def test_a_rejection_tells_the_log_what_left_the_fulfillment_order_and_where_it_went(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await handle.signal(
            "fulfillment_event",
            FulfillmentEvent(
                "rejected:fo-1:k",
                "rejected",
                "fo-1",
                items=[ShipmentItemData("line-2", 1)],
                reason="damaged stock",
                replacements=[
                    FulfillmentOrderData(
                        "fo-9", "wh-west", "dg-1", [RoutingLineData("line-2", "SKU-MUG", 1)]
                    )
                ],
            ),
        )
        await until(services, "fulfillment.rejected")
        await handle.terminate("test over")

    [report] = [p for p in services.named("progress") if p.kind == "fulfillment.rejected"]
    assert report.events == [
        # fo-1 still ships the T-shirts, so it goes on as it was.
        EventData(
            "fulfillment.rejected",
            fulfillment_order=FulfillmentOrderEventData(
                "fo-1", "wh-east", "", [MUG], "damaged stock"
            ),
        ),
        allocated_event("fo-9", "wh-west", [MUG]),
    ]


async def test_a_reship_tells_the_log_the_units_sent_again_and_their_fulfillment_order(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        result = await update(
            handle,
            RESHIP_UPDATE,
            change("reship", lines=[ItemQuantity("line-2", 1)], reason="parcel lost"),
        )
        await handle.terminate("test over")

    [fo] = result.fulfillment_order_ids
    [report] = [p for p in services.named("progress") if p.kind == "change.reship"]
    assert report.events == [
        EventData("order.reshipped", lines=LinesEventData([MUG], "parcel lost")),
        allocated_event(fo, "wh-east", [MUG]),
    ]


@pytest.mark.parametrize(("price", "refunded"), [(1800, 0), (1200, 300)])
async def test_an_exchange_tells_the_log_the_return_the_replacement_and_the_difference(
    time_skipping_env: WorkflowEnvironment, price: int, refunded: int
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await ship_everything(handle)
        await until(services, "order.fulfilled")
        result = await update(
            handle,
            EXCHANGE_UPDATE,
            change(
                "exchange",
                lines=[ItemQuantity("line-2", 1)],
                replacement_skus=["SKU-MUG-BLUE"],
                replacement_unit_prices_minor=[price],
                reason="wrong colour",
            ),
        )
        [fo] = result.fulfillment_order_ids
        replacement = f"line-2:exchange:{result.change_id}"
        await handle.signal("fulfillment_event", shipped(fo, "s9", [(replacement, 1)]))
        await until(services, "shipment.shipped", 2)
        await handle.terminate("test over")

    blue = EventLineData(replacement, "SKU-MUG-BLUE", 1)
    [report] = [p for p in services.named("progress") if p.kind == "change.exchange"]
    assert report.events == [
        EventData("order.exchanged", lines=LinesEventData([MUG], "wrong colour")),
        EventData(
            "return.requested",
            return_order=ReturnOrderEventData(
                result.return_order_id, "open", [MUG], "wrong colour"
            ),
        ),
        allocated_event(fo, "wh-east", [blue]),
        *([refund_event("cm-1", refunded, "exchange")] if refunded else []),
    ]
    # A dearer replacement's difference is captured on an invoice of its own, before.
    captures = services.events("payment.captured")
    if not refunded:
        assert captures[-1] == EventData(
            "payment.captured", payment=PaymentEventData(300, invoice_id="inv-2")
        )
    else:
        assert len(captures) == 1
    assert services.events("shipment.shipped")[-1].shipment == ShipmentEventData(
        "s9", fo, "wh-east", "UPS", "1Zs9", [blue]
    )
