"""Every recorded history replays against the current OrderLifecycle code: a change that
would break orders already running fails here (use workflow.patched() for such changes)."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.history import HISTORIES
from workflows.lifecycle import OrderLifecycle

RECORDED = sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded() -> None:
    assert len(RECORDED) >= 5, "record histories with OMS_RECORD_HISTORIES=1"


@pytest.mark.parametrize(
    "history",
    [WorkflowHistory.from_json(p.stem, p.read_text()) for p in RECORDED],
    ids=[p.stem for p in RECORDED],
)
async def test_a_recorded_history_replays_without_nondeterminism(history: WorkflowHistory) -> None:
    await Replayer(workflows=[OrderLifecycle]).replay_workflow(history)
