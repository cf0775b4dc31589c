"""OrderLifecycle: one durable workflow per order (`order:<order_id>`).

It decides what happens next; the services do the work and keep the records. Every side
effect goes through an activity with an idempotency key derived here from the order and the
step, so retries have one effect. Changes to an order in flight (cancel, return, exchange,
reship, appeasement, resolving a process exception) arrive as Temporal Updates: validated
before they enter history, serialized with the lifecycle by one lock, answered with the result.
The workflow file has no I/O of its own.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.converter import value_to_type
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from oms_platform.money import format_minor
    from oms_platform.redaction import redact
    from workflows import activity_names as names
    from workflows.ledger import AddItemsPlan, ChangeRefused, Ledger, line_share_minor
    from workflows.state import LifecycleState, Replacement, ReturnOrder
    from workflows.types import (
        ADD_ITEMS_UPDATE,
        ALLOCATED,
        APPEASE_UPDATE,
        AUTHORIZED,
        CANCEL_UPDATE,
        CANCELED,
        EXCHANGE_UPDATE,
        FULFILLED,
        FULFILLMENT_EVENT_SIGNAL,
        ON_HOLD,
        ORDER_CHANNEL,
        ORDER_STATUS,
        PARTIALLY_SHIPPED,
        PENDING,
        PREVIEW_QUERY,
        PROCESSING,
        RECEIVE_RETURN_UPDATE,
        RESHIP_UPDATE,
        RESOLUTION_ACTIONS,
        RESOLVE_EXCEPTION_UPDATE,
        RETURN_UPDATE,
        SHIPPED,
        STATE_QUERY,
        STATUS_QUERY,
        WORKFLOW_NAME,
        AuthorizeInput,
        AuthorizeResult,
        CancelFulfillmentOrderInput,
        CancelLinesInput,
        CaptureInput,
        CaptureResult,
        ChangeRequest,
        ChangeResult,
        ChargeLineData,
        CreditMemoInput,
        CreditMemoResult,
        EscalateInput,
        ExceptionRecord,
        FulfillmentEvent,
        FulfillmentOrderData,
        FulfillmentOrderState,
        InvoiceInput,
        InvoiceResult,
        ItemQuantity,
        LifecycleLine,
        LineAdditionData,
        LineChange,
        LineState,
        OrderLifecycleInput,
        OrderLifecycleResult,
        OrderState,
        ProcessExceptionInput,
        ProgressInput,
        ReceiptInput,
        RefundInput,
        RefundResult,
        Resolution,
        ResolutionResult,
        ReturnOrderInput,
        ReturnState,
        RouteInput,
        RouteResult,
        RoutingGroupData,
        RoutingLineData,
        VoidInput,
    )
    from workflows.visibility import activity_summary, search_attributes

# Timeouts and retries, in one place. Activities are short gRPC calls; transport failures
# retry with backoff for as long as it takes, business refusals are non-retryable.
ACTIVITY_TIMEOUT = timedelta(seconds=30)
RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)


T = TypeVar("T")


class OrderCanceled(Exception):
    """Raised inside the lifecycle when an agent's resolution cancels the order."""


# Workflow changes guarded for runs that started before them (see tests/workflow/histories/).
CONTINUE_AS_NEW_PATCH = "continue-as-new-while-servicing"
# Search attributes for operators (total, currency, on hold, locations) upserted whenever one
# changes; runs before it upsert only status and channel, and only when the status changes.
OPERATOR_ATTRIBUTES_PATCH = "operator-search-attributes"


def _as_json(value: Any) -> str:
    """A step's input as JSON, the same for the same input (it goes into a keyed request),
    with addresses, names, emails, phones and payment tokens redacted: it is recorded on a
    process exception for agents to read, where none of those belong."""
    is_data = dataclasses.is_dataclass(value) and not isinstance(value, type)
    data = dataclasses.asdict(value) if is_data else value
    return json.dumps(redact(data), sort_keys=True, default=str)


def _refuse(error: ChangeRefused) -> ApplicationError:
    return ApplicationError(error.message, type=error.code, non_retryable=True)


