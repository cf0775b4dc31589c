"""OrderLifecycle: one durable workflow per order (`order:<order_id>`).

It decides what happens next; the services do the work and keep the records. Every side
effect goes through an activity with an idempotency key derived here from the order and the
step, so retries have one effect. Changes to an order in flight (cancel, return, exchange,
reship, appeasement, resolving a process exception) arrive as Temporal Updates: validated
before they enter history, serialized with the lifecycle by one lock, answered with the result.
The workflow file has no I/O of its own.

This class holds the lifecycle itself (run → authorize → allocate → fulfil → settle → serve
until the return window closes) and declares the signal, Updates and queries. Each change's
body lives in `workflows/changes/`, the money rules in `workflows/billing.py`, the quantity
rules in `workflows/ledger.py`; the class gives them `Steps` (it is one).

Longer than 800 lines on purpose: a Temporal workflow's signal, Updates, validators and queries
must be declared on its class, and the steps they serialize with (events, holds, progress) are
the lifecycle itself; splitting them further would scatter one state machine over files.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, RetryState
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

from oms_platform.converter import decode

# Modules are passed through by their full names: under the SDK's default sandbox (the
# workflow tests' runner; the worker's own passes the whole package through),
# `from workflows import x` inside the block would load `x` afresh in every run (the sandbox
# re-imports the `workflows` package this module lives in), executing its body (dataclasses
# and all) again for each run and keeping a copy per cached workflow.
with workflow.unsafe.imports_passed_through():
    import workflows.activity_names as names
    import workflows.billing as billing
    import workflows.changes.add_items as adding
    import workflows.changes.address as addressing
    import workflows.changes.appease as appeasing
    import workflows.changes.backorders as backorders
    import workflows.changes.cancel as canceling
    import workflows.changes.exchange as exchanging
    import workflows.changes.pickup as pickup
    import workflows.changes.renewals as renewals
    import workflows.changes.reship as reshipping
    import workflows.changes.resolve as resolving
    import workflows.changes.returns as returns
    import workflows.changes.steps as steps
    import workflows.order_events as order_events
    import workflows.promises as promises
    import workflows.subscription_types as subscriptions
    import workflows.versions as versions
    from workflows.ledger import ChangeRefused, Ledger
    from workflows.search_attributes import ORDER_CHANNEL, ORDER_STATUS
    from workflows.state import LifecycleState
    from workflows.types import (
        ADD_ITEMS_UPDATE,
        ADDRESS_CHANGE_UPDATE,
        ALLOCATED,
        APPEASE_UPDATE,
        AUTHORIZED,
        CANCEL_UPDATE,
        CANCELED,
        EXCHANGE_UPDATE,
        FULFILLED,
        FULFILLMENT_EVENT_SIGNAL,
        ON_HOLD,
        PARTIALLY_SHIPPED,
        PAST_DUE,
        PREVIEW_QUERY,
        PROCESSING,
        RECEIVE_RETURN_UPDATE,
        RESHIP_UPDATE,
        RESOLVE_EXCEPTION_UPDATE,
        RETURN_UPDATE,
        SHIPPED,
        STATE_QUERY,
        STATUS_QUERY,
        WORKFLOW_NAME,
        AuthorizeResult,
        CanceledFulfillmentOrders,
        CancelOrderFulfillmentInput,
        ChangeRequest,
        ChangeResult,
        DeliveryGroupAddressData,
        EscalateInput,
        EventData,
        ExceptionRecord,
        FulfillmentEvent,
        FulfillmentOrderData,
        FulfillmentOrderState,
        InvoiceAndCaptureInput,
        InvoiceAndCaptureResult,
        InvoiceInput,
        InvoiceResult,
        ItemQuantity,
        LineAdditionData,
        LineQuantityChange,
        LineState,
        OrderLifecycleInput,
        OrderLifecycleResult,
        OrderState,
        ProcessExceptionInput,
        ProgressBatchInput,
        ProgressInput,
        Resolution,
        ResolutionResult,
        ReturnState,
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


class OrderCanceled(Exception):
    """Raised inside the lifecycle when an agent's resolution cancels the order."""


# A local activity retries inside its workflow task while the wait before the next attempt is
# shorter than this; longer waits (an outage) sleep on a durable timer, so a long outage costs
# a few timers rather than a workflow task kept alive by heartbeats.
LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)


