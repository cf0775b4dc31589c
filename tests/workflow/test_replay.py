"""Every recorded history replays against the current OrderLifecycle code: a change that
would break orders already running fails here (guard such changes with a patch, see
workflows/versions.py). Histories are kept per baseline: those of runs started before the
current one must replay too, and the current baseline's must record no patch it folds in.

Replay goes through the codec's data converter, as the worker does: histories recorded before
encryption pass through it unchanged, sealed ones open with the tests' master keys and the
order data keys recorded beside them (imported into this session's fresh database)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from oms_platform.codec import ENCODING, EncryptionCodec, KeyVault, MasterKeys, data_converter
from tests.conftest import TEST_CODEC_KEYS
from tests.history import HISTORIES, RECORDING, data_keys, patches_asked
from workflows.lifecycle import OrderLifecycle
from workflows.types import LIFECYCLE_BASELINE
from workflows.versions import FOLDED

RECORDED = sorted(HISTORIES.glob("baseline-*/*.json"))


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


@pytest.fixture(scope="session")
async def recorded_converter(database: str) -> AsyncIterator[DataConverter]:
    """The worker's data converter, with the recorded histories' data keys in its vault."""
    keys = MasterKeys.load(TEST_CODEC_KEYS)
    vault = await KeyVault.open(database, keys, cache_size=100)
    for path in sorted(HISTORIES.glob("baseline-*/data_keys/*.json")):
        await vault.import_keys(json.loads(path.read_text()))
    try:
        yield data_converter(EncryptionCodec(keys, vault))
    finally:
        await vault.close()


def test_histories_are_recorded() -> None:
    assert len(RECORDED) >= 5, "record histories with OMS_RECORD_HISTORIES=1"
    assert len(list(RECORDING.glob("*.json"))) >= 5, "record the current baseline's too"


def test_an_encrypted_history_is_recorded_with_its_data_key() -> None:
    sealed = [p for p in RECORDED if ENCODING.decode() in _encodings(p.read_text())]
    assert sealed, "record one through the codec (tests/integration/test_order_data_encrypted)"
    assert RECORDING in {p.parent for p in sealed}, "and one at the current baseline"
    assert all(data_keys(p).exists() for p in sealed)


def _encodings(history_json: str) -> set[str]:
    found = set()
    for event in json.loads(history_json)["events"]:
        attributes = next((v for k, v in event.items() if k.endswith("Attributes")), {})
        for payload in attributes.get("input", {}).get("payloads", []):
            found.add(base64.b64decode(payload["metadata"]["encoding"]).decode())
    return found


@pytest.mark.parametrize(
    "history",
    [_history(p) for p in RECORDED],
    ids=[f"{p.parent.name}/{p.stem}" for p in RECORDED],
)
async def test_a_recorded_history_replays_without_nondeterminism(
    history: WorkflowHistory, recorded_converter: DataConverter
) -> None:
    await Replayer(workflows=[OrderLifecycle], data_converter=recorded_converter).replay_workflow(
        history
    )


def test_a_run_at_the_current_baseline_records_none_of_the_patches_it_folds_in() -> None:
    folded = frozenset().union(*(ids for b, ids in FOLDED.items() if b <= LIFECYCLE_BASELINE))
    current = {p.stem: patches_asked(_history(p)) for p in RECORDING.glob("*.json")}
    assert current and not any(current.values()), current
    # The same orders before the baseline asked for them: what the baseline saves.
    before = patches_asked(_history(HISTORIES / "baseline-0" / "encrypted_happy_path_patched.json"))
    assert len(before) >= 4 and before <= folded
