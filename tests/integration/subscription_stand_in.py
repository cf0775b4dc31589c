"""A stand-in for the subscription workflow, registered under its type name: it answers the
change Update and the preview query with the contract's payloads and keeps the subscription's
state, so servicing's SubscriptionsService is tested against a real Temporal workflow before
(and independently of) the real one's cycles."""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import subscription_types as st


@workflow.defn(name=st.SUBSCRIPTION_WORKFLOW)
class SubscriptionStandIn:
    """Keeps a subscription's view; pause, resume, skip, plan change and cancel change it.
    Resuming an active subscription is refused (FAILED_PRECONDITION), like the real one."""

    def __init__(self) -> None:
        self._view: st.SubscriptionView | None = None
        self._input: st.SubscriptionInput | None = None
        # Every Update applied, by idempotency key (a key applies once).
        self._applied: dict[str, st.SubscriptionChangeResult] = {}

    @workflow.run
    async def run(self, start: st.SubscriptionInput) -> None:
        self._input = start
        self._view = st.SubscriptionView(
            subscription_id=start.subscription_id,
            plan=start.plan,
            status=st.ACTIVE,
            next_cycle=1,
            next_cycle_at=start.start_at,
            delivery_address=start.delivery_address,
            delivery_method=start.delivery_method,
            payment_method=start.payment_method,
        )
        await workflow.wait_condition(lambda: self._current().status == st.SUBSCRIPTION_CANCELED)
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _current(self) -> st.SubscriptionView:
        assert self._view is not None
        return self._view

    @workflow.query(name=st.SUBSCRIPTION_STATE_QUERY)
    def state(self) -> st.SubscriptionView:
        """The subscription now."""
        return self._current()

    @workflow.query
    def started_with(self) -> st.SubscriptionInput:
        """What the workflow was started with."""
        assert self._input is not None
        return self._input

    @workflow.query
    def applied_keys(self) -> list[str]:
        """The keys of the changes applied, in order."""
        return list(self._applied)

    @workflow.query(name=st.SUBSCRIPTION_PREVIEW_QUERY)
    def preview(self, request: st.SubscriptionChangeRequest) -> st.SubscriptionChangeResult:
        """What the change would do, or why it would be refused."""
        _, result = self._apply(request)
        refusal = self._refusal(request)
        if refusal:
            result.refusal_code, result.refusal = "FAILED_PRECONDITION", refusal
        return result

    @workflow.update(name=st.SUBSCRIPTION_CHANGE_UPDATE)
    def change(self, request: st.SubscriptionChangeRequest) -> st.SubscriptionChangeResult:
        """Make the change (once per key)."""
        if request.idempotency_key in self._applied:
            return self._applied[request.idempotency_key]
        view, result = self._apply(request)
        self._view = view
        self._applied[request.idempotency_key] = result
        return result

    @change.validator
    def _validate(self, request: st.SubscriptionChangeRequest) -> None:
        refusal = self._refusal(request)
        if refusal and request.idempotency_key not in self._applied:
            raise ApplicationError(refusal, type="FAILED_PRECONDITION")

    def _refusal(self, request: st.SubscriptionChangeRequest) -> str:
        view = self._current()
        if view.status == st.SUBSCRIPTION_CANCELED:
            return "the subscription is canceled"
        if request.kind == st.RESUME and view.status != st.PAUSED:
            return "the subscription is not paused"
        return ""

    def _apply(
        self, request: st.SubscriptionChangeRequest
    ) -> tuple[st.SubscriptionView, st.SubscriptionChangeResult]:
        view = self._current()
        changes: dict[str, Any] = {}
        price = view.plan.price_minor()
        effective = view.next_cycle
        summary = f"{request.kind} from cycle {effective}"
        if request.kind == st.PAUSE:
            changes = {"status": st.PAUSED, "paused_until": request.until}
            summary = "Paused until " + (request.until or "resumed")
        elif request.kind == st.RESUME:
            changes = {"status": st.ACTIVE, "paused_until": ""}
        elif request.kind == st.SKIP:
            cycle = request.cycle or view.next_cycle
            changes = {"skipped_cycles": [*view.skipped_cycles, cycle]}
            summary = f"Cycle {cycle} will not be ordered"
        elif request.kind == st.CHANGE_PLAN:
            assert request.plan is not None
            changes = {"pending_plan": request.plan, "pending_plan_from_cycle": effective}
            price = request.plan.price_minor()
            summary = f"{request.plan.name} from cycle {effective}"
        elif request.kind == st.CHANGE_PAYMENT_METHOD:
            changes = {"payment_method": request.payment_method}
        elif request.kind == st.CHANGE_ADDRESS:
            changes = {
                "delivery_address": request.delivery_address,
                "delivery_method": request.delivery_method,
            }
        elif request.kind == st.CANCEL:
            changes = (
                {"cancel_at_period_end": True}
                if request.at_period_end
                else {"status": st.SUBSCRIPTION_CANCELED}
            )
        after = dataclasses.replace(view, **changes)
        return after, st.SubscriptionChangeResult(
            summary=summary,
            effective_cycle=effective,
            next_cycle_amount_minor=price,
            subscription=after,
        )
