"""A stand-in for a subscription's workflow in workflow tests: it keeps the payment outcomes
its cycle orders signal (a module of its own: the sandbox imports it with nothing else)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.subscription_types import (
        SUBSCRIPTION_PAYMENT_SIGNAL,
        SubscriptionPaymentEvent,
    )


@workflow.defn(name="SubscriptionStandIn")
class SubscriptionStandIn:
    """Runs until terminated; answers what it was told by query `payments`."""

    def __init__(self) -> None:
        self.payments: list[SubscriptionPaymentEvent] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=SUBSCRIPTION_PAYMENT_SIGNAL)
    def on_payment(self, event: SubscriptionPaymentEvent) -> None:
        self.payments.append(event)

    @workflow.query(name="payments")
    def told(self) -> list[SubscriptionPaymentEvent]:
        return self.payments
