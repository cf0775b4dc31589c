"""Holds renewed ahead of a pre-order's release, on the time-skipping server: the lifecycle
asks payments while the goods are awaited, sleeps on a timer until the renewal it was told of
falls due, renews then, and captures the release when it ships; a promise moved later is asked
about at once; a declined renewal holds the order for an agent as a declined capture does (retry
asks again, skip stops renewing and releases nothing, cancel cancels what has not shipped and
releases the holds)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from tests.history import record
from tests.workflow.test_order_lifecycle import (
    Services,
    an_order,
    delivered,
    resolve,
    shipped,
    start,
    until,
    update,
)
from workflows.types import (
    FULFILLED,
    ON_HOLD,
    RESOLVE_EXCEPTION_UPDATE,
    FulfillmentEvent,
    FulfillmentOrderData,
    RenewInput,
    RenewResult,
    Resolution,
    ResolutionResult,
    RouteInput,
    RouteResult,
    RoutingLineData,
    ShipmentItemData,
)

RELEASE = "2031-01-20"
LATER = "2031-02-10"
SIX_DAYS = timedelta(days=6)


@dataclass
class PreOrder(Services):
    """The stand-ins, with the mug on pre-order and payments' renewals scripted: the first ask
    says a hold falls due in six days; the next renews it (or declines, `decline_renewal`)."""

    decline_renewal: bool = False
    renewals: list[RenewInput] = field(default_factory=list)

    def activities(self) -> list[Any]:
        @activity.defn(name="create_fulfillment_orders")
        async def create_fulfillment_orders(r: RouteInput) -> RouteResult:
            self.calls.append(("route", r))
            tee, mug = [line for g in r.delivery_groups for line in g.lines]
            return RouteResult(
                [
                    FulfillmentOrderData("fo-1", "wh-east", "dg-1", [tee]),
                    FulfillmentOrderData("fo-2", "wh-east", "dg-1", [mug], promise_date=RELEASE),
                ],
                [],
                ["wh-east ships the tee; the mug is on pre-order"],
            )

        @activity.defn(name="renew_authorizations")
        async def renew_authorizations(r: RenewInput) -> RenewResult:
            self.renewals.append(r)
            if len(self.renewals) == 1:
                return RenewResult(True, renew_again=True, renew_again_in_seconds=6 * 86400)
            if self.decline_renewal:
                self.decline_renewal = False
                return RenewResult(False, "card_declined")
            return RenewResult(True, renewed_minor=1500)

        replaced = {"create_fulfillment_orders"}
        kept = [a for a in super().activities() if a.__name__ not in replaced]
        return [*kept, create_fulfillment_orders, renew_authorizations]


def released(fo: str) -> FulfillmentEvent:
    return FulfillmentEvent(
        f"backorder_released:{fo}",
        "backorder_released",
        fo,
        items=[ShipmentItemData("line-2", 1)],
        reason="supply received",
    )


def repromised(fo: str, promise_date: str) -> FulfillmentEvent:
    return FulfillmentEvent(
        f"backorder_repromised:{fo}:{promise_date}",
        "backorder_repromised",
        fo,
        replacements=[
            FulfillmentOrderData(
                fo,
                "wh-east",
                "dg-1",
                [RoutingLineData("line-2", "SKU-MUG", 1)],
                promise_date=promise_date,
            )
        ],
        reason="the supplier's shipment is late",
    )


async def release_and_deliver(handle: Any) -> None:
    """The pre-order's release arrives, ships and is delivered."""
    for event in (
        released("fo-2"),
        shipped("fo-2", "s2", [("line-2", 1)]),
        delivered("fo-2", "s2"),
    ):
        await handle.signal("fulfillment_event", event)


async def renewals(services: PreOrder, count: int) -> None:
    for _ in range(1500):
        if len(services.renewals) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(services.renewals)} renewal(s), wanted {count}")


