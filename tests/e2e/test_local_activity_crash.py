"""Issue 15: the worker is killed after a local activity did its work but before its marker
was recorded. A local activity's result enters history only when its workflow task completes,
so the next worker runs the step again; the service answers from the step's idempotency key
with its first result, and the order is authorized once, charged once, and its timeline says
each thing once.

Deterministic, not a race: fulfillment is frozen (SIGSTOP), so the order's first workflow task
— authorize_payment, create_fulfillment_orders, then the batch of progress reports (started,
authorized, allocated) — hangs in the routing call after the authorization was made, holding
its markers unrecorded; the worker is killed there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from oms_tools.samples import sample_order
from services.payments.sim_store import read_operation_log
from tests.e2e.conftest import DevStack, kill, pid_of, wait_for_status
from workflows import activity_names as names

pytestmark = pytest.mark.e2e

# The SDK heartbeats a workflow task that waits on local activities at 80% of its 10 s
# timeout, recording the markers made so far: the kill must land well before that.
WINDOW_SECONDS = 6.0


def local_activity(event: HistoryEvent) -> str:
    """The activity type a local activity's marker records, or "" for any other event."""
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
        return ""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != "core_local_activity":
        return ""
    # The marker's own data (written by the SDK's core, not sealed by the codec).
    return str(json.loads(marker.details["data"].payloads[0].data)["activity_type"])


async def history_of(temporal: Client, order_id: str) -> list[HistoryEvent]:
    """The order's workflow history as the server holds it now."""
    return list((await temporal.get_workflow_handle(f"order:{order_id}").fetch_history()).events)


async def authorizations_held(
    payments: payments_pb2_grpc.PaymentsServiceStub, order_id: str, within: float
) -> list[payments_pb2.Authorization]:
    """The order's authorizations, as soon as payments holds one."""
    deadline = time.monotonic() + within
    while True:
        money = await payments.GetPaymentSummary(
            payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=5
        )
        if money.authorizations:
            return list(money.authorizations)
        assert time.monotonic() < deadline, f"payments holds no authorization for {order_id}"
        await asyncio.sleep(0.05)


async def restarted(stack: DevStack, role: str, killed: int, within: float = 30.0) -> int:
    """The pid of the process the supervisor started for `role` after `killed`."""
    deadline = time.monotonic() + within
    while (pid := pid_of(stack, role)) in (None, killed):
        assert time.monotonic() < deadline, f"the supervisor did not restart the {role}"
        await asyncio.sleep(0.2)
    assert pid is not None
    return pid


async def test_a_worker_killed_between_a_local_activity_and_its_marker_authorizes_once(
    stack: DevStack,
) -> None:
    temporal = await Client.connect(stack.temporal)  # history only: no payload is opened
    fulfillment = pid_of(stack, "fulfillment")
    assert fulfillment is not None, "no fulfillment process under oms dev"
    async with (
        stack.channel("capture") as capture_channel,
        stack.channel("payments") as payments_channel,
    ):
        capture = capture_pb2_grpc.CaptureServiceStub(capture_channel)
        payments = payments_pb2_grpc.PaymentsServiceStub(payments_channel)

        os.kill(fulfillment, signal.SIGSTOP)
        try:
            submitted = time.monotonic()
            order_id = (await capture.SubmitOrder(sample_order(), timeout=10)).order.order_id
            # The first workflow task authorized, then hung routing on frozen fulfillment;
            # its progress reports wait to go to capture in one batch when the step ends...
            [held] = await authorizations_held(payments, order_id, within=WINDOW_SECONDS)
            timeline = await capture.GetOrderTimeline(
                capture_pb2.GetOrderTimelineRequest(order_id=order_id), timeout=5
            )
            assert [event.kind for event in timeline.events] == ["order.captured"]
            # ...and none of its markers is in history yet: the kill lands inside the window.
            before = [n for e in await history_of(temporal, order_id) if (n := local_activity(e))]
            assert before == [], f"markers recorded before the kill: {before}"
            assert time.monotonic() - submitted < WINDOW_SECONDS, "too late: maybe heartbeated"
            killed = kill(stack, "worker")
        finally:
            os.kill(fulfillment, signal.SIGCONT)
        await restarted(stack, "worker", killed)

        view = await wait_for_status(capture, order_id, within=60)
        money = await payments.GetPaymentSummary(
            payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
        )
        history = await history_of(temporal, order_id)

    # What a user sees: the order fulfilled, authorized once and charged its total once.
    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
    total = view.order.totals.grand_total.amount_minor
    assert [a.authorization_id for a in money.authorizations] == [held.authorization_id]
    succeeded = [c for c in money.captures if c.status == payments_pb2.CAPTURE_STATUS_SUCCEEDED]
    assert [c.amount.amount_minor for c in succeeded] == [total]
    assert money.summary.captured.amount_minor == total

    # What the gateway itself performed for the order: one hold, one charge.
    performed = [
        op
        for op in read_operation_log(stack.gateway_log)
        if op.key.startswith(f"{order_id}:") and op.result.succeeded
    ]
    holds = [op for op in performed if op.kind == "authorize"]
    assert [op.reference for op in holds] == [held.gateway_reference], holds
    assert [op.result.amount_minor for op in performed if op.kind == "capture"] == [total]

    # The order's timeline says each step once, though the first task's steps ran twice.
    kinds = [event.kind for event in view.timeline]
    assert kinds.count("lifecycle.started") == 1, kinds
    assert kinds.count("payment.authorized") == 1, kinds

    # The history: the killed worker's task timed out, and the next one recorded the
    # authorization's only marker.
    timed_out = EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
    lost = [i for i, e in enumerate(history) if e.event_type == timed_out]
    assert lost, "no workflow task timed out: the kill lost nothing"
    markers = [(i, local_activity(e)) for i, e in enumerate(history)]
    authorized = [i for i, name in markers if name == names.AUTHORIZE_PAYMENT]
    assert len(authorized) == 1, markers
    assert authorized[0] > lost[0], markers
