"""Capture scenarios 2, 3 and 4 of shared/scenarios.md, end to end: the stack as `make dev`
starts it, driven over gRPC, asserting the final state of each order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2

from oms_platform import temporal
from oms_platform.grpcutil import field_violations
from oms_tools.samples import sample_order
from tests.e2e.conftest import BIN, DevStack, wait_for_status

pytestmark = pytest.mark.e2e
pb = capture_pb2


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def capture(stack: DevStack) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    async with stack.channel("capture") as channel:
        yield capture_pb2_grpc.CaptureServiceStub(channel)


async def runs_of(stack: DevStack, order_id: str) -> list[str]:
    client = await temporal.connect(stack.settings)
    try:
        return [w.id async for w in client.list_workflows(f"WorkflowId = 'order:{order_id}'")]
    finally:
        await temporal.close(client)


async def database(stack: DevStack) -> asyncpg.Connection:
    port = stack.env["OMS_EMBEDDED_POSTGRES_PORT"]
    return await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/oms")


# ---- 2. Duplicate submit --------------------------------------------------------------------


async def test_scenario_2_a_repeated_submission_is_one_order_and_another_body_is_refused(
    stack: DevStack, capture: capture_pb2_grpc.CaptureServiceStub
) -> None:
    request = sample_order(email=f"{unique('dup')}@example.com")
    first = await capture.SubmitOrder(request, timeout=10)
    again = await capture.SubmitOrder(request, timeout=10)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.order.order_id == first.order.order_id

    changed = pb.SubmitOrderRequest()
    changed.CopyFrom(request)
    changed.lines[1].quantity = 2
    changed.grand_total.amount_minor += 1200  # one more mug (the line's tax is unchanged)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.SubmitOrder(changed, timeout=10)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert request.idempotency_key in (raised.value.details() or "")

    view = await wait_for_status(capture, first.order.order_id)
    order = view.order
    assert order.status == pb.ORDER_STATUS_FULFILLED
    assert [(line.sku, line.quantity) for line in order.lines] == [
        ("SKU-TSHIRT-M", 2),
        ("SKU-MUG", 1),
    ]
    total = request.grand_total.amount_minor
    assert order.totals.grand_total.amount_minor == total
    assert view.payment_summary.captured.amount_minor == total
    [authorization] = view.authorizations
    assert authorization.amount.amount_minor == total
    mine = await capture.ListOrders(pb.ListOrdersRequest(shopper_id=order.shopper.shopper_id))
    assert [o.order_id for o in mine.orders] == [order.order_id]
    assert await runs_of(stack, order.order_id) == [f"order:{order.order_id}"]


# ---- 3. Bad order ---------------------------------------------------------------------------


async def test_scenario_3_a_bad_order_names_every_bad_field_and_leaves_no_trace(
    stack: DevStack, capture: capture_pb2_grpc.CaptureServiceStub
) -> None:
    bad = sample_order(email=f"{unique('bad')}@example.com")
    bad.lines[0].quantity = -2
    bad.currency = "XYZ"
    bad.grand_total.amount_minor = 100  # does not add up whatever the lines are
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.SubmitOrder(bad, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {field for field, _ in field_violations(raised.value)}
    assert {"lines[0].quantity", "currency", "grand_total"} <= fields

    empty = sample_order(email=f"{unique('empty')}@example.com")
    del empty.lines[:]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.SubmitOrder(empty, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = dict(field_violations(raised.value))
    assert violations["lines"] == "at least one line is required"

    conn = await database(stack)
    try:
        for request in (bad, empty):
            left = await conn.fetchval(
                "SELECT (SELECT count(*) FROM capture.orders WHERE channel_order_ref = $1)"
                " + (SELECT count(*) FROM capture.shoppers WHERE email_normalized = $2)"
                " + (SELECT count(*) FROM capture.idempotency_keys WHERE key LIKE '%:' || $3)",
                request.channel_order_ref,
                request.shopper.email,
                request.idempotency_key,
            )
            assert left == 0
        # No order, so no lifecycle start was ever queued for it.
        queued = await conn.fetchval(
            "SELECT count(*) FROM capture.outbox o WHERE NOT EXISTS"
            " (SELECT 1 FROM capture.orders WHERE 'order:' || id = o.workflow_id)"
        )
        assert queued == 0
    finally:
        await conn.close()


# ---- 4. Many channels -----------------------------------------------------------------------


async def test_scenario_4_five_channels_capture_one_shopper_and_every_order_is_fulfilled(
    stack: DevStack, capture: capture_pb2_grpc.CaptureServiceStub
) -> None:
    email = f"{unique('grace')}@example.com"
    pos_id = unique("pos")
    requests = {
        "web": sample_order(channel="web", email=email),
        "marketplace": sample_order(channel="marketplace", email=email.upper()),
        "store": sample_order(channel="store", email=f"  {email} "),
        "b2b": sample_order(channel="b2b", email=email),
        "agent": sample_order(channel="agent", email=email),
    }
    requests["web"].shopper.channel_customer_id = unique("web")
    requests["marketplace"].shopper.channel_customer_id = unique("mkt")
    requests["store"].shopper.channel_customer_id = pos_id
    requests["b2b"].shopper.kind = pb.SHOPPER_KIND_BUSINESS
    requests["b2b"].shopper.company = "Lovelace Analytics"
    requests["b2b"].payment_method.CopyFrom(
        payments_pb2.PaymentMethod(
            type=payments_pb2.PAYMENT_METHOD_TYPE_INVOICE_TERMS, token="net30:lovelace"
        )
    )
    captured = {
        channel: (await capture.SubmitOrder(request, timeout=10)).order
        for channel, request in requests.items()
    }
    # The till knows the shopper by its own customer id alone from now on.
    by_pos_id = sample_order(channel="store", email="")
    by_pos_id.shopper.email = ""
    by_pos_id.shopper.channel_customer_id = pos_id
    captured["store again"] = (await capture.SubmitOrder(by_pos_id, timeout=10)).order

    channels = {channel: order.channel for channel, order in captured.items()}
    assert channels == {
        "web": pb.CHANNEL_WEB,
        "marketplace": pb.CHANNEL_MARKETPLACE,
        "store": pb.CHANNEL_STORE,
        "b2b": pb.CHANNEL_B2B,
        "agent": pb.CHANNEL_AGENT,
        "store again": pb.CHANNEL_STORE,
    }
    [shopper_id] = {order.shopper.shopper_id for order in captured.values()}
    assert captured["store again"].shopper.channel_customer_id == pos_id

    # A storefront's tracking page follows the web order while everything runs.
    web_id = captured["web"].order_id
    watched = [u async for u in capture.WatchOrder(pb.WatchOrderRequest(order_id=web_id))]
    views = await asyncio.gather(*(wait_for_status(capture, o.order_id) for o in captured.values()))

    for view in views:
        assert view.order.status == pb.ORDER_STATUS_FULFILLED, view.order.channel
        total = view.order.totals.grand_total.amount_minor
        assert view.payment_summary.captured.amount_minor == total
        assert all(line.quantities.fulfilled == line.quantity for line in view.order.lines)
    assert views[4].timeline[0].actor == "agent"  # the agent ordered on the shopper's behalf
    listed = await capture.ListOrders(pb.ListOrdersRequest(shopper_id=shopper_id))
    assert {o.order_id for o in listed.orders} == {o.order_id for o in captured.values()}

    assert watched[0].snapshot and not any(u.snapshot for u in watched[1:])
    assert watched[-1].status == pb.ORDER_STATUS_FULFILLED
    kinds = [e.kind for u in watched for e in u.events]
    assert kinds[0] == "order.captured" and kinds[-1] == "order.fulfilled"
    assert kinds == [e.kind for e in views[0].timeline]


async def test_oms_order_watch_follows_an_order_as_it_happens(
    stack: DevStack, capture: capture_pb2_grpc.CaptureServiceStub
) -> None:
    order = (await capture.SubmitOrder(sample_order(email=f"{unique('cli')}@x.io"))).order
    process = await asyncio.create_subprocess_exec(
        str(BIN / "oms"),
        "order",
        "watch",
        order.order_id,
        "--timeout",
        "90",
        env=stack.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[-1].strip() == "status → fulfilled"
    kinds = [line.split()[1] for line in lines if not line.startswith(" ")]
    view = await capture.GetOrderTimeline(pb.GetOrderTimelineRequest(order_id=order.order_id))
    assert kinds == [e.kind for e in view.events]  # each event once, in order
