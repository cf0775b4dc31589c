"""OrderLifecycle on the time-skipping server, with stand-in activities registered by name.

The stand-ins record what the workflow asked for, so each test checks the order of steps, the
money and the idempotency keys the workflow derived.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from oms_platform.money import share
from workflows.lifecycle import CAPTURE_RETRY_INTERVAL, OrderLifecycle
from workflows.types import (
    CANCELED,
    FULFILLED,
    ON_HOLD,
    SHIPPED,
    Address,
    AuthorizeInput,
    AuthorizeResult,
    CancelFulfillmentOrderInput,
    CaptureInput,
    CaptureResult,
    FulfillmentEvent,
    FulfillmentOrderData,
    InvoiceInput,
    InvoiceResult,
    LifecycleDeliveryGroup,
    LifecycleLine,
    OrderLifecycleInput,
    OrderLifecycleResult,
    PaymentMethodData,
    ProcessExceptionInput,
    ProgressInput,
    RouteInput,
    RouteResult,
    ShipmentItemData,
    VoidInput,
    order_workflow_id,
)


@dataclass
class Services:
    """Stand-ins for the four services, configurable per test."""

    approve: bool = True
    unallocated: bool = False
    capture_failures: int = 0
    calls: list[tuple[str, Any]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    invoices: dict[str, int] = field(default_factory=dict)

    def activities(self) -> list[Any]:
        @activity.defn(name="record_order_progress")
        async def record_order_progress(p: ProgressInput) -> None:
            self.calls.append(("progress", p))
            if p.status:
                self.statuses.append(p.status)

        @activity.defn(name="authorize_payment")
        async def authorize_payment(a: AuthorizeInput) -> AuthorizeResult:
            self.calls.append(("authorize", a))
            return AuthorizeResult("auth-1", self.approve, "" if self.approve else "card_declined")

        @activity.defn(name="create_fulfillment_orders")
        async def create_fulfillment_orders(r: RouteInput) -> RouteResult:
            self.calls.append(("route", r))
            lines = [line for g in r.delivery_groups for line in g.lines]
            placed = lines[:-1] if self.unallocated else lines
            return RouteResult(
                fulfillment_orders=[FulfillmentOrderData("fo-1", "wh-east", "dg-1", placed)],
                unallocated=lines[-1:] if self.unallocated else [],
                decisions=["wh-east ships everything"],
            )

        @activity.defn(name="cancel_fulfillment_order")
        async def cancel_fulfillment_order(c: CancelFulfillmentOrderInput) -> None:
            self.calls.append(("cancel_fo", c))

        @activity.defn(name="create_invoice")
        async def create_invoice(i: InvoiceInput) -> InvoiceResult:
            self.calls.append(("invoice", i))
            total = i.shipping_minor + sum(
                share(line.gross_minor - line.discount_minor + line.tax_minor,
                      line.quantity_ordered, line.quantity_invoiced_before,
                      line.quantity_to_invoice)
                for line in i.lines
            )  # fmt: skip
            invoice_id = f"inv-{len(self.invoices) + 1}"
            self.invoices[invoice_id] = total
            return InvoiceResult(invoice_id, total)

        @activity.defn(name="capture_invoice")
        async def capture_invoice(c: CaptureInput) -> CaptureResult:
            self.calls.append(("capture", c))
            if self.capture_failures > 0:
                self.capture_failures -= 1
                return CaptureResult("cap-x", False, 0, "processor_unavailable")
            return CaptureResult("cap-1", True, self.invoices[c.invoice_id])

        @activity.defn(name="void_authorization")
        async def void_authorization(v: VoidInput) -> None:
            self.calls.append(("void", v))

        @activity.defn(name="record_process_exception")
        async def record_process_exception(e: ProcessExceptionInput) -> str:
            self.calls.append(("exception", e))
            return "pe-1"

        return [
            record_order_progress, authorize_payment, create_fulfillment_orders,
            cancel_fulfillment_order, create_invoice, capture_invoice, void_authorization,
            record_process_exception,
        ]  # fmt: skip

    def named(self, name: str) -> list[Any]:
        return [payload for kind, payload in self.calls if kind == name]


def an_order() -> OrderLifecycleInput:
    order_id = str(uuid.uuid4())
    return OrderLifecycleInput(
        order_id=order_id,
        channel="web",
        currency="USD",
        grand_total_minor=2 * 1000 - 100 + 150 + 1500 + 500,
        payment_method=PaymentMethodData("card", "tok_visa"),
        delivery_groups=[
            LifecycleDeliveryGroup("dg-1", Address("1 Main St", "Newark", "07102", "US"), 500)
        ],
        lines=[
            LifecycleLine("line-1", "dg-1", "SKU-TSHIRT-M", 2, 2000, 100, 150),
            LifecycleLine("line-2", "dg-1", "SKU-MUG", 1, 1500, 0, 0),
        ],
    )


async def start(
    env: WorkflowEnvironment, services: Services, order: OrderLifecycleInput
) -> tuple[Worker, WorkflowHandle[Any, OrderLifecycleResult]]:
    queue = f"wf-test-{uuid.uuid4()}"
    worker = Worker(
        env.client, task_queue=queue, workflows=[OrderLifecycle], activities=services.activities()
    )
    handle = await env.client.start_workflow(
        OrderLifecycle.run, order, id=order_workflow_id(order.order_id), task_queue=queue
    )
    return worker, handle


def shipped(
    order: OrderLifecycleInput, shipment: str, items: list[tuple[str, int]]
) -> FulfillmentEvent:
    return FulfillmentEvent(
        event_id=f"shipped:{shipment}",
        kind="shipped",
        fulfillment_order_id="fo-1",
        shipment_id=shipment,
        items=[ShipmentItemData(line, qty) for line, qty in items],
        carrier="UPS",
        tracking_number=f"1Z{shipment}",
    )


def delivered(shipment: str) -> FulfillmentEvent:
    return FulfillmentEvent(f"delivered:{shipment}", "delivered", "fo-1", shipment)


async def test_an_order_ships_is_captured_in_full_and_ends_fulfilled(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal(
            "fulfillment_event", shipped(order, "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("s1"))
        result = await handle.result()

    assert result.status == FULFILLED
    assert result.invoiced_minor == order.grand_total_minor
    assert result.captured_minor == order.grand_total_minor
    assert services.statuses == ["processing", "authorized", "allocated", SHIPPED, FULFILLED]
    [auth] = services.named("authorize")
    assert auth.amount_minor == order.grand_total_minor
    assert auth.idempotency_key == f"{order.order_id}:authorize"
    [invoice] = services.named("invoice")
    assert invoice.shipping_minor == 500
    assert services.named("void") == []


async def test_a_split_shipment_invoices_each_parcel_and_charges_shipping_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal("fulfillment_event", shipped(order, "s1", [("line-1", 1)]))
        await handle.signal(
            "fulfillment_event", shipped(order, "s2", [("line-1", 1), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("s1"))
        await handle.signal("fulfillment_event", delivered("s2"))
        result = await handle.result()

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
        event = shipped(order, "s1", [("line-1", 2), ("line-2", 1)])
        await handle.signal("fulfillment_event", event)
        await handle.signal("fulfillment_event", event)
        await handle.signal("fulfillment_event", delivered("s1"))
        result = await handle.result()

    assert len(services.named("invoice")) == 1
    assert result.captured_minor == order.grand_total_minor


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


async def test_no_stock_undoes_reservations_and_the_authorization_in_reverse(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(unallocated=True), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        result = await handle.result()

    assert result.status == CANCELED
    undo = [kind for kind, _ in services.calls if kind in {"cancel_fo", "void"}]
    assert undo == ["cancel_fo", "void"]
    assert services.named("exception")[0].category == "inventory"


async def test_a_failed_capture_holds_the_order_and_retries_until_it_succeeds(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(capture_failures=2), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal(
            "fulfillment_event", shipped(order, "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("s1"))
        before = await time_skipping_env.get_current_time()
        result = await handle.result()
        waited = await time_skipping_env.get_current_time() - before

    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor
    captures = services.named("capture")
    assert len(captures) == 3
    assert len({c.idempotency_key for c in captures}) == 3
    assert len(services.named("exception")) == 1
    assert ON_HOLD in services.statuses
    assert waited >= 2 * CAPTURE_RETRY_INTERVAL - timedelta(seconds=1)