@workflow.defn(name=WORKFLOW_NAME)
class OrderLifecycle:
    """capture → fraud check → authorize → route and reserve → ship, invoice and capture →
    deliver → service until the return window closes."""

    @workflow.init
    def __init__(self, order: OrderLifecycleInput) -> None:
        # The order and its ledger exist before the first activation's handlers run, so an
        # Update that arrives with the workflow's start (a cancel straight after submit) is
        # validated against the order rather than refused as "not started".
        if order.carried is None:
            self._state = LifecycleState(ledger=Ledger.of(order).state)
        else:  # a delivered order's lifecycle, carried on from its previous run
            self._state = value_to_type(LifecycleState, order.carried)
            self._state.runs += 1
            order = replace(order, carried=None)
        self._order = order
        self._ledger = Ledger(self._state.ledger)
        # What follows lives only while this run does: a run continues as new only when no
        # Update and no hold is in flight, so none of it needs carrying.
        # One change at a time: the lifecycle's own steps and every Update take this lock.
        self._lock = asyncio.Lock()
        self._resolutions: dict[str, Resolution] = {}
        self._waiting_on = ""
        self._done = False
        # A continued run is past delivery, so its payment was authorized long ago.
        self._authorized = self._state.runs > 1
        # Credit for units canceled before the payment was authorized: never held, so the
        # authorization asks for that much less.
        self._credited_unauthorized_minor = 0
        # Bumped by every Update, so waits that depend on open returns re-check.
        self._revision = 0
        # What the last refused step was asked, for the process exception it raises.
        self._refused_step_input = ""

    # ---- the lifecycle -----------------------------------------------------------------------

    @workflow.run
    async def run(self, order: OrderLifecycleInput) -> OrderLifecycleResult:
        if order.carried is None:
            result = await self._lifecycle(order)
        else:  # a continued run: the order was delivered, keep servicing it
            result = await self._serve_and_close()
        # Let an Update that finished the order (e.g. cancel everything) send its reply.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _lifecycle(self, order: OrderLifecycleInput) -> OrderLifecycleResult:
        try:
            try:
                async with self._lock:
                    if self._ledger.all_canceled():
                        # A cancel of everything reached the workflow with its start, before
                        # anything was authorized or reserved: nothing to do or undo.
                        return self._result(CANCELED, "canceled before processing began")
                    await self._progress(PROCESSING, "lifecycle.started", "Order lifecycle started")
                    if order.fraud_reasons:
                        await self._fraud_review(order)
                    await self._authorize(order)
                    await self._allocate("initial")
            except ActivityError as refused:
                await self._undo(refused)
            await self._fulfil()
        except OrderCanceled as canceled:
            return self._result(CANCELED, str(canceled))
        if self._ledger.all_canceled():
            return self._result(CANCELED, "every line was canceled")
        if self._state.release_at_settlement:
            # Goodwill before charging, or a skipped invoice or capture, left part of the
            # authorization uncaptured: release it now that nothing more will be charged.
            await self._void("settled: releasing what was not charged", step="void:settled")
        whole = f"order:{self._order.order_id}"
        await self._attempt(
            lambda: self._progress(FULFILLED, "order.fulfilled", "Every shipment delivered"),
            "fulfillment",
            whole,
        )
        return await self._serve_and_close()

    async def _serve_and_close(self) -> OrderLifecycleResult:
        await self._service_until_the_return_window_closes()
        await self._attempt(
            lambda: self._progress(
                "", "order.closed", "Return window closed; the order is complete"
            ),
            "fulfillment",
            f"order:{self._order.order_id}",
        )
        self._done = True
        return self._result(FULFILLED)

    async def _undo(self, refused: ActivityError) -> None:
        """A step before shipping was refused in a way retrying cannot fix: record why, then
        undo what was done in reverse (fulfillment order lines canceled, which releases their
        reservations; the authorization released and voided) and cancel the order."""
        step = refused.activity_type or "a step"
        reason = f"{step} refused: {refused.cause or refused}"
        category = "payment" if "payment" in step or "authoriz" in step else "fulfillment"
        async with self._lock:
            await self._raise_exception(
                category, f"step:{step}", reason, step_input=self._refused_step_input
            )
            await self._cancel_everything(reason, authorized=self._authorized)

    def _result(self, status: str, reason: str = "") -> OrderLifecycleResult:
        return OrderLifecycleResult(
            order_id=self._order.order_id,
            status=status,
            captured_minor=self._state.captured_minor,
            invoiced_minor=self._state.invoiced_minor,
            reason=reason,
        )

    async def _fraud_review(self, order: OrderLifecycleInput) -> None:
        reasons = "; ".join(order.fraud_reasons)
        action = await self._hold("fraud", f"order:{order.order_id}", f"Fraud hold: {reasons}")
        if action == "cancel":
            await self._cancel_everything("rejected by fraud review", authorized=False)

    async def _authorize(self, order: OrderLifecycleInput) -> None:
        timeout = timedelta(seconds=order.timers.authorization_timeout_seconds)
        # Less what cancels before authorization gave back (nothing was held for it).
        amount = order.grand_total_minor - self._credited_unauthorized_minor
        try:
            result: AuthorizeResult = await self._activity(
                names.AUTHORIZE_PAYMENT,
                AuthorizeInput(
                    order_id=order.order_id,
                    idempotency_key=f"{order.order_id}:authorize",
                    payment_method=order.payment_method,
                    amount_minor=amount,
                    currency=order.currency,
                    additional_payment_methods=order.additional_payment_methods,
                ),
                result_type=AuthorizeResult,
                schedule_to_close_timeout=timeout,
            )
        except ActivityError as error:
            if error.retry_state == RetryState.TIMEOUT or isinstance(
                error.cause, ActivityTimeoutError
            ):
                reason = f"payment could not be authorized within {timeout}"
            else:  # a refusal retrying cannot fix, e.g. an invalid payment method
                reason = f"payment refused: {error.cause or error}"
            await self._raise_exception(
                "payment", f"order:{order.order_id}", reason, step_input=self._refused_step_input
            )
            await self._cancel_everything(reason, authorized=False)
            raise
        if not result.approved:
            reason = f"payment declined: {result.decline_reason}"
            await self._raise_exception(
                "payment", f"authorization:{result.authorization_id}", reason
            )
            await self._cancel_everything(reason, authorized=False)
        self._authorized = True
        await self._progress(
            AUTHORIZED,
            "payment.authorized",
            f"Payment of {self._money(amount)} authorized",
        )

    async def _allocate(self, why: str) -> None:
        """Route what still needs a location; hold for an agent while nothing can take it."""
        ledger, order = self._ledger, self._order
        attempt = 0
        while pending := ledger.unallocated():
            attempt += 1
            route = await self._route(pending, f"{why}:{attempt}")
            for fo in route.fulfillment_orders:
                ledger.add_fulfillment_order(fo)
            if route.fulfillment_orders:
                await self._progress(
                    ALLOCATED if self._state.status in (AUTHORIZED, ON_HOLD) else "",
                    "fulfillment.allocated",
                    "; ".join(route.decisions) or "Fulfillment orders created",
                    [
                        LineChange(line.order_line_id, allocated=line.quantity)
                        for fo in route.fulfillment_orders
                        for line in fo.lines
                    ],
                    step=f"allocated:{why}:{attempt}",
                )
            if not route.unallocated:
                return
            missing = ", ".join(f"{u.quantity} x {u.sku}" for u in route.unallocated)
            action = await self._hold(
                "inventory", f"order:{order.order_id}", f"No location can ship {missing}"
            )
            if action == "skip":
                await self._cancel_units(
                    [ItemQuantity(u.order_line_id, u.quantity) for u in ledger.unallocated()],
                    "not available anywhere; skipped by an agent",
                    f"skip-unallocated:{why}:{attempt}",
                )
            elif action == "cancel":
                await self._cancel_everything(f"no stock for {missing}")

    async def _fulfil(self) -> None:
        """Handle warehouse and carrier events until every unit shipped and was delivered."""
        ledger = self._ledger
        while not ledger.settled():
            # Signals only append to self._state.events; events are handled here, under the lock,
            # so they never interleave with an Update's change to the same quantities.
            await workflow.wait_condition(lambda: bool(self._state.events) or ledger.settled())
            if self._state.events:
                event = self._state.events.pop(0)
                async with self._lock:
                    await self._on_event(event)
        self._state.delivered_at = workflow.now()

    async def _service_until_the_return_window_closes(self) -> None:
        """After delivery: keep handling events (reships, replacements) and Updates (returns,
        appeasements) until the return window has closed and no return is open."""
        assert self._state.delivered_at
        window = timedelta(seconds=self._order.timers.return_window_seconds)
        closes = self._state.delivered_at + window
        while True:
            remaining = (closes - workflow.now()).total_seconds()
            busy = any(r.open() for r in self._state.returns.values()) or not self._ledger.settled()
            if remaining <= 0 and not busy and not self._state.events:
                return
            if not self._state.events and self._history_is_long():
                await self._continue_as_new()
            seen = self._revision
            try:
                await workflow.wait_condition(
                    lambda seen=seen: bool(self._state.events) or self._revision != seen,  # type: ignore[misc]
                    timeout=timedelta(seconds=remaining) if remaining > 0 else None,
                )
            except TimeoutError:
                continue
            if not self._state.events:
                continue
            event = self._state.events.pop(0)
            async with self._lock:
                await self._on_event(event)

    def _history_is_long(self) -> bool:
        """Time to start a fresh history: the server suggests it, or this run's history has
        reached the configured length."""
        if not workflow.patched(CONTINUE_AS_NEW_PATCH):
            return False
        info = workflow.info()
        limit = self._order.timers.continue_as_new_after_events
        return info.is_continue_as_new_suggested() or (
            limit > 0 and info.get_current_history_length() >= limit
        )

    async def _continue_as_new(self) -> None:
        """Carry everything into a new run once no Update is in flight. Returns (without
        continuing) if an event arrived meanwhile: it is handled first."""
        # Safe to wait here: Updates finish (or a new one starts and is waited for too), and
        # the state is read only after the last of them.
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() and not self._lock.locked()
        )
        if self._state.events:
            return
        workflow.logger.info(
            "continuing as new", extra={"order_id": self._order.order_id, "runs": self._state.runs}
        )
        workflow.continue_as_new(
            replace(self._order, carried=dataclasses.asdict(self._state)),
            search_attributes=workflow.info().typed_search_attributes,
        )

    # ---- events from fulfillment --------------------------------------------------------------

    @workflow.signal(name=FULFILLMENT_EVENT_SIGNAL)
    def on_fulfillment_event(self, event: FulfillmentEvent) -> None:
        """A warehouse or carrier report, relayed from fulfillment's outbox (deduplicated)."""
        if event.event_id not in self._state.seen_events:
            bisect.insort(self._state.seen_events, event.event_id)
            self._state.events.append(event)

    async def _on_event(self, event: FulfillmentEvent) -> None:
        ledger = self._ledger
        fo = ledger.fulfillment_orders.get(event.fulfillment_order_id)
        if fo is None:
            workflow.logger.warning("event for an unknown fulfillment order")
            return
        items = [ItemQuantity(i.order_line_id, i.quantity) for i in event.items]
        if event.kind == "shipped":
            await self._on_shipped(fo, items, event)
        elif event.kind == "delivered":
            ledger.mark_delivered(event.shipment_id)
            await self._attempt(
                lambda: self._progress(
                    "",
                    "shipment.delivered",
                    f"Shipment {event.shipment_id} delivered",
                    actor="carrier",
                    step=f"delivered:{event.shipment_id}",
                ),
                "carrier",
                f"shipment:{event.shipment_id}",
            )
        elif event.kind in ("rejected", "moved"):
            ledger.remove_open_units(fo.fulfillment_order_id, items)
            for replacement in event.replacements:
                ledger.add_fulfillment_order(
                    replacement, no_charge=fo.fulfillment_order_id in ledger.no_charge
                )
            moved_to = ", ".join(r.location_id for r in event.replacements) or "nowhere"
            units = sum(i.quantity for i in items)
            verb = "rejected" if event.kind == "rejected" else "moved"
            attached_to = f"fulfillment_order:{fo.fulfillment_order_id}"
            await self._attempt(
                lambda: self._progress(
                    "",
                    f"fulfillment.{verb}",
                    f"{fo.location_id} {verb} {units} unit(s)"
                    + (f" ({event.reason})" if event.reason else "")
                    + f"; routed to {moved_to}",
                    [LineChange(i.order_line_id, allocated=-i.quantity) for i in items]
                    + [
                        LineChange(line.order_line_id, allocated=line.quantity)
                        for r in event.replacements
                        if r.fulfillment_order_id not in ledger.no_charge
                        for line in r.lines
                    ],
                    actor=f"warehouse:{fo.location_id}",
                    step=f"{verb}:{event.event_id}",
                ),
                "fulfillment",
                attached_to,
            )
            if event.unallocated:
                # Routing picks up from what is still unplaced, so a retry is safe.
                await self._attempt(
                    lambda: self._allocate(f"after-{event.event_id}"), "fulfillment", attached_to
                )
        else:
            workflow.logger.warning("ignored fulfillment event", extra={"kind": event.kind})

    async def _on_shipped(
        self, fo: FulfillmentOrderData, items: list[ItemQuantity], event: FulfillmentEvent
    ) -> None:
        ledger = self._ledger
        no_charge = fo.fulfillment_order_id in ledger.no_charge
        ledger.ship(fo.fulfillment_order_id, items)
        ledger.mark_undelivered(event.shipment_id)
        units = sum(i.quantity for i in items)
        in_order = [i for i in items if i.order_line_id in ledger.lines]
        status = (
            "" if no_charge else (SHIPPED if ledger.everything_shipped() else PARTIALLY_SHIPPED)
        )
        parcel = f"shipment:{event.shipment_id}"
        await self._attempt(
            lambda: self._progress(
                status,
                "shipment.shipped",
                f"Shipped {units} unit(s) from {fo.location_id} via {event.carrier} "
                f"(tracking {event.tracking_number})" + (" at no charge" if no_charge else ""),
                []
                if no_charge
                else [
                    LineChange(i.order_line_id, allocated=-i.quantity, fulfilled=i.quantity)
                    for i in in_order
                ],
                actor=f"warehouse:{fo.location_id}",
                step=f"shipped:{event.shipment_id}",
            ),
            "fulfillment",
            parcel,
        )
        if no_charge:
            return
        invoice = await self._attempt(
            lambda: self._invoice(fo, in_order, f"invoice:{event.shipment_id}"), "invoicing", parcel
        )
        if invoice is None:  # skipped or canceled by an agent: these units go uncharged
            return
        captured = await self._capture(invoice)
        self._state.captured_minor += captured

    async def _invoice(
        self, fo: FulfillmentOrderData, items: list[ItemQuantity], step: str
    ) -> InvoiceResult:
        """Invoice shipped units: each line's next units in order, the group's shipping on its
        first invoice, less goodwill given before anything was charged. The ledger moves only
        once payments has the invoice, so a refused invoice can be asked for again."""
        ledger, order = self._ledger, self._order
        charge_lines: list[ChargeLineData] = []
        taken: dict[str, int] = {}
        shares: dict[str, int] = {}
        for item in items:
            line = ledger.lines[item.order_line_id].line
            before = ledger.lines[item.order_line_id].invoiced + taken.get(line.order_line_id, 0)
            taken[line.order_line_id] = taken.get(line.order_line_id, 0) + item.quantity
            shares[line.order_line_id] = shares.get(line.order_line_id, 0) + line_share_minor(
                line, before, item.quantity
            )
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
        group_id = fo.delivery_group_id
        shipping_minor = 0
        if group_id not in ledger.shipping_charged:
            shipping_minor = next(
                (
                    g.shipping_minor
                    for g in order.delivery_groups
                    if g.delivery_group_id == group_id
                ),
                0,
            )
        # Goodwill given before anything was charged comes off the first invoices it fits.
        line_goodwill = {
            line_id: min(share, self._state.goodwill_pending_by_line.get(line_id, 0))
            for line_id, share in shares.items()
        }
        charged = sum(shares.values()) + shipping_minor - sum(line_goodwill.values())
        order_goodwill = min(charged, self._state.goodwill_pending_order)
        invoice: InvoiceResult = await self._activity(
            names.CREATE_INVOICE,
            InvoiceInput(
                order_id=order.order_id,
                fulfillment_order_id=fo.fulfillment_order_id,
                idempotency_key=f"{order.order_id}:{step}",
                currency=order.currency,
                lines=charge_lines,
                shipping_minor=shipping_minor,
                goodwill_minor=sum(line_goodwill.values()) + order_goodwill,
            ),
            result_type=InvoiceResult,
        )
        for line_id, quantity in taken.items():
            ledger.take_invoiced(line_id, quantity)
            self._state.line_invoiced_minor[line_id] = (
                self._state.line_invoiced_minor.get(line_id, 0)
                + shares[line_id]
                - line_goodwill[line_id]
            )
            if line_goodwill[line_id]:
                self._state.goodwill_pending_by_line[line_id] -= line_goodwill[line_id]
        self._state.goodwill_pending_order -= order_goodwill
        ledger.mark_shipping_charged(group_id)
        self._state.invoiced_minor += invoice.total_minor
        return invoice

    async def _capture(self, invoice: InvoiceResult) -> int:
        """Capture the invoice; while the gateway fails or payments refuses, hold for an agent
        (each new attempt has a key of its own)."""
        attempt = 0
        while True:
            attempt += 1
            asked = CaptureInput(
                invoice.invoice_id,
                f"{self._order.order_id}:capture:{invoice.invoice_id}:{attempt}",
            )
            try:
                result: CaptureResult = await self._activity(
                    names.CAPTURE_INVOICE, asked, result_type=CaptureResult
                )
                failure = "" if result.succeeded else result.failure_reason
            except ActivityError as refused:
                failure = f"refused: {refused.cause or refused}"
            if not failure:
                await self._attempt(
                    lambda: self._progress(
                        "",
                        "payment.captured",
                        f"Invoice {invoice.invoice_id} of {self._money(invoice.total_minor)} "
                        "captured",
                        step=f"captured:{invoice.invoice_id}",
                    ),
                    "payment",
                    f"invoice:{invoice.invoice_id}",
                )
                return int(result.amount_minor)
            action = await self._hold(
                "payment",
                f"invoice:{invoice.invoice_id}",
                f"Capture of invoice {invoice.invoice_id} failed: {failure}",
                _as_json(asked),
            )
            if action == "retry":
                continue
            # Skipped, or canceled: what shipped stays shipped (and unpaid); whatever has not
            # shipped is canceled; the hold on the unpaid part is released at settlement.
            self._state.release_at_settlement = True
            if action == "cancel":
                await self._cancel_unshipped(
                    "capture failed; canceled by an agent", f"capture-cancel:{invoice.invoice_id}"
                )
            return 0

    async def _attempt(
        self, step: Callable[[], Awaitable[T]], category: str, attached_to: str
    ) -> T | None:
        """Run a step of an order that has begun to ship, where nothing can be undone: a
        refusal retrying cannot fix holds the order on a process exception. The agent's retry
        runs the step again; skip carries on without it; cancel also cancels what has not
        shipped. None when the step did not happen."""
        while True:
            try:
                return await step()
            except ActivityError as refused:
                what = refused.activity_type or "a step"
                action = await self._hold(
                    category,
                    attached_to,
                    f"{what} refused: {refused.cause or refused}",
                    self._refused_step_input,
                )
            if action == "retry":
                continue
            self._state.release_at_settlement = True
            if action == "cancel":
                await self._cancel_unshipped(
                    f"{what} refused; canceled by an agent", f"refused-cancel:{self._state.holds}"
                )
            return None

    async def _cancel_unshipped(self, reason: str, step: str) -> None:
        """Cancel whatever has not shipped (nothing when everything has)."""
        if any(b.available_to_cancel for b in self._ledger.lines.values()):
            await self._cancel_units([], reason, step)

    # ---- process exceptions ------------------------------------------------------------------

    async def _hold(
        self, category: str, attached_to: str, message: str, step_input: str = ""
    ) -> str:
        """Raise a process exception (with the failed step's input, when there is one) and wait
        for an agent's resolution (escalating if it waits too long). Returns the action: retry,
        skip or cancel."""
        self._state.holds += 1
        exception_id = await self._raise_exception(
            category, attached_to, message, self._state.holds, step_input
        )
        # Waiting from the moment the exception exists, so an agent can resolve it at once.
        self._waiting_on = exception_id
        self._mark_exception(exception_id, "waiting")
        resume = self._state.status
        await self._progress(
            ON_HOLD, f"exception.{category}", message, step=f"hold:{self._state.holds}"
        )
        escalate_after = timedelta(seconds=self._order.timers.escalate_after_seconds)
        try:
            await workflow.wait_condition(
                lambda: exception_id in self._resolutions, timeout=escalate_after
            )
        except TimeoutError:
            await self._activity(
                names.ESCALATE_PROCESS_EXCEPTION,
                EscalateInput(
                    exception_id,
                    f"{self._order.order_id}:escalate:{exception_id}",
                    f"unresolved for {escalate_after}",
                ),
            )
            self._mark_exception(exception_id, "escalated")
            await self._progress(
                "",
                "exception.escalated",
                f"Process exception {exception_id} unresolved for {escalate_after}; escalated",
                step=f"escalated:{exception_id}",
            )
            await workflow.wait_condition(lambda: exception_id in self._resolutions)
        resolution = self._resolutions[exception_id]
        self._waiting_on = ""
        self._mark_exception(exception_id, "resolved", resolution.action)
        await self._progress(
            resume if resolution.action != "cancel" else "",
            "exception.resolved",
            f"Process exception {exception_id} resolved by {resolution.actor}: {resolution.action}"
            + (f" ({resolution.note})" if resolution.note else ""),
            actor=resolution.actor,
            step=f"resolved:{exception_id}",
        )
        return resolution.action

    @workflow.update(name=RESOLVE_EXCEPTION_UPDATE)
    async def resolve_process_exception(self, resolution: Resolution) -> ResolutionResult:
        """An agent's resolution of the exception the order waits on."""
        self._resolutions[resolution.process_exception_id] = resolution
        # Answer once the lifecycle has taken the resolution and acted on its first step.
        await workflow.wait_condition(lambda: self._waiting_on != resolution.process_exception_id)
        return ResolutionResult(
            resolution.process_exception_id, resolution.action, self._state.status
        )

    @resolve_process_exception.validator
    def _validate_resolution(self, resolution: Resolution) -> None:
        if resolution.action not in RESOLUTION_ACTIONS:
            raise ApplicationError(
                f"action must be one of {', '.join(RESOLUTION_ACTIONS)}", type="INVALID_ARGUMENT"
            )
        if resolution.process_exception_id != self._waiting_on:
            raise ApplicationError(
                f"order is not waiting on process exception {resolution.process_exception_id}"
                + (f" (it waits on {self._waiting_on})" if self._waiting_on else ""),
                type="FAILED_PRECONDITION",
            )

    async def _raise_exception(
        self, category: str, attached_to: str, message: str, hold: int = 0, step_input: str = ""
    ) -> str:
        exception_id: str = await self._activity(
            names.RECORD_PROCESS_EXCEPTION,
            ProcessExceptionInput(
                order_id=self._order.order_id,
                idempotency_key=f"{self._order.order_id}:exception:{category}:{attached_to}:{hold}",
                category=category,
                severity="high",
                attached_to=attached_to,
                message=message,
                step_input=step_input,
            ),
            result_type=str,
        )
        if self._state.exception(exception_id) is None:
            self._state.exceptions.append(
                ExceptionRecord(exception_id, category, attached_to, "recorded", workflow.now())
            )
        return exception_id

    def _mark_exception(self, exception_id: str, status: str, action: str = "") -> None:
        record = self._state.exception(exception_id)
        if record is not None:
            record.status, record.action = status, action or record.action

    # ---- cancels -------------------------------------------------------------------------------

    async def _cancel_everything(self, reason: str, *, authorized: bool = True) -> None:
        """Cancel what has not shipped and stop the lifecycle (compensation: reservations are
        released by canceling fulfillment order lines, the authorization is voided)."""
        ledger = self._ledger
        if any(b.available_to_cancel for b in ledger.lines.values()):
            await self._cancel_units([], reason, "cancel-all", money=authorized)
        if authorized:
            await self._void(reason)
        if ledger.all_canceled():
            await self._progress(CANCELED, "order.canceled", f"Order canceled: {reason}")
            raise OrderCanceled(reason)
        # Some units shipped: the lifecycle goes on until they are delivered.

    async def _cancel_units(
        self, requested: list[ItemQuantity], reason: str, step: str, *, money: bool = True
    ) -> ChangeResult:
        """Cancel unshipped units: on their fulfillment orders, in the buckets, and in money."""
        ledger, order = self._ledger, self._order
        plan = ledger.plan_cancel(requested)
        released: list[ItemQuantity] = []
        for fo_id, items in ledger.open_units_for_cancel(plan).items():
            await self._activity(
                names.CANCEL_FULFILLMENT_ORDER_LINES,
                CancelLinesInput(fo_id, f"{order.order_id}:{step}:{fo_id}", items, reason),
            )
            ledger.remove_open_units(fo_id, items)
            released += items
        canceled = plan
        credit = ledger.credit_lines_for_cancel(canceled)
        groups_before = {
            g.delivery_group_id
            for g in order.delivery_groups
            if ledger.group_fully_canceled(g.delivery_group_id)
        }
        ledger.apply_cancel(canceled)
        shipping = sum(
            g.shipping_minor
            for g in order.delivery_groups
            if g.delivery_group_id not in groups_before
            and ledger.group_fully_canceled(g.delivery_group_id)
            and g.delivery_group_id not in ledger.shipping_charged
        )
        result = ChangeResult(change_id=step, kind="cancel", summary="", lines=canceled)
        if money:
            memo, refund = await self._give_back(
                self._memo(
                    step,
                    reason=reason,
                    kind="cancel",
                    lines=credit,
                    shipping_minor=shipping,
                ),
                step,
            )
            result.credit_memo_id = memo.credit_memo_id
            result.credited_minor = memo.total_minor
            result.refunded_minor = refund.refunded_minor
            result.released_minor = refund.released_minor
            if not self._authorized:
                self._credited_unauthorized_minor += memo.total_minor
        units = sum(i.quantity for i in canceled)
        result.summary = f"Canceled {units} unit(s): {reason}" + (
            f"; {self._money(result.credited_minor)} given back" if result.credited_minor else ""
        )
        status = CANCELED if ledger.all_canceled() else ""
        await self._progress(
            status,
            "change.cancel",
            result.summary,
            [LineChange(i.order_line_id, canceled=i.quantity) for i in canceled]
            + [LineChange(i.order_line_id, allocated=-i.quantity) for i in released],
            step=f"canceled:{step}",
        )
        result.order_status = self._state.status
        return result

    def _memo(self, step: str, **money: Any) -> CreditMemoInput:
        """A credit memo of this order for the change or step `step`."""
        return CreditMemoInput(
            order_id=self._order.order_id,
            idempotency_key=f"{self._order.order_id}:memo:{step}",
            currency=self._order.currency,
            **money,
        )

    async def _give_back(
        self, memo_input: CreditMemoInput, step: str
    ) -> tuple[CreditMemoResult, RefundResult]:
        memo: CreditMemoResult = await self._activity(
            names.CREATE_CREDIT_MEMO,
            memo_input,
            result_type=CreditMemoResult,
        )
        self._state.credited_minor += memo.total_minor
        refunded = released = 0
        attempt = 0
        while True:
            attempt += 1
            refund: RefundResult = await self._activity(
                names.REFUND_CREDIT_MEMO,
                RefundInput(
                    memo_input.order_id,
                    memo.credit_memo_id,
                    f"{memo_input.order_id}:refund:{step}:{attempt}",
                ),
                result_type=RefundResult,
            )
            refunded += refund.refunded_minor
            released += refund.released_minor
            self._state.refunded_minor += refund.refunded_minor
            self._state.released_minor += refund.released_minor
            if not refund.failed:
                break
            # The gateway refused to give money back: a person decides (retry once it works,
            # or skip and settle it outside oms).
            action = await self._hold(
                "payment",
                f"credit_memo:{memo.credit_memo_id}",
                f"Refund of credit memo {memo.credit_memo_id} failed: {refund.failure_reason}",
            )
            if action != "retry":
                break
        return memo, RefundResult(refunded, released, refund.not_refunded_minor)

    async def _void(self, reason: str, step: str = "void") -> None:
        await self._activity(
            names.VOID_AUTHORIZATION,
            VoidInput(self._order.order_id, f"{self._order.order_id}:{step}", reason),
        )

    # ---- Updates: changes to the order ---------------------------------------------------------

    @workflow.update(name=CANCEL_UPDATE)
    async def cancel_items(self, request: ChangeRequest) -> ChangeResult:
        """Cancel some units (or everything) not shipped yet."""
        if request.change_id in self._state.changes:
            return self._state.changes[request.change_id]
        async with self._lock:
            ledger = self._ledger
            try:
                ledger.plan_cancel(request.lines)
            except ChangeRefused as refused:  # the state moved on while this waited
                raise _refuse(refused) from None
            result = await self._cancel_units(
                request.lines, request.reason or "canceled", f"change:{request.change_id}"
            )
            if ledger.all_canceled():
                await self._void(request.reason or "every line canceled")
                await self._progress("", "order.canceled", f"Order canceled: {result.summary}")
            result.change_id, result.kind = request.change_id, "cancel"
            result.order_status = self._state.status
            self._state.changes[request.change_id] = result
            self._revision += 1
            return result

    @cancel_items.validator
    def _validate_cancel(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: self._ledger.plan_cancel(request.lines))

    @workflow.update(name=APPEASE_UPDATE)
    async def appease(self, request: ChangeRequest) -> ChangeResult:
        """Goodwill: an amount or a percentage of what was charged, on lines or the order."""
        if request.change_id in self._state.changes:
            return self._state.changes[request.change_id]
        async with self._lock:
            try:
                amount, before_charging = self._appeasement_amount(request)
            except ChangeRefused as refused:
                raise _refuse(refused) from None
            step = f"change:{request.change_id}"
            reason = request.reason or "appeasement"
            if before_charging:
                return await self._appease_before_charging(request, amount, reason, step)
            memo, refund = await self._give_back(
                self._memo(
                    step,
                    reason=request.reason or "appeasement",
                    kind="appeasement",
                    appeasement_minor=amount,
                ),
                step,
            )
            for line in request.lines:
                self._state.line_appeased_minor[line.order_line_id] = (
                    self._state.line_appeased_minor.get(line.order_line_id, 0) + amount
                )
            if not request.lines:
                self._state.order_appeased_minor += amount
            result = ChangeResult(
                change_id=request.change_id,
                kind="appease",
                summary=f"Goodwill of {self._money(amount)}: {request.reason or 'appeasement'}",
                lines=request.lines,
                credit_memo_id=memo.credit_memo_id,
                credited_minor=memo.total_minor,
                refunded_minor=refund.refunded_minor,
                released_minor=refund.released_minor,
            )
            await self._progress(
                "", "change.appease", result.summary, actor=request.actor, step=step
            )
            result.order_status = self._state.status
            self._state.changes[request.change_id] = result
            self._revision += 1
            return result

    async def _appease_before_charging(
        self, request: ChangeRequest, amount: int, reason: str, step: str
    ) -> ChangeResult:
        """Nothing has been charged for it yet: the goodwill comes off the invoices to come, so
        less is captured (what the authorization held beyond that is released at settlement)."""
        if request.lines:
            line_id = request.lines[0].order_line_id
            self._state.goodwill_pending_by_line[line_id] = (
                self._state.goodwill_pending_by_line.get(line_id, 0) + amount
            )
        else:
            self._state.goodwill_pending_order += amount
        self._state.release_at_settlement = True
        result = ChangeResult(
            change_id=request.change_id,
            kind="appease",
            summary=f"Goodwill of {self._money(amount)}: {reason}; taken off what will be charged",
            lines=request.lines,
            credited_minor=amount,
        )
        await self._progress("", "change.appease", result.summary, actor=request.actor, step=step)
        result.order_status = self._state.status
        self._state.changes[request.change_id] = result
        self._revision += 1
        return result

    @appease.validator
    def _validate_appease(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: self._appeasement_amount(request))

    def _appeasement_amount(self, request: ChangeRequest) -> tuple[int, bool]:
        """The goodwill asked for, and whether it comes off what will be charged (nothing has
        been charged for its line, or for the order, yet) rather than refunded from what was."""
        ledger = self._ledger
        if len(request.lines) > 1:
            raise ChangeRefused("lines: appease one line or the whole order", "INVALID_ARGUMENT")
        if (request.amount_minor > 0) == (request.percent_basis_points > 0):
            raise ChangeRefused(
                "give exactly one of amount_minor or percent_basis_points (> 0)", "INVALID_ARGUMENT"
            )
        if request.percent_basis_points > 10_000:
            raise ChangeRefused("percent_basis_points: at most 10000 (100%)", "INVALID_ARGUMENT")
        pending = self._state.goodwill_pending_order + sum(
            self._state.goodwill_pending_by_line.values()
        )
        order_room = self._uncharged_minor() - pending
        if request.lines:
            line_id = request.lines[0].order_line_id
            if line_id not in ledger.lines:
                raise ChangeRefused(
                    f"lines[0].order_line_id: no line {line_id!r}", "INVALID_ARGUMENT"
                )
            what = f"line {line_id}"
            buckets = ledger.lines[line_id]
            before_charging = buckets.invoiced == 0
            if before_charging:
                base = line_share_minor(buckets.line, 0, buckets.ordered - buckets.canceled)
                room = min(base - self._state.goodwill_pending_by_line.get(line_id, 0), order_room)
            else:
                base = self._state.line_invoiced_minor.get(line_id, 0)
                room = base - self._state.line_appeased_minor.get(line_id, 0)
        else:
            what = "the order"
            before_charging = self._state.invoiced_minor == 0
            if before_charging:
                base, room = self._uncharged_minor(), order_room
            else:
                base = self._state.captured_minor
                room = (
                    base
                    - self._state.order_appeased_minor
                    - sum(self._state.line_appeased_minor.values())
                )
        amount = request.amount_minor or base * request.percent_basis_points // 10_000
        if amount <= 0:
            raise ChangeRefused(f"nothing is charged or left to charge for {what}")
        if amount > room:
            still = "to be charged" if before_charging else "refundable"
            raise ChangeRefused(
                f"goodwill of {self._money(amount)} exceeds the {self._money(max(room, 0))} "
                f"still {still} for {what}"
            )
        return amount, before_charging

    def _uncharged_minor(self) -> int:
        """What the order will still charge: units neither invoiced nor canceled (invoices
        take units from the front, cancels from the back) and shipping not yet charged for
        groups not wholly canceled."""
        ledger = self._ledger
        units = sum(
            line_share_minor(b.line, b.invoiced, b.ordered - b.canceled - b.invoiced)
            for b in ledger.lines.values()
            if b.ordered - b.canceled - b.invoiced > 0
        )
        shipping = sum(
            g.shipping_minor
            for g in self._order.delivery_groups
            if g.delivery_group_id not in ledger.shipping_charged
            and not ledger.group_fully_canceled(g.delivery_group_id)
        )
        return units + shipping

    @workflow.update(name=RESHIP_UPDATE)
    async def reship_items(self, request: ChangeRequest) -> ChangeResult:
        """Lost or damaged parcel: ship the same items again, at no charge."""
        if request.change_id in self._state.changes:
            return self._state.changes[request.change_id]
        async with self._lock:
            step = f"change:{request.change_id}"
            route = await self._route(
                [
                    RoutingLineData(
                        i.order_line_id,
                        self._ledger.lines[i.order_line_id].line.sku,
                        i.quantity,
                    )
                    for i in request.lines
                ],
                f"reship:{request.change_id}",
            )
            if route.unallocated:
                for fo in route.fulfillment_orders:
                    await self._cancel_fo(fo.fulfillment_order_id, "reship could not be placed")
                raise ApplicationError(
                    "no location can ship "
                    + ", ".join(f"{u.quantity} x {u.sku}" for u in route.unallocated),
                    type="FAILED_PRECONDITION",
                )
            for fo in route.fulfillment_orders:
                self._ledger.add_fulfillment_order(fo, no_charge=True)
            result = ChangeResult(
                change_id=request.change_id,
                kind="reship",
                summary=f"Reshipping {sum(i.quantity for i in request.lines)} unit(s) at no "
                f"charge: {request.reason or 'parcel lost'}",
                lines=request.lines,
                fulfillment_order_ids=[fo.fulfillment_order_id for fo in route.fulfillment_orders],
            )
            await self._progress(
                "", "change.reship", result.summary, actor=request.actor, step=step
            )
            result.order_status = self._state.status
            self._state.changes[request.change_id] = result
            self._revision += 1
            return result

    @reship_items.validator
    def _validate_reship(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: self._check_reship(request))

    def _check_reship(self, request: ChangeRequest) -> None:
        ledger = self._ledger
        if not request.lines:
            raise ChangeRefused("lines: at least one line to reship", "INVALID_ARGUMENT")
        for i, item in enumerate(request.lines):
            buckets = ledger.lines.get(item.order_line_id)
            if buckets is None or item.quantity <= 0:
                raise ChangeRefused(
                    f"lines[{i}]: unknown line or quantity <= 0", "INVALID_ARGUMENT"
                )
            if item.quantity > buckets.fulfilled:
                raise ChangeRefused(
                    f"lines[{i}]: only {buckets.fulfilled} unit(s) of {buckets.line.sku} shipped"
                )

    @workflow.update(name=ADD_ITEMS_UPDATE)
    async def add_items(self, request: ChangeRequest) -> ChangeResult:
        """New lines or more units of existing ones, before anything shipped: routed and
        reserved first, then the difference authorized on the order's payment methods. When
        a unit finds no location or the payment is declined, the fulfillment orders just made
        are canceled and the change refused: nothing stays reserved, held or changed."""
        if request.change_id in self._state.changes:
            return self._state.changes[request.change_id]
        async with self._lock:
            order, ledger = self._order, self._ledger
            try:
                # The state may have moved on while this waited for the lock.
                self._check_adding_allowed(now=True)
                plan = self._plan_add_items(request)
            except ChangeRefused as refused:
                raise _refuse(refused) from None
            step = f"change:{request.change_id}"
            # Safe to await: the lock keeps shipments and other changes out until this ends.
            route = await self._route(
                plan.routing_lines(), f"add:{request.change_id}", plan.new_lines()
            )
            if route.unallocated:
                await self._cancel_placed(route, "added items could not be placed")
                raise ApplicationError(
                    "no location can ship "
                    + ", ".join(f"{u.quantity} x {u.sku}" for u in route.unallocated)
                    + "; nothing was added",
                    type="FAILED_PRECONDITION",
                )
            amount = plan.total_minor
            if amount > 0:
                declined = await self._authorize_addition(amount, request.change_id)
                if declined:
                    await self._cancel_placed(route, "payment for added items declined")
                    raise ApplicationError(
                        f"payment of {self._money(amount)} for the added items was declined "
                        f"({declined}); nothing was added",
                        type="FAILED_PRECONDITION",
                    )
            grand_total = order.grand_total_minor + amount
            result = ChangeResult(
                change_id=request.change_id,
                kind="add_items",
                summary=f"Added {plan.units} unit(s) ({len(plan.new_lines())} new line(s)) for "
                f"{self._money(amount)}; authorized {self._money(amount)} more, order total now "
                f"{self._money(grand_total)}: {request.reason or 'items added'}",
                lines=plan.items(),
                fulfillment_order_ids=[fo.fulfillment_order_id for fo in route.fulfillment_orders],
                authorized_minor=amount,
                grand_total_minor=grand_total,
            )
            try:
                await self._progress(
                    "",
                    "change.add_items",
                    result.summary,
                    [
                        LineChange(line.order_line_id, allocated=line.quantity)
                        for fo in route.fulfillment_orders
                        for line in fo.lines
                    ],
                    actor=request.actor,
                    step=step,
                    added_lines=plan.additions(),
                )
            except ActivityError:
                # Capture refused the order's new record: take the reservations back.
                await self._cancel_placed(route, "added items could not be recorded")
                raise
            # The order as it is now: its lines (ledger and input agree) and grand total.
            ledger.apply_add_items(plan)
            position = {line.order_line_id: i for i, line in enumerate(order.lines)}
            for units in plan.added:
                if units.new_line:
                    order.lines.append(units.line)
                else:
                    order.lines[position[units.line.order_line_id]] = units.line
            order.grand_total_minor = grand_total
            for fo in route.fulfillment_orders:
                ledger.add_fulfillment_order(fo)
            # The progress above went out before the total and locations moved.
            if workflow.patched(OPERATOR_ATTRIBUTES_PATCH):
                self._publish()
            result.order_status = self._state.status
            self._state.changes[request.change_id] = result
            self._revision += 1
            return result

    @add_items.validator
    def _validate_add_items(self, request: ChangeRequest) -> None:
        def check() -> None:
            self._check_adding_allowed(now=False)
            self._plan_add_items(request)

        self._validate_with(request, check)

    def _check_adding_allowed(self, *, now: bool) -> None:
        """Refuse (ChangeRefused) adding items to an order in a state that does not allow it.
        `now`: under the lock, where the payment must be authorized already; before it, an
        order whose lifecycle has begun is authorized by the time the lock is free."""
        if self._done or self._state.status == CANCELED:
            raise ChangeRefused(
                f"order is {self._state.status if not self._done else 'closed'}; no more changes"
            )
        if self._waiting_on:
            raise ChangeRefused(
                f"order is on hold for process exception {self._waiting_on}; resolve it first"
            )
        if (not self._authorized) if now else self._state.status == PENDING:
            raise ChangeRefused("the order's payment is not authorized yet; add items once it is")

    def _plan_add_items(self, request: ChangeRequest) -> AddItemsPlan:
        return self._ledger.plan_add_items(
            self._order.order_id,
            request.change_id,
            request.new_lines,
            request.increases,
            [g.delivery_group_id for g in self._order.delivery_groups],
        )

    async def _authorize_addition(self, amount: int, change_id: str) -> str:
        """Hold `amount` more on the order's payment methods, as an authorization of its own;
        returns why it was declined ("" when approved)."""
        order = self._order
        try:
            auth: AuthorizeResult = await self._activity(
                names.AUTHORIZE_PAYMENT,
                AuthorizeInput(
                    order_id=order.order_id,
                    idempotency_key=f"{order.order_id}:authorize:add:{change_id}",
                    payment_method=order.payment_method,
                    amount_minor=amount,
                    currency=order.currency,
                    additional_payment_methods=order.additional_payment_methods,
                ),
                result_type=AuthorizeResult,
            )
        except ActivityError as refused:  # e.g. the payment method is no longer valid
            return f"payment refused: {refused.cause or refused}"
        return "" if auth.approved else auth.decline_reason or "declined"

    async def _cancel_placed(self, route: RouteResult, reason: str) -> None:
        """Undo a routing the workflow will not keep: its reservations are released."""
        for fo in route.fulfillment_orders:
            await self._cancel_fo(fo.fulfillment_order_id, reason)

    @workflow.update(name=RETURN_UPDATE)
    async def return_items(self, request: ChangeRequest) -> ChangeResult:
        """Open a return order (RMA); refund at once when it is a refund without return."""
        if request.change_id in self._state.changes:
            return self._state.changes[request.change_id]
        async with self._lock:
            return await self._open_return(request, exchange=False)

    @return_items.validator
    def _validate_return(self, request: ChangeRequest) -> None:
        def check() -> None:
            self._check_return_window()
            self._ledger.plan_return(request.lines)

        self._validate_with(request, check)

    async def _open_return(
        self, request: ChangeRequest, *, exchange: bool, record: bool = True
    ) -> ChangeResult:
        ledger, order = self._ledger, self._order
        try:
            plan = ledger.plan_return(request.lines)
        except ChangeRefused as refused:
            raise _refuse(refused) from None
        step = f"change:{request.change_id}"
        return_order_id = f"{order.order_id}-R{len(self._state.returns) + 1}"
        await self._activity(
            names.CREATE_RETURN_ORDER,
            ReturnOrderInput(
                order.order_id,
                f"{order.order_id}:rma:{request.change_id}",
                return_order_id,
                request.reason,
                plan,
            ),
        )
        rma = ReturnOrder(
            return_order_id,
            {i.order_line_id: i.quantity for i in plan},
            fee_minor=request.return_fee_minor,
            exchange=exchange,
        )
        self._state.returns[return_order_id] = rma
        for item in plan:
            ledger.lines[item.order_line_id].return_initiated += item.quantity
        result = ChangeResult(
            change_id=request.change_id,
            kind="exchange" if exchange else "return",
            summary=f"Return {return_order_id} opened for {sum(i.quantity for i in plan)} unit(s): "
            f"{request.reason or 'no reason given'}",
            lines=plan,
            return_order_id=return_order_id,
        )
        if request.refund_without_return and not exchange:
            memo, refund = await self._give_back(
                self._memo(
                    step,
                    reason=f"refund without return: {request.reason}",
                    kind="return",
                    lines=ledger.credit_lines_for_return(plan),
                    fee_minor=request.return_fee_minor,
                ),
                step,
            )
            rma.refunded_up_front = True
            rma.fee_charged = True
            result.credit_memo_id = memo.credit_memo_id
            result.credited_minor = memo.total_minor
            result.refunded_minor = refund.refunded_minor
            result.summary += f"; refunded {self._money(memo.total_minor)} without return"
        if not record:  # the caller adds to the change, then records it
            return result
        await self._progress(
            "",
            "change.return" if not exchange else "change.exchange",
            result.summary,
            [LineChange(i.order_line_id, return_initiated=i.quantity) for i in plan],
            actor=request.actor,
            step=step,
        )
        result.order_status = self._state.status
        self._state.changes[request.change_id] = result
        self._revision += 1
        return result

    @workflow.update(name=RECEIVE_RETURN_UPDATE)
    async def receive_return(self, request: ChangeRequest) -> ChangeResult:
        """Items came back: accepted ones are refunded (less any return fee), rejected ones
        go back to the shopper."""
        if request.change_id in self._state.changes:
            return self._state.changes[request.change_id]
        async with self._lock:
            ledger, order = self._ledger, self._order
            rma = self._state.returns[request.return_order_id]
            step = f"change:{request.change_id}"
            await self._activity(
                names.RECORD_RETURN_RECEIPT,
                ReceiptInput(
                    order.order_id,
                    f"{order.order_id}:receipt:{request.change_id}",
                    rma.return_order_id,
                    request.lines,
                    request.rejected_lines,
                    request.reason,
                ),
            )
            for item in [*request.lines, *request.rejected_lines]:
                rma.received[item.order_line_id] = (
                    rma.received.get(item.order_line_id, 0) + item.quantity
                )
            result = ChangeResult(
                change_id=request.change_id,
                kind="receive_return",
                summary="",
                lines=request.lines,
                return_order_id=rma.return_order_id,
            )
            accepted_units = sum(i.quantity for i in request.lines)
            refund_lines = request.lines if not rma.exchange else []
            # An exchange that ships on receipt: replacements for what was accepted; when they
            # cannot ship, the accepted units are refunded instead.
            if (
                rma.replacements
                and request.lines
                and not await self._replace_on_receipt(rma, request, result)
            ):
                refund_lines = request.lines
            if refund_lines and not rma.refunded_up_front:
                fee = 0 if rma.fee_charged else rma.fee_minor
                rma.fee_charged = True
                memo, refund = await self._give_back(
                    self._memo(
                        step,
                        reason=f"return {rma.return_order_id} received",
                        kind="return",
                        lines=ledger.credit_lines_for_return(refund_lines),
                        fee_minor=fee,
                    ),
                    step,
                )
                result.credit_memo_id = memo.credit_memo_id
                result.credited_minor += memo.total_minor
                result.refunded_minor += refund.refunded_minor
            for item in request.lines:
                ledger.lines[item.order_line_id].returned += item.quantity
            for item in request.rejected_lines:
                ledger.lines[item.order_line_id].return_initiated -= item.quantity
            result.summary = (
                f"Return {rma.return_order_id}: received {accepted_units} unit(s) accepted, "
                f"{sum(i.quantity for i in request.rejected_lines)} rejected"
                + result.summary
                + (
                    f"; refunded {self._money(result.refunded_minor)}"
                    if result.refunded_minor
                    else ""
                )
            )
            await self._progress(
                "",
                "return.received",
                result.summary,
                [LineChange(i.order_line_id, returned=i.quantity) for i in request.lines]
                + [
                    LineChange(i.order_line_id, return_initiated=-i.quantity)
                    for i in request.rejected_lines
                ],
                actor=request.actor,
                step=step,
            )
            result.order_status = self._state.status
            self._state.changes[request.change_id] = result
            self._revision += 1
            return result

    async def _replace_on_receipt(
        self, rma: ReturnOrder, request: ChangeRequest, result: ChangeResult
    ) -> bool:
        """Ship the replacements of what an exchange's receipt accepted and settle the price
        difference; False (nothing reserved or charged) when they cannot ship or the
        difference is declined."""
        change_id = request.change_id
        route = await self._place_replacements(change_id, request.lines, rma.replacements)
        if route is None:
            result.summary = "; no location can ship the replacement, refunded instead"
            return False
        difference = self._exchange_difference(request.lines, rma.replacements)
        if difference > 0:
            try:
                result.charged_minor = await self._charge_difference(
                    difference, route.fulfillment_orders[0], change_id
                )
            except ApplicationError as declined:
                await self._cancel_replacements(route, "the price difference was declined")
                result.summary = f"; {declined.message}, refunded instead"
                return False
        await self._ship_replacements(
            route, request.lines, difference, f"change:{change_id}", result
        )
        return True

    @receive_return.validator
    def _validate_receipt(self, request: ChangeRequest) -> None:
        self._validate_change(request)
        rma = self._state.returns.get(request.return_order_id)
        if rma is None:
            raise ApplicationError(
                f"return_order_id: no return {request.return_order_id!r} on this order",
                type="NOT_FOUND",
            )
        received: dict[str, int] = {}
        for item in [*request.lines, *request.rejected_lines]:
            if item.quantity <= 0:
                raise ApplicationError("quantities must be > 0", type="INVALID_ARGUMENT")
            received[item.order_line_id] = received.get(item.order_line_id, 0) + item.quantity
        if not received:
            raise ApplicationError("lines: nothing received", type="INVALID_ARGUMENT")
        for line_id, quantity in received.items():
            if quantity > rma.outstanding(line_id):
                raise ApplicationError(
                    f"return {rma.return_order_id} expects {rma.outstanding(line_id)} more unit(s) "
                    f"of line {line_id}, not {quantity}",
                    type="FAILED_PRECONDITION",
                )

    @workflow.update(name=EXCHANGE_UPDATE)
    async def exchange_items(self, request: ChangeRequest) -> ChangeResult:
        """A return plus replacements, which ship at once (or, by the deployment's setting, when
        the return is received); the price difference is charged or refunded as they ship.
        The replacements are placed first, so an exchange that cannot ship changes nothing."""
        if request.change_id in self._state.changes:
            return self._state.changes[request.change_id]
        async with self._lock:
            try:
                replacements = self._check_exchange(request)
            except ChangeRefused as refused:  # the state moved on while this waited
                raise _refuse(refused) from None
            if self._order.exchange_ships_on_receipt:
                result = await self._open_return(request, exchange=True, record=False)
                self._state.returns[result.return_order_id].replacements = replacements
                result.summary += "; the replacement ships once the return is received"
                return await self._record_exchange(request, result, "change.exchange")
            step = f"change:{request.change_id}"
            route = await self._place_replacements(request.change_id, request.lines, replacements)
            if route is None:
                raise ApplicationError(
                    "no location can ship the replacement "
                    + ", ".join(
                        f"{i.quantity} x {replacements[i.order_line_id].sku}" for i in request.lines
                    ),
                    type="FAILED_PRECONDITION",
                )
            difference = self._exchange_difference(request.lines, replacements)
            charged = 0
            if difference > 0:
                try:
                    charged = await self._charge_difference(
                        difference, route.fulfillment_orders[0], request.change_id
                    )
                except ApplicationError:
                    await self._cancel_replacements(route, "the price difference was declined")
                    raise
            result = await self._open_return(request, exchange=True, record=False)
            result.charged_minor = charged
            await self._ship_replacements(route, request.lines, difference, step, result)
            return await self._record_exchange(request, result, "change.exchange")

    async def _record_exchange(
        self, request: ChangeRequest, result: ChangeResult, kind: str
    ) -> ChangeResult:
        await self._progress(
            "",
            kind,
            result.summary,
            [LineChange(i.order_line_id, return_initiated=i.quantity) for i in request.lines],
            actor=request.actor,
            step=f"change:{request.change_id}",
        )
        result.order_status = self._state.status
        self._state.changes[request.change_id] = result
        self._revision += 1
        return result

    def _exchange_difference(
        self, items: list[ItemQuantity], replacements: dict[str, Replacement]
    ) -> int:
        """Replacements' price less the returned units' exact share (positive: the shopper
        owes it)."""
        ledger = self._ledger
        returned = sum(
            line_share_minor(
                ledger.lines[i.order_line_id].line,
                ledger.lines[i.order_line_id].credited_for_return,
                i.quantity,
            )
            for i in items
        )
        dearer = sum(replacements[i.order_line_id].unit_price_minor * i.quantity for i in items)
        return dearer - returned

    async def _place_replacements(
        self, change_id: str, items: list[ItemQuantity], replacements: dict[str, Replacement]
    ) -> RouteResult | None:
        """Route and reserve replacements for `items`; None (and nothing reserved) when some
        cannot be placed."""
        route = await self._route(
            [
                RoutingLineData(
                    f"{i.order_line_id}:exchange:{change_id}",
                    replacements[i.order_line_id].sku,
                    i.quantity,
                )
                for i in items
            ],
            f"exchange:{change_id}",
        )
        if route.unallocated:
            await self._cancel_replacements(route, "the replacement could not be placed")
            return None
        return route

    async def _cancel_replacements(self, route: RouteResult, reason: str) -> None:
        for fo in route.fulfillment_orders:
            await self._cancel_fo(fo.fulfillment_order_id, reason)

    async def _ship_replacements(
        self,
        route: RouteResult,
        items: list[ItemQuantity],
        difference: int,
        step: str,
        result: ChangeResult,
    ) -> None:
        """The replacements are on their way at no charge; refund the returned units' share
        beyond a cheaper replacement (a dearer one was charged before)."""
        ledger = self._ledger
        for item in items:
            ledger.lines[item.order_line_id].credited_for_return += item.quantity
        for fo in route.fulfillment_orders:
            ledger.add_fulfillment_order(fo, no_charge=True)
        if difference < 0:
            memo, refund = await self._give_back(
                self._memo(
                    step,
                    reason="exchange for a cheaper item",
                    kind="appeasement",
                    appeasement_minor=-difference,
                ),
                step,
            )
            result.credit_memo_id = memo.credit_memo_id
            result.credited_minor = memo.total_minor
            result.refunded_minor = refund.refunded_minor
        result.fulfillment_order_ids += [fo.fulfillment_order_id for fo in route.fulfillment_orders]
        money = (
            f"charged {self._money(difference)}" if difference > 0
            else f"refunded {self._money(-difference)}" if difference < 0
            else "no money moves"
        )  # fmt: skip
        result.summary += f"; replacement ships now, {money}"

    @exchange_items.validator
    def _validate_exchange(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: self._check_exchange(request))

    def _check_exchange(self, request: ChangeRequest) -> dict[str, Replacement]:
        """Refuse an exchange the order does not allow; returns each line's replacement."""
        self._check_return_window()
        self._ledger.plan_return(request.lines)
        if len(request.replacement_skus) != len(request.lines) or len(
            request.replacement_unit_prices_minor
        ) != len(request.lines):
            raise ChangeRefused(
                "replacement_skus and replacement_unit_prices_minor: one per line",
                "INVALID_ARGUMENT",
            )
        if any(price < 0 for price in request.replacement_unit_prices_minor):
            raise ChangeRefused("replacement_unit_prices_minor: must be >= 0", "INVALID_ARGUMENT")
        return {
            item.order_line_id: Replacement(sku, price)
            for item, sku, price in zip(
                request.lines,
                request.replacement_skus,
                request.replacement_unit_prices_minor,
                strict=True,
            )
        }

    async def _charge_difference(
        self, amount: int, fo: FulfillmentOrderData, change_id: str
    ) -> int:
        order = self._order
        auth: AuthorizeResult = await self._activity(
            names.AUTHORIZE_PAYMENT,
            AuthorizeInput(
                order_id=order.order_id,
                idempotency_key=f"{order.order_id}:authorize:exchange:{change_id}",
                payment_method=order.payment_method,
                amount_minor=amount,
                currency=order.currency,
            ),
            result_type=AuthorizeResult,
        )
        if not auth.approved:
            raise ApplicationError(
                f"the price difference was declined: {auth.decline_reason}",
                type="FAILED_PRECONDITION",
            )
        invoice: InvoiceResult = await self._activity(
            names.CREATE_INVOICE,
            InvoiceInput(
                order_id=order.order_id,
                fulfillment_order_id=fo.fulfillment_order_id,
                idempotency_key=f"{order.order_id}:invoice:exchange:{change_id}",
                currency=order.currency,
                lines=[
                    ChargeLineData(f"exchange:{change_id}", fo.lines[0].sku, 1, amount, 0, 0, 1, 0)
                ],
                shipping_minor=0,
            ),
            result_type=InvoiceResult,
        )
        self._state.invoiced_minor += invoice.total_minor
        captured = await self._capture(invoice)
        self._state.captured_minor += captured
        return captured

    # ---- queries -------------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> str:
        """The order status as the workflow sees it."""
        return self._state.status

    @workflow.query(name=STATE_QUERY)
    def state(self) -> OrderState:
        """The order's ledger as the workflow holds it: buckets per line, money charged and
        given back, fulfillment orders, open returns and process exceptions. Reads only (a
        copy of everything), so asking changes nothing and replays the same."""
        ledger, order = self._ledger, self._order
        exceptions = [replace(e) for e in self._state.exceptions]
        closes = (
            self._state.delivered_at + timedelta(seconds=order.timers.return_window_seconds)
            if self._state.delivered_at is not None
            else None
        )
        return OrderState(
            order_id=order.order_id,
            channel_order_ref=order.channel_order_ref,
            channel=order.channel,
            status=self._state.status,
            currency=order.currency,
            grand_total_minor=order.grand_total_minor,
            authorized=self._authorized,
            invoiced_minor=self._state.invoiced_minor,
            captured_minor=self._state.captured_minor,
            credited_minor=self._state.credited_minor,
            refunded_minor=self._state.refunded_minor,
            released_minor=self._state.released_minor,
            goodwill_pending_minor=self._state.goodwill_pending_order
            + sum(self._state.goodwill_pending_by_line.values()),
            lines=[
                LineState(
                    order_line_id=line_id,
                    sku=b.line.sku,
                    ordered=b.ordered,
                    canceled=b.canceled,
                    allocated=b.allocated,
                    fulfilled=b.fulfilled,
                    return_initiated=b.return_initiated,
                    returned=b.returned,
                    invoiced=b.invoiced,
                    available_to_cancel=b.available_to_cancel,
                    available_to_return=b.available_to_return,
                )
                for line_id, b in ledger.lines.items()
            ],
            fulfillment_orders=[
                FulfillmentOrderState(
                    fulfillment_order_id=fo_id,
                    location_id=fo.location_id,
                    delivery_group_id=fo.delivery_group_id,
                    open_units=sum(ledger.open_units.get(fo_id, {}).values()),
                    no_charge=fo_id in ledger.no_charge,
                )
                for fo_id, fo in ledger.fulfillment_orders.items()
            ],
            undelivered_shipments=sorted(ledger.undelivered),
            open_returns=[
                ReturnState(
                    return_order_id=r.return_order_id,
                    expected=dict(r.expected),
                    received=dict(r.received),
                    exchange=r.exchange,
                    refunded_up_front=r.refunded_up_front,
                )
                for r in self._state.returns.values()
                if r.open()
            ],
            open_exceptions=[e for e in exceptions if e.status in ("waiting", "escalated")],
            exceptions=exceptions,
            waiting_on=self._waiting_on,
            delivered_at=self._state.delivered_at,
            return_window_closes_at=closes,
            changes=len(self._state.changes),
            runs=self._state.runs,
        )

    @workflow.query(name=PREVIEW_QUERY)
    def preview_change(self, request: ChangeRequest) -> ChangeResult:
        """What a cancel, return or appeasement would do, computed the same way, nothing kept."""
        ledger = self._ledger
        result = ChangeResult(
            request.change_id, request.kind, "", lines=request.lines, preview=True
        )
        try:
            if request.kind == "cancel":
                plan = ledger.plan_cancel(request.lines)
                result.lines = plan
                result.credited_minor = sum(
                    line_share_minor(
                        ledger.lines[c.order_line_id].line, c.first_unit, c.quantity_to_credit
                    )
                    for c in ledger.credit_lines_for_cancel(plan)
                )
            elif request.kind == "appease":
                result.credited_minor, _ = self._appeasement_amount(request)
            elif request.kind == "return":
                self._check_return_window()
                plan = ledger.plan_return(request.lines)
                result.credited_minor = (
                    sum(
                        line_share_minor(
                            ledger.lines[i.order_line_id].line,
                            ledger.lines[i.order_line_id].credited_for_return,
                            i.quantity,
                        )
                        for i in plan
                    )
                    - request.return_fee_minor
                )
            elif request.kind == "add_items":
                return self._preview_add_items(request, result)
            elif request.kind == "exchange":
                return self._preview_exchange(request, result)
            elif request.kind == "reship":
                self._check_reship(request)
                units = sum(i.quantity for i in request.lines)
                result.summary = f"would ship {units} unit(s) again at no charge"
                result.order_status = self._state.status
                return result
            else:
                raise ChangeRefused(f"kind: no preview for {request.kind!r}", "INVALID_ARGUMENT")
        except ChangeRefused as refused:
            result.summary = f"refused: {refused.message}"
            result.refusal_code = refused.code
            return result
        result.summary = f"would give back {self._money(result.credited_minor)}"
        result.order_status = self._state.status
        return result

    def _preview_exchange(self, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
        """What an exchange would charge or refund (whether the replacements are in stock is
        known only when routing places them)."""
        difference = self._exchange_difference(request.lines, self._check_exchange(request))
        if difference > 0:
            result.charged_minor = difference
            money = f"would charge {self._money(difference)}"
        elif difference < 0:
            result.credited_minor = -difference
            money = f"would refund {self._money(-difference)}"
        else:
            money = "no money would move"
        ships = "when the return is received" if self._order.exchange_ships_on_receipt else "now"
        result.summary = f"{money}; the replacement would ship {ships}, stock permitting"
        result.order_status = self._state.status
        return result

    def _preview_add_items(self, request: ChangeRequest, result: ChangeResult) -> ChangeResult:
        """What adding items would add and authorize (stock is only known by routing)."""
        self._check_adding_allowed(now=False)
        plan = self._plan_add_items(request)
        result.lines = plan.items()
        result.authorized_minor = plan.total_minor
        result.grand_total_minor = self._order.grand_total_minor + plan.total_minor
        result.summary = (
            f"would add {plan.units} unit(s) ({len(plan.new_lines())} new line(s)) and "
            f"authorize {self._money(plan.total_minor)} more; order total "
            f"{self._money(result.grand_total_minor)}"
        )
        result.order_status = self._state.status
        return result

    # ---- helpers -------------------------------------------------------------------------------

    def _validate_with(self, request: ChangeRequest, check: Callable[[], object]) -> None:
        """An Update validator: the checks every change passes, then `check`, whose
        ChangeRefused becomes the refusal (with its status) before anything enters history."""
        self._validate_change(request)
        try:
            check()
        except ChangeRefused as refused:
            raise _refuse(refused) from None

    def _validate_change(self, request: ChangeRequest) -> None:
        if not request.change_id:
            raise ApplicationError("change_id: required", type="INVALID_ARGUMENT")
        if self._done or self._state.status == CANCELED:
            raise ApplicationError(
                f"order is {self._state.status if not self._done else 'closed'}; no more changes",
                type="FAILED_PRECONDITION",
            )
        if self._waiting_on:
            raise ApplicationError(
                f"order is on hold for process exception {self._waiting_on}; resolve it first",
                type="FAILED_PRECONDITION",
            )

    def _check_return_window(self) -> None:
        if self._state.delivered_at is None:
            return  # per-line checks refuse what has not shipped
        closes = self._state.delivered_at + timedelta(
            seconds=self._order.timers.return_window_seconds
        )
        if workflow.now() > closes:
            raise ChangeRefused(f"return window closed on {closes:%Y-%m-%d}")

    async def _route(
        self, lines: list[RoutingLineData], step: str, new_lines: list[LifecycleLine] | None = None
    ) -> RouteResult:
        """Place `lines` (of the order's lines, or of `new_lines` not on it yet)."""
        order = self._order
        known = [*order.lines, *(new_lines or [])]
        group_of = {line.order_line_id: line.delivery_group_id for line in known}
        groups = []
        for group in order.delivery_groups:
            mine = [
                line
                for line in lines
                if group_of.get(line.order_line_id.split(":")[0]) == group.delivery_group_id
            ]
            if mine:
                groups.append(
                    RoutingGroupData(
                        group.delivery_group_id, group.address, mine, group.delivery_method
                    )
                )
        result: RouteResult = await self._activity(
            names.CREATE_FULFILLMENT_ORDERS,
            RouteInput(order.order_id, f"{order.order_id}:route:{step}", groups),
            result_type=RouteResult,
        )
        return result

    async def _cancel_fo(self, fulfillment_order_id: str, reason: str) -> None:
        await self._activity(
            names.CANCEL_FULFILLMENT_ORDER,
            CancelFulfillmentOrderInput(
                fulfillment_order_id, f"{fulfillment_order_id}:cancel", reason
            ),
        )

    async def _activity(
        self,
        name: str,
        arg: Any,
        *,
        result_type: type | None = None,
        schedule_to_close_timeout: timedelta | None = None,
    ) -> Any:
        """Run one activity with the lifecycle's timeout and retry policy. A refusal goes up
        as it came, and what the step was asked is kept for the process exception it raises."""
        try:
            return await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                schedule_to_close_timeout=schedule_to_close_timeout,
                retry_policy=RETRY,
                # What the step does for this order, shown on its event in the Temporal UI.
                summary=activity_summary(name, arg, self._order.currency),
            )
        except ActivityError:
            self._refused_step_input = _as_json(arg)
            raise

    def _money(self, amount_minor: int) -> str:
        return format_minor(amount_minor, self._order.currency)

    def _publish(self) -> None:
        """Upsert the search attributes that no longer say what the order is (none when all
        still do, so a step that changes nothing adds nothing to history)."""
        order = self._order
        wanted = search_attributes(
            status=self._state.status,
            channel=order.channel,
            total_minor=order.grand_total_minor,
            currency=order.currency,
            on_hold=bool(self._waiting_on),
            location_ids=[fo.location_id for fo in self._ledger.fulfillment_orders.values()],
        )
        current = workflow.info().typed_search_attributes
        changed = [
            pair.key.value_set(pair.value) for pair in wanted if current.get(pair.key) != pair.value
        ]
        if changed:
            workflow.upsert_search_attributes(changed)

    async def _progress(
        self,
        status: str,
        kind: str,
        summary: str,
        line_changes: list[LineChange] | None = None,
        actor: str = "workflow",
        step: str = "",
        added_lines: list[LineAdditionData] | None = None,
    ) -> None:
        """Tell capture (the order's record) and the search attributes what just happened."""
        if workflow.patched(OPERATOR_ATTRIBUTES_PATCH):
            self._state.status = status or self._state.status
            self._publish()
        elif status:
            self._state.status = status
            workflow.upsert_search_attributes(
                [ORDER_STATUS.value_set(status), ORDER_CHANNEL.value_set(self._order.channel)]
            )
        await self._activity(
            names.RECORD_ORDER_PROGRESS,
            ProgressInput(
                order_id=self._order.order_id,
                idempotency_key=f"{self._order.order_id}:progress:{step or kind}",
                status=status,
                kind=kind,
                summary=summary,
                actor=actor,
                line_changes=line_changes or [],
                added_lines=added_lines or [],
                currency=self._order.currency,
            ),
        )
        workflow.logger.info(
            kind, extra={"order_id": self._order.order_id, "status": self._state.status}
        )
