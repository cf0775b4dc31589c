"""A subscription on the dev stack with a one-minute cadence: each cycle's order goes through
capture's front door and its ordinary lifecycle to fulfilled, and killing the worker just as a
cycle falls due still makes exactly one order for that cycle."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2
from oms.subscriptions.v1 import subscriptions_pb2 as pb
from oms.subscriptions.v1 import subscriptions_pb2_grpc

from tests.e2e.conftest import DevStack, kill, pid_of, wait_for_status

pytestmark = pytest.mark.e2e

UNIT_PRICE = 2400
SHIPPING = 500
# What one cycle of the plan costs: one box at UNIT_PRICE, shipping, no tax.
CYCLE_PRICE = 1 * UNIT_PRICE + SHIPPING


async def cycle_orders(
    capture: capture_pb2_grpc.CaptureServiceStub, sku: str
) -> list[capture_pb2.Order]:
    """Every order carrying `sku` (only this test's subscription orders it), oldest first."""
    listing = await capture.ListOrders(capture_pb2.ListOrdersRequest(sku=sku), timeout=10)
    return sorted(listing.orders, key=lambda o: o.subscription_cycle)


async def until_orders(
    capture: capture_pb2_grpc.CaptureServiceStub, sku: str, count: int, within: float
) -> list[capture_pb2.Order]:
    deadline = time.monotonic() + within
    while True:
        orders = await cycle_orders(capture, sku)
        if len(orders) >= count:
            return orders
        assert time.monotonic() < deadline, f"{len(orders)} of {count} cycle orders in time"
        await asyncio.sleep(0.5)


async def until_cycles_paid(
    subscriptions: subscriptions_pb2_grpc.SubscriptionsServiceStub,
    subscription_id: str,
    within: float,
) -> dict[int, tuple[int, common_pb2.Money]]:
    """(status, amount) of each cycle with an order, once none is still waiting for its
    payment's outcome (ORDERED) or `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        history = await subscriptions.GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=subscription_id), timeout=10
        )
        cycles = {c.number: (c.status, c.amount) for c in history.cycles if c.order_id}
        waiting = any(status == pb.CYCLE_STATUS_ORDERED for status, _ in cycles.values())
        if not waiting or time.monotonic() >= deadline:
            return cycles
        await asyncio.sleep(0.5)


async def test_cycle_orders_reach_fulfilled_and_a_worker_killed_at_a_cycle_makes_one_order(
    stack: DevStack,
) -> None:
    sku = f"E2E-BOX-{uuid.uuid4().hex[:8].upper()}"
    async with stack.channel("fulfillment") as channel:
        await fulfillment_pb2_grpc.FulfillmentServiceStub(channel).SetInventoryLevels(
            fulfillment_pb2.SetInventoryLevelsRequest(
                levels=[fulfillment_pb2.InventoryLevel(location_id="wh-east", sku=sku, on_hand=50)]
            ),
            timeout=10,
        )
    async with (
        stack.channel("servicing") as servicing_channel,
        stack.channel("capture") as capture_channel,
    ):
        subscriptions = subscriptions_pb2_grpc.SubscriptionsServiceStub(servicing_channel)
        capture = capture_pb2_grpc.CaptureServiceStub(capture_channel)
        plan = (
            await subscriptions.CreatePlan(
                pb.CreatePlanRequest(
                    idempotency_key=str(uuid.uuid4()),
                    name="Box every minute",
                    items=[
                        pb.PlanItem(sku=sku, name="Box", quantity=1, unit_price_minor=UNIT_PRICE)
                    ],
                    currency="USD",
                    shipping_minor=SHIPPING,
                    cadence=pb.Cadence(minutes=1),
                    timezone="UTC",
                ),
                timeout=10,
            )
        ).plan
        # The first cycle falls due a few seconds from now, the second a minute later.
        first_due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
        start_at = Timestamp()
        start_at.FromDatetime(first_due)
        subscription = (
            await subscriptions.CreateSubscription(
                pb.CreateSubscriptionRequest(
                    idempotency_key=str(uuid.uuid4()),
                    plan_id=plan.plan_id,
                    channel="web",
                    subscriber=pb.Subscriber(email="box@example.com", name="Box Subscriber"),
                    delivery_address=common_pb2.PostalAddress(
                        line1="1 Market St",
                        city="Philadelphia",
                        region="PA",
                        postal_code="19106",
                        country_code="US",
                    ),
                    delivery_method="standard",
                    payment_method=payments_pb2.PaymentMethod(
                        type=payments_pb2.PAYMENT_METHOD_TYPE_CARD, token="tok_visa"
                    ),
                    start_at=start_at,
                ),
                timeout=10,
            )
        ).subscription
        subscription_id = subscription.subscription_id

        # Killed as the first cycle falls due: its timer fires on a worker that is gone or
        # going, and the restarted worker places the cycle's order.
        delay = (first_due - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, delay))
        killed = kill(stack, "worker")
        [first] = await until_orders(capture, sku, 1, within=90)
        assert pid_of(stack, "worker") not in (None, killed)  # the supervisor restarted it
        assert (first.subscription_id, first.subscription_cycle) == (subscription_id, 1)
        assert first.totals.grand_total.amount_minor == UNIT_PRICE + SHIPPING
        view = await wait_for_status(capture, first.order_id, within=90)
        assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED

        # The second cycle a minute after the first, to fulfilled as well.
        orders = await until_orders(capture, sku, 2, within=120)
        second = orders[1]
        assert (second.subscription_id, second.subscription_cycle) == (subscription_id, 2)
        view = await wait_for_status(capture, second.order_id, within=90)
        assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
        assert view.order.totals.grand_total.amount_minor == UNIT_PRICE + SHIPPING

        # Canceled now: no third cycle; the history agents read names both cycles' orders.
        changed = await subscriptions.ChangeSubscription(
            pb.ChangeSubscriptionRequest(
                idempotency_key=str(uuid.uuid4()),
                subscription_id=subscription_id,
                cancel=pb.Cancel(at_period_end=False),
                reason="e2e done",
            ),
            timeout=30,
        )
        assert changed.subscription.status == pb.SUBSCRIPTION_STATUS_CANCELED
        history = await subscriptions.GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=subscription_id), timeout=10
        )
        ordered = {c.number: c.order_id for c in history.cycles if c.order_id}
        assert ordered == {1: first.order_id, 2: second.order_id}
        # Both cycles' payments were authorized (each order was told to its subscription when it
        # was), each for what a cycle of the plan costs: its one box and shipping, no tax.
        paid = await until_cycles_paid(subscriptions, subscription_id, within=30)
        assert paid == {
            1: (pb.CYCLE_STATUS_PAID, common_pb2.Money(amount_minor=CYCLE_PRICE, currency="USD")),
            2: (pb.CYCLE_STATUS_PAID, common_pb2.Money(amount_minor=CYCLE_PRICE, currency="USD")),
        }
        # Exactly one order per cycle, the killed worker's cycle included.
        orders = await cycle_orders(capture, sku)
        assert [(o.subscription_cycle, o.order_id) for o in orders] == [
            (1, first.order_id),
            (2, second.order_id),
        ]
