"""Activities the order workflow calls on the servicing service for changes and exceptions:
escalating an unresolved process exception and recording return orders and their receipts.

Thin gRPC calls in the style of workflows/activities.py: convert the workflow's dataclass to
the request, call with a deadline, let transport failures retry (same idempotency key) and
turn business refusals into non-retryable errors. Every call is idempotent by its key.
"""

from __future__ import annotations

import grpc
import structlog
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc
from temporalio import activity

from workflows.activities import DEADLINE_SECONDS, _call
from workflows.types import EscalateInput, ItemQuantity, ReceiptInput, ReturnOrderInput


def _items(items: list[ItemQuantity]) -> list[servicing_pb2.ItemQuantity]:
    return [
        servicing_pb2.ItemQuantity(order_line_id=i.order_line_id, quantity=i.quantity)
        for i in items
    ]


class ServicingChangeActivities:
    """Escalations and return orders in the servicing service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = servicing_pb2_grpc.ServicingServiceStub(channel)

    @activity.defn(name="escalate_process_exception")
    async def escalate_process_exception(self, request: EscalateInput) -> None:
        await _call(
            self._stub.EscalateProcessException(
                servicing_pb2.EscalateProcessExceptionRequest(
                    process_exception_id=request.process_exception_id,
                    idempotency_key=request.idempotency_key,
                    message=request.message,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name="create_return_order")
    async def create_return_order(self, request: ReturnOrderInput) -> None:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        await _call(
            self._stub.CreateReturnOrder(
                servicing_pb2.CreateReturnOrderRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    return_order_id=request.return_order_id,
                    reason=request.reason,
                    lines=_items(request.lines),
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name="record_return_receipt")
    async def record_return_receipt(self, request: ReceiptInput) -> None:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        await _call(
            self._stub.RecordReturnReceipt(
                servicing_pb2.RecordReturnReceiptRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    return_order_id=request.return_order_id,
                    accepted=_items(request.accepted),
                    rejected=_items(request.rejected),
                    reason=request.reason,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
