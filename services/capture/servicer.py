"""CaptureService over gRPC: converts wire types, calls the domain and the store, converts back.

Domain errors propagate; the platform's interceptor maps them to status codes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import structlog
from oms.capture.v1 import capture_pb2 as pb
from oms.capture.v1 import capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform.db import idempotent
from oms_platform.errors import FieldViolation, InvalidArgument
from services.capture import convert, domain, store
from workflows.types import WORKFLOW_NAME, order_workflow_id

log = structlog.get_logger("oms.capture")

# How many fulfillment orders / process exceptions the 360° view shows.
SECTION_PAGE_SIZE = 500


class CaptureServicer(capture_pb2_grpc.CaptureServiceServicer):
    """The front door: submit and read orders, record lifecycle progress."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        fulfillment: fulfillment_pb2_grpc.FulfillmentServiceAsyncStub,
        payments: payments_pb2_grpc.PaymentsServiceAsyncStub,
        servicing: servicing_pb2_grpc.ServicingServiceAsyncStub,
        get_order_deadline_seconds: float,
    ) -> None:
        self._pool = pool
        self._fulfillment = fulfillment
        self._payments = payments
        self._servicing = servicing
        self._deadline = get_order_deadline_seconds

    async def SubmitOrder(
        self, request: pb.SubmitOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitOrderResponse:
        submission = convert.submission_from_pb(request)
        domain.check_submission(submission)  # before any I/O: nothing is stored for a bad order

        async def capture(conn: asyncpg.Connection) -> pb.SubmitOrderResponse:
            assert submission.shopper is not None  # checked above
            shopper = await store.match_shopper(conn, submission.channel, submission.shopper)
            order = domain.capture_order(submission, store.new_id, shopper)
            order = await store.insert_order(
                conn,
                order,
                domain.captured_event(order),
                order_workflow_id(order.order_id),
                WORKFLOW_NAME,
                convert.lifecycle_payload(order),
            )
            return pb.SubmitOrderResponse(order=convert.order_to_pb(order))

        key = f"submit:{submission.channel}:{submission.idempotency_key}"
        response, replayed = await idempotent(
            self._pool, key, request, pb.SubmitOrderResponse, capture
        )
        if replayed:
            response.duplicate = True
        else:
            log.info("order captured", order_id=response.order.order_id)
        return response

    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        domain.check_required({"order_id": request.order_id})
        order_id = request.order_id
        started = time.monotonic()
        sections: dict[str, asyncio.Task[Any]] = {
            "fulfillment": _start(
                self._fulfillment.ListFulfillmentOrders(
                    fulfillment_pb2.ListFulfillmentOrdersRequest(
                        order_id=order_id, page_size=SECTION_PAGE_SIZE
                    ),
                    timeout=self._deadline,
                )
            ),
            "payments": _start(
                self._payments.GetPaymentSummary(
                    payments_pb2.GetPaymentSummaryRequest(order_id=order_id),
                    timeout=self._deadline,
                )
            ),
            "servicing": _start(
                self._servicing.ListProcessExceptions(
                    servicing_pb2.ListProcessExceptionsRequest(
                        order_id=order_id, page_size=SECTION_PAGE_SIZE
                    ),
                    timeout=self._deadline,
                )
            ),
        }
        try:
            async with self._pool.acquire() as conn:
                order = await store.get_order(conn, order_id)
                events = await store.timeline(conn, order_id)
        except BaseException:
            for task in sections.values():
                task.cancel()
            await asyncio.gather(*sections.values(), return_exceptions=True)
            raise
        remaining = max(0.0, self._deadline - (time.monotonic() - started))
        await asyncio.wait(sections.values(), timeout=remaining)

        response = pb.GetOrderResponse(
            order=convert.order_to_pb(order),
            timeline=[convert.event_to_pb(e) for e in events],
        )
        fillers: dict[str, Callable[[Any], None]] = {
            "fulfillment": lambda r: response.fulfillment_orders.extend(r.fulfillment_orders),
            "payments": lambda r: _fill_payments(response, r),
            "servicing": lambda r: response.process_exceptions.extend(r.process_exceptions),
        }
        for name, task in sections.items():
            if not task.done():
                task.cancel()
                response.missing_sections.append(name)
                continue
            error = task.exception()
            if error is not None:
                log.info("order view section missing", section=name, error=_describe(error))
                response.missing_sections.append(name)
                continue
            fillers[name](task.result())
        return response

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        limit = domain.page_size(request.page_size)
        statuses: list[str] = []
        for i, status in enumerate(request.statuses):
            if status == pb.ORDER_STATUS_UNSPECIFIED:
                continue
            if status not in convert.STATUS_TO_DOMAIN:
                raise InvalidArgument([FieldViolation(f"statuses[{i}]", "unknown order status")])
            statuses.append(convert.STATUS_TO_DOMAIN[status])
        after = convert.decode_page_token(request.page_token)
        async with self._pool.acquire() as conn:
            orders = await store.list_orders(
                conn,
                statuses,
                convert.CHANNEL_TO_DOMAIN.get(request.channel, ""),
                request.shopper_id,
                after,
                limit + 1,
            )
        page = orders[:limit]
        token = ""
        if len(orders) > limit:
            last = page[-1]
            assert last.created_at is not None
            token = convert.encode_page_token(last.created_at, last.order_id)
        return pb.ListOrdersResponse(
            orders=[convert.order_to_pb(o) for o in page], next_page_token=token
        )

    async def GetOrderTimeline(
        self, request: pb.GetOrderTimelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderTimelineResponse:
        domain.check_required({"order_id": request.order_id})
        async with self._pool.acquire() as conn:
            events = await store.timeline(conn, request.order_id)
        return pb.GetOrderTimelineResponse(events=[convert.event_to_pb(e) for e in events])

    async def RecordOrderProgress(
        self, request: pb.RecordOrderProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOrderProgressResponse:
        domain.check_required(
            {"order_id": request.order_id, "idempotency_key": request.idempotency_key}
        )
        status = ""
        if request.status != pb.ORDER_STATUS_UNSPECIFIED:
            if request.status not in convert.STATUS_TO_DOMAIN:
                raise InvalidArgument([FieldViolation("status", "unknown order status")])
            status = convert.STATUS_TO_DOMAIN[request.status]
        changes = convert.line_changes_from_pb(request.line_changes)
        event = (
            convert.event_from_pb(request.event)
            if request.HasField("event") and request.event.kind
            else None
        )

        async def record(conn: asyncpg.Connection) -> pb.RecordOrderProgressResponse:
            order = await store.record_progress(conn, request.order_id, status, changes, event)
            return pb.RecordOrderProgressResponse(order=convert.order_to_pb(order))

        key = f"progress:{request.order_id}:{request.idempotency_key}"
        response, _ = await idempotent(
            self._pool, key, request, pb.RecordOrderProgressResponse, record
        )
        return response


def _start(call: Awaitable[Any]) -> asyncio.Task[Any]:
    """Run a gRPC call as a task, so the view's sections are fetched concurrently."""

    async def awaited() -> Any:
        return await call

    return asyncio.create_task(awaited())


def _fill_payments(
    response: pb.GetOrderResponse, r: payments_pb2.GetPaymentSummaryResponse
) -> None:
    response.payment_summary.CopyFrom(r.summary)
    response.authorizations.extend(r.authorizations)
    response.captures.extend(r.captures)
    response.invoices.extend(r.invoices)


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return repr(error)