async def test_a_pre_orders_hold_is_renewed_when_due_and_the_release_is_captured(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = PreOrder(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await renewals(services, 1)
        await until(services, "payment.captured")
        assert len(services.renewals) == 1  # nothing renewed before it falls due

        # Nothing else happens to the order: only its timer can wake it to renew.
        await time_skipping_env.sleep(SIX_DAYS + timedelta(seconds=5))
        await renewals(services, 2)
        await until(services, "payment.reauthorized")
        await handle.signal("fulfillment_event", released("fo-2"))
        await handle.signal("fulfillment_event", shipped("fo-2", "s2", [("line-2", 1)]))
        await handle.signal("fulfillment_event", delivered("fo-2", "s2"))
        result = await handle.result()
        await record(handle, "renewal")

    first, second = services.renewals
    assert first.promise_date == second.promise_date == RELEASE
    assert first.idempotency_key != second.idempotency_key
    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor == services.captured
    assert services.kinds().index("payment.reauthorized") < services.kinds().index(
        "fulfillment.released"
    )


async def test_a_declined_renewal_holds_the_order_until_an_agent_retries(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = PreOrder(decline_renewal=True), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await renewals(services, 1)
        await time_skipping_env.sleep(SIX_DAYS + timedelta(seconds=5))
        await until(services, "exception.payment")
        assert services.statuses[-1] == ON_HOLD
        [exception_id] = services.exceptions
        [held] = [p for p in services.named("progress") if p.kind == "exception.payment"]
        assert "card_declined" in held.summary
        resolved = await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(exception_id, "retry", "card updated"),
            ResolutionResult,
        )
        await until(services, "payment.reauthorized")
        for event in (
            shipped("fo-1", "s1", [("line-1", 2)]),
            delivered("fo-1", "s1"),
            released("fo-2"),
            shipped("fo-2", "s2", [("line-2", 1)]),
            delivered("fo-2", "s2"),
        ):
            await handle.signal("fulfillment_event", event)
        result = await handle.result()

    assert resolved.action == "retry"
    assert len(services.renewals) == 3  # asked, declined, renewed on the agent's retry
    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor == services.captured


async def test_a_backorder_promised_later_asks_payments_again_for_the_new_date(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = PreOrder(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await renewals(services, 1)
        # No time passes: the new date alone makes the order ask again.
        await handle.signal("fulfillment_event", repromised("fo-2", LATER))
        await until(services, "fulfillment.repromised")
        await renewals(services, 2)
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await release_and_deliver(handle)
        result = await handle.result()
        await record(handle, "backorder_released")

    assert [r.promise_date for r in services.renewals] == [RELEASE, LATER]
    first, second = services.renewals
    assert first.idempotency_key != second.idempotency_key
    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor == services.captured


async def declined_and_held(env: WorkflowEnvironment, services: PreOrder, handle: Any) -> None:
    """The first ask, then six days later the renewal due then is declined: the order holds."""
    await renewals(services, 1)
    await env.sleep(SIX_DAYS + timedelta(seconds=5))
    await until(services, "exception.payment")
    assert services.statuses[-1] == ON_HOLD


async def test_an_agents_skip_after_a_declined_renewal_stops_renewing_and_the_order_ships(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = PreOrder(decline_renewal=True), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await declined_and_held(time_skipping_env, services, handle)
        skipped = await resolve(handle, services, "skip")
        # Weeks pass with the goods still awaited: payments is not asked again.
        await time_skipping_env.sleep(3 * SIX_DAYS)
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await release_and_deliver(handle)
        result = await handle.result()

    assert skipped.action == "skip"
    assert len(services.renewals) == 2  # asked, declined; none after the skip
    # Both shipments are captured as ever (payments holds a lapsed hold anew at capture), and
    # nothing is released: the order kept its holds to be charged from.
    assert [c.invoice_id for c in services.named("capture")] == ["inv-1", "inv-2"]
    assert result.status == FULFILLED
    assert result.captured_minor == order.grand_total_minor == services.captured
    assert services.named("void") == []


async def test_an_agents_cancel_after_a_declined_renewal_cancels_what_has_not_shipped(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = PreOrder(decline_renewal=True), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await until(services, "payment.captured")
        await declined_and_held(time_skipping_env, services, handle)
        canceled = await resolve(handle, services, "cancel")
        result = await handle.result()

    assert canceled.action == "cancel"
    # The awaited mug is taken off its backorder; the shipped tees stay shipped and charged.
    [taken] = services.named("cancel_lines")
    assert taken.fulfillment_order_id == "fo-2"
    assert [(i.order_line_id, i.quantity) for i in taken.lines] == [("line-2", 1)]
    mug_share = order.grand_total_minor - services.invoices["inv-1"]
    assert sum(services.memos.values()) == mug_share
    assert result.captured_minor == services.captured == services.invoices["inv-1"]
    # Nothing more will be charged: what the holds still keep is released.
    assert [v.idempotency_key for v in services.named("void")] == [f"{order.order_id}:void:settled"]
    assert len(services.renewals) == 2
