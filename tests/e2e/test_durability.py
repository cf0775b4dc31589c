"""Scenario 18: processes are killed while orders are in flight; after the supervisor restarts
them every order finishes, and every authorization, capture and reservation happened once."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_tools.samples import sample_order
from tests.e2e.conftest import DevStack, kill

pytestmark = pytest.mark.e2e


async def test_18_killing_the_worker_and_a_service_mid_order_loses_nothing(stack: DevStack) -> None:
    async with stack.channel("capture") as channel:
        capture = capture_pb2_grpc.CaptureServiceStub(channel)
        order_ids = []
        for i in range(12):
            order_ids.append((await capture.SubmitOrder(sample_order(), timeout=10)).order.order_id)
            if i == 4:
                kill(stack, "worker")
            if i == 8:
                kill(stack, "payments")

        deadline = time.monotonic() + 120
        views: dict[str, capture_pb2.GetOrderResponse] = {}
        while len(views) < len(order_ids):
            assert time.monotonic() < deadline, f"{len(order_ids) - len(views)} orders unfinished"
            for order_id in order_ids:
                if order_id in views:
                    continue
                try:
                    view = await capture.GetOrder(
                        capture_pb2.GetOrderRequest(order_id=order_id), timeout=5
                    )
                except grpc.aio.AioRpcError:
                    continue
                if (
                    view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
                    and not view.missing_sections
                ):
                    views[order_id] = view
            await asyncio.sleep(0.5)

    async with stack.channel("payments") as channel:
        payments = payments_pb2_grpc.PaymentsServiceStub(channel)
        for order_id, view in views.items():
            total = view.order.totals.grand_total.amount_minor
            money = await payments.GetPaymentSummary(
                payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
            )
            assert len(money.authorizations) == 1, order_id
            succeeded = [
                c for c in money.captures if c.status == payments_pb2.CAPTURE_STATUS_SUCCEEDED
            ]
            assert len(succeeded) == len(money.invoices) == 1, order_id
            assert (
                money.summary.captured.amount_minor == total == money.summary.invoiced.amount_minor
            )
            shipped = fulfillment_pb2.FULFILLMENT_ORDER_STATUS_SHIPPED
            assert [fo.status for fo in view.fulfillment_orders] == [shipped]
            assert all(line.quantities.fulfilled == line.quantity for line in view.order.lines)
