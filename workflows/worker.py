"""The worker: runs OrderLifecycle workflows and their activities against the services."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import grpc
import structlog
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from oms_platform import auth, grpcutil
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from workflows.activities import (
    CaptureActivities,
    FulfillmentActivities,
    PaymentsActivities,
    ServicingActivities,
)
from workflows.lifecycle import OrderLifecycle

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
    servicing = ServicingActivities(channel("servicing"))
    return [
        capture.record_order_progress,
        payments.authorize_payment,
        payments.create_invoice,
        payments.capture_invoice,
        payments.invoice_and_capture,
        payments.void_authorization,
        payments.create_credit_memo,
        payments.refund_credit_memo,
        payments.credit_memo_and_refund,
        fulfillment.create_fulfillment_orders,
        fulfillment.cancel_fulfillment_order,
        fulfillment.cancel_fulfillment_order_lines,
        servicing.record_process_exception,
        servicing.escalate_process_exception,
        servicing.create_return_order,
        servicing.record_return_receipt,
    ]


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """How OrderLifecycle runs. By default without the SDK's sandbox: the sandbox re-creates the
    workflow's module environment for every run and proxies every activation through it, which
    cost the worker about a seventh of its throughput in `oms bench lifecycle`. Determinism is
    held elsewhere: the workflow tests and the replay of recorded histories run the lifecycle
    inside the sandbox, so a clock, random or I/O call in workflow code fails the suite.
    `OMS_WORKER_SANDBOX=true` turns it back on in a running worker (to chase a suspected
    nondeterminism), with the `workflows` package passed through: its modules hold only code
    and constants, so one import serves every run."""
    if not settings.worker_sandbox:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
    )


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]] | None = None,
) -> Worker:
    """The order worker on the configured task queue."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[OrderLifecycle],
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
        log.info("worker started", task_queue=settings.task_queue)
        await stop.wait()
        log.info("worker stopping", grace_seconds=settings.shutdown_grace_seconds)
    log.info("worker stopped")
