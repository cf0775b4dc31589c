"""Recorded workflow histories: tests that run a real lifecycle can save its history, and the
replay test checks every saved history still replays against today's workflow code.

Record (or re-record after an intended, patched change) with `OMS_RECORD_HISTORIES=1 make test`.
Histories recorded through the codec are sealed with the tests' master keys
(tests/keys/codec-test.keys); an order's wrapped data key travels beside its history in
histories/data_keys/, so the replay test can open it in a fresh database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from oms_platform.codec import KeyVault

HISTORIES = Path(__file__).parent / "workflow" / "histories"
DATA_KEYS = HISTORIES / "data_keys"


async def record(handle: Any, name: str, vault: KeyVault | None = None) -> None:
    """Save `handle`'s history as histories/<name>.json when recording is switched on, and the
    workflow's wrapped data key (from `vault`) as histories/data_keys/<name>.json."""
    if os.environ.get("OMS_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    if vault is not None:
        DATA_KEYS.mkdir(parents=True, exist_ok=True)
        exported = await vault.export([handle.id])
        (DATA_KEYS / f"{name}.json").write_text(json.dumps(exported, indent=2) + "\n")
