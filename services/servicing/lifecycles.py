"""The order workflows as servicing talks to them: Temporal Updates and the preview query.

An adapter at the edge: it converts servicing's domain dataclasses to the workflow's payload
types (workflows/types.py) and back, and turns the workflow's refusals into domain errors
(an ApplicationError's `type` is a gRPC status name). Failures that are not refusals (a step
of an accepted change failed for good) raise ChangeFailed; Temporal being out of reach
raises LifecycleUnavailable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import QueryRejectCondition
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from oms_platform.errors import DomainError, FailedPrecondition, NotFound
from services.servicing import domain
from workflows.types import (
    APPEASE_UPDATE,
    CANCEL_UPDATE,
    EXCHANGE_UPDATE,
    PREVIEW_QUERY,
    RECEIVE_RETURN_UPDATE,
    RESHIP_UPDATE,
    RESOLVE_EXCEPTION_UPDATE,
    RETURN_UPDATE,
    ChangeRequest,
    ChangeResult,
    ItemQuantity,
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
}
PREVIEW_CHANGE_ID = "preview"


class ChangeFailed(Exception):
    """The workflow accepted the request, but a step of it failed for good."""


class LifecycleUnavailable(Exception):
    """Temporal (or the order's worker) did not answer in time; retrying may succeed."""


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
    )


class OrderLifecycles:
    """Sends Updates and queries to order workflows (`order:<order_id>`)."""

    def __init__(self, client: Callable[[], Awaitable[Client]], timeout: timedelta) -> None:
        self._client = client
        self._timeout = timeout

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
        handle = await self._handle(order.order_id)
        try:
            result: ChangeResult = await handle.query(
                PREVIEW_QUERY,
                change_request(order, PREVIEW_CHANGE_ID, preview=True),
                result_type=ChangeResult,
                reject_condition=QueryRejectCondition.NOT_OPEN,
                rpc_timeout=self._timeout,
            )
        except WorkflowQueryRejectedError:
            raise FailedPrecondition(f"order {order.order_id} is closed") from None
        except WorkflowQueryFailedError as error:
            raise FailedPrecondition(f"the order cannot preview this: {error.message}") from None
        except RPCError as error:
            raise await self._rpc_error(handle, order.order_id, error) from None
        refused = domain.preview_refusal(result.summary)
        if refused is not None:
            raise refused
        return change_outcome(result)

    async def _handle(self, order_id: str) -> WorkflowHandle[Any, Any]:
        try:
            client = await self._client()
        except RuntimeError as error:  # the SDK raises RuntimeError when it cannot connect
            raise LifecycleUnavailable(f"Temporal is unreachable: {error}") from None
        return client.get_workflow_handle(order_workflow_id(order_id))

    async def _update(
        self,
        handle: WorkflowHandle[Any, Any],
        order_id: str,
        name: str,
        arg: Any,
        update_id: str,
        result_type: type[Any],
    ) -> Any:
        try:
            return await handle.execute_update(
                name, arg, id=update_id, result_type=result_type, rpc_timeout=self._timeout
            )
        except WorkflowUpdateFailedError as error:
            raise _update_failure(error) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise LifecycleUnavailable(
                f"order {order_id}'s workflow did not answer within {self._timeout}; "
                "retry with the same key"
            ) from None
        except RPCError as error:
            raise await self._rpc_error(handle, order_id, error) from None

    async def _rpc_error(
        self, handle: WorkflowHandle[Any, Any], order_id: str, error: RPCError
    ) -> Exception:
        if error.status != RPCStatusCode.NOT_FOUND:
            return LifecycleUnavailable(f"Temporal refused the call: {error.message}")
        # Not found: either there never was such an order, or its workflow has completed.
        try:
            await handle.describe(rpc_timeout=self._timeout)
        except RPCError as describe_error:
            if describe_error.status == RPCStatusCode.NOT_FOUND:
                return NotFound(f"no order {order_id!r}")
            return LifecycleUnavailable(f"Temporal refused the call: {describe_error.message}")
        return FailedPrecondition(f"order {order_id} is closed")


def _update_failure(error: WorkflowUpdateFailedError) -> Exception:
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
