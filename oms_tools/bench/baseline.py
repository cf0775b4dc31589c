"""The benchmark baseline: a no-op workflow running N no-op activities in sequence.

Kept apart from the bench driver so the workflow sandbox imports nothing but temporalio.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def bench_noop(step: int) -> int:
    """Does nothing; the baseline's unit of work."""
    return step


@workflow.defn(name="BenchNoop")
class BenchNoop:
    """`activities` no-op activities in sequence, like the lifecycle's steps."""

    @workflow.run
    async def run(self, activities: int) -> int:
        for step in range(activities):
            await workflow.execute_activity(
                bench_noop, step, start_to_close_timeout=timedelta(seconds=30)
            )
        return activities
