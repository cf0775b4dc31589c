"""gRPC edge of SubscriptionsService (served by servicing): converts wire <-> domain,
delegates to the store and to the subscription workflows, confines storefronts to their
channels and masks payment tokens for everyone but oms's own processes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import grpc
from oms.subscriptions.v1 import subscriptions_pb2 as pb
from oms.subscriptions.v1 import subscriptions_pb2_grpc

from oms_platform import auth, limits
from oms_platform.db import idempotent, new_id, request_fingerprint
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.redaction import mask_token
from services.servicing import subscription_convert as convert
from services.servicing.domain import subscriptions as sd
from services.servicing.lifecycles import ChangeFailed, reachable
from services.servicing.subscription_store import SubscriptionStore
from services.servicing.subscription_workflows import SubscriptionWorkflows
from workflows.subscription_types import CHANGE_PLAN


class SubscriptionsServicer(subscriptions_pb2_grpc.SubscriptionsServiceServicer):
    """SubscriptionsService over servicing's subscription records and workflows."""

    def __init__(
        self,
        store: SubscriptionStore,
        workflows: SubscriptionWorkflows,
        *,
        spread_seconds: int,
        minute_cadence: bool,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._workflows = workflows
        self._spread_seconds = spread_seconds
        self._minute_cadence = minute_cadence
        # Wakes this process's outbox relay: a new subscription's workflow starts at once.
        self._on_enqueued = on_enqueued

    # ---- plans ----------------------------------------------------------------------------------

    async def CreatePlan(
        self, request: pb.CreatePlanRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePlanResponse:
        command = convert.new_plan_to_domain(request)
        sd.validate_plan(command, minutes_allowed=self._minute_cadence)

        async def create(conn: asyncpg.Connection) -> sd.Plan:
            plan = sd.new_plan(command, new_id(), datetime.now(UTC))
            await self._store.insert_plan(conn, plan)
            return plan

        response, _ = await idempotent(
            self._store.pool,
            f"plan:{command.idempotency_key}",
            request,
            pb.CreatePlanResponse,
            create,
            lambda plan: pb.CreatePlanResponse(plan=convert.plan_to_pb(plan.data, plan.created_at)),
        )
        return response

    async def ListPlans(
        self, request: pb.ListPlansRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPlansResponse:
        plans = await self._store.plans()
        return pb.ListPlansResponse(plans=[convert.plan_to_pb(p.data, p.created_at) for p in plans])

    # ---- subscriptions --------------------------------------------------------------------------

    async def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSubscriptionResponse:
        now = datetime.now(UTC)
        command = convert.new_subscription_to_domain(request, now)
        sd.validate_subscription(command)
        auth.require_channel(command.channel, "the subscription")
        actor = auth.actor()

        async def create(conn: asyncpg.Connection) -> sd.Subscription:
            plan = await self._store.plan(command.plan_id, conn)
            if plan is None:
                raise InvalidArgument(
                    [FieldViolation("plan_id", f"no plan {limits.echo(command.plan_id)}")]
                )
            subscription = sd.new_subscription(command, new_id(), now)
            start = sd.workflow_input(subscription, plan.data, self._spread_seconds)
            # The subscription, its workflow's start (outbox) and its first history entry
            # commit together, or none of them.
            await self._store.insert_subscription(conn, subscription, start)
            await self._store.insert_change(
                conn,
                subscription.subscription_id,
                sd.created_record(subscription, plan.data, actor),
            )
            return subscription

        answer = await idempotent(
            self._store.pool,
            f"subscription:{command.idempotency_key}",
            request,
            pb.CreateSubscriptionResponse,
            create,
            _created_answer,
        )
        response, created = answer
        if created is None:
            response.duplicate = True
        else:
            self._on_enqueued()
        return response

    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSubscriptionResponse:
        subscription = await self._readable(request.subscription_id)
        plan = await self._store.plan(subscription.plan_id)
        cycles, changes = await self._store.history(subscription.subscription_id)
        response = pb.GetSubscriptionResponse(
            subscription=convert.subscription_to_pb(subscription, mask=_masked()),
            cycles=[convert.cycle_to_pb(c) for c in cycles],
            changes=[convert.change_record_to_pb(c) for c in changes],
        )
        if plan is not None:
            response.plan.CopyFrom(convert.plan_to_pb(plan.data, plan.created_at))
        return response

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSubscriptionsResponse:
        principal = auth.current_principal()
        query = sd.list_query(
            shopper_email=request.shopper_email,
            plan_id=request.plan_id,
            # An unknown enum value stays unknown, and is refused as such.
            status=(
                convert.STATUS_TO_DOMAIN.get(request.status, str(request.status))
                if request.status
                else ""
            ),
            page_size=request.page_size,
            page_token=request.page_token,
            channels=None if principal.sees_every_channel() else sorted(principal.channels),
        )
        page = sd.page_of(query, await self._store.subscriptions(query))
        mask = _masked()
        return pb.ListSubscriptionsResponse(
            subscriptions=[convert.subscription_to_pb(s, mask=mask) for s in page.subscriptions],
            next_page_token=sd.next_page_token(query, page),
        )

    async def ChangeSubscription(
        self, request: pb.ChangeSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeSubscriptionResponse:
        subscription = await self._readable(request.subscription_id)
        current = await self._store.plan(subscription.plan_id)
        assert current is not None  # a subscription's plan is a foreign key
        change = convert.change_to_domain(request, auth.actor())
        if change is not None and change.kind == CHANGE_PLAN:
            # The workflow gets the plan whole: it keeps no table of plans.
            new_plan = await self._store.plan(request.change_plan.plan_id)
            if new_plan is None:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "change_plan.plan_id",
                            f"no plan {limits.echo(request.change_plan.plan_id)}",
                        )
                    ]
                )
            change.plan = new_plan.data
        sd.validate_change(change, preview=request.preview, current_plan=current.data)
        assert change is not None
        mask = _masked()
        if request.preview:
            result = await reachable(
                context, self._workflows.preview(subscription.subscription_id, change)
            )
            return convert.change_result_to_pb(
                result, subscription, result.subscription.plan.currency, mask=mask
            )
        key = sd.change_key_for(subscription.subscription_id, request.idempotency_key)
        stored = await self._store.change_answer(
            key, request_fingerprint(request), request.DESCRIPTOR.full_name
        )
        if stored is not None:
            response = pb.ChangeSubscriptionResponse.FromString(stored)
            response.duplicate = True
            return _for_caller(response, mask)
        try:
            result = await reachable(
                context, self._workflows.change(subscription.subscription_id, change, key)
            )
        except ChangeFailed as failure:
            raise FailedPrecondition(f"the change could not finish: {failure}") from None
        # Kept unmasked: a retry is answered for its own caller.
        response = convert.change_result_to_pb(
            result, subscription, result.subscription.plan.currency, mask=False
        )
        await self._store.keep_answer(key, response.SerializeToString())
        return _for_caller(response, mask)

    # ---- the workflow's projection --------------------------------------------------------------

    async def RecordSubscriptionProgress(
        self, request: pb.RecordSubscriptionProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordSubscriptionProgressResponse:
        progress = convert.progress_to_domain(request, datetime.now(UTC))
        sd.validate_progress(request.idempotency_key, progress)
        subscription_id = progress.subscription.subscription_id

        async def record(conn: asyncpg.Connection) -> None:
            await self._store.subscription(subscription_id, conn, for_update=True)
            await self._store.record_progress(conn, progress)

        response, _ = await idempotent(
            self._store.pool,
            f"subscription_progress:{subscription_id}:{request.idempotency_key}",
            request,
            pb.RecordSubscriptionProgressResponse,
            record,
            lambda _: pb.RecordSubscriptionProgressResponse(),
        )
        return response

    async def _readable(self, subscription_id: str) -> sd.Subscription:
        """The subscription, if the caller may see it (a storefront: its channels' only)."""
        subscription = await self._store.subscription(subscription_id)
        auth.require_channel(subscription.channel, f"subscription {subscription_id}")
        return subscription


def _created_answer(subscription: sd.Subscription) -> pb.CreateSubscriptionResponse:
    """CreateSubscription's answer, kept as the key's: masked, whoever asks again."""
    return pb.CreateSubscriptionResponse(
        subscription=convert.subscription_to_pb(subscription, mask=True)
    )


def _masked() -> bool:
    """Payment tokens are masked for every caller but oms's own processes."""
    return not auth.current_principal().sees_payment_tokens()


def _for_caller(
    response: pb.ChangeSubscriptionResponse, mask: bool
) -> pb.ChangeSubscriptionResponse:
    """The answer as this caller may read it (the token masked unless `mask` is off)."""
    if mask:
        method = response.subscription.payment_method
        method.token = mask_token(method.token)
    return response
