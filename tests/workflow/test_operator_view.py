"""What a platform engineer reads off an order's workflow in the Temporal UI: the `state`
query's ledger, a summary on every activity, and search attributes that follow the lifecycle
(and never carry the shopper's address or payment token)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.common import TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from tests.history import record
from tests.workflow.test_order_lifecycle import (
    Handle,
    Services,
    an_order,
    change,
    delivered,
    shipped,
    start,
    until,
    update,
)
from workflows.search_attributes import (
    LOCATION_IDS,
    ORDER_CHANNEL,
    ORDER_CURRENCY,
    ORDER_ON_HOLD,
    ORDER_STATUS,
    ORDER_TOTAL_MINOR,
)
from workflows.types import (
    RECEIVE_RETURN_UPDATE,
    RESOLVE_EXCEPTION_UPDATE,
    RETURN_UPDATE,
    STATE_QUERY,
    ItemQuantity,
    OrderState,
    PaymentMethodData,
    Resolution,
    ResolutionResult,
)

TOKEN = "tok_4000056655665556"
# The stand-in order's address (tests/workflow/test_order_lifecycle.an_order) and token.
PERSONAL = ("1 Main St", "Newark", "07102", TOKEN)


async def state(handle: Handle) -> OrderState:
    result: OrderState = await handle.query(STATE_QUERY, result_type=OrderState)
    return result


async def attributes(handle: Handle) -> TypedSearchAttributes:
    return (await handle.describe()).typed_search_attributes


def activity_summaries(history: Any) -> list[tuple[str, str]]:
    """(activity type, summary) of every activity the workflow ran, remote or local, in order."""
    found = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if "local_activity" not in marker.marker_name:
                continue
            name = json.loads(marker.details["data"].payloads[0].data)["activity_type"]
        else:
            continue
        summary = event.user_metadata.summary
        text = json.loads(summary.data) if event.HasField("user_metadata") else ""
        found.append((name, text))
    return found


async def attributes_once(
    handle: Handle, shown: Callable[[TypedSearchAttributes], bool]
) -> TypedSearchAttributes:
    """The search attributes once `shown` holds (or as they are after a few seconds). A step
    is a local activity: the service hears of it while its workflow task is still running,
    and the attributes that task upserts are visible only once it completes."""
    for _ in range(100):
        found = await attributes(handle)
        if shown(found):
            return found
        await asyncio.sleep(0.05)
    return found


async def test_the_state_query_shows_the_ledger_as_the_order_ships_and_is_returned(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order(payment_method=PaymentMethodData("card", TOKEN))
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 2)]))
        await until(services, "payment.captured")
        partly = await state(handle)

        await handle.signal("fulfillment_event", shipped("fo-1", "s2", [("line-2", 1)]))
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.signal("fulfillment_event", delivered("fo-1", "s2"))
        await until(services, "order.fulfilled")
        opened = await update(
            handle, RETURN_UPDATE, change("return", lines=[ItemQuantity("line-1", 1)])
        )
        returning = await state(handle)
        received = await update(
            handle,
            RECEIVE_RETURN_UPDATE,
            change(
                "receive_return",
                return_order_id=opened.return_order_id,
                lines=[ItemQuantity("line-1", 1)],
            ),
        )
        returned = await state(handle)
        again = await state(handle)
        history = await handle.fetch_history()
        await handle.result()
        await record(handle, "operator_view")

    # One parcel of the two T-shirts out: shipped and invoiced, the mug still at the warehouse.
    assert partly.status == "partially_shipped"
    lines = {line.order_line_id: line for line in partly.lines}
    assert (lines["line-1"].fulfilled, lines["line-1"].allocated, lines["line-1"].invoiced) == (
        2,
        0,
        2,
    )
    assert (lines["line-2"].fulfilled, lines["line-2"].allocated) == (0, 1)
    assert lines["line-2"].available_to_cancel == 1 and lines["line-1"].available_to_return == 2
    # The T-shirts' share (less their discount, with their tax) and the group's shipping.
    assert partly.captured_minor == partly.invoiced_minor == 2000 - 100 + 150 + 500
    assert partly.undelivered_shipments == ["s1"]
    [fo] = partly.fulfillment_orders
    assert (fo.location_id, fo.open_units) == ("wh-east", 1)
    assert partly.open_returns == [] and partly.open_exceptions == []
    assert partly.authorized and partly.grand_total_minor == order.grand_total_minor

    # Delivered, a return opened: the return is open and the unit is return-initiated.
    [rma] = returning.open_returns
    assert (rma.return_order_id, rma.expected, rma.received) == (
        opened.return_order_id,
        {"line-1": 1},
        {},
    )
    assert returning.captured_minor == order.grand_total_minor
    assert returning.delivered_at is not None and returning.return_window_closes_at is not None
    assert {line.order_line_id: line.return_initiated for line in returning.lines}["line-1"] == 1

    # Received: no open return, the unit returned, its share credited and refunded.
    assert returned.open_returns == []
    assert {line.order_line_id: line.returned for line in returned.lines} == {
        "line-1": 1,
        "line-2": 0,
    }
    assert returned.refunded_minor == received.refunded_minor == (2000 - 100 + 150) // 2
    assert returned.credited_minor == received.credited_minor
    assert returned.changes == 2
    # Asking twice changes nothing and adds nothing to history (a query only reads).
    assert again == returned
    assert not any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events
    )


async def test_every_activity_has_a_summary_of_what_it_does_for_the_order(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Services(), an_order(payment_method=PaymentMethodData("card", TOKEN))
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.result()
        history = await handle.fetch_history()

    summaries = activity_summaries(history)
    assert summaries and all(text for _, text in summaries), summaries
    by_type: dict[str, list[str]] = {}
    for name, text in summaries:
        by_type.setdefault(name, []).append(text)
    assert by_type["authorize_payment"] == ["authorize 40.50 USD on card …5556"]
    assert by_type["create_fulfillment_orders"] == [
        "route and reserve 3 unit(s) of 2 line(s) [initial:1]"
    ]
    # The invoice and its capture are one payments call; the capture succeeded the first time.
    assert by_type["invoice_and_capture"] == [
        "invoice 3 shipped unit(s) of fo-1 + 5.00 USD shipping and capture it"
    ]
    assert "capture_invoice" not in by_type
    # Progress goes to capture in batches: the reports of one step of the lifecycle together.
    assert "record_order_progress" not in by_type
    assert (
        "record shipment.shipped → shipped (allocated -3, fulfilled +3); "
        "record payment.captured" in by_type["record_order_progress_batch"]
    )
    for _, text in summaries:
        for personal in PERSONAL:
            assert personal not in text


async def test_search_attributes_follow_the_order_and_hold_nothing_personal(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services(capture_failures=1)
    order = an_order(payment_method=PaymentMethodData("card", TOKEN))
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        allocated = await attributes_once(handle, lambda a: a.get(LOCATION_IDS) is not None)
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await until(services, "exception.payment")
        held = await attributes_once(handle, lambda a: bool(a.get(ORDER_ON_HOLD)))
        held_state = await state(handle)
        await update(
            handle,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(services.exceptions[0], "retry"),
            ResolutionResult,
        )
        resumed, resumed_state = await attributes(handle), await state(handle)
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.result()
        done = await attributes(handle)

    assert allocated.get(ORDER_STATUS) == "allocated"
    assert allocated.get(ORDER_CHANNEL) == "web"
    assert allocated.get(ORDER_TOTAL_MINOR) == order.grand_total_minor
    assert allocated.get(ORDER_CURRENCY) == "USD"
    assert allocated.get(ORDER_ON_HOLD) is False
    assert allocated.get(LOCATION_IDS) == ["wh-east"]

    assert (held.get(ORDER_STATUS), held.get(ORDER_ON_HOLD)) == ("on_hold", True)
    [open_exception] = held_state.open_exceptions
    assert open_exception.process_exception_id == held_state.waiting_on == services.exceptions[0]
    assert (open_exception.category, open_exception.status) == ("payment", "waiting")
    assert open_exception.attached_to == "invoice:inv-1"

    assert resumed.get(ORDER_ON_HOLD) is False and resumed.get(ORDER_STATUS) == "shipped"
    assert resumed_state.open_exceptions == []
    [resolved] = resumed_state.exceptions
    assert (resolved.status, resolved.action) == ("resolved", "retry")

    assert done.get(ORDER_STATUS) == "fulfilled" and done.get(ORDER_ON_HOLD) is False
    every_value = json.dumps([[p.key.name, p.value] for p in done], default=str)
    for personal in PERSONAL:
        assert personal not in every_value
