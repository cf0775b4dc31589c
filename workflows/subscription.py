"""SubscriptionWorkflow: one durable workflow per subscription (`subscription:<id>`).

Each run is one cycle: wait on a durable timer for the cycle's due time (its plan's cadence
plus the subscription's spread offset), woken and recomputed by any change; then order the
cycle (or skip it, or end), report, and continue as new for the next cycle with its state.
Changes are an Update, validated before they enter history, serialized with the cycle by one
lock: a change arriving while a cycle's order is being placed waits for it and applies to the
next cycle, never half. The order's lifecycle tells the subscription how each cycle's payment
went (a signal), and the subscription tells a past-due order to retry with a new payment method.

The rules (what is due when, what a change does, what a payment outcome does) live in
`workflows/subscription_rules.py`; this class waits, calls and reports. No I/O of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from oms_platform.converter import decode

# Imported by full name: `from workflows import x` would load `x` afresh inside the sandbox
# (Python resolves a from-list's submodules past the sandbox's import hook), and a fresh
# `workflows.cadence` sees the sandbox's restricted `zoneinfo`, whose zones are no tzinfo.
with workflow.unsafe.imports_passed_through():
    import workflows.activity_names as names
    import workflows.cadence as cadence
    import workflows.subscription_rules as rules
    from workflows.ledger import ChangeRefused
    from workflows.lifecycle import ACTIVITY_TIMEOUT, LOCAL_RETRY_THRESHOLD, RETRY
    from workflows.subscription_state import SubscriptionState
    from workflows.subscription_types import (
        RETRY_PAYMENT_SIGNAL,
        SUBSCRIPTION_CANCELED,
        SUBSCRIPTION_CHANGE_UPDATE,
        SUBSCRIPTION_PAYMENT_SIGNAL,
        SUBSCRIPTION_PREVIEW_QUERY,
        SUBSCRIPTION_STATE_QUERY,
        SUBSCRIPTION_WORKFLOW,
        ChangeRecordData,
        CycleOrderInput,
        CycleOrderResult,
        CycleView,
        RetryPayment,
        SubscriptionChangeRequest,
        SubscriptionChangeResult,
        SubscriptionInput,
        SubscriptionPaymentEvent,
        SubscriptionProgressInput,
        SubscriptionView,
    )
    from workflows.types import order_workflow_id

# A cycle's order goes through capture's front door, which paces submissions: a remote
# activity (not local) so a pacing wait or a capture outage holds an activity slot on any
# worker, retried with backoff, rather than the subscription's workflow task. Its call has a
# 10 s deadline (activities.DEADLINE_SECONDS), so an attempt lasts no longer than that; an
# attempt lost with its worker is tried again when this lapses (it was 2 minutes: a worker
# dying as a cycle fell due delayed the cycle's order by as much).
SUBMIT_TIMEOUT = timedelta(seconds=20)


@workflow.defn(name=SUBSCRIPTION_WORKFLOW)
class SubscriptionWorkflow:
    """wait for the cycle's due time → order it (or skip it, or end) → report → continue as
    new; changes and payment outcomes at any moment in between."""

    @workflow.init
    def __init__(self, subscription: SubscriptionInput) -> None:
        if subscription.carried is None:
            self.state = SubscriptionState.start(subscription)
        else:
            self.state = decode(SubscriptionState, subscription.carried)
        self.subscription = dataclasses.replace(subscription, carried=None)
        # One step at a time: a cycle's placement, a change and a payment outcome each take
        # it, so none sees another half done.
        self._lock = asyncio.Lock()
        # Bumped by every change and payment outcome: the wait for the due time recomputes.
        self._revision = 0

    # ---- the cycle ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, subscription: SubscriptionInput) -> None:
        if subscription.carried is None:
            async with self._lock:
                await self._report("started")
        while self.state.status != SUBSCRIPTION_CANCELED:
            if not await self._until_due():
                continue
            async with self._lock:
                await self._take_cycle()
            if self.state.status != SUBSCRIPTION_CANCELED:
                await self._continue_as_new()
        # Canceled: no more cycles, but a past-due cycle's order is still being retried; keep
        # recording its outcome until it settles.
        await workflow.wait_condition(lambda: not self.state.past_due())
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _until_due(self) -> bool:
        """Wait until the next cycle is due; False when something changed first (a change, a
        payment outcome, a pause running out), so the caller looks again."""
        revision = self._revision
        if self.state.past_due():
            # The next cycle is not placed while a cycle's payment is past due: wait for the
            # outcome (or a change) however long it takes.
            await workflow.wait_condition(lambda: self._revision != revision)
            return False
        now = workflow.now()
        if rules.pause_ended(self.state, now):
            async with self._lock:
                record = rules.end_of_pause(self.state, workflow.now())
                if record is not None:
                    await self._report(f"change:{record.change_id}", change=record)
            return False
        due = rules.due_at(self.state)
        wake = due
        if self.state.paused_until:
            wake = min(wake, cadence.parse_instant(self.state.paused_until))
        if wake <= now:
            return True
        if workflow.info().is_continue_as_new_suggested() and not self._lock.locked():
            await self._continue_as_new()
        try:
            # A durable timer any change wakes. Safe to interleave: handlers take the lock and
            # bump the revision, and the due time is recomputed from the state afterwards.
            await workflow.wait_condition(
                lambda: self._revision != revision, timeout=wake - now, timeout_summary="cycle due"
            )
        except TimeoutError:
            return workflow.now() >= due
        return False

    async def _take_cycle(self) -> None:
        """Order the cycle that is due, or skip it, or end the subscription at period end."""
        start = rules.start_cycle(self.state)
        now = workflow.now()
        if start.action == rules.END:
            record = rules.end_at_period_end(self.state, start, now)
            await self._report(f"change:{record.change_id}", [rules.skipped_cycle(start)], record)
            return
        if start.action == rules.SKIP_CYCLE:
            rules.advance(self.state, start.date)
            await self._report(f"cycle:{start.number}:skipped", [rules.skipped_cycle(start)])
            return
        order = CycleOrderInput(
            subscription_id=self.state.subscription_id,
            cycle=start.number,
            channel=self.subscription.channel,
            plan=start.plan,
            subscriber=self.subscription.subscriber,
            delivery_address=self.state.delivery_address,
            delivery_method=self.state.delivery_method,
            payment_method=self.state.payment_method,
        )
        try:
            placed: CycleOrderResult = await workflow.execute_activity(
                names.SUBMIT_CYCLE_ORDER,
                order,
                result_type=CycleOrderResult,
                start_to_close_timeout=SUBMIT_TIMEOUT,
                retry_policy=RETRY,
                summary=f"cycle {start.number} on plan {start.plan.plan_id}",
            )
        except ActivityError as refused:
            # Capture refused the order (an address or plan it no longer accepts): nothing was
            # ordered; suspend rather than refuse every cycle after it the same way.
            reason = f"capture refused cycle {start.number}'s order: {_cause(refused)}"
            rules.advance(self.state, start.date)
            record = rules.suspend(self.state, reason, now, f"suspended:cycle:{start.number}")
            await self._report(
                f"cycle:{start.number}:refused", [rules.failed_cycle(start, reason)], record
            )
            return
        cycle = rules.ordered_cycle(start, placed.order_id)
        self.state.open_cycles.append(cycle)
        rules.advance(self.state, start.date)
        await self._report(f"cycle:{start.number}:ordered", [cycle])

    async def _continue_as_new(self) -> None:
        """Hand the state to a new run once no change or payment outcome is in flight."""
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() and not self._lock.locked()
        )
        workflow.continue_as_new(
            dataclasses.replace(self.subscription, carried=dataclasses.asdict(self.state))
        )

    # ---- changes -----------------------------------------------------------------------------

    @workflow.update(name=SUBSCRIPTION_CHANGE_UPDATE)
    async def change_subscription(
        self, request: SubscriptionChangeRequest
    ) -> SubscriptionChangeResult:
        """Make one change; the same idempotency key answers its first result."""
        if request.idempotency_key in self.state.changes:
            return rules.duplicate(self.state.changes[request.idempotency_key])
        # Waits while a cycle's order is being placed: the change then applies to the next.
        async with self._lock:
            if request.idempotency_key in self.state.changes:
                return rules.duplicate(self.state.changes[request.idempotency_key])
            # Allowed when validated, perhaps not after the cycle it waited for (a skip of it).
            made = self._compute(request)
            self.state = made.state
            self._revision += 1
            await self._report(f"change:{request.idempotency_key}", change=made.record)
            for order_id in made.retry_orders:
                await self._retry_payment(order_id, request)
        return made.result

    @change_subscription.validator
    def _validate_change(self, request: SubscriptionChangeRequest) -> None:
        if not request.idempotency_key:
            raise ApplicationError("idempotency_key: required", type="INVALID_ARGUMENT")
        if request.idempotency_key in self.state.changes:
            return
        self._compute(request)

    @workflow.query(name=SUBSCRIPTION_PREVIEW_QUERY)
    def preview_subscription_change(
        self, request: SubscriptionChangeRequest
    ) -> SubscriptionChangeResult:
        """What the change would do; nothing changes. A change that would be refused answers
        with the refusal (refusal_code, refusal) instead of failing the query: a query's failure
        reaches servicing encrypted by the payload codec."""
        try:
            return rules.change(self.state, request, workflow.now()).result
        except ChangeRefused as refused:
            return SubscriptionChangeResult(
                summary="",
                effective_cycle=0,
                next_cycle_amount_minor=0,
                subscription=rules.view(self.state),
                refusal_code=refused.code,
                refusal=refused.message,
            )

    @workflow.query(name=SUBSCRIPTION_STATE_QUERY)
    def subscription_state(self) -> SubscriptionView:
        """The subscription as the workflow holds it now."""
        return rules.view(self.state)

    def _compute(self, request: SubscriptionChangeRequest) -> rules.ChangeOutcome:
        try:
            return rules.change(self.state, request, workflow.now())
        except ChangeRefused as refused:
            raise ApplicationError(refused.message, type=refused.code, non_retryable=True) from None

    async def _retry_payment(self, order_id: str, request: SubscriptionChangeRequest) -> None:
        """Tell a past-due cycle's order to retry now with the new payment method."""
        assert request.payment_method is not None
        order = workflow.get_external_workflow_handle(order_workflow_id(order_id))
        try:
            await order.signal(
                RETRY_PAYMENT_SIGNAL, RetryPayment(request.payment_method, request.reason)
            )
        except FailureError as gone:
            # The order finished meanwhile (paid or failed): its outcome arrives as a signal.
            workflow.logger.warning("past-due order took no retry", extra={"error": str(gone)})

    # ---- payments ----------------------------------------------------------------------------

    @workflow.signal(name=SUBSCRIPTION_PAYMENT_SIGNAL)
    async def subscription_payment(self, event: SubscriptionPaymentEvent) -> None:
        """A cycle's order reporting its payment: past due, paid or failed."""
        async with self._lock:
            outcome = rules.take_payment(self.state, event, workflow.now())
            self._revision += 1
            if outcome.cycle is None:
                return
            step = f"cycle:{event.cycle}:payment:{event.attempt}:{event.outcome}"
            await self._report(step, [outcome.cycle], outcome.record)

    # ---- progress ----------------------------------------------------------------------------

    async def _report(
        self,
        step: str,
        cycles: list[CycleView] | None = None,
        change: ChangeRecordData | None = None,
    ) -> None:
        """Tell servicing where the subscription stands after `step` (a local activity: a
        short keyed call, as the order lifecycle makes its steps). A refusal is logged, not
        raised: the projection misses a step, the subscription goes on."""
        progress = SubscriptionProgressInput(
            idempotency_key=f"subscription:{self.state.subscription_id}:progress:{step}",
            subscription=rules.view(self.state),
            cycles=cycles or [],
            change=change,
        )
        try:
            await workflow.execute_local_activity(
                names.RECORD_SUBSCRIPTION_PROGRESS,
                progress,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
                local_retry_threshold=LOCAL_RETRY_THRESHOLD,
                summary=step,
            )
        except (ActivityError, ApplicationError) as refused:
            workflow.logger.warning(
                "subscription progress refused", extra={"step": step, "error": _cause(refused)}
            )


def _cause(error: BaseException) -> str:
    """The innermost message of an activity failure."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)
