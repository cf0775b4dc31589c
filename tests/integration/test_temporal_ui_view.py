"""What the Temporal UI shows of an order run through the whole system (capture's outbox starts
the lifecycle, the worker runs it, the simulator ships it): the start's summary and details,
a summary on every activity, the `state` query, and search attributes an operator can filter
by, none of which holds the shopper's name, email, address or payment token."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from oms_platform.codec import ENCODING
from oms_platform.money import format_minor
from oms_tools.samples import sample_order
from tests.conftest import System, wait_for
from workflows.search_attributes import (
    LOCATION_IDS,
    ORDER_CHANNEL,
    ORDER_CURRENCY,
    ORDER_ON_HOLD,
    ORDER_STATUS,
    ORDER_TOTAL_MINOR,
)
from workflows.types import STATE_QUERY, OrderState


def an_order_with_personal_data() -> tuple[capture_pb2.SubmitOrderRequest, list[str]]:
    """The sample order with a shopper, address and token unique to this test, and those."""
    tag = uuid.uuid4().hex[:10]
    request = sample_order(email=f"grace.{tag}@example.com", token=f"tok_visa_{tag}")
    request.shopper.name = f"Grace {tag} Hopper"
    request.delivery_groups[0].recipient_name = f"Grace {tag} Hopper"
    request.delivery_groups[0].address.line1 = f"{tag} Bayside Ave"
    request.delivery_groups[0].address.city = f"Arlington{tag}"
    request.delivery_groups[0].address.postal_code = f"Z{tag}"
    return request, [
        request.shopper.email,
        request.shopper.name,
        request.delivery_groups[0].address.line1,
        request.delivery_groups[0].address.city,
        request.delivery_groups[0].address.postal_code,
        request.payment_method.token,
        tag,
    ]


async def listed(client: Client, query: str, within: float = 20.0) -> list[str]:
    """Workflow ids a visibility list query finds (visibility trails the workflow a little:
    polled until it finds something or `within` passes)."""
    deadline = time.monotonic() + within
    while True:
        found = [w.id async for w in client.list_workflows(query)]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def scheduled_summaries(history: Any) -> list[Any]:
    """The user metadata summary payload of every activity the workflow ran: remote ones on
    their scheduled event, local ones on their marker."""
    return [
        e.user_metadata.summary
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        or (
            e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and "local_activity" in e.marker_recorded_event_attributes.marker_name
        )
    ]


async def test_an_orders_workflow_tells_operators_its_story_without_personal_data(
    system: System,
) -> None:
    request, personal = an_order_with_personal_data()
    stub = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    async with system.simulator():
        order_id = (await stub.SubmitOrder(request, timeout=10)).order.order_id
        await wait_for(stub, order_id, {capture_pb2.ORDER_STATUS_FULFILLED})
    workflow_id = f"order:{order_id}"
    handle = system.client.get_workflow_handle(workflow_id)
    total = request.grand_total.amount_minor

    # The start's summary and details, as the UI (through the codec server) shows them.
    described = await handle.describe()
    summary = await described.static_summary()
    assert summary == f"Order {request.channel_order_ref} · web · {format_minor(total, 'USD')}"
    details = await described.static_details() or ""
    assert "2 x SKU-TSHIRT-M" in details and "1 x SKU-MUG" in details
    assert "standard to US" in details
    assert f"card …{request.payment_method.token[-4:]}" in details

    # The state query: the ledger of a delivered order.
    state: OrderState = await handle.query(STATE_QUERY, result_type=OrderState)
    assert (state.status, state.channel_order_ref) == ("fulfilled", request.channel_order_ref)
    assert state.captured_minor == state.invoiced_minor == total
    assert {line.sku: (line.ordered, line.fulfilled, line.invoiced) for line in state.lines} == {
        "SKU-TSHIRT-M": (2, 2, 2),
        "SKU-MUG": (1, 1, 1),
    }
    assert state.open_returns == [] and state.open_exceptions == []
    assert state.undelivered_shipments == [] and state.delivered_at is not None
    locations = sorted({fo.location_id for fo in state.fulfillment_orders})
    assert locations

    # Search attributes an operator filters by, and a list query that finds the order by them.
    attributes = described.typed_search_attributes
    assert attributes.get(ORDER_STATUS) == "fulfilled"
    assert attributes.get(ORDER_CHANNEL) == "web"
    assert attributes.get(ORDER_TOTAL_MINOR) == total
    assert attributes.get(ORDER_CURRENCY) == "USD"
    assert attributes.get(ORDER_ON_HOLD) is False
    assert attributes.get(LOCATION_IDS) == locations
    this = f'WorkflowId = "{workflow_id}"'
    query = (
        f'OrderChannel = "web" AND OnHold = false AND OrderCurrency = "USD" '
        f'AND OrderTotalMinor = {total} AND LocationIds = "{locations[0]}" '
        f'AND OrderStatus = "fulfilled" AND {this}'
    )
    assert await listed(system.client, query) == [workflow_id]
    assert await listed(system.client, f"OnHold = true AND {this}", within=1) == []

    # Every activity carries a summary of what it does for this order.
    history = await handle.fetch_history()
    sealed = scheduled_summaries(history)
    assert sealed and all(s.data for s in sealed)
    summaries = await system.client.data_converter.decode(sealed)
    card = f"card …{request.payment_method.token[-4:]}"
    assert f"authorize {format_minor(total, 'USD')} on {card}" in summaries
    # A shipment's invoice and its capture: one step.
    assert any(
        s.startswith("invoice 3 shipped unit(s) of ") and s.endswith(" and capture it")
        for s in summaries
    )

    # What anyone with the server (no codec) sees: summaries and details are sealed like every
    # payload; search attributes are in clear, and none of the three holds anything personal.
    raw = await Client.connect(system.settings.temporal_target)
    raw_description = (await raw.get_workflow_handle(workflow_id).describe()).raw_description
    metadata = raw_description.execution_config.user_metadata
    assert metadata.summary.metadata["encoding"] == ENCODING
    assert metadata.details.metadata["encoding"] == ENCODING
    assert all(s.metadata["encoding"] == ENCODING for s in sealed)
    shown = json.dumps(
        {
            "summary": summary,
            "details": details,
            "activities": summaries,
            "search_attributes": [[p.key.name, p.value] for p in attributes],
            "indexed": str(raw_description.workflow_execution_info.search_attributes),
        },
        default=str,
        ensure_ascii=False,
    )
    for value in personal:
        assert value not in shown, value
