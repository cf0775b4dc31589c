"""Recorded workflow histories: tests that run a real lifecycle can save its history, and the
replay test checks every saved history still replays against today's workflow code.

Record (or re-record after an intended, patched change) with `OMS_RECORD_HISTORIES=1 make test`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HISTORIES = Path(__file__).parent / "workflow" / "histories"


async def record(handle: Any, name: str) -> None:
    """Save `handle`'s history as histories/<name>.json when recording is switched on."""
    if os.environ.get("OMS_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
