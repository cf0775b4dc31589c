"""Recorded workflow histories: tests that run a real lifecycle can save its history, and the
replay test checks every saved history still replays against today's workflow code.

Record the current baseline's histories with `OMS_RECORD_HISTORIES=1 make test` (the workflow
tests and tests/integration/test_order_data_encrypted.py record); a history already saved for an
older baseline is never re-recorded: it stands for orders that started then.
Histories recorded through the codec are sealed with the tests' master keys
(tests/keys/codec-test.keys); an order's wrapped data key travels beside its history in
histories/baseline-N/data_keys/, so the replay test can open it in a fresh database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from oms_platform.codec import KeyVault
from workflows.types import LIFECYCLE_BASELINE

# One folder per lifecycle baseline (workflows/versions.py): runs started at it, as capture
# starts them today, are recorded into the current baseline's folder; older folders keep the
# histories of runs started before, which must go on replaying.
HISTORIES = Path(__file__).parent / "workflow" / "histories"
RECORDING = HISTORIES / f"baseline-{LIFECYCLE_BASELINE}"


def data_keys(history: Path) -> Path:
    """Where the wrapped data key of a sealed history recorded at `history` is kept."""
    return history.parent / "data_keys" / history.name


async def record(handle: Any, name: str, vault: KeyVault | None = None) -> None:
    """Save `handle`'s history as histories/baseline-N/<name>.json when recording is switched
    on, and the workflow's wrapped data key (from `vault`) as baseline-N/data_keys/<name>.json."""
    if os.environ.get("OMS_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    path = RECORDING / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(history.to_json())
    if vault is not None:
        data_keys(path).parent.mkdir(parents=True, exist_ok=True)
        exported = await vault.export([handle.id])
        data_keys(path).write_text(json.dumps(exported, indent=2) + "\n")


def patches_asked(history: Any) -> set[str]:
    """The patch ids a run asked for (its patch markers), from its history (a
    `WorkflowHistory`)."""
    markers = [e.marker_recorded_event_attributes for e in history.events]
    return {
        json.loads(m.details["patch-data"].payloads[0].data)["id"]
        for m in markers
        if m.marker_name == "core_patch"
    }