@dataclass
class _Unsent:
    """A progress report not yet sent to capture, and how a refusal of it is handled:
    `holds` (category, attached to) as `steps.attempt_step`; None raises the refusal."""

    report: ProgressInput
    holds: tuple[str, str] | None


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
            self.state = LifecycleState(ledger=Ledger.of(order).state)
        else:  # a delivered order's lifecycle, carried on from its previous run
            self.state = decode(LifecycleState, order.carried)
            self.state.runs += 1
            order = replace(order, carried=None)
        self.order = order
        self.ledger = Ledger(self.state.ledger)
        # What follows lives only while this run does: a run continues as new only when no
        # Update and no hold is in flight, so none of it needs carrying.
        # One change at a time: the lifecycle's own steps and every Update take this lock.
        self._lock = asyncio.Lock()
        self.resolutions: dict[str, Resolution] = {}
        self.waiting_on = ""
        self.done = False
        # A continued run is past delivery, so its payment was authorized long ago.
        self.authorized = self.state.runs > 1
        # Bumped by every Update, so waits that depend on open returns re-check.
        self.revision = 0
        # What the last refused step was asked, for the process exception it raises.
        self.refused_step_input = ""
        # Progress reports waiting to be sent (batched-progress), and the task sending them:
        # one sender at a time keeps capture's record in the order things happened.
        self._unsent: list[_Unsent] = []
        self._sender: asyncio.Task[Any] | None = None
        # Dunning: whether the order waits past due, and the subscription's latest "retry now
        # with this method" (kept until a retry takes it; it can arrive before the decline).
        self.past_due = False
        self.retry_request: subscriptions.RetryPayment | None = None

    # ---- the lifecycle -----------------------------------------------------------------------

    @workflow.run
    async def run(self, order: OrderLifecycleInput) -> OrderLifecycleResult:
        if order.carried is None:
            result = await self._lifecycle(order)
        else:  # a continued run: the order was delivered, keep servicing it
            result = await self._serve_and_close()
        await self._flush()
        # Let an Update that finished the order (e.g. cancel everything) send its reply.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _lifecycle(self, order: OrderLifecycleInput) -> OrderLifecycleResult:
        try:
            try:
                async with self._section():
                    if self.ledger.all_canceled():
                        # A cancel of everything reached the workflow with its start, before
                        # this run authorized or reserved anything. A lost earlier attempt of
                        # this task may have: release it (patched; runs before it stop here).
                        if self.has_change(versions.RELEASE_BEFORE_START):
                            await self._release_before_start()
                        return self._result(CANCELED, "canceled before processing began")
                    await self.progress(
                        PROCESSING,
                        "lifecycle.started",
                        "Order lifecycle started",
                        events=[
                            order_events.order_status(
                                "order.processing", self.state.status, PROCESSING
                            )
                        ],
                    )
                    if order.fraud_reasons:
                        await self._fraud_review(order)
                    await self._authorize(order)
                    await self._allocate("initial")
            except ActivityError as refused:
                await self._undo(refused)
            await self._fulfil()
        except OrderCanceled as canceled:
            return self._result(CANCELED, str(canceled))
        if self.ledger.all_canceled():
            return self._result(CANCELED, "every line was canceled")
        if self.state.release_at_settlement:
            # Goodwill before charging, or a skipped invoice or capture, left part of the
            # authorization uncaptured: release it now that nothing more will be charged.
            await steps.void(
                self,
                "settled: releasing what was not charged",
                key=f"{self.order.order_id}:void:settled",
            )
        whole = f"order:{self.order.order_id}"
        await self.progress(
            FULFILLED,
            "order.fulfilled",
            "Every shipment delivered",
            holds=("fulfillment", whole),
            events=[order_events.order_status("order.fulfilled", self.state.status, FULFILLED)],
        )
        return await self._serve_and_close()

    async def _serve_and_close(self) -> OrderLifecycleResult:
        await self._service_until_the_return_window_closes()
        status = self.state.status
        await self.progress(
            "",
            "order.closed",
            "Return window closed; the order is complete",
            holds=("fulfillment", f"order:{self.order.order_id}"),
            events=[
                order_events.order_status("order.closed", status, status, "return window closed")
            ],
        )
        self.done = True
        return self._result(FULFILLED)

    async def _undo(self, refused: ActivityError) -> None:
        """A step before shipping was refused in a way retrying cannot fix: record why, then
        undo what was done in reverse (fulfillment order lines canceled, which releases their
        reservations; the authorization released and voided) and cancel the order."""
        step = refused.activity_type or "a step"
        reason = f"{step} refused: {refused.cause or refused}"
        category = "payment" if "payment" in step or "authoriz" in step else "fulfillment"
        async with self._section():
            await self._raise_exception(
                category, f"step:{step}", reason, step_input=self.refused_step_input
            )
            await self._cancel_everything(reason, authorized=self.authorized)

    async def _release_before_start(self) -> None:
        """The order was canceled whole before this run took any step, but an earlier attempt
        of the first workflow task may have routed it before the worker running it died (no
        marker of it recorded): cancel whatever fulfillment orders the order has, which
        releases their reservations, and tell the timeline of any. (The hold such an attempt
        placed was released by the cancel's credit memo, which voids what the order's
        authorizations hold.)"""
        order_id = self.order.order_id
        reason = "order canceled before processing began"
        canceled: CanceledFulfillmentOrders = await self.activity(
            names.CANCEL_ORDER_FULFILLMENT_ORDERS,
            CancelOrderFulfillmentInput(order_id, f"{order_id}:cancel-before-start", reason),
            result_type=CanceledFulfillmentOrders,
        )
        fos = canceled.fulfillment_orders
        if not fos:
            return  # the common case: nothing was routed
        await self.progress(
            "",
            "fulfillment.canceled",
            f"Canceled {len(fos)} fulfillment order(s) an interrupted first attempt had "
            "created; their reservations released",
            step="canceled:before-start",
            events=[
                order_events.fulfillment_order(
                    "fulfillment.canceled",
                    fo,
                    "canceled",
                    order_events.routed_lines(fo.lines),
                    reason,
                )
                for fo in fos
            ],
        )

    def _result(self, status: str, reason: str = "") -> OrderLifecycleResult:
        return OrderLifecycleResult(
            order_id=self.order.order_id,
            status=status,
            captured_minor=self.state.captured_minor,
            invoiced_minor=self.state.invoiced_minor,
            reason=reason,
        )

    async def _fraud_review(self, order: OrderLifecycleInput) -> None:
        reasons = "; ".join(order.fraud_reasons)
        action = await self.hold("fraud", f"order:{order.order_id}", f"Fraud hold: {reasons}")
        if action == "cancel":
            await self._cancel_everything("rejected by fraud review", authorized=False)

    async def _authorize(self, order: OrderLifecycleInput) -> None:
        amount = self._to_authorize()
        result = await self._authorize_attempt(order, amount, 1)
        attempt = 1
        if not result.approved and self._dunned():
            result, amount, attempt = await self._dun(result, amount)
        if not result.approved:
            reason = f"payment declined: {result.decline_reason}"
            await self._raise_exception(
                "payment", f"authorization:{result.authorization_id}", reason
            )
            declined = _declined(result, amount)
            await self._tell_subscription(subscriptions.PAYMENT_FAILED, attempt, reason)
            await self._cancel_everything(reason, authorized=False, events=[declined])
        self.authorized = True
        await self.progress(
            AUTHORIZED,
            "payment.authorized",
            f"Payment of {steps.money(self, amount)} authorized",
            events=[order_events.payment("payment.authorized", amount)],
        )
        await self._tell_subscription(subscriptions.PAYMENT_PAID, attempt)

    async def _authorize_attempt(
        self, order: OrderLifecycleInput, amount: int, attempt: int
    ) -> AuthorizeResult:
        """Ask payments to authorize `amount` (`steps.order_authorization`). A refusal
        retrying cannot fix cancels the order."""
        timeout = timedelta(seconds=order.timers.authorization_timeout_seconds)
        try:
            result: AuthorizeResult = await self.activity(
                names.AUTHORIZE_PAYMENT,
                steps.order_authorization(order, amount, attempt),
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
                "payment", f"order:{order.order_id}", reason, step_input=self.refused_step_input
            )
            self.past_due = False
            await self._tell_subscription(subscriptions.PAYMENT_FAILED, attempt, reason)
            await self._cancel_everything(reason, authorized=False)
            raise
        return result

    # ---- dunning: a subscription's declined payment ------------------------------------------

    def _dunned(self) -> bool:
        """Whether a decline waits past due (a subscription's order, on a run that knows)."""
        order = self.order
        return bool(order.subscription_id and order.payment_retry_seconds) and self.has_change(
            versions.DUNNING
        )

    async def _dun(
        self, declined: AuthorizeResult, amount: int
    ) -> tuple[AuthorizeResult, int, int]:
        """Wait past due and retry the payment: at each time of the schedule (seconds after
        this first decline), or at once when the subscription sends a new payment method (which
        is used from then on). Returns the approved attempt, or the last one declined after the
        schedule ran out, with its amount and number. A cancel of everything meanwhile ends
        the order (OrderCanceled)."""
        first_decline = workflow.now()
        schedule = [first_decline + timedelta(seconds=s) for s in self.order.payment_retry_seconds]
        result, attempt, due = declined, 1, 0
        while not result.approved and due < len(schedule):
            self.past_due = True
            retry_at = schedule[due]
            await self.progress(
                PAST_DUE,
                "payment.declined",
                f"Payment of {steps.money(self, amount)} declined ({result.decline_reason}); "
                f"past due, retry {due + 1} of {len(schedule)} at {retry_at.isoformat()}",
                step=f"past-due:{attempt}",
                events=[_declined(result, amount)],
            )
            await self._flush()
            await self._tell_subscription(
                subscriptions.PAYMENT_PAST_DUE,
                attempt,
                result.decline_reason,
                retry_at.isoformat(),
            )
            # Without the lock while waiting (days): a cancel must be able to end the order.
            # Safe: nothing of the payment's is held yet, and the lock is taken back before
            # the next attempt, which reads the order as the cancel left it.
            async with self._lock_released():
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self.retry_request is not None or self.ledger.all_canceled(),
                        timeout=max(retry_at - workflow.now(), timedelta(0)),
                    )
            if self.ledger.all_canceled():
                self.past_due = False
                reason = "order canceled while past due"
                await self._tell_subscription(subscriptions.PAYMENT_FAILED, attempt, reason)
                raise OrderCanceled(reason)
            request, self.retry_request = self.retry_request, None
            if request is not None:  # the subscription's new method, from now on
                self.order = replace(self.order, payment_method=request.payment_method)
            else:
                due += 1
            attempt += 1
            amount = self._to_authorize()
            result = await self._authorize_attempt(self.order, amount, attempt)
        self.past_due = False
        return result, amount, attempt

    def _to_authorize(self) -> int:
        """The order's total less what cancels before authorization gave back (nothing was
        held for it): until the payment is authorized, a cancel is the only change that
        credits anything."""
        return self.order.grand_total_minor - self.state.credited_minor

    @contextlib.asynccontextmanager
    async def _lock_released(self) -> AsyncIterator[None]:
        """Inside a section: let Updates run meanwhile, then hold the lock again."""
        self._lock.release()
        try:
            yield
        finally:
            await self._lock.acquire()

    async def _tell_subscription(
        self, outcome: str, attempt: int, reason: str = "", next_retry_at: str = ""
    ) -> None:
        """Signal a subscription's order's payment outcome to its subscription's workflow. One
        that no longer runs (canceled, or gone) is logged, never a failure of the order."""
        order = self.order
        if not order.subscription_id or not self.has_change(versions.DUNNING):
            return
        event = subscriptions.SubscriptionPaymentEvent(
            cycle=order.subscription_cycle,
            order_id=order.order_id,
            outcome=outcome,
            attempt=attempt,
            reason=reason,
            next_retry_at=next_retry_at,
        )
        handle = workflow.get_external_workflow_handle(
            subscriptions.subscription_workflow_id(order.subscription_id)
        )
        try:
            await handle.signal(subscriptions.SUBSCRIPTION_PAYMENT_SIGNAL, event)
        except FailureError as failure:
            workflow.logger.warning(
                "subscription not told of its payment",
                extra={"order_id": order.order_id, "outcome": outcome, "error": str(failure)},
            )

    @workflow.signal(name=subscriptions.RETRY_PAYMENT_SIGNAL)
    def on_retry_payment(self, request: subscriptions.RetryPayment) -> None:
        """The subscription's new payment method: a past-due order retries with it at once
        (one not yet authorized keeps it for its retry; an authorized one needs nothing)."""
        if self.authorized or not self.order.subscription_id:
            workflow.logger.info("retry_payment ignored", extra={"order_id": self.order.order_id})
            return
        self.retry_request = request

    async def _allocate(self, why: str) -> None:
        """Route what still needs a location; hold for an agent while nothing can take it."""
        ledger, order = self.ledger, self.order
        attempt = 0
        while pending := ledger.unallocated():
            attempt += 1
            # The order's checkout reservation goes with every routing of its own lines:
            # fulfillment consumes it once and routes any later attempt on availability.
            route = await steps.route(
                self, pending, f"{why}:{attempt}", reservation_id=self.order.reservation_id
            )
            for fo in route.fulfillment_orders:
                ledger.add_fulfillment_order(fo)
            if route.fulfillment_orders:
                await self.progress(
                    ALLOCATED if self.state.status in (AUTHORIZED, ON_HOLD) else "",
                    "fulfillment.allocated",
                    "; ".join(route.decisions) or "Fulfillment orders created",
                    [
                        LineQuantityChange(line.order_line_id, allocated=line.quantity)
                        for fo in route.fulfillment_orders
                        for line in fo.lines
                    ],
                    step=f"allocated:{why}:{attempt}",
                    events=order_events.allocated(route.fulfillment_orders),
                )
            if not route.unallocated:
                return
            missing = ", ".join(f"{u.quantity} x {u.sku}" for u in route.unallocated)
            action = await self.hold(
                "inventory", f"order:{order.order_id}", f"No location can ship {missing}"
            )
            if action == "skip":
                await steps.cancel_units(
                    self,
                    [ItemQuantity(u.order_line_id, u.quantity) for u in ledger.unallocated()],
                    "not available anywhere; skipped by an agent",
                    f"skip-unallocated:{why}:{attempt}",
                )
            elif action == "cancel":
                await self._cancel_everything(f"no stock for {missing}")

    async def _fulfil(self) -> None:
        """Handle warehouse and carrier events until every unit shipped and was delivered."""
        ledger = self.ledger
        while not ledger.settled():
            # Signals only append to self.state.events; events are handled here, under the lock,
            # so they never interleave with an Update's change to the same quantities.
            await self._flush()
            wake_in = None
            if renewals.promised_until(ledger):
                # Goods are awaited: keep the holds alive until their promised day, waking
                # when the next one falls due (under the lock: it may hold for an agent).
                async with self._section():
                    wake_in = await renewals.next_wait(self)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: bool(self.state.events) or ledger.settled(), timeout=wake_in
                )
            if self.state.events:
                event = self.state.events.pop(0)
                async with self._section(keep_reports=self._delivered_now):
                    await self._on_event(event)
        self.state.delivered_at = workflow.now()

    async def _service_until_the_return_window_closes(self) -> None:
        """After delivery: keep handling events (reships, replacements) and Updates (returns,
        appeasements) until the return window has closed and no return is open."""
        closes = steps.return_window_closes(self)
        assert closes is not None
        while True:
            remaining = (closes - workflow.now()).total_seconds()
            busy = any(r.open() for r in self.state.returns.values()) or not self.ledger.settled()
            if remaining <= 0 and not busy and not self.state.events:
                return
            await self._flush()
            if not self.state.events and self._history_is_long():
                await self._continue_as_new()
            seen = self.revision
            try:
                await workflow.wait_condition(
                    lambda seen=seen: bool(self.state.events) or self.revision != seen,  # type: ignore[misc]
                    timeout=timedelta(seconds=remaining) if remaining > 0 else None,
                )
            except TimeoutError:
                continue
            if not self.state.events:
                continue
            event = self.state.events.pop(0)
            async with self._section():
                await self._on_event(event)

    def _history_is_long(self) -> bool:
        """Time to start a fresh history: the server suggests it, or this run's history has
        reached the configured length."""
        if not self.has_change(versions.CONTINUE_AS_NEW):
            return False
        info = workflow.info()
        limit = self.order.timers.continue_as_new_after_events
        return info.is_continue_as_new_suggested() or (
            limit > 0 and info.get_current_history_length() >= limit
        )

    async def _continue_as_new(self) -> None:
        """Carry everything into a new run once no Update is in flight. Returns (without
        continuing) if an event arrived meanwhile: it is handled first."""
        # Safe to wait here: Updates finish (or a new one starts and is waited for too), and
        # the state is read only after the last of them.
        # A change waiting for queued events (`_after_queued_events`) would never finish:
        # an event arriving meanwhile sends the loop back to apply it.
        events_first = self.has_change(versions.QUEUED_EVENTS_FIRST)
        await workflow.wait_condition(
            lambda: (
                (workflow.all_handlers_finished() and not self._lock.locked())
                or (events_first and bool(self.state.events))
            )
        )
        await self._flush()  # normally nothing: sections and waits send theirs
        if self.state.events:
            return
        workflow.logger.info(
            "continuing as new", extra={"order_id": self.order.order_id, "runs": self.state.runs}
        )
        workflow.continue_as_new(
            replace(self.order, carried=dataclasses.asdict(self.state)),
            search_attributes=workflow.info().typed_search_attributes,
        )

    # ---- events from fulfillment --------------------------------------------------------------

    @workflow.signal(name=FULFILLMENT_EVENT_SIGNAL)
    def on_fulfillment_event(self, event: FulfillmentEvent) -> None:
        """A warehouse or carrier report, relayed from fulfillment's outbox (deduplicated)."""
        if event.event_id not in self.state.seen_events:
            bisect.insort(self.state.seen_events, event.event_id)
            self.state.events.append(event)

    async def _on_event(self, event: FulfillmentEvent) -> None:
        ledger = self.ledger
        fo = ledger.fulfillment_orders.get(event.fulfillment_order_id)
        if fo is None:
            workflow.logger.warning("event for an unknown fulfillment order")
            return
        items = [ItemQuantity(i.order_line_id, i.quantity) for i in event.items]
        if event.kind == "shipped":
            await self._on_shipped(fo, items, event)
        elif event.kind == "delivered":
            ledger.mark_delivered(event.shipment_id)
            await self.progress(
                "",
                "shipment.delivered",
                f"Shipment {event.shipment_id} delivered",
                actor="carrier",
                step=f"delivered:{event.shipment_id}",
                holds=("carrier", f"shipment:{event.shipment_id}"),
                events=[order_events.shipment("shipment.delivered", event.shipment_id, fo)],
            )
        elif event.kind in ("rejected", "moved"):
            line_changes = ledger.reroute({fo.fulfillment_order_id: items}, event.replacements)
            moved_to = ", ".join(r.location_id for r in event.replacements) or "nowhere"
            units = sum(i.quantity for i in items)
            verb = "rejected" if event.kind == "rejected" else "moved"
            attached_to = f"fulfillment_order:{fo.fulfillment_order_id}"
            # What fulfillment did: took the units off this one (which ends it when nothing is
            # left to ship) and created the replacements.
            ended = not ledger.is_open(fo.fulfillment_order_id)
            taken_off = order_events.fulfillment_order(
                "fulfillment.rejected" if verb == "rejected" else "fulfillment.rerouted",
                fo,
                ("rejected" if verb == "rejected" else "canceled") if ended else "",
                order_events.lines(ledger, items, fo.lines),
                event.reason,
            )
            await self.progress(
                "",
                f"fulfillment.{verb}",
                f"{fo.location_id} {verb} {units} unit(s)"
                + (f" ({event.reason})" if event.reason else "")
                + f"; routed to {moved_to}",
                line_changes,
                actor=f"warehouse:{fo.location_id}",
                step=f"{verb}:{event.event_id}",
                holds=("fulfillment", attached_to),
                events=[taken_off, *order_events.allocated(event.replacements)],
            )
            if event.unallocated:
                # Routing picks up from what is still unplaced, so a retry is safe.
                await steps.attempt_step(
                    self,
                    lambda: self._allocate(f"after-{event.event_id}"),
                    "fulfillment",
                    attached_to,
                )
        elif event.kind in backorders.KINDS:
            await backorders.on_event(self, fo, event)
        elif event.kind == "not_collected":  # a store pickup's deadline passed
            await pickup.not_collected(self, fo, items, event.reason)
        elif event.kind == pickup.TRANSFER_REPROMISED and self.has_change(
            versions.REPROMISE_ON_TRANSFER
        ):
            await pickup.transfer_repromised(self, fo, event)
        else:
            workflow.logger.warning("ignored fulfillment event", extra={"kind": event.kind})

    async def _on_shipped(
        self, fo: FulfillmentOrderData, items: list[ItemQuantity], event: FulfillmentEvent
    ) -> None:
        ledger = self.ledger
        no_charge = fo.fulfillment_order_id in ledger.no_charge
        ledger.ship(fo.fulfillment_order_id, items)
        ledger.mark_undelivered(event.shipment_id)
        promises.shipped(self.state.promises, fo.fulfillment_order_id, event.promised_delivery_date)
        units = sum(i.quantity for i in items)
        in_order = [i for i in items if i.order_line_id in ledger.lines]
        status = (
            "" if no_charge else (SHIPPED if ledger.everything_shipped() else PARTIALLY_SHIPPED)
        )
        parcel = f"shipment:{event.shipment_id}"
        await self.progress(
            status,
            "shipment.shipped",
            f"Shipped {units} unit(s) from {fo.location_id} via {event.carrier} "
            f"(tracking {event.tracking_number})" + (" at no charge" if no_charge else ""),
            []
            if no_charge
            else [
                LineQuantityChange(i.order_line_id, allocated=-i.quantity, fulfilled=i.quantity)
                for i in in_order
            ],
            actor=f"warehouse:{fo.location_id}",
            step=f"shipped:{event.shipment_id}",
            holds=("fulfillment", parcel),
            events=[
                order_events.shipment(
                    "shipment.shipped",
                    event.shipment_id,
                    fo,
                    event.carrier,
                    event.tracking_number,
                    order_events.lines(ledger, items, fo.lines),
                )
            ],
        )
        if no_charge:
            return
        step = f"invoice:{event.shipment_id}"
        if self.has_change(versions.INVOICE_AND_CAPTURE):
            capture_key = f"{self.order.order_id}:capture:{step}"
            invoiced = await steps.attempt_step(
                self,
                lambda: self._invoice_and_capture(fo, in_order, step, capture_key),
                "invoicing",
                parcel,
            )
            if invoiced is None:  # skipped or canceled by an agent: these units go uncharged
                return
            captured = await steps.capture(self, invoiced.invoice, invoiced, capture_key)
        else:
            invoice = await steps.attempt_step(
                self, lambda: self._invoice(fo, in_order, step), "invoicing", parcel
            )
            if invoice is None:  # skipped or canceled by an agent: these units go uncharged
                return
            captured = await steps.capture(self, invoice)
        self.state.captured_minor += captured

    async def _invoice(
        self, fo: FulfillmentOrderData, items: list[ItemQuantity], step: str
    ) -> InvoiceResult:
        """Invoice shipped units (billing.plan_invoice says what it charges). The ledger and the
        money move only once payments has the invoice, so a refused one can be asked again."""
        plan, asked = self._plan_invoice(fo, items, step)
        invoice: InvoiceResult = await self.activity(
            names.CREATE_INVOICE, asked, result_type=InvoiceResult
        )
        billing.record_invoice(
            self.state, self.ledger, plan, fo.delivery_group_id, invoice.total_minor
        )
        return invoice

    async def _invoice_and_capture(
        self, fo: FulfillmentOrderData, items: list[ItemQuantity], step: str, capture_key: str
    ) -> InvoiceAndCaptureResult:
        """Invoice shipped units and capture the invoice in one payments call. As `_invoice`,
        the ledger moves only once payments has the invoice; a declined or refused capture is
        part of the answer (steps.capture holds for it)."""
        plan, asked = self._plan_invoice(fo, items, step)
        invoiced: InvoiceAndCaptureResult = await self.activity(
            names.INVOICE_AND_CAPTURE,
            InvoiceAndCaptureInput(asked, capture_key),
            result_type=InvoiceAndCaptureResult,
        )
        billing.record_invoice(
            self.state, self.ledger, plan, fo.delivery_group_id, invoiced.invoice.total_minor
        )
        return invoiced

    def _plan_invoice(
        self, fo: FulfillmentOrderData, items: list[ItemQuantity], step: str
    ) -> tuple[billing.InvoicePlan, InvoiceInput]:
        """What invoicing shipped `items` charges, and the request that asks for it."""
        order = self.order
        group = next(
            (g for g in order.delivery_groups if g.delivery_group_id == fo.delivery_group_id),
            None,
        )
        plan = billing.plan_invoice(self.state, self.ledger, group, items)
        return plan, InvoiceInput(
            order_id=order.order_id,
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key=f"{order.order_id}:{step}",
            currency=order.currency,
            lines=plan.lines,
            shipping_minor=plan.shipping_minor,
            goodwill_minor=plan.goodwill_minor,
        )

    # ---- process exceptions ------------------------------------------------------------------

    async def hold(
        self, category: str, attached_to: str, message: str, step_input: str = ""
    ) -> str:
        """Raise a process exception (with the failed step's input, when there is one) and wait
        for an agent's resolution (escalating if it waits too long). Returns the action: retry,
        skip or cancel."""
        self.state.holds += 1
        exception_id = await self._raise_exception(
            category, attached_to, message, self.state.holds, step_input
        )
        # Waiting from the moment the exception exists, so an agent can resolve it at once.
        self.waiting_on = exception_id
        self._mark_exception(exception_id, "waiting")
        resume = self.state.status
        await self.progress(
            ON_HOLD,
            f"exception.{category}",
            message,
            step=f"hold:{self.state.holds}",
            events=[order_events.process_exception("exception.raised", exception_id, category)],
        )
        await self._flush()
        escalate_after = timedelta(seconds=self.order.timers.escalate_after_seconds)
        try:
            await workflow.wait_condition(
                lambda: exception_id in self.resolutions, timeout=escalate_after
            )
        except TimeoutError:
            await self.activity(
                names.ESCALATE_PROCESS_EXCEPTION,
                EscalateInput(
                    exception_id,
                    f"{self.order.order_id}:escalate:{exception_id}",
                    f"unresolved for {escalate_after}",
                ),
            )
            self._mark_exception(exception_id, "escalated")
            await self.progress(
                "",
                "exception.escalated",
                f"Process exception {exception_id} unresolved for {escalate_after}; escalated",
                step=f"escalated:{exception_id}",
                events=[
                    order_events.process_exception("exception.escalated", exception_id, category)
                ],
            )
            await self._flush()
            await workflow.wait_condition(lambda: exception_id in self.resolutions)
        resolution = self.resolutions[exception_id]
        self.waiting_on = ""
        self._mark_exception(exception_id, "resolved", resolution.action)
        await self.progress(
            resume if resolution.action != "cancel" else "",
            "exception.resolved",
            f"Process exception {exception_id} resolved by {resolution.actor}: {resolution.action}"
            + (f" ({resolution.note})" if resolution.note else ""),
            actor=resolution.actor,
            step=f"resolved:{exception_id}",
            events=[
                order_events.process_exception(
                    "exception.resolved", exception_id, category, resolution.action
                )
            ],
        )
        return resolution.action

    async def _raise_exception(
        self, category: str, attached_to: str, message: str, hold: int = 0, step_input: str = ""
    ) -> str:
        exception_id: str = await self.activity(
            names.RECORD_PROCESS_EXCEPTION,
            ProcessExceptionInput(
                order_id=self.order.order_id,
                idempotency_key=f"{self.order.order_id}:exception:{category}:{attached_to}:{hold}",
                category=category,
                severity="high",
                attached_to=attached_to,
                message=message,
                step_input=step_input,
            ),
            result_type=str,
        )
        if self.state.exception(exception_id) is None:
            self.state.exceptions.append(
                ExceptionRecord(exception_id, category, attached_to, "recorded", workflow.now())
            )
        return exception_id

    def _mark_exception(self, exception_id: str, status: str, action: str = "") -> None:
        record = self.state.exception(exception_id)
        if record is not None:
            record.status, record.action = status, action or record.action

    # ---- cancels -------------------------------------------------------------------------------

    async def _cancel_everything(
        self, reason: str, *, authorized: bool = True, events: list[EventData] | None = None
    ) -> None:
        """Cancel what has not shipped and stop the lifecycle (compensation: reservations are
        released by canceling fulfillment order lines, the authorization is voided). `events`
        (what led to it, e.g. the decline) are reported first, with the cancel."""
        was = self.state.status
        told = await steps.cancel_unshipped(
            self, reason, "cancel-all", money_back=authorized, cause=events
        )
        if authorized:
            await steps.void(self, reason)
        if self.ledger.all_canceled():
            await self.progress(
                CANCELED,
                "order.canceled",
                f"Order canceled: {reason}",
                events=[
                    *((events or []) if not told else []),
                    order_events.order_status("order.canceled", was, CANCELED, reason),
                ],
            )
            raise OrderCanceled(reason)
        # Some units shipped: the lifecycle goes on until they are delivered.

    # ---- Updates: changes to the order ---------------------------------------------------------
    # Each takes the lock (one change at a time, none interleaving with the lifecycle's own
    # steps) and delegates to its module under workflows/changes/. A change already made
    # answers again with its first result.

    @workflow.update(name=CANCEL_UPDATE)
    async def cancel_items(self, request: ChangeRequest) -> ChangeResult:
        """Cancel some units (or everything) not shipped yet."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await canceling.cancel(self, request)

    @cancel_items.validator
    def _validate_cancel(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: canceling.check(self.ledger, request))

    @workflow.update(name=APPEASE_UPDATE)
    async def appease(self, request: ChangeRequest) -> ChangeResult:
        """Goodwill: an amount or a percentage of what was charged, on lines or the order."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await appeasing.appease(self, request)

    @appease.validator
    def _validate_appease(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: appeasing.amount(self, request))

    @workflow.update(name=RESHIP_UPDATE)
    async def reship_items(self, request: ChangeRequest) -> ChangeResult:
        """Lost or damaged parcel: ship the same items again, at no charge."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await reshipping.reship(self, request)

    @reship_items.validator
    def _validate_reship(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: reshipping.check(self.ledger, request))

    @workflow.update(name=ADDRESS_CHANGE_UPDATE)
    async def change_address(self, request: ChangeRequest) -> ChangeResult:
        """A delivery group goes to a new address, before any of its units shipped."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await addressing.change_address(self, request)

    @change_address.validator
    def _validate_change_address(self, request: ChangeRequest) -> None:
        self._validate_with(
            request,
            lambda: addressing.check(self.order, self.ledger, request, self.state.status),
        )

    @workflow.update(name=ADD_ITEMS_UPDATE)
    async def add_items(self, request: ChangeRequest) -> ChangeResult:
        """New lines or more units of existing ones, before anything shipped."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await adding.add_items(self, request)

    @add_items.validator
    def _validate_add_items(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: adding.check(self, request))

    @workflow.update(name=RETURN_UPDATE)
    async def return_items(self, request: ChangeRequest) -> ChangeResult:
        """Open a return order (RMA); refund at once when it is a refund without return."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await returns.open_return(self, request, exchange=False)

    @return_items.validator
    def _validate_return(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: returns.check(self, request))

    @workflow.update(name=RECEIVE_RETURN_UPDATE)
    async def receive_return(self, request: ChangeRequest) -> ChangeResult:
        """Items came back: accepted ones are refunded (less any return fee), rejected ones
        go back to the shopper."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await returns.receive(self, request)

    @receive_return.validator
    def _validate_receipt(self, request: ChangeRequest) -> None:
        self._validate_change(request)
        returns.check_receipt(self, request)

    @workflow.update(name=EXCHANGE_UPDATE)
    async def exchange_items(self, request: ChangeRequest) -> ChangeResult:
        """A return plus replacements; the price difference is charged or refunded."""
        if request.change_id in self.state.changes:
            return self.state.changes[request.change_id]
        await self._after_queued_events()
        async with self._section():
            return await exchanging.exchange(self, request)

    @exchange_items.validator
    def _validate_exchange(self, request: ChangeRequest) -> None:
        self._validate_with(request, lambda: exchanging.check(self, request))

    @workflow.update(name=RESOLVE_EXCEPTION_UPDATE)
    async def resolve_process_exception(self, resolution: Resolution) -> ResolutionResult:
        """An agent's resolution of the exception the order waits on."""
        return await resolving.resolve(self, resolution)

    @resolve_process_exception.validator
    def _validate_resolution(self, resolution: Resolution) -> None:
        resolving.check(self, resolution)

    # ---- queries -------------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> str:
        """The order status as the workflow sees it."""
        return self.state.status

    @workflow.query(name=STATE_QUERY)
    def order_state(self) -> OrderState:
        """The order's ledger as the workflow holds it: buckets per line, money charged and
        given back, fulfillment orders, open returns and process exceptions. Reads only (a
        copy of everything), so asking changes nothing and replays the same."""
        ledger, order = self.ledger, self.order
        exceptions = [replace(e) for e in self.state.exceptions]
        closes = steps.return_window_closes(self)
        return OrderState(
            order_id=order.order_id,
            channel_order_ref=order.channel_order_ref,
            channel=order.channel,
            status=self.state.status,
            currency=order.currency,
            grand_total_minor=order.grand_total_minor,
            authorized=self.authorized,
            invoiced_minor=self.state.invoiced_minor,
            captured_minor=self.state.captured_minor,
            credited_minor=self.state.credited_minor,
            refunded_minor=self.state.refunded_minor,
            released_minor=self.state.released_minor,
            goodwill_pending_minor=billing.goodwill_pending_minor(self.state),
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
                for r in self.state.returns.values()
                if r.open()
            ],
            open_exceptions=[e for e in exceptions if e.status in ("waiting", "escalated")],
            exceptions=exceptions,
            waiting_on=self.waiting_on,
            delivered_at=self.state.delivered_at,
            return_window_closes_at=closes,
            changes=len(self.state.changes),
            runs=self.state.runs,
        )

    @workflow.query(name=PREVIEW_QUERY)
    def preview_change(self, request: ChangeRequest) -> ChangeResult:
        """What a change would do, computed the same way, nothing kept."""
        result = ChangeResult(
            request.change_id, request.kind, "", lines=request.lines, preview=True
        )
        previews = {
            "cancel": canceling.preview,
            "appease": appeasing.preview,
            "return": returns.preview,
            "add_items": adding.preview,
            "exchange": exchanging.preview,
            "reship": reshipping.preview,
            "address_change": addressing.preview,
        }
        try:
            if request.kind not in previews:
                raise ChangeRefused(f"kind: no preview for {request.kind!r}", "INVALID_ARGUMENT")
            result = previews[request.kind](self, request, result)
        except ChangeRefused as refused:
            result.summary = f"refused: {refused.message}"
            result.refusal_code = refused.code
            return result
        result.order_status = self.state.status
        return result

    # ---- helpers -------------------------------------------------------------------------------

    def _validate_with(self, request: ChangeRequest, check: Callable[[], object]) -> None:
        """An Update validator: the checks every change passes, then `check`, whose
        ChangeRefused becomes the refusal (with its status) before anything enters history.
        While warehouse or carrier events wait to be applied, `check` is left to the change
        itself, which runs after them (`_after_queued_events`) and checks again."""
        self._validate_change(request)
        if self.state.events:
            return
        try:
            check()
        except ChangeRefused as refused:
            raise steps.refusal(refused) from None

    async def _after_queued_events(self) -> None:
        """Let the lifecycle apply the warehouse and carrier events that arrived before this
        change (it does so while its loops run; once they end, none is applied any more)."""
        if self.state.events and not self.done and self.has_change(versions.QUEUED_EVENTS_FIRST):
            await workflow.wait_condition(lambda: not self.state.events or self.done)

    def _validate_change(self, request: ChangeRequest) -> None:
        if not request.change_id:
            raise ApplicationError("change_id: required", type="INVALID_ARGUMENT")
        if self.done or self.state.status == CANCELED:
            raise ApplicationError(
                f"order is {self.state.status if not self.done else 'closed'}; no more changes",
                type="FAILED_PRECONDITION",
            )
        if self.waiting_on:
            raise ApplicationError(
                f"order is on hold for process exception {self.waiting_on}; resolve it first",
                type="FAILED_PRECONDITION",
            )
        if self.past_due and request.kind != "cancel":
            raise ApplicationError(
                "order is past due (its payment is retried on the dunning schedule); only a "
                "cancel is possible until it is paid",
                type="FAILED_PRECONDITION",
            )

    async def activity(
        self,
        name: str,
        arg: Any,
        *,
        result_type: type | None = None,
        schedule_to_close_timeout: timedelta | None = None,
    ) -> Any:
        """Run one activity with the lifecycle's timeout and retry policy. A refusal goes up
        as it came, and what the step was asked is kept for the process exception it raises."""
        # What the step does for this order, shown on its event in the Temporal UI.
        summary = activity_summary(name, arg, self.order.currency)
        try:
            if self.has_change(versions.LOCAL_ACTIVITIES):
                return await _local_activity(
                    name, arg, result_type, schedule_to_close_timeout, summary
                )
            return await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                schedule_to_close_timeout=schedule_to_close_timeout,
                retry_policy=RETRY,
                summary=summary,
            )
        except ActivityError:
            self.refused_step_input = steps.as_json(arg)
            raise

    def _upsert_search_attributes(self) -> None:
        """Upsert the search attributes that no longer say what the order is (none when all
        still do, so a step that changes nothing adds nothing to history)."""
        order = self.order
        wanted = search_attributes(
            status=self.state.status,
            channel=order.channel,
            total_minor=order.grand_total_minor,
            currency=order.currency,
            on_hold=bool(self.waiting_on),
            location_ids=[fo.location_id for fo in self.ledger.fulfillment_orders.values()],
        )
        current = workflow.info().typed_search_attributes
        changed = [
            pair.key.value_set(pair.value) for pair in wanted if current.get(pair.key) != pair.value
        ]
        if changed:
            workflow.upsert_search_attributes(changed)

    async def progress(
        self,
        status: str,
        kind: str,
        summary: str,
        line_changes: list[LineQuantityChange] | None = None,
        actor: str = "workflow",
        step: str = "",
        added_lines: list[LineAdditionData] | None = None,
        holds: tuple[str, str] | None = None,
        events: list[EventData] | None = None,
        delivery_group_addresses: list[DeliveryGroupAddressData] | None = None,
    ) -> None:
        """Tell capture (the order's record, and its event log: `events`; groups sent to a new
        address: `delivery_group_addresses`) and the search attributes what just happened.
        With `holds` (category, attached to), a refused report holds the order for an agent
        (`steps.attempt_step`); without, the refusal is raised.
        Since the batched-progress patch the report waits for the end of the section or the
        next wait (`_flush`)."""
        batched = self.has_change(versions.BATCHED_PROGRESS)
        if self.has_change(versions.OPERATOR_ATTRIBUTES):
            self.state.status = status or self.state.status
            if not batched:  # batched: upserted with the reports, when they are sent
                self._upsert_search_attributes()
        elif status:
            self.state.status = status
            workflow.upsert_search_attributes(
                [ORDER_STATUS.value_set(status), ORDER_CHANNEL.value_set(self.order.channel)]
            )
        unsent = _Unsent(
            ProgressInput(
                order_id=self.order.order_id,
                idempotency_key=f"{self.order.order_id}:progress:{step or kind}",
                status=status,
                kind=kind,
                summary=summary,
                actor=actor,
                line_changes=line_changes or [],
                added_lines=added_lines or [],
                currency=self.order.currency,
                events=events or [],
                delivery_group_addresses=delivery_group_addresses or [],
                delivery_promises=promises.changes(self.ledger, self.state.promises),
            ),
            holds,
        )
        workflow.logger.info(
            kind, extra={"order_id": self.order.order_id, "status": self.state.status}
        )
        if batched:
            self._unsent.append(unsent)
        else:
            await self._send_one(unsent)

    @contextlib.asynccontextmanager
    async def _section(self, keep_reports: Callable[[], bool] | None = None) -> AsyncIterator[None]:
        """One change at a time (a lifecycle step or an Update), its progress reports sent
        before the next may begin (even when it is refused halfway). With `keep_reports`
        answering True at the end, they are kept for the next flush: the caller reports more
        before it waits for anything, and both go in one call."""
        async with self._lock:
            try:
                yield
            except Exception:
                await self._flush()
                raise
            if keep_reports is None or not keep_reports():
                await self._flush()

    def _delivered_now(self) -> bool:
        """The event just applied delivered the last unit: the delivery's reports go with the
        order's "fulfilled" (and, with no return window left, "closed") in one call."""
        return self.ledger.settled() and self.has_change(versions.ONE_REPORT_AT_DELIVERY)

    async def _flush(self) -> None:
        """Send the progress reports made since the last flush, in one call. Runs before every
        wait, so nothing reported is left unsent while the workflow waits."""
        if not self._unsent:
            return
        me = asyncio.current_task()
        nested = self._sender is me  # a refused report's hold sends its own reports
        if not nested:
            await workflow.wait_condition(lambda: self._sender is None)
            self._sender = me
        try:
            batch, self._unsent = self._unsent, []
            if batch:
                # What the operators' search attributes say moves with the reports: one upsert
                # for the batch rather than one per step.
                self._upsert_search_attributes()
                await self._send(batch)
        finally:
            if not nested:
                self._sender = None

    async def _send(self, batch: list[_Unsent]) -> None:
        try:
            await self.activity(
                names.RECORD_ORDER_PROGRESS_BATCH,
                ProgressBatchInput(self.order.order_id, [u.report for u in batch]),
            )
            return
        except ActivityError:
            pass
        # Capture refused one of them, so none was recorded: send them one at a time, each
        # refusal handled as that report asked (capture answers those already recorded again).
        for n, unsent in enumerate(batch):
            try:
                await self._send_one(unsent)
            except ActivityError:
                self._unsent[:0] = batch[n + 1 :]  # sent at the next flush
                raise

    async def _send_one(self, unsent: _Unsent) -> None:
        async def send() -> None:
            await self.activity(names.RECORD_ORDER_PROGRESS, unsent.report)

        if unsent.holds is None:
            await send()
        else:
            await steps.attempt_step(self, send, *unsent.holds)

    def publish(self) -> None:
        """Upsert the search attributes that changed (runs before the operator attributes
        patch upsert only on a status change, in `progress`)."""
        if self.has_change(versions.OPERATOR_ATTRIBUTES):
            self._upsert_search_attributes()

    def record(self, change_id: str, result: ChangeResult) -> ChangeResult:
        """Keep a finished change: a repeated Update gets the same answer, and waits that
        depend on open returns re-check."""
        result.order_status = self.state.status
        self.state.changes[change_id] = result
        self.revision += 1
        return result

    def now(self) -> datetime:
        """The workflow's clock."""
        return workflow.now()

    def has_change(self, patch_id: str) -> bool:
        """Whether this run takes the change `patch_id` guards (workflows/versions.py)."""
        return versions.has_change(self.order.baseline, patch_id)

    def task_mark(self) -> int:
        """Which workflow task runs this step: the history's length when it started."""
        return workflow.info().get_current_history_length()


