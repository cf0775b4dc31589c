"""Subscription workflows as servicing talks to them: the change Update and its preview query
(workflows/subscription_types.py).

An adapter at the edge, like lifecycles.py for orders: the workflow's refusals (an Update's
ApplicationError whose `type` is a gRPC status name; a preview's `refusal_code` and `refusal`
in its result, since a failed query's message arrives encrypted) become domain errors,
Temporal out of reach becomes LifecycleUnavailable (the caller retries with the same key). A
subscription's workflow is started by servicing's own outbox relay just after
CreateSubscription commits: a call that finds no workflow waits for it briefly, then answers
"retry".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import QueryRejectCondition

from oms_platform.errors import FailedPrecondition
from services.servicing import domain
from services.servicing.lifecycles import (
    START_POLL,
    START_WAIT,
    LifecycleUnavailable,
    execute_update,
    is_open,
    send_found,
    workflow_handle,
)
from workflows.subscription_types import (
    SUBSCRIPTION_CHANGE_UPDATE,
    SUBSCRIPTION_PREVIEW_QUERY,
    SubscriptionChangeRequest,
    SubscriptionChangeResult,
    subscription_workflow_id,
)

T = TypeVar("T")


class SubscriptionWorkflows:
    """Sends changes and previews to subscription workflows (`subscription:<id>`)."""

    def __init__(
        self,
        client: Callable[[], Awaitable[Client]],
        timeout: timedelta,
        *,
        start_wait: timedelta = START_WAIT,
        start_poll: timedelta = START_POLL,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._start_wait = start_wait
        self._start_poll = start_poll

    async def change(
        self, subscription_id: str, request: SubscriptionChangeRequest, update_id: str
    ) -> SubscriptionChangeResult:
        """Make the change (the Update `update_id`: a retry reaches the same Update)."""
        handle = await self._handle(subscription_id)

        async def update() -> SubscriptionChangeResult:
            result: SubscriptionChangeResult = await execute_update(
                handle,
                SUBSCRIPTION_CHANGE_UPDATE,
                request,
                update_id,
                SubscriptionChangeResult,
                self._timeout,
                f"subscription {subscription_id}",
            )
            return result

        return await self._found(handle, subscription_id, update)

    async def preview(
        self, subscription_id: str, request: SubscriptionChangeRequest
    ) -> SubscriptionChangeResult:
        """What the change would do, computed by the workflow without changing anything."""
        handle = await self._handle(subscription_id)

        async def query() -> SubscriptionChangeResult:
            try:
                answer: SubscriptionChangeResult = await handle.query(
                    SUBSCRIPTION_PREVIEW_QUERY,
                    request,
                    result_type=SubscriptionChangeResult,
                    reject_condition=QueryRejectCondition.NOT_OPEN,
                    rpc_timeout=self._timeout,
                )
            except WorkflowQueryRejectedError:
                raise FailedPrecondition(f"subscription {subscription_id} has ended") from None
            except WorkflowQueryFailedError:
                # Its message is the codec's ("Encoded failure"): refusals come as results.
                raise FailedPrecondition(
                    f"subscription {subscription_id}'s workflow could not preview this change"
                ) from None
            return answer

        result = await self._found(handle, subscription_id, query)
        if result.refusal_code or result.refusal:
            raise domain.refusal(result.refusal_code, result.refusal) or FailedPrecondition(
                result.refusal
            )
        return result

    async def _handle(self, subscription_id: str) -> WorkflowHandle[Any, Any]:
        return await workflow_handle(self._client, subscription_workflow_id(subscription_id))

    async def _found(
        self,
        handle: WorkflowHandle[Any, Any],
        subscription_id: str,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        return await send_found(
            call,
            lambda: self._until_open(handle, subscription_id),
            f"subscription {subscription_id}",
        )

    async def _until_open(self, handle: WorkflowHandle[Any, Any], subscription_id: str) -> None:
        """Return once the workflow is open; FailedPrecondition if it has ended,
        LifecycleUnavailable if it has not started within the start wait (the outbox relay
        starts it just after the subscription is created)."""
        waits_by = time.monotonic() + self._start_wait.total_seconds()
        opened = await is_open(handle, self._timeout)
        while opened is None and time.monotonic() < waits_by:
            await asyncio.sleep(self._start_poll.total_seconds())
            opened = await is_open(handle, self._timeout)
        if opened is None:
            raise LifecycleUnavailable(
                f"subscription {subscription_id}'s workflow has not started yet; "
                "retry with the same request"
            )
        if not opened:
            raise FailedPrecondition(f"subscription {subscription_id} has ended")
