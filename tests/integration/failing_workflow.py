"""A workflow whose every task fails (a bug, as far as Temporal can tell): what the metrics test
runs to see the worker count failed workflow tasks."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="AlwaysFailingTask")
class AlwaysFailingTask:
    """Raises a plain error on every attempt, so Temporal fails and retries the task."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug in workflow code")
