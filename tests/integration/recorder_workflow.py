"""A workflow that only records the signals it receives, in the order its history has them:
what the outbox replica tests read back to check delivery order as the receiver saw it."""

from __future__ import annotations

from typing import Any

from temporalio import workflow


@workflow.defn(name="SignalRecorder")
class SignalRecorder:
    """Keeps every `event` signal's `n` in arrival order until cancelled."""

    def __init__(self) -> None:
        self._seen: list[int] = []

    @workflow.run
    async def run(self, _start: dict[str, Any]) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal
    def event(self, payload: dict[str, Any]) -> None:
        """One delivered outbox row."""
        self._seen.append(int(payload["n"]))

    @workflow.query
    def seen(self) -> list[int]:
        """Every `n` received, in order."""
        return list(self._seen)
