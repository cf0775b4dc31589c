"""CaptureService over gRPC: converts wire types, calls the domain and the store, converts back.

Domain errors propagate; the platform's error boundary (oms_platform/grpcutil.py) maps them
to status codes with google.rpc.BadRequest details, for unary and streaming RPCs alike;
ImportOrders reports them per order instead, so one bad order does not end the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import asyncpg
import grpc
import structlog
from oms.capture.v1 import capture_pb2 as pb
from oms.capture.v1 import capture_pb2_grpc
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform import auth, limits, metrics, tracing
from oms_platform.db import KeyedBatch, idempotent, request_fingerprint
from oms_platform.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    check_required,
)
from oms_platform.grpcutil import Refusal, refusal_for, status_for
from oms_platform.listen import woken
from services.capture import convert, domain, handlers, shopper_view, store
from services.capture.domain import events as event_vocabulary
from services.capture.erasure import Eraser, EraseRequest
from services.capture.events import observed, written
from services.capture.store import events as event_log
from services.capture.store import parked_events
from services.capture.watch import OrderWatchHub

log = structlog.get_logger("oms.capture")

T = TypeVar("T")

# How many fulfillment orders / process exceptions the 360° view shows.
SECTION_PAGE_SIZE = 500
# Orders one ImportOrders stream may carry; the rest are answered with an error, unread.


class CaptureServicer(capture_pb2_grpc.CaptureServiceServicer):
    """The front door: submit, import, read and watch orders; record lifecycle progress."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        fulfillment: fulfillment_pb2_grpc.FulfillmentServiceAsyncStub,
        payments: payments_pb2_grpc.PaymentsServiceAsyncStub,
        servicing: servicing_pb2_grpc.ServicingServiceAsyncStub,
        get_order_deadline_seconds: float,
        fraud_policy: domain.FraudPolicy | None = None,
        watchers: OrderWatchHub | None = None,
        on_captured: Callable[[float], None] | None = None,
        eraser: Eraser | None = None,
        watch_seconds: float = 3600.0,
    ) -> None:
        self._watch_seconds = watch_seconds
        self._pool = pool
        self._fulfillment = fulfillment
        self._payments = payments
        self._servicing = servicing
        self._deadline = get_order_deadline_seconds
        self._fraud_policy = fraud_policy or domain.FraudPolicy()
        self._watchers = watchers
        # Told each new order's SubmitOrder latency once it is committed (wakes the relay,
        # feeds the pacer).
        self._on_captured = on_captured
        self._eraser = eraser

    async def SubmitOrder(
        self, request: pb.SubmitOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitOrderResponse:
        started = time.perf_counter()
        _require_worker_for_subscription(request)
        submission = convert.submission_from_pb(request)
        if submission.channel in domain.CHANNELS:  # validation refuses the others by name
            auth.require_channel(submission.channel, "this order")
        response = await handlers.submit_order(
            self._pool,
            submission,
            request_fingerprint(request),
            self._fraud_policy,
        )
        if not response.duplicate:
            metrics.ORDER_TRANSITIONS.labels(
                submission.channel, convert.STATUS_TO_DOMAIN.get(response.order.status, "")
            ).inc()
            if self._on_captured is not None:
                self._on_captured(time.perf_counter() - started)
            log.info("order captured", order_id=response.order.order_id)
        tracing.tag_order(response.order.order_id)
        _for_caller(response.order)
        return response

    async def ImportOrders(
        self,
        request_iterator: AsyncIterator[pb.ImportOrdersRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.ImportOrdersResponse:
        # Each order's outcome is its own: one that cannot be read, validated or stored is
        # answered with its error and the stream carries on.
        results: list[pb.ImportOrderResult] = []
        batch: list[handlers.ImportItem] = []
        async for request in request_iterator:
            index = len(results) + len(batch)
            if index >= handlers.MAX_IMPORT_ORDERS:
                results.append(_refused_import(index, _past_import_cap()))
                continue
            # Each order is checked against the limits here, not before the call: a bad order
            # is reported in its result and the others carry on.
            refused = convert.import_limit_violations(request)
            if refused:
                results.append(
                    _import_result(handlers.ImportItem.refused(index, InvalidArgument(refused)))
                )
                continue
            try:
                _require_worker_for_subscription(request.order)
                item = handlers.ImportItem(
                    index=index,
                    submission=convert.submission_from_pb(request.order),
                    options=convert.import_options_from_pb(request),
                    fingerprint=request_fingerprint(request.order),
                )
            except Exception as error:
                results.append(_refused_import(index, refusal_for(error)))
                continue
            batch.append(item)
            if len(batch) >= handlers.IMPORT_BATCH_SIZE:
                results += await self._import(batch)
                batch = []
        if batch:
            results += await self._import(batch)
        results.sort(key=lambda r: r.index)
        response = pb.ImportOrdersResponse(results=results)
        response.failed = sum(1 for r in results if r.error_code)
        response.duplicates = sum(1 for r in results if not r.error_code and r.duplicate)
        response.imported = len(results) - response.failed - response.duplicates
        log.info(
            "orders imported",
            imported=response.imported,
            duplicates=response.duplicates,
            failed=response.failed,
        )
        return response

    async def _import(self, batch: list[handlers.ImportItem]) -> list[pb.ImportOrderResult]:
        """Each order's result: stored, a duplicate, refused, or failed with the batch."""
        results: list[pb.ImportOrderResult] = []
        refusals: dict[int, Refusal] = {}  # one refusal (and log line) per failure
        for item in await handlers.import_orders(self._pool, batch, self._fraud_policy):
            if item.failure is None:
                results.append(_import_result(item))
                continue
            if id(item.failure) not in refusals:
                refusals[id(item.failure)] = refusal_for(item.failure)
                _log_refusal(refusals[id(item.failure)], item.failure)
            results.append(_refused_import(item.index, refusals[id(item.failure)]))
        return results

    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        check_required({"order_id": request.order_id})
        order_id = request.order_id

        async def read(conn: Any) -> tuple[domain.Order, list[domain.TimelineEvent]]:
            order = await store.get_order(conn, order_id)
            auth.require_channel(order.channel, f"order {order_id}")
            return order, await store.timeline(conn, order_id)

        (order, events), results, missing = await self._assemble(
            {
                "fulfillment": self._fulfillment.ListFulfillmentOrders(
                    fulfillment_pb2.ListFulfillmentOrdersRequest(
                        order_id=order_id, page_size=SECTION_PAGE_SIZE
                    ),
                    timeout=self._deadline,
                ),
                "payments": self._payments.GetPaymentSummary(
                    payments_pb2.GetPaymentSummaryRequest(order_id=order_id),
                    timeout=self._deadline,
                ),
                "servicing": self._servicing.ListProcessExceptions(
                    servicing_pb2.ListProcessExceptionsRequest(
                        order_id=order_id, page_size=SECTION_PAGE_SIZE
                    ),
                    timeout=self._deadline,
                ),
            },
            read,
        )
        response = pb.GetOrderResponse(
            order=_for_caller(convert.order_to_pb(order)),
            timeline=[convert.event_to_pb(e) for e in events],
            missing_sections=missing,
        )
        if "fulfillment" in results:
            response.fulfillment_orders.extend(results["fulfillment"].fulfillment_orders)
        if "payments" in results:
            _fill_payments(response, results["payments"])
        if "servicing" in results:
            response.process_exceptions.extend(results["servicing"].process_exceptions)
        return response

    async def GetOrderForShopper(
        self, request: pb.GetOrderForShopperRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderForShopperResponse:
        check_required({"order_id": request.order_id})
        claimed = request.WhichOneof("shopper")
        if claimed is None or not getattr(request, claimed).strip():
            raise InvalidArgument(
                [FieldViolation("shopper", "channel_customer_id or email is required")]
            )
        order_id = request.order_id

        async def read(conn: Any) -> domain.Order:
            order = await store.get_order(conn, order_id)
            auth.require_channel(order.channel, f"order {order_id}")
            if not await store.owns_order(
                conn, order_id, request.channel_customer_id, request.email
            ):
                # Word for word what a missing order answers: nothing to tell them apart.
                raise NotFound(f"order {limits.echo(order_id)} not found")
            return order

        order, results, missing = await self._assemble(
            {
                shopper_view.SHIPMENTS: self._fulfillment.ListFulfillmentOrders(
                    fulfillment_pb2.ListFulfillmentOrdersRequest(
                        order_id=order_id, page_size=SECTION_PAGE_SIZE
                    ),
                    timeout=self._deadline,
                ),
                shopper_view.REFUNDS: self._payments.GetPaymentSummary(
                    payments_pb2.GetPaymentSummaryRequest(order_id=order_id),
                    timeout=self._deadline,
                ),
                shopper_view.RETURNS: self._servicing.ListReturnOrders(
                    servicing_pb2.ListReturnOrdersRequest(order_id=order_id),
                    timeout=self._deadline,
                ),
            },
            read,
        )
        shipments = results.get(shopper_view.SHIPMENTS)
        returns = results.get(shopper_view.RETURNS)
        view = shopper_view.shopper_order(
            convert.order_to_pb(order),
            shipments.fulfillment_orders if shipments is not None else (),
            results.get(shopper_view.REFUNDS),
            returns.return_orders if returns is not None else (),
        )
        return pb.GetOrderForShopperResponse(order=view, missing_sections=missing)

    async def _assemble(
        self, calls: dict[str, Awaitable[Any]], read: Callable[[Any], Awaitable[T]]
    ) -> tuple[T, dict[str, Any], list[str]]:
        """An order view: `read` from capture's own tables while the other services' sections
        are fetched concurrently, all within the view's deadline. Returns what `read` gave,
        the sections that came (by name) and the names of those that did not."""
        started = time.monotonic()
        sections = {name: _start(call) for name, call in calls.items()}
        try:
            async with self._pool.acquire() as conn:
                local = await read(conn)
        except BaseException:
            for task in sections.values():
                task.cancel()
            await asyncio.gather(*sections.values(), return_exceptions=True)
            raise
        remaining = max(0.0, self._deadline - (time.monotonic() - started))
        await asyncio.wait(sections.values(), timeout=remaining)
        results: dict[str, Any] = {}
        missing: list[str] = []
        for name, task in sections.items():
            if not task.done():
                task.cancel()
                log.info("order view section late", section=name)
                missing.append(name)
                continue
            error = task.exception()
            if error is not None:
                log.info("order view section missing", section=name, error=_describe(error))
                missing.append(name)
                continue
            results[name] = task.result()
        return local, results, missing

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        limit = domain.page_size(request.page_size)
        where = _within_own_channels(convert.filter_from_pb(request, datetime.now(UTC).date()))
        domain.check_filter(where)
        after = convert.decode_page_token(request.page_token)
        late_count = 0
        # One snapshot for the page and the count of late orders, so they agree even while a
        # step commits between the two reads.
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            orders = await store.list_orders(conn, where, after, limit + 1)
            if where.late_before is not None:
                late_count = await store.count_orders(conn, where)
        page = orders[:limit]
        token = ""
        if len(orders) > limit:
            last = page[-1]
            assert last.created_at is not None
            token = convert.encode_page_token(last.created_at, last.order_id)
        return pb.ListOrdersResponse(
            orders=[_for_caller(convert.order_to_pb(o)) for o in page],
            next_page_token=token,
            late_count=late_count,
        )

    async def GetOrderTimeline(
        self, request: pb.GetOrderTimelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderTimelineResponse:
        check_required({"order_id": request.order_id})
        async with self._pool.acquire() as conn:
            await _confine_order(conn, request.order_id)
            events = await store.timeline(conn, request.order_id)
        return pb.GetOrderTimelineResponse(events=[convert.event_to_pb(e) for e in events])

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        assert self._watchers is not None, "WatchOrder needs the process's watch hub"
        check_required({"order_id": request.order_id})
        if not auth.current_principal().sees_every_channel():
            async with self._pool.acquire() as conn:
                await _confine_order(conn, request.order_id)
        # Subscribe before the first read, so nothing recorded in between is missed.
        with self._watchers.subscribe(request.order_id) as changed:
            async with self._pool.acquire() as conn:
                state = await store.changes_since(conn, request.order_id, 0)
            yield convert.watch_update_to_pb(True, state.status, state.updated_at, state.events)
            seq, status = state.last_seq, state.status
            ends_at = time.monotonic() + self._watch_seconds
            while not domain.is_settled(status):
                if not await woken(changed, ends_at - time.monotonic()):
                    return  # the stream's time is up; the caller watches again to go on
                changed.clear()
                async with self._pool.acquire() as conn:
                    state = await store.changes_since(conn, request.order_id, seq)
                if state.events or state.status != status:
                    yield convert.watch_update_to_pb(
                        False, state.status, state.updated_at, state.events
                    )
                seq, status = state.last_seq, state.status

    async def RecordOrderProgress(
        self, request: pb.RecordOrderProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOrderProgressResponse:
        check_required({"order_id": request.order_id, "idempotency_key": request.idempotency_key})
        step = _ProgressStep.parse(request)

        def encode(recorded: store.Recorded) -> pb.RecordOrderProgressResponse:
            if recorded.order is None:  # the caller asked for no order back
                return pb.RecordOrderProgressResponse()
            # Stored as the key's answer: kept without tokens whoever asked.
            return pb.RecordOrderProgressResponse(
                order=convert.mask_payment_tokens(convert.order_to_pb(recorded.order))
            )

        # A step's key names the step of the order. Told again differently, it is a step an
        # earlier attempt of the workflow's task recorded before that attempt was lost, the
        # retry having taken another path (an Update redelivered after the lifecycle moved
        # on): the first telling stands. Refusing would fail the change after its other
        # effects were made.
        outcome = await idempotent(
            self._pool, step.key, request, pb.RecordOrderProgressResponse, step.record, encode,
            first_wins=True,
        )  # fmt: skip
        response, recorded = outcome  # recorded is None for a replay
        step.count(recorded)
        return response

    async def RecordOrderProgressBatch(
        self, request: pb.RecordOrderProgressBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOrderProgressBatchResponse:
        check_required({"order_id": request.order_id})
        # (The request guard has already bounded `steps` by limits.MAX_PROGRESS_STEPS.)
        violations = []
        if not request.steps:
            violations.append(FieldViolation("steps", "at least one step is required"))
        asked: list[pb.RecordOrderProgressRequest] = []
        for n, given in enumerate(request.steps):
            if given.order_id and given.order_id != request.order_id:
                violations.append(
                    FieldViolation(f"steps[{n}].order_id", "must be the batch's order_id")
                )
            if not given.idempotency_key:
                violations.append(FieldViolation(f"steps[{n}].idempotency_key", "is required"))
            # Each step is the very request RecordOrderProgress would get (for the workflow,
            # which reads no order back), so either call replays the other's answer.
            one = pb.RecordOrderProgressRequest()
            one.CopyFrom(given)
            one.order_id, one.omit_order = request.order_id, True
            asked.append(one)
        if violations:
            raise InvalidArgument(violations)
        steps = []
        for n, one in enumerate(asked):
            with _naming_step(n):
                steps.append(_ProgressStep.parse(one))
        recorded: list[tuple[_ProgressStep, store.Recorded | None]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            # The steps' keys claimed together, and their answers stored together; the first
            # step made locks the order, the next ones start from the lines it left; their
            # events go to the log together, before any warehouse steps parked behind them.
            batch = await KeyedBatch.claim(
                conn, [(step.key, one) for step, one in zip(steps, asked, strict=True)],
                first_wins=True,
            )  # fmt: skip
            lines: dict[str, domain.Quantities] | None = None
            pending: list[events_pb2.Event] = []
            for n, step in enumerate(steps):
                with _naming_step(n):
                    value = None
                    if batch.replay(n, pb.RecordOrderProgressResponse) is None:
                        value = await step.record(
                            cast(asyncpg.Connection, conn), locked=lines, pending=pending
                        )
                        lines = value.lines
                        batch.answer(n, pb.RecordOrderProgressResponse())
                recorded.append((step, value))
            await event_log.append_events(conn, pending)
            await batch.store(conn)
        for step, value in recorded:  # counted once the whole batch has committed
            step.count(value)
        return pb.RecordOrderProgressBatchResponse(
            applied=sum(value is not None for _, value in recorded)
        )

    async def RecordOrderEvents(
        self, request: pb.RecordOrderEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOrderEventsResponse:
        # (The request guard has already bounded `events` by limits.MAX_RECORDED_EVENTS.)
        observed.check(request.events)
        async with self._pool.acquire() as conn, conn.transaction():
            await observed.record(conn, request.events)
        return pb.RecordOrderEventsResponse()

    async def EraseShopper(
        self, request: pb.EraseShopperRequest, context: grpc.aio.ServicerContext
    ) -> pb.EraseShopperResponse:
        assert self._eraser is not None, "EraseShopper needs the process's eraser"
        record = await self._eraser.erase(
            EraseRequest(
                shopper_id=request.shopper_id,
                email=request.email,
                force=request.force,
                reason=request.reason,
                # The authenticated caller, never a request field.
                requested_by=auth.actor(),
            )
        )
        return pb.EraseShopperResponse(erasure=convert.erasure_to_pb(record))


def _for_caller(order: pb.Order) -> pb.Order:
    """The order as the current caller may read it: payment tokens masked unless its role
    needs them (the workflow, other oms services)."""
    if not auth.current_principal().sees_payment_tokens():
        convert.mask_payment_tokens(order)
    return order


def _require_worker_for_subscription(request: pb.SubmitOrderRequest) -> None:
    """PERMISSION_DENIED, naming the field, when anyone but oms's worker (a subscription's
    workflow) marks an order as a subscription's cycle: such an order is dunned instead of
    canceled on a decline, which no storefront may choose."""
    for name in ("subscription_id", "subscription_cycle"):
        if getattr(request, name) and not auth.current_principal().has_any({auth.WORKFLOW}):
            raise PermissionDenied(
                f"{name}: only a subscription's workflow (the worker) places cycle orders"
            )


def _import_result(item: handlers.ImportItem) -> pb.ImportOrderResult:
    result = pb.ImportOrderResult(
        index=item.index, order_id=item.order_id, duplicate=item.duplicate
    )
    if item.error is not None:
        code, _ = status_for(item.error)
        result.order_id = ""
        result.duplicate = False
        result.error_code = code.name
        result.error_message = item.error.message
        result.violations.extend(convert.violations_to_pb(handlers.violations_of(item.error)))
    return result


def _refused_import(index: int, refusal: Refusal) -> pb.ImportOrderResult:
    return pb.ImportOrderResult(
        index=index, error_code=refusal.code.name, error_message=refusal.message
    )


def _past_import_cap() -> Refusal:
    return refusal_for(
        InvalidArgument(
            [
                FieldViolation(
                    "order",
                    f"at most {handlers.MAX_IMPORT_ORDERS} orders per ImportOrders stream; "
                    "send the rest in another stream",
                )
            ]
        )
    )


def _log_refusal(refusal: Refusal, error: Exception) -> None:
    if refusal.error_id:
        log.error("import batch failed", error_id=refusal.error_id, exc_info=error)
    else:
        log.warning("import batch failed", code=refusal.code.name, error=repr(error))


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


async def _confine_order(conn: Any, order_id: str) -> None:
    if not auth.current_principal().sees_every_channel():
        auth.require_channel(await store.channel_of(conn, order_id), f"order {order_id}")


def _within_own_channels(where: domain.OrderFilter) -> domain.OrderFilter:
    """A storefront's listing is confined to its channels: the one it names, or its only one."""
    principal = auth.current_principal()
    if principal.sees_every_channel():
        return where
    if where.channel:
        auth.require_channel(where.channel, "the listing")
        return where
    if len(principal.channels) == 1:
        return dataclasses.replace(where, channel=next(iter(principal.channels)))
    mine = ", ".join(sorted(principal.channels)) or "no channel"
    raise PermissionDenied(
        f"{principal.subject} lists only its own channels' orders: set channel to one of {mine}"
    )


@dataclasses.dataclass(frozen=True)
class _ProgressStep:
    """One RecordOrderProgress step, validated: what it records and under which key."""

    request: pb.RecordOrderProgressRequest
    key: str
    status: str
    changes: list[domain.LineQuantityChange]
    additions: list[domain.LineAddition]
    event: domain.TimelineEvent | None
    # The step's typed events for the log (checked); none: capture derives one from `event`.
    events: list[events_pb2.Event]
    # Delivery groups sent to a new address: (delivery group id, address).
    addresses: list[tuple[str, domain.PostalAddress]] = dataclasses.field(default_factory=list)
    # Delivery groups' new promised delivery dates.
    promises: list[domain.DeliveryPromise] = dataclasses.field(default_factory=list)

    @staticmethod
    def parse(request: pb.RecordOrderProgressRequest) -> _ProgressStep:
        """Validate `request`."""
        status = ""
        if request.status != pb.ORDER_STATUS_UNSPECIFIED:
            if request.status not in convert.STATUS_TO_DOMAIN:
                raise InvalidArgument([FieldViolation("status", "unknown order status")])
            status = convert.STATUS_TO_DOMAIN[request.status]
        changes = convert.line_changes_from_pb(request.line_changes)
        additions = convert.line_additions_from_pb(request.added_lines)
        event = (
            convert.event_from_pb(request.event)
            if request.HasField("event") and request.event.kind
            else None
        )
        written.check_step_events(request.events)
        return _ProgressStep(
            request,
            f"progress:{request.order_id}:{request.idempotency_key}",
            status,
            changes,
            additions,
            event,
            list(request.events),
            convert.group_addresses_from_pb(request.delivery_group_addresses),
            convert.delivery_promises_from_pb(request.delivery_promises),
        )

    async def record(
        self,
        conn: asyncpg.Connection,
        *,
        locked: dict[str, domain.Quantities] | None = None,
        pending: list[events_pb2.Event] | None = None,
    ) -> store.Recorded:
        """Apply the step on `conn`, with its events for the log, in the caller's transaction.
        `locked`: the order's lines as an earlier step of the transaction left them
        (`store.record_progress`). `pending`: events of earlier steps not written yet; this
        step's join them, and they are written here only when a release must follow them
        (the caller writes what is left)."""
        recorded = await store.record_progress(
            conn,
            self.request.order_id,
            self.status,
            self.changes,
            self.event,
            self.additions,
            read_back=not self.request.omit_order,
            addresses=self.addresses,
            promises=self.promises,
            locked=locked,
        )
        events = self.log_events(recorded)
        # The warehouse steps heard before these allocations follow them (parked_events.py).
        allocated = [
            fo_id
            for e in events
            if e.type == parked_events.ALLOCATED
            and (fo_id := parked_events.fulfillment_order_of(e))
        ]
        alone = pending is None
        pending = [] if pending is None else pending
        pending += events
        if alone or allocated:
            await event_log.append_events(conn, pending)
            pending.clear()
            await parked_events.release(conn, self.request.order_id, allocated)
        return recorded

    def log_events(self, recorded: store.Recorded) -> list[events_pb2.Event]:
        """The step's events as the log keeps them: those the workflow typed, else the one
        derived from its timeline kind and status change (a lifecycle from before typed events)."""
        given = self.events
        if not given and self.event is not None:
            draft = event_vocabulary.derived_event(
                self.event.kind, recorded.status_before, self.status
            )
            given = [written.from_draft(draft)] if draft is not None else []
        return written.completed(
            given,
            self.key,
            self.request.order_id,
            recorded.channel,
            self.event.at if self.event else None,
            self.event.actor if self.event and self.event.actor else auth.actor(),
        )

    def count(self, recorded: store.Recorded | None) -> None:
        """Count the status transition the step made (none for a replay)."""
        if recorded is not None and self.status and self.status != recorded.status_before:
            _count_transition(recorded.channel, recorded.created_at, self.status)


@contextlib.contextmanager
def _naming_step(n: int) -> Iterator[None]:
    """A refusal of a batch's step `n` names it: `steps[n].<field>` for bad input, a
    `steps[n]: ` prefix on any other refusal."""
    try:
        yield
    except InvalidArgument as invalid:
        raise InvalidArgument(
            [FieldViolation(f"steps[{n}].{v.field}", v.description) for v in invalid.violations]
        ) from None
    except DomainError as refused:
        refused.message = f"steps[{n}]: {refused.message}"
        refused.args = (refused.message,)
        raise


def _count_transition(channel: str, created_at: datetime, status: str) -> None:
    """An order entered `status`; at fulfilment, how long it took from capture."""
    metrics.ORDER_TRANSITIONS.labels(channel, status).inc()
    if status == domain.FULFILLED:
        seconds = (datetime.now(UTC) - created_at).total_seconds()
        metrics.ORDER_LIFECYCLE_SECONDS.labels(channel).observe(max(0.0, seconds))
