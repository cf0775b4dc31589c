"""OrderLifecycle: one durable workflow per order (`order:<order_id>`).

It decides what happens next; the services do the work and keep the records. Every side
effect goes through an activity with an idempotency key derived here from the order and the
step, so retries have one effect. The workflow file has no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from oms_platform.money import format_minor
    from workflows.types import (
        ALLOCATED,
        AUTHORIZED,
        CANCELED,
        FULFILLED,
        FULFILLMENT_EVENT_SIGNAL,
        ON_HOLD,
        ORDER_CHANNEL,
        ORDER_STATUS,
        PARTIALLY_SHIPPED,
        PENDING,
        PROCESSING,
        SHIPPED,
        STATUS_QUERY,
        WORKFLOW_NAME,
        AuthorizeInput,
        AuthorizeResult,
        CancelFulfillmentOrderInput,
        CaptureInput,
        CaptureResult,
        ChargeLineData,
        FulfillmentEvent,
        FulfillmentOrderData,
        InvoiceInput,
        InvoiceResult,
        LifecycleLine,
        LineChange,
        OrderLifecycleInput,
        OrderLifecycleResult,
        ProcessExceptionInput,
        ProgressInput,
        RouteInput,
        RouteResult,
        RoutingGroupData,
        RoutingLineData,
        VoidInput,
    )

# Timeouts and retries, in one place. Activities are short gRPC calls; transport failures
# retry with backoff for as long as it takes, business refusals are non-retryable.
ACTIVITY_TIMEOUT = timedelta(seconds=30)
RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
# A failed capture is retried on this cadence until it succeeds (the gateway recovered).
CAPTURE_RETRY_INTERVAL = timedelta(minutes=5)


@dataclass
class _Shipping:
    """What the workflow tracks between shipment events."""

    fulfillment_orders: dict[str, FulfillmentOrderData]
    units_left: dict[str, int]
    invoiced_units: dict[str, int] = field(default_factory=dict)
    shipping_charged: set[str] = field(default_factory=set)
    undelivered: set[str] = field(default_factory=set)
    captured_minor: int = 0
    invoiced_minor: int = 0

    def done(self) -> bool:
        return not any(self.units_left.values()) and not self.undelivered


@workflow.defn(name=WORKFLOW_NAME)
class OrderLifecycle:
    """capture → authorize → route and reserve → ship, invoice and capture → deliver."""

    def __init__(self) -> None:
        self._status = PENDING
        self._events: list[FulfillmentEvent] = []
        self._seen_events: set[str] = set()
        self._order: OrderLifecycleInput | None = None

    @workflow.run
    async def run(self, order: OrderLifecycleInput) -> OrderLifecycleResult:
        self._order = order
        compensations: list[Callable[[], Awaitable[None]]] = []
        await self._progress(PROCESSING, "lifecycle.started", "Order lifecycle started", "started")

        authorization = await self._authorize(order)
        if not authorization.approved:
            reason = f"payment declined: {authorization.decline_reason}"
            await self._raise_exception(
                "payment", f"authorization:{authorization.authorization_id}", reason
            )
            return await self._cancel(reason, compensations)
        compensations.append(lambda: self._void(order, "order canceled"))
        await self._progress(
            AUTHORIZED,
            "payment.authorized",
            f"Payment of {format_minor(order.grand_total_minor, order.currency)} authorized",
            "authorized",
        )

        try:
            route = await self._route(order)
        except ActivityError as error:
            # A refusal retrying cannot fix (e.g. an invalid routing request): undo and stop.
            reason = f"fulfillment refused the order: {error.cause or error}"
            await self._raise_exception("fulfillment", f"order:{order.order_id}", reason)
            return await self._cancel(reason, compensations)
        for fo in route.fulfillment_orders:
            compensations.append(self._canceller(fo.fulfillment_order_id))
        if route.unallocated:
            missing = ", ".join(f"{u.quantity} x {u.sku}" for u in route.unallocated)
            reason = f"no location can ship {missing}"
            await self._raise_exception("inventory", f"order:{order.order_id}", reason)
            return await self._cancel(reason, compensations)
        await self._progress(
            ALLOCATED,
            "fulfillment.allocated",
            "; ".join(route.decisions) or "Fulfillment orders created",
            "allocated",
            [
                LineChange(line.order_line_id, allocated=line.quantity)
                for fo in route.fulfillment_orders
                for line in fo.lines
            ],
        )

        # From the first shipment on, nothing is undone: money moves with each parcel.
        shipping = await self._ship_invoice_capture(order, route.fulfillment_orders)
        await self._progress(FULFILLED, "order.fulfilled", "Every shipment delivered", "fulfilled")
        return OrderLifecycleResult(
            order_id=order.order_id,
            status=FULFILLED,
            captured_minor=shipping.captured_minor,
            invoiced_minor=shipping.invoiced_minor,
        )

    @workflow.signal(name=FULFILLMENT_EVENT_SIGNAL)
    def on_fulfillment_event(self, event: FulfillmentEvent) -> None:
        """A warehouse or carrier report, relayed from fulfillment's outbox (deduplicated)."""
        if event.event_id not in self._seen_events:
            self._seen_events.add(event.event_id)
            self._events.append(event)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> str:
        """The order status as the workflow sees it."""
        return self._status

    # ---- steps ---------------------------------------------------------------------------

    async def _authorize(self, order: OrderLifecycleInput) -> AuthorizeResult:
        result: AuthorizeResult = await workflow.execute_activity(
            "authorize_payment",
            AuthorizeInput(
                order_id=order.order_id,
                idempotency_key=f"{order.order_id}:authorize",
                payment_method=order.payment_method,
                amount_minor=order.grand_total_minor,
                currency=order.currency,
            ),
            result_type=AuthorizeResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        return result

    async def _route(self, order: OrderLifecycleInput) -> RouteResult:
        groups = [
            RoutingGroupData(
                delivery_group_id=group.delivery_group_id,
                address=group.address,
                lines=[
                    RoutingLineData(line.order_line_id, line.sku, line.quantity)
                    for line in order.lines
                    if line.delivery_group_id == group.delivery_group_id
                ],
            )
            for group in order.delivery_groups
        ]
        result: RouteResult = await workflow.execute_activity(
            "create_fulfillment_orders",
            RouteInput(order.order_id, f"{order.order_id}:route", groups),
            result_type=RouteResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        return result

    async def _ship_invoice_capture(
        self, order: OrderLifecycleInput, fulfillment_orders: list[FulfillmentOrderData]
    ) -> _Shipping:
        state = _Shipping(
            fulfillment_orders={fo.fulfillment_order_id: fo for fo in fulfillment_orders},
            units_left={
                fo.fulfillment_order_id: sum(line.quantity for line in fo.lines)
                for fo in fulfillment_orders
            },
        )
        lines = {line.order_line_id: line for line in order.lines}
        while not state.done():
            # Signals only append to self._events; this loop is the one place they are
            # handled, so shipment handling never interleaves with itself.
            await workflow.wait_condition(lambda: bool(self._events))
            event = self._events.pop(0)
            if event.kind == "shipped":
                await self._on_shipped(order, lines, state, event)
            elif event.kind == "delivered":
                state.undelivered.discard(event.shipment_id)
                await self._progress(
                    "",
                    "shipment.delivered",
                    f"Shipment {event.shipment_id} delivered",
                    f"delivered:{event.shipment_id}",
                    actor="carrier",
                )
            else:
                workflow.logger.warning("ignored fulfillment event", extra={"kind": event.kind})
        return state

    async def _on_shipped(
        self,
        order: OrderLifecycleInput,
        lines: dict[str, LifecycleLine],
        state: _Shipping,
        event: FulfillmentEvent,
    ) -> None:
        fo = state.fulfillment_orders.get(event.fulfillment_order_id)
        if fo is None:
            workflow.logger.warning("shipment for an unknown fulfillment order")
            return
        units = sum(item.quantity for item in event.items)
        state.units_left[fo.fulfillment_order_id] = max(
            0, state.units_left[fo.fulfillment_order_id] - units
        )
        state.undelivered.add(event.shipment_id)
        everything_shipped = not any(state.units_left.values())
        await self._progress(
            SHIPPED if everything_shipped else PARTIALLY_SHIPPED,
            "shipment.shipped",
            f"Shipped {units} unit(s) from {fo.location_id} via {event.carrier} "
            f"(tracking {event.tracking_number})",
            f"shipped:{event.shipment_id}",
            [
                LineChange(item.order_line_id, allocated=-item.quantity, fulfilled=item.quantity)
                for item in event.items
            ],
            actor=f"warehouse:{fo.location_id}",
        )

        charge_lines = []
        for item in event.items:
            line = lines[item.order_line_id]
            before = state.invoiced_units.get(line.order_line_id, 0)
            charge_lines.append(
                ChargeLineData(
                    order_line_id=line.order_line_id,
                    sku=line.sku,
                    quantity_ordered=line.quantity,
                    gross_minor=line.gross_minor,
                    discount_minor=line.discount_minor,
                    tax_minor=line.tax_minor,
                    quantity_to_invoice=item.quantity,
                    quantity_invoiced_before=before,
                )
            )
            state.invoiced_units[line.order_line_id] = before + item.quantity
        group_id = fo.delivery_group_id
        shipping_minor = 0
        if group_id not in state.shipping_charged:
            state.shipping_charged.add(group_id)
            shipping_minor = next(
                (
                    g.shipping_minor
                    for g in order.delivery_groups
                    if g.delivery_group_id == group_id
                ),
                0,
            )
        invoice = await workflow.execute_activity(
            "create_invoice",
            InvoiceInput(
                order_id=order.order_id,
                fulfillment_order_id=fo.fulfillment_order_id,
                idempotency_key=f"{order.order_id}:invoice:{event.shipment_id}",
                currency=order.currency,
                lines=charge_lines,
                shipping_minor=shipping_minor,
            ),
            result_type=InvoiceResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        state.invoiced_minor += invoice.total_minor
        state.captured_minor += await self._capture(order, invoice)
        await self._progress(
            "",
            "payment.captured",
            f"Invoice {invoice.invoice_id} of {format_minor(invoice.total_minor, order.currency)} "
            "captured",
            f"captured:{invoice.invoice_id}",
        )

    async def _capture(self, order: OrderLifecycleInput, invoice: InvoiceResult) -> int:
        """Capture the invoice, holding the order while the gateway refuses."""
        attempt = 0
        while True:
            attempt += 1
            result: CaptureResult = await workflow.execute_activity(
                "capture_invoice",
                CaptureInput(
                    invoice.invoice_id, f"{order.order_id}:capture:{invoice.invoice_id}:{attempt}"
                ),
                result_type=CaptureResult,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
            )
            if result.succeeded:
                if attempt > 1:
                    await self._progress(
                        SHIPPED if self._status == ON_HOLD else "",
                        "payment.capture_recovered",
                        f"Capture succeeded on attempt {attempt}",
                        f"capture-recovered:{invoice.invoice_id}",
                    )
                return int(result.amount_minor)
            if attempt == 1:
                await self._raise_exception(
                    "payment",
                    f"invoice:{invoice.invoice_id}",
                    f"capture failed: {result.failure_reason}",
                )
                await self._progress(
                    ON_HOLD,
                    "payment.capture_failed",
                    f"Capture of invoice {invoice.invoice_id} failed: {result.failure_reason}",
                    f"capture-failed:{invoice.invoice_id}",
                )
            await workflow.sleep(CAPTURE_RETRY_INTERVAL)

    async def _cancel(
        self, reason: str, compensations: list[Callable[[], Awaitable[None]]]
    ) -> OrderLifecycleResult:
        """Undo completed steps in reverse, then mark the order canceled."""
        for undo in reversed(compensations):
            await undo()
        assert self._order is not None
        await self._progress(CANCELED, "order.canceled", f"Order canceled: {reason}", "canceled")
        return OrderLifecycleResult(order_id=self._order.order_id, status=CANCELED, reason=reason)

    def _canceller(self, fulfillment_order_id: str) -> Callable[[], Awaitable[None]]:
        async def undo() -> None:
            await workflow.execute_activity(
                "cancel_fulfillment_order",
                CancelFulfillmentOrderInput(
                    fulfillment_order_id,
                    f"{fulfillment_order_id}:cancel",
                    "order canceled before shipping",
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
            )

        return undo

    async def _void(self, order: OrderLifecycleInput, reason: str) -> None:
        await workflow.execute_activity(
            "void_authorization",
            VoidInput(order.order_id, f"{order.order_id}:void", reason),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )

    async def _raise_exception(self, category: str, attached_to: str, message: str) -> None:
        assert self._order is not None
        await workflow.execute_activity(
            "record_process_exception",
            ProcessExceptionInput(
                order_id=self._order.order_id,
                idempotency_key=f"{self._order.order_id}:exception:{category}:{attached_to}",
                category=category,
                severity="high",
                attached_to=attached_to,
                message=message,
            ),
            result_type=str,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )

    async def _progress(
        self,
        status: str,
        kind: str,
        summary: str,
        step: str,
        line_changes: list[LineChange] | None = None,
        actor: str = "workflow",
    ) -> None:
        """Tell capture (the order's record) and the search attributes what just happened."""
        assert self._order is not None
        if status:
            self._status = status
            workflow.upsert_search_attributes(
                [ORDER_STATUS.value_set(status), ORDER_CHANNEL.value_set(self._order.channel)]
            )
        await workflow.execute_activity(
            "record_order_progress",
            ProgressInput(
                order_id=self._order.order_id,
                idempotency_key=f"{self._order.order_id}:progress:{step}",
                status=status,
                kind=kind,
                summary=summary,
                actor=actor,
                line_changes=line_changes or [],
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        workflow.logger.info(kind, extra={"order_id": self._order.order_id, "status": self._status})
