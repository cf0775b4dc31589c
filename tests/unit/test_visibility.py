"""The Temporal UI's view of an order, without Temporal: summaries and details say what the
order and each step are, and nothing about who the shopper is or where they live."""

from __future__ import annotations

import dataclasses
import json

from workflows.search_attributes import LOCATION_IDS, ORDER_ON_HOLD
from workflows.types import (
    Address,
    AuthorizeInput,
    CaptureInput,
    CreditMemoAndRefundInput,
    CreditMemoInput,
    LifecycleDeliveryGroup,
    LifecycleLine,
    LineQuantityChange,
    OrderLifecycleInput,
    PaymentMethodData,
    ProcessExceptionInput,
    ProgressInput,
    RefundInput,
)
from workflows.visibility import (
    SUMMARY_LIMIT,
    activity_summary,
    order_details,
    order_summary,
    search_attributes,
)

PERSONAL = ("Ada Lovelace", "ada@example.com", "12 Analytical Row", "Camden", "NW1 2AB", "tok_")


def a_payload() -> dict[str, object]:
    """A lifecycle payload as capture's outbox stores it, with personal data in every place
    the order carries some."""
    order = OrderLifecycleInput(
        order_id="o-1",
        channel_order_ref="WEB-1001",
        channel="web",
        currency="GBP",
        grand_total_minor=6427,
        payment_method=PaymentMethodData("card", "tok_visa_4242"),
        additional_payment_methods=[PaymentMethodData("gift_card", "tok_gift_9876")],
        delivery_groups=[
            LifecycleDeliveryGroup(
                "dg-1", Address("12 Analytical Row", "Camden", "NW1 2AB", "GB"), 599, "express"
            )
        ],
        lines=[LifecycleLine("l-1", "dg-1", "SKU-MUG", 2, 2400, 0, 480)],
        fraud_reasons=["amount above 1000.00"],
    )
    return dataclasses.asdict(order)


def test_the_summary_is_the_reference_channel_and_total_in_the_orders_currency() -> None:
    assert order_summary("WEB-1001", "web", 6427, "GBP") == "Order WEB-1001 · web · 64.27 GBP"
    assert order_summary("", "store", 1500, "JPY") == "Order (no reference) · store · 1500 JPY"
    clipped = order_summary("R" * 500, "web", 1, "USD")
    assert len(clipped) == SUMMARY_LIMIT
    assert clipped.startswith("Order RRR") and clipped.endswith("more characters)")


def test_the_details_list_what_was_bought_how_it_ships_and_pays_and_nothing_personal() -> None:
    details = order_details(a_payload())
    assert "- 2 x SKU-MUG (28.80 GBP)" in details
    assert "- dg-1: express to GB, shipping 5.99 GBP" in details
    assert "**Paid by** card …4242, gift card …9876" in details
    assert "**Fraud review** amount above 1000.00" in details
    for personal in PERSONAL:
        assert personal not in details


def test_each_step_is_summarised_with_masked_payment_methods_only() -> None:
    authorize = AuthorizeInput(
        "o-1",
        "o-1:authorize",
        PaymentMethodData("card", "tok_visa_4242"),
        6427,
        "GBP",
        [PaymentMethodData("gift_card", "tok_gift_9876")],
    )
    assert (
        activity_summary("authorize_payment", authorize, "GBP")
        == "authorize 64.27 GBP on card …4242 then gift card …9876"
    )
    assert (
        activity_summary("capture_invoice", CaptureInput("inv-1", "o-1:capture:inv-1:2"), "GBP")
        == "capture invoice inv-1 (attempt 2)"
    )
    assert (
        activity_summary("refund_credit_memo", RefundInput("o-1", "cm-1", "o-1:refund:x:1"), "GBP")
        == "refund (or release) credit memo cm-1"
    )
    memo = CreditMemoInput("o-1", "k", "GBP", "Ada Lovelace changed her mind", "appeasement")
    memo.appeasement_minor = 500
    assert activity_summary("create_credit_memo", memo, "GBP") == (
        "credit memo (appeasement) for 5.00 GBP goodwill"
    )
    with_refund = CreditMemoAndRefundInput(memo, "o-1:refund:x:1")
    assert activity_summary("credit_memo_and_refund", with_refund, "GBP") == (
        "credit memo (appeasement) for 5.00 GBP goodwill and give it back"
    )
    with_refund.void_idempotency_key = "o-1:void"
    assert activity_summary("credit_memo_and_refund", with_refund, "GBP") == (
        "credit memo (appeasement) for 5.00 GBP goodwill and give it back, "
        "then void what the authorizations hold"
    )
    # Free text (an agent's reason, a timeline summary) never reaches a summary.
    progress = ProgressInput(
        "o-1",
        "k",
        "shipped",
        "shipment.shipped",
        "Shipped to Ada Lovelace at 12 Analytical Row",
        line_changes=[LineQuantityChange("l-1", allocated=-2, fulfilled=2)],
    )
    assert activity_summary("record_order_progress", progress, "GBP") == (
        "record shipment.shipped → shipped (allocated -2, fulfilled +2)"
    )
    exception = ProcessExceptionInput(
        "o-1", "k", "payment", "high", "invoice:inv-1", "ada@example.com's card failed"
    )
    assert activity_summary("record_process_exception", exception, "GBP") == (
        "raise a high payment process exception on invoice:inv-1"
    )
    shown = json.dumps(
        [activity_summary(n, a, "GBP") for n, a in [("m", memo), ("p", progress), ("a", authorize)]]
    )
    for personal in PERSONAL:
        assert personal not in shown


def test_search_attributes_leave_locations_unset_until_routing_places_something() -> None:
    attributes = search_attributes(
        status="processing",
        channel="web",
        total_minor=6427,
        currency="GBP",
        on_hold=False,
        location_ids=[],
    )
    assert attributes.get(LOCATION_IDS) is None and attributes.get(ORDER_ON_HOLD) is False
    placed = search_attributes(
        status="allocated",
        channel="web",
        total_minor=6427,
        currency="GBP",
        on_hold=False,
        location_ids=["wh-west", "wh-east", "wh-west"],
    )
    assert placed.get(LOCATION_IDS) == ["wh-east", "wh-west"]