async def _local_activity(
    name: str,
    arg: Any,
    result_type: type | None,
    schedule_to_close_timeout: timedelta | None,
    summary: str,
) -> Any:
    """Run step `name` as a local activity, with the lifecycle's timeout and retry policy.

    Same idempotency keys as ever: a worker killed after the call but before the marker is
    recorded runs the step again, and the service answers the first result. A local
    activity's own failure arrives bare (a timeout arrives wrapped); it is raised as the
    ActivityError a remote one raises, which is what the steps handle."""
    try:
        return await workflow.execute_local_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            schedule_to_close_timeout=schedule_to_close_timeout,
            retry_policy=RETRY,
            local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            summary=summary,
        )
    except ApplicationError as failure:
        raise _refusal(name, failure) from failure


def _declined(result: AuthorizeResult, amount: int) -> EventData:
    """The log's `payment.declined` for a declined authorization of `amount`."""
    return order_events.payment("payment.declined", amount, decline_reason=result.decline_reason)


def _refusal(name: str, failure: ApplicationError) -> ActivityError:
    """The ActivityError a remote activity `name` would have raised for `failure`."""
    return ActivityError(
        "Local activity failed",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type=name,
        activity_id="",
        retry_state=RetryState.NON_RETRYABLE_FAILURE
        if failure.non_retryable
        else RetryState.MAXIMUM_ATTEMPTS_REACHED,
    )
