"""The worker: runs OrderLifecycle and SubscriptionWorkflow workflows and their activities
against the services."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import grpc
import structlog
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.worker import (
    ExecuteWorkflowInput,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from oms_platform import auth, grpcutil, heap
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from workflows.activities import (
    CaptureActivities,
    FulfillmentActivities,
    PaymentsActivities,
    ServicingActivities,
    SubscriptionsActivities,
)
from workflows.lifecycle import OrderLifecycle
from workflows.subscription import SubscriptionWorkflow

log = structlog.get_logger("oms.worker")


def activities_for(settings: Settings) -> list[Callable[..., Any]]:
    """Every activity, bound to channels to the configured services; every call carries the
    worker's own identity (the internal `workflow` role, which alone drives the lifecycle)."""
    identity = auth.ServiceIdentity.for_process(settings, "worker", auth.WORKFLOW)
    tls = TLSConfig.from_settings(settings)

    def channel(service: str) -> grpc.aio.Channel:
        return grpcutil.channel(settings.address_of(service), identity, tls=tls)

    capture = CaptureActivities(channel("capture"))
    payments = PaymentsActivities(channel("payments"))
    fulfillment = FulfillmentActivities(channel("fulfillment"))
    # SubscriptionsService is served by servicing: one channel for both.
    servicing_channel = channel("servicing")
    servicing = ServicingActivities(servicing_channel)
    subscriptions = SubscriptionsActivities(servicing_channel)
    return [
        capture.record_order_progress,
        capture.record_order_progress_batch,
        payments.authorize_payment,
        payments.create_invoice,
        payments.capture_invoice,
        payments.invoice_and_capture,
        payments.void_authorization,
        payments.renew_authorizations,
        payments.create_credit_memo,
        payments.refund_credit_memo,
        payments.credit_memo_and_refund,
        fulfillment.create_fulfillment_orders,
        fulfillment.cancel_fulfillment_order,
        fulfillment.cancel_fulfillment_order_lines,
        fulfillment.cancel_order_fulfillment_orders,
        fulfillment.change_delivery_address,
        servicing.record_process_exception,
        servicing.escalate_process_exception,
        servicing.create_return_order,
        servicing.record_return_receipt,
        capture.submit_cycle_order,
        subscriptions.record_subscription_progress,
    ]


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """How OrderLifecycle runs. By default without the SDK's sandbox: the sandbox re-creates the
    workflow's module environment for every run and proxies every activation through it, which
    cost the worker about a seventh of its throughput in `oms bench lifecycle`. Determinism is
    held elsewhere: the workflow tests and the replay of recorded histories run the lifecycle
    inside the sandbox, so a clock, random or I/O call in workflow code fails the suite.
    `OMS_WORKER_SANDBOX=true` turns it back on in a running worker (to chase a suspected
    nondeterminism), with the `workflows` package passed through: its modules hold only code
    and constants, so one import serves every run. Either way the run keeps its own copies of
    what it reads from its first activation (`detach_start`)."""
    if not settings.worker_sandbox:
        return _UnsandboxedRunner()
    return _SandboxedRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
    )


def detach_start(det: WorkflowInstanceDetails) -> WorkflowInstanceDetails:
    """`det` with its own copies of the protobuf messages the SDK takes from a run's first
    activation (the start's headers, memo, last completion result and last failure), and the
    interceptor that does the same for the workflow's input headers.

    Each of those messages is a view into the activation's protobuf arena, so holding any one
    of them keeps the whole first activation (the order sealed and unsealed, the start's
    search attributes) alive for as long as the run stays cached: about 20 KiB per cached
    workflow, 18 MiB of the worker's 246 with 1,000 orders waiting (`oms bench memory`, issue
    15). The copies hold the same values, so the workflow sees no difference."""
    info = dataclasses.replace(
        det.info, headers=_own_payloads(det.info.headers), raw_memo=_own_payloads(det.info.raw_memo)
    )
    last_result = Payloads()
    last_result.CopyFrom(det.last_completion_result)
    last_failure = None
    if det.last_failure is not None:
        last_failure = Failure()
        last_failure.CopyFrom(det.last_failure)
    return dataclasses.replace(
        det,
        info=info,
        last_completion_result=last_result,
        last_failure=last_failure,
        # Outermost, so it is handed the very input object the SDK keeps.
        interceptor_classes=[_DetachStartHeaders, *det.interceptor_classes],
    )


def _own_payloads(payloads: Mapping[str, Payload]) -> dict[str, Payload]:
    """Copies of `payloads` that share no protobuf arena with the message they came from."""
    copies = {}
    for key, payload in payloads.items():
        copy = Payload()
        copy.CopyFrom(payload)
        copies[key] = copy
    return copies


class _DetachStartHeaders(WorkflowInboundInterceptor):
    """Swaps the workflow input's headers (a view into the first activation) for copies. The
    SDK keeps this same input object for the run's life, so it is changed in place."""

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        input.headers = _own_payloads(input.headers)
        return await super().execute_workflow(input)


class _UnsandboxedRunner(UnsandboxedWorkflowRunner):
    """The SDK's runner without the sandbox, each run detached from its first activation."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return super().create_instance(detach_start(det))


class _SandboxedRunner(SandboxedWorkflowRunner):
    """The SDK's sandboxed runner, each run detached from its first activation."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return super().create_instance(detach_start(det))


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]] | None = None,
) -> Worker:
    """The order worker on the configured task queue: orders and subscriptions share it."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[OrderLifecycle, SubscriptionWorkflow],
        workflow_runner=workflow_runner(settings),
        activities=list(activities if activities is not None else activities_for(settings)),
        max_concurrent_activities=200,
        max_concurrent_workflow_tasks=100,
        max_cached_workflows=settings.worker_max_cached_workflows,
        # On SIGTERM the worker stops polling and gives running activities this long to
        # finish and report; without it they would be cut off at once and retried only after
        # their start-to-close timeout. One still running past the grace is cancelled all the
        # same, and retried (idempotently) by the next worker once that timeout has passed.
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
    )


async def run_worker(settings: Settings, client: Client) -> None:
    """Run until SIGINT or SIGTERM."""
    worker = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        heap.settle(settings.gc_young_threshold)
        log.info("worker started", task_queue=settings.task_queue)
        await stop.wait()
        log.info("worker stopping", grace_seconds=settings.shutdown_grace_seconds)
    log.info("worker stopped")
