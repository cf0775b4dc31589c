"""Every recorded history replays against the current OrderLifecycle code: a change that
would break orders already running fails here (use workflow.patched() for such changes).

Replay goes through the codec's data converter, as the worker does: histories recorded before
encryption pass through it unchanged, sealed ones open with the tests' master keys and the
order data keys recorded beside them (imported into this session's fresh database)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from oms_platform.codec import ENCODING, EncryptionCodec, KeyVault, MasterKeys, data_converter
from tests.conftest import TEST_CODEC_KEYS
from tests.history import DATA_KEYS, HISTORIES
from workflows.lifecycle import OrderLifecycle

RECORDED = sorted(HISTORIES.glob("*.json"))


@pytest.fixture(scope="session")
async def recorded_converter(database: str) -> AsyncIterator[DataConverter]:
    """The worker's data converter, with the recorded histories' data keys in its vault."""
    keys = MasterKeys.load(TEST_CODEC_KEYS)
    vault = await KeyVault.open(database, keys, cache_size=100)
    for path in sorted(DATA_KEYS.glob("*.json")):
        await vault.import_keys(json.loads(path.read_text()))
    try:
        yield data_converter(EncryptionCodec(keys, vault))
    finally:
        await vault.close()


def test_histories_are_recorded() -> None:
    assert len(RECORDED) >= 5, "record histories with OMS_RECORD_HISTORIES=1"


def test_an_encrypted_history_is_recorded_with_its_data_key() -> None:
    sealed = [p.stem for p in RECORDED if ENCODING.decode() in _encodings(p.read_text())]
    assert sealed, "record one through the codec (tests/integration/test_order_data_encrypted)"
    assert {p.stem for p in DATA_KEYS.glob("*.json")} >= set(sealed)


def _encodings(history_json: str) -> set[str]:
    found = set()
    for event in json.loads(history_json)["events"]:
        attributes = next((v for k, v in event.items() if k.endswith("Attributes")), {})
        for payload in attributes.get("input", {}).get("payloads", []):
            found.add(base64.b64decode(payload["metadata"]["encoding"]).decode())
    return found


@pytest.mark.parametrize(
    "history",
    [WorkflowHistory.from_json(p.stem, p.read_text()) for p in RECORDED],
    ids=[p.stem for p in RECORDED],
)
async def test_a_recorded_history_replays_without_nondeterminism(
    history: WorkflowHistory, recorded_converter: DataConverter
) -> None:
    await Replayer(workflows=[OrderLifecycle], data_converter=recorded_converter).replay_workflow(
        history
    )
