"""The order workflows as servicing talks to them: Temporal Updates and the preview query.

An adapter at the edge: it converts servicing's domain dataclasses to the workflow's payload
types (workflows/types.py) and back, and turns the workflow's refusals into domain errors
(an ApplicationError's `type` is a gRPC status name). Failures that are not refusals (a step
of an accepted change failed for good) raise ChangeFailed; Temporal being out of reach
raises LifecycleUnavailable.

Temporal having no workflow `order:<id>` means one of four things, told apart here: it has
just started (the call is sent again), it has closed, capture acknowledged the order but its
outbox relay has not started the lifecycle yet (waited for briefly, then LifecycleUnavailable:
the caller retries), or there is no such order (capture does not know it either).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import grpc
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import QueryRejectCondition
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from oms_platform.errors import DomainError, FailedPrecondition
from services.servicing import domain
from workflows.types import (
    ADD_ITEMS_UPDATE,
    ADDRESS_CHANGE_UPDATE,
    APPEASE_UPDATE,
    CANCEL_UPDATE,
    EXCHANGE_UPDATE,
    PREVIEW_QUERY,
    RECEIVE_RETURN_UPDATE,
    RESHIP_UPDATE,
    RESOLVE_EXCEPTION_UPDATE,
    RETURN_UPDATE,
    STATE_QUERY,
    Address,
    ChangeRequest,
    ChangeResult,
    ItemQuantity,
    LineIncrease,
    NewLineData,
    OrderState,
    Resolution,
    ResolutionResult,
    order_workflow_id,
)

UPDATES = {
    domain.CANCEL: CANCEL_UPDATE,
    domain.RETURN: RETURN_UPDATE,
    domain.RECEIVE_RETURN: RECEIVE_RETURN_UPDATE,
    domain.EXCHANGE: EXCHANGE_UPDATE,
    domain.RESHIP: RESHIP_UPDATE,
    domain.APPEASE: APPEASE_UPDATE,
    domain.ADD_ITEMS: ADD_ITEMS_UPDATE,
    domain.ADDRESS_CHANGE: ADDRESS_CHANGE_UPDATE,
}
PREVIEW_CHANGE_ID = "preview"

# A described workflow in one of these is (still, or again) open: a call it did not find is
# sent again. CONTINUED_AS_NEW names the old run; the workflow id goes on in a new one.
OPEN_STATUSES = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)
# Times a call is sent to a workflow that describe says is open but the call did not find.
SEND_ATTEMPTS = 3
# How long a call for an acknowledged order waits for capture's relay to start its lifecycle
# before answering "retry", and how often it looks meanwhile.
START_WAIT = timedelta(seconds=2)
START_POLL = timedelta(seconds=0.2)

T = TypeVar("T")


class ChangeFailed(Exception):
    """The workflow accepted the request, but a step of it failed for good."""


# What another service may answer after which the same request may succeed (capture's and
# fulfillment's, called by servicing's adapters): LifecycleUnavailable, for the caller to retry.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class LifecycleUnavailable(Exception):
    """Temporal (or the order's worker) did not answer in time, the order's lifecycle has not
    started yet, or capture could not say whether the order exists; retrying may succeed."""


class Orders(Protocol):
    """Capture's record of orders, asked when Temporal has no workflow for one."""

    async def is_pending(self, order_id: str) -> bool:
        """True if capture acknowledged the order and its lifecycle has not started; False if
        it has (capture's status moved on). Raises NotFound when capture has no such order,
        LifecycleUnavailable when capture did not answer."""
        ...

    async def channel_of(self, order_id: str) -> str:
        """The channel the order came from (a storefront changes only its own channels'
        orders). Raises NotFound or LifecycleUnavailable like `is_pending`."""
        ...


def change_request(order: domain.ChangeOrder, change_id: str, *, preview: bool) -> ChangeRequest:
    """The workflow's payload for a change."""
    return ChangeRequest(
        change_id=change_id,
        kind=order.kind,
        reason=domain.workflow_reason(order),
        actor=domain.actor_of(order.actor),
        lines=[ItemQuantity(i.order_line_id, i.quantity) for i in order.lines],
        amount_minor=order.amount_minor,
        percent_basis_points=order.percent_basis_points,
        refund_without_return=order.refund_without_return,
        return_fee_minor=order.return_fee_minor,
        return_order_id=order.return_order_id,
        rejected_lines=[ItemQuantity(i.order_line_id, i.quantity) for i in order.rejected_lines],
        replacement_skus=list(order.replacement_skus),
        replacement_unit_prices_minor=list(order.replacement_unit_prices_minor),
        preview=preview,
        new_lines=[
            NewLineData(
                sku=n.sku,
                quantity=n.quantity,
                unit_price_minor=n.unit_price_minor,
                tax_minor=n.tax_minor,
                delivery_group_id=n.delivery_group_id,
                name=n.name,
            )
            for n in order.new_lines
        ],
        increases=[LineIncrease(i.order_line_id, i.quantity, i.tax_minor) for i in order.increases],
        delivery_group_id=order.delivery_group_id,
        address=(
            Address(
                line1=a.line1,
                city=a.city,
                postal_code=a.postal_code,
                country_code=a.country_code.upper(),
                line2=a.line2,
                region=a.region,
            )
            if (a := order.address) is not None
            else None
        ),
    )


def change_outcome(result: ChangeResult) -> domain.ChangeOutcome:
    """Servicing's view of the workflow's answer."""
    return domain.ChangeOutcome(
        summary=result.summary,
        lines=tuple(domain.Item(i.order_line_id, i.quantity) for i in result.lines),
        credit_memo_id=result.credit_memo_id,
        credited_minor=result.credited_minor,
        refunded_minor=result.refunded_minor,
        released_minor=result.released_minor,
        charged_minor=result.charged_minor,
        fulfillment_order_ids=tuple(result.fulfillment_order_ids),
        return_order_id=result.return_order_id,
        order_status=result.order_status,
        authorized_minor=result.authorized_minor,
        grand_total_minor=result.grand_total_minor,
        rerouted=result.rerouted,
        location_ids=tuple(result.location_ids),
    )


class OrderLifecycles:
    """Sends Updates and queries to order workflows (`order:<order_id>`)."""

    def __init__(
        self,
        client: Callable[[], Awaitable[Client]],
        timeout: timedelta,
        orders: Orders,
        *,
        start_wait: timedelta = START_WAIT,
        start_poll: timedelta = START_POLL,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._orders = orders
        self._start_wait = start_wait
        self._start_poll = start_poll

    async def resolve(self, order_id: str, request: domain.Resolve) -> tuple[str, str]:
        """Hand an agent's resolution to the workflow; returns (the action the workflow took,
        the order's status after it). The Update id is derived from the exception, so a
        retried or concurrent resolution reaches the same Update and gets its answer."""
        handle = await self._handle(order_id)
        result: ResolutionResult = await self._update(
            handle,
            order_id,
            RESOLVE_EXCEPTION_UPDATE,
            Resolution(
                process_exception_id=request.process_exception_id,
                action=request.action,
                note=request.note,
                actor=domain.actor_of(request.actor),
            ),
            f"resolve:{request.process_exception_id}",
            ResolutionResult,
        )
        return result.action, result.order_status

    async def change(self, order: domain.ChangeOrder, change_id: str) -> domain.ChangeOutcome:
        """Send a change as its Update (id = change_id) and return the workflow's answer."""
        handle = await self._handle(order.order_id)
        result: ChangeResult = await self._update(
            handle,
            order.order_id,
            UPDATES[order.kind],
            change_request(order, change_id, preview=False),
            change_id,
            ChangeResult,
        )
        return change_outcome(result)

    async def preview(self, order: domain.ChangeOrder) -> domain.ChangeOutcome:
        """What a change would do, computed by the workflow without changing anything."""
        request = change_request(order, PREVIEW_CHANGE_ID, preview=True)
        try:
            result: ChangeResult = await self._query(
                order.order_id, PREVIEW_QUERY, ChangeResult, request
            )
        except WorkflowQueryFailedError as error:
            raise FailedPrecondition(f"the order cannot preview this: {error.message}") from None
        refused = domain.preview_refusal(result.summary, result.refusal_code)
        if refused is not None:
            raise refused
        return change_outcome(result)

    async def order_view(self, order_id: str) -> domain.OrderView:
        """The order as its lifecycle holds it now (channel, delivery, lines and what may
        still come back): the `state` query; FailedPrecondition when the order is closed."""
        state: OrderState = await self._query(order_id, STATE_QUERY, OrderState)
        return domain.OrderView(
            order_id=order_id,
            channel=state.channel,
            delivered_at=state.delivered_at,
            lines=tuple(
                domain.ReturnableLine(line.order_line_id, line.sku, line.available_to_return)
                for line in state.lines
            ),
            return_window_closes_at=state.return_window_closes_at,
        )

    async def _handle(self, order_id: str) -> WorkflowHandle[Any, Any]:
        return await workflow_handle(self._client, order_workflow_id(order_id))

    async def _query(self, order_id: str, name: str, result_type: type[T], *args: Any) -> T:
        """Ask the order's open workflow the query `name`; FailedPrecondition when the order
        is closed. A query that fails in the workflow raises WorkflowQueryFailedError."""
        handle = await self._handle(order_id)

        async def query() -> T:
            try:
                answer: T = await handle.query(
                    name,
                    *args,
                    result_type=result_type,
                    reject_condition=QueryRejectCondition.NOT_OPEN,
                    rpc_timeout=self._timeout,
                )
            except WorkflowQueryRejectedError:
                raise FailedPrecondition(f"order {order_id} is closed") from None
            return answer

        return await self._found(handle, order_id, query)

    async def _update(
        self,
        handle: WorkflowHandle[Any, Any],
        order_id: str,
        name: str,
        arg: Any,
        update_id: str,
        result_type: type[Any],
    ) -> Any:
        async def update() -> Any:
            return await execute_update(
                handle, name, arg, update_id, result_type, self._timeout, f"order {order_id}"
            )

        return await self._found(handle, order_id, update)

    async def _found(
        self, handle: WorkflowHandle[Any, Any], order_id: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Make `call` to the order's workflow; when Temporal does not find the workflow, find
        out why and send it again if the workflow is (by now) open."""
        return await send_found(
            call, lambda: self._until_open(handle, order_id), f"order {order_id}"
        )

    async def _until_open(self, handle: WorkflowHandle[Any, Any], order_id: str) -> None:
        """Return once the order's workflow is open; raise FailedPrecondition if it is closed,
        NotFound if there is no such order, LifecycleUnavailable if capture acknowledged the
        order but its lifecycle did not start within the start wait."""
        opened = await self._is_open(handle)
        if opened is None:
            # No workflow: does capture know the order? (NotFound if it does not.)
            pending = await self._orders.is_pending(order_id)
            # Capture's relay may be about to start the lifecycle, or did since describe:
            # look again, for a bounded while if the order is still pending.
            wait = self._start_wait.total_seconds() if pending else 0.0
            waits_by = time.monotonic() + wait
            opened = await self._is_open(handle)
            while opened is None and time.monotonic() < waits_by:
                await asyncio.sleep(self._start_poll.total_seconds())
                opened = await self._is_open(handle)
            if opened is None and pending:
                raise LifecycleUnavailable(
                    f"order {order_id} is pending: its lifecycle has not started yet; "
                    "retry with the same request"
                )
        if not opened:
            # Closed; or gone from Temporal (past retention) while capture's status moved on.
            raise FailedPrecondition(f"order {order_id} is closed")

    async def _is_open(self, handle: WorkflowHandle[Any, Any]) -> bool | None:
        return await is_open(handle, self._timeout)


async def workflow_handle(
    client: Callable[[], Awaitable[Client]], workflow_id: str
) -> WorkflowHandle[Any, Any]:
    """A handle on `workflow_id`; LifecycleUnavailable when Temporal cannot be reached."""
    try:
        connected = await client()
    except RuntimeError as error:  # the SDK raises RuntimeError when it cannot connect
        raise LifecycleUnavailable(f"Temporal is unreachable: {error}") from None
    return connected.get_workflow_handle(workflow_id)


async def is_open(handle: WorkflowHandle[Any, Any], rpc_timeout: timedelta) -> bool | None:
    """True if the workflow is open (running, or continued as new), False if it has closed,
    None if Temporal has no such workflow."""
    try:
        description = await handle.describe(rpc_timeout=rpc_timeout)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise LifecycleUnavailable(f"Temporal refused the call: {error.message}") from None
    return description.status in OPEN_STATUSES or description.status is None


async def send_found(
    call: Callable[[], Awaitable[T]], until_open: Callable[[], Awaitable[None]], what: str
) -> T:
    """Make `call` to `what`'s workflow; when Temporal does not find the workflow (not started
    yet, or its run just continued as new), wait until it is open (`until_open` raises when
    it will not be) and send it again."""
    for _ in range(SEND_ATTEMPTS):
        try:
            return await call()
        except RPCError as error:
            # Not found, or found completed: the run may have just continued as new.
            closed_run = "completed" in error.message.lower()
            if error.status != RPCStatusCode.NOT_FOUND and not closed_run:
                raise LifecycleUnavailable(f"Temporal refused the call: {error.message}") from None
        await until_open()
    raise LifecycleUnavailable(
        f"{what}'s workflow is open but did not take the call; retry with the same request"
    )


async def execute_update(
    handle: WorkflowHandle[Any, Any],
    name: str,
    arg: Any,
    update_id: str,
    result_type: type[Any],
    answer_within: timedelta,
    what: str,
) -> Any:
    """Run the Update `update_id` on the workflow of `what` ("order …", "subscription …") and
    return its result: its refusal as the gRPC error it names (update_failure), and
    LifecycleUnavailable when the workflow did not answer within `answer_within` (a retry
    with the same key reaches the same Update)."""
    try:
        # The SDK sends the Update again while it is only admitted (no worker took it yet),
        # each time with rpc_timeout: the whole wait is bounded here.
        async with asyncio.timeout(answer_within.total_seconds()):
            return await handle.execute_update(
                name, arg, id=update_id, result_type=result_type, rpc_timeout=answer_within
            )
    except WorkflowUpdateFailedError as error:
        raise update_failure(error) from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise LifecycleUnavailable(
            f"{what}'s workflow did not answer within {answer_within}; retry with the same key"
        ) from None


def update_failure(error: WorkflowUpdateFailedError) -> Exception:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type:
        refusal: DomainError | None = domain.refusal(cause.type, cause.message)
        if refusal is not None:
            return refusal
    detail = str(cause) if cause is not None else str(error)
    inner = getattr(cause, "cause", None)
    if inner is not None:
        detail += f": {inner}"
    return ChangeFailed(detail)


async def reachable(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    """Await a call that talks to Temporal, for an RPC: UNAVAILABLE (retry) when it cannot be
    made now."""
    try:
        return await call
    except LifecycleUnavailable as error:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        raise  # abort raises; this keeps type checkers content
