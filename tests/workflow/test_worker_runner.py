"""The production worker's workflow runner, both ways: unsandboxed (the default, for speed)
and, with OMS_WORKER_SANDBOX, the SDK's sandbox with the `workflows` package passed through.
Either way the lifecycle runs an order to the end with the same money, and a run keeps its own
copies of what it reads from its first activation."""

from __future__ import annotations

import uuid

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInstance,
    WorkflowInstanceDetails,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from oms_platform.settings import Settings
from tests.workflow.test_order_lifecycle import Services, an_order, ship_everything
from workflows.lifecycle import OrderLifecycle
from workflows.types import FULFILLED, order_workflow_id
from workflows.worker import detach_start, workflow_runner


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


@workflow.defn(name="memo-echo")
class MemoEcho:
    """Answers with what its run reads from its start: the memo and the last completion."""

    @workflow.run
    async def run(self) -> str:
        return f"{workflow.memo_value('note')}:{workflow.has_last_completion_result()}"


async def test_a_run_detached_from_its_first_activation_still_reads_its_start(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """The worker's runner gives each run its own copies of its start's messages (the sandboxed
    one too: the test above runs an order through it); the run reads the same values."""
    started: list[WorkflowInstanceDetails] = []

    class Recording(UnsandboxedWorkflowRunner):
        def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
            started.append(det)
            return super().create_instance(det)

    queue = f"runner-{uuid.uuid4()}"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[MemoEcho],
        workflow_runner=workflow_runner(Settings()),
    ):
        answer = await time_skipping_env.client.execute_workflow(
            MemoEcho.run, id=f"memo-{uuid.uuid4()}", task_queue=queue, memo={"note": "kept"}
        )
    assert answer == "kept:False"
    # The same start, seen by a runner that keeps it as the SDK hands it over, then detached:
    # equal values in messages of their own.
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[MemoEcho],
        workflow_runner=Recording(),
    ):
        await time_skipping_env.client.execute_workflow(
            MemoEcho.run, id=f"memo-{uuid.uuid4()}", task_queue=queue, memo={"note": "kept"}
        )
    [det] = started
    detached = detach_start(det)
    assert detached.info.raw_memo == det.info.raw_memo
    assert detached.info.raw_memo["note"] is not det.info.raw_memo["note"]
    assert detached.last_completion_result == det.last_completion_result
    assert detached.last_completion_result is not det.last_completion_result
    assert detached.last_failure == det.last_failure
    assert len(detached.interceptor_classes) == len(det.interceptor_classes) + 1
