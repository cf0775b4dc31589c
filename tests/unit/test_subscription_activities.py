"""What the subscription's activities send: a cycle's SubmitOrder and its progress record."""

from __future__ import annotations

from oms.capture.v1 import capture_pb2
from oms.subscriptions.v1 import subscriptions_pb2

from workflows.activities import _cycle_order, _subscription
from workflows.subscription_types import (
    MONTHLY,
    SUBSCRIPTION_PAST_DUE,
    CadenceData,
    CycleOrderInput,
    PlanData,
    PlanItemData,
    SubscriberData,
    SubscriptionView,
)
from workflows.types import Address, PaymentMethodData

PLAN = PlanData(
    plan_id="plan-deluxe",
    name="Deluxe box",
    items=[
        PlanItemData("SKU-COFFEE", "Coffee beans 1kg", 2, 1500),
        PlanItemData("SKU-MUG", "Mug", 1, 1000),
    ],
    currency="EUR",
    cadence=CadenceData(MONTHLY, 1),
    timezone="Europe/Berlin",
    shipping_minor=500,
    tax_minor=301,
)
ADDRESS = Address("1 Main St", "Berlin", "10115", "DE")


def test_a_cycle_order_is_the_plan_at_its_price_keyed_by_the_cycle() -> None:
    order = _cycle_order(
        CycleOrderInput(
            subscription_id="sub-1",
            cycle=7,
            channel="web",
            plan=PLAN,
            subscriber=SubscriberData("ada@example.com", "Ada"),
            delivery_address=ADDRESS,
            delivery_method="standard",
            payment_method=PaymentMethodData("card", "tok_visa"),
        )
    )
    assert (order.idempotency_key, order.subscription_id, order.subscription_cycle) == (
        "sub-1:7",
        "sub-1",
        7,
    )
    assert order.channel == capture_pb2.CHANNEL_WEB
    assert [(line.sku, line.quantity, line.unit_price.amount_minor) for line in order.lines] == [
        ("SKU-COFFEE", 2, 1500),
        ("SKU-MUG", 1, 1000),
    ]
    # The plan's tax over the lines by value (3000 : 1000), to the unit.
    assert [sum(t.amount.amount_minor for t in line.taxes) for line in order.lines] == [226, 75]
    assert order.delivery_groups[0].shipping_charge.amount_minor == 500
    assert order.grand_total.amount_minor == 3000 + 1000 + 500 + 301 == PLAN.price_minor()
    assert order.shopper.email == "ada@example.com"
    assert order.payment_method.token == "tok_visa"


def test_the_progress_names_the_plan_and_leaves_unset_times_unset() -> None:
    view = SubscriptionView(
        "sub-1",
        PLAN,
        SUBSCRIPTION_PAST_DUE,
        next_cycle=8,
        next_cycle_at="2027-08-01T07:00:00+00:00",
    )
    record = _subscription(view)
    assert (record.plan_id, record.status, record.next_cycle) == (
        "plan-deluxe",
        subscriptions_pb2.SUBSCRIPTION_STATUS_PAST_DUE,
        8,
    )
    assert record.next_cycle_at.ToJsonString() == "2027-08-01T07:00:00Z"
    assert not record.HasField("paused_until")
