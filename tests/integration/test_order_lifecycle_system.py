"""The whole lifecycle in one process: real services, real Temporal dev server, real worker."""

from __future__ import annotations

import asyncio
import time

from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2

from oms_tools.samples import sample_order
from tests.conftest import System


async def settle(
    stub: capture_pb2_grpc.CaptureServiceStub, order_id: str
) -> capture_pb2.GetOrderResponse:
    deadline = time.monotonic() + 60
    while True:
        view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        if view.order.status in {
            capture_pb2.ORDER_STATUS_FULFILLED,
            capture_pb2.ORDER_STATUS_CANCELED,
        }:
            return view
        assert time.monotonic() < deadline, f"order stuck in {view.order.status}"
        await asyncio.sleep(0.1)


async def test_an_order_flows_from_submit_to_fulfilled_with_money_reconciled(
    system: System,
) -> None:
    stub = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    async with system.simulator():
        submitted = await stub.SubmitOrder(sample_order(), timeout=10)
        view = await settle(stub, submitted.order.order_id)

    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
    total = view.order.totals.grand_total.amount_minor
    assert view.payment_summary.captured.amount_minor == total
    assert sum(i.total.amount_minor for i in view.invoices) == total
    [fo] = view.fulfillment_orders
    assert fo.status == fulfillment_pb2.FULFILLMENT_ORDER_STATUS_SHIPPED
