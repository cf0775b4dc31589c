"""The production worker's workflow runner, both ways: unsandboxed (the default, for speed)
and, with OMS_WORKER_SANDBOX, the SDK's sandbox with the `workflows` package passed through.
Either way the lifecycle runs an order to the end with the same money."""

from __future__ import annotations

import uuid

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from oms_platform.settings import Settings
from tests.workflow.test_order_lifecycle import Services, an_order, ship_everything
from workflows.lifecycle import OrderLifecycle
from workflows.types import FULFILLED, order_workflow_id
from workflows.worker import workflow_runner


@pytest.mark.parametrize(
    ("sandbox", "runner_type"),
    [(False, UnsandboxedWorkflowRunner), (True, SandboxedWorkflowRunner)],
)
async def test_the_worker_runs_the_lifecycle_with_or_without_the_sandbox(
    time_skipping_env: WorkflowEnvironment, sandbox: bool, runner_type: type
) -> None:
    runner = workflow_runner(Settings(worker_sandbox=sandbox))
    assert isinstance(runner, runner_type)
    services, order = Services(), an_order()
    queue = f"runner-{uuid.uuid4()}"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[OrderLifecycle],
        activities=services.activities(),
        workflow_runner=runner,
    ):
        handle = await time_skipping_env.client.start_workflow(
            OrderLifecycle.run, order, id=order_workflow_id(order.order_id), task_queue=queue
        )
        await ship_everything(handle)
        result = await handle.result()
    assert result.status == FULFILLED
    assert result.captured_minor == result.invoiced_minor == order.grand_total_minor
    assert services.kinds()[-1] == "order.closed"
