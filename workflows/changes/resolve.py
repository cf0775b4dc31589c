"""Resolving a process exception: an agent's decision (retry, skip, cancel) on the exception
the order waits on. The lifecycle's hold acts on it; the Update answers once it has."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.changes.steps import Steps
from workflows.types import RESOLUTION_ACTIONS, Resolution, ResolutionResult


def check(steps: Steps, resolution: Resolution) -> None:
    """Refuse a resolution of an exception the order is not waiting on (ApplicationError)."""
    if resolution.action not in RESOLUTION_ACTIONS:
        raise ApplicationError(
            f"action must be one of {', '.join(RESOLUTION_ACTIONS)}", type="INVALID_ARGUMENT"
        )
    if resolution.process_exception_id != steps.waiting_on:
        raise ApplicationError(
            f"order is not waiting on process exception {resolution.process_exception_id}"
            + (f" (it waits on {steps.waiting_on})" if steps.waiting_on else ""),
            type="FAILED_PRECONDITION",
        )


async def resolve(steps: Steps, resolution: Resolution) -> ResolutionResult:
    """Hand the resolution to the waiting hold; answer once the lifecycle has taken it and
    acted on its first step."""
    steps.resolutions[resolution.process_exception_id] = resolution
    await workflow.wait_condition(lambda: steps.waiting_on != resolution.process_exception_id)
    return ResolutionResult(resolution.process_exception_id, resolution.action, steps.state.status)
