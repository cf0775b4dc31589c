"""The payload codec under master keys alone: sealing, tampering, rotation, pass-through.
(Per-order data keys and shredding need the vault's database: integration/test_codec_vault.)"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    WorkflowSerializationContext,
)
from temporalio.exceptions import ApplicationError

from oms_platform.codec import (
    ENCODING,
    META_KEY_ID,
    META_SUBJECT,
    CodecError,
    EncryptionCodec,
    MasterKeys,
    data_converter,
    ensure_keys_file,
    new_key_line,
)

OLD = new_key_line("old")
NEW = new_key_line("new")


@dataclasses.dataclass
class Shipping:
    email: str
    address: str


PERSONAL = Shipping("ada@example.com", "1 Market St, Philadelphia")


def codec(*lines: str) -> EncryptionCodec:
    return EncryptionCodec(MasterKeys.parse("\n".join(lines)), vault=None)


async def sealed(c: EncryptionCodec, value: object = PERSONAL) -> Payload:
    [payload] = await data_converter(c).encode([value])
    return payload


async def test_a_sealed_payload_holds_nothing_in_clear_and_opens_to_the_same_value() -> None:
    c = codec(OLD)

    payload = await sealed(c)

    assert payload.metadata["encoding"] == ENCODING
    assert payload.metadata[META_KEY_ID] == b"old"
    assert META_SUBJECT not in payload.metadata  # no order: the master key sealed it
    assert b"ada@example.com" not in payload.SerializeToString()
    assert b"Market" not in payload.SerializeToString()
    [value] = await data_converter(c).decode([payload], [Shipping])
    assert value == PERSONAL


async def test_the_same_value_seals_differently_each_time() -> None:
    c = codec(OLD)

    assert (await sealed(c)).data != (await sealed(c)).data


@pytest.mark.parametrize("position", [0, 12, 40, -1])
async def test_a_payload_altered_anywhere_fails_to_open(position: int) -> None:
    c = codec(OLD)
    payload = await sealed(c)
    data = bytearray(payload.data)
    data[position] ^= 0x01
    payload.data = bytes(data)

    with pytest.raises(CodecError, match="failed authentication"):
        await c.decode([payload])


async def test_metadata_is_bound_to_the_ciphertext_even_under_the_same_key_bytes() -> None:
    # One key listed under two ids: only the authenticated metadata tells the payloads apart.
    secret = OLD.partition(":")[2]
    twins = codec(f"a:{secret}", f"b:{secret}")
    payload = await sealed(twins)

    renamed = Payload()
    renamed.CopyFrom(payload)
    renamed.metadata[META_KEY_ID] = b"b"
    with pytest.raises(CodecError, match="failed authentication"):
        await twins.decode([renamed])


async def test_after_rotation_old_payloads_open_and_new_ones_use_the_new_key() -> None:
    before = await sealed(codec(OLD))
    rotated = codec(NEW, OLD)  # the new key put first; the old one stays to open

    after = await sealed(rotated)

    assert after.metadata[META_KEY_ID] == b"new"
    assert await data_converter(rotated).decode([before], [Shipping]) == [PERSONAL]
    assert await data_converter(rotated).decode([after], [Shipping]) == [PERSONAL]


async def test_a_payload_of_a_removed_key_fails_naming_the_key() -> None:
    before = await sealed(codec(OLD))

    with pytest.raises(CodecError, match="'old' is not in the codec keys file"):
        await codec(NEW).decode([before])


async def test_payloads_recorded_before_encryption_pass_through_unchanged() -> None:
    [plain] = await DataConverter().encode([PERSONAL])

    [decoded] = await codec(OLD).decode([plain])

    assert decoded == plain
    assert await data_converter(codec(OLD)).decode([plain], [Shipping]) == [PERSONAL]


async def test_failure_messages_travel_sealed_too() -> None:
    converter = data_converter(codec(OLD))
    failure = Failure()

    await converter.encode_failure(ApplicationError("card of ada@example.com declined"), failure)

    assert b"ada@example.com" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert "card of ada@example.com declined" in str(decoded)


def test_only_order_workflows_and_their_activities_get_a_subject() -> None:
    # Without a vault everything is sealed by the master key, whatever the context.
    assert (
        codec(OLD).with_context(WorkflowSerializationContext("default", "order:1")).subject is None
    )
    vaulted = EncryptionCodec(MasterKeys.parse(OLD), vault=object())  # type: ignore[arg-type]

    order = vaulted.with_context(WorkflowSerializationContext("default", "order:42"))
    activity = vaulted.with_context(
        ActivitySerializationContext(
            "default", "7", "authorize_payment", "q", "order:42", "", False
        )
    )
    other = vaulted.with_context(WorkflowSerializationContext("default", "pacing:1"))

    assert (order.subject, activity.subject, other.subject) == ("order:42", "order:42", None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "lists none"),
        ("k1:" + "A" * 12, "32 bytes"),
        ("k1:not base64!", "not base64"),
        (f"{OLD}\n{OLD}", "listed twice"),
        ("no separator", "expected <key_id>:<base64 key>"),
    ],
    # Named by the problem: a random key in a test's name differs between collections.
    ids=["none", "short", "not-base64", "listed-twice", "no-separator"],
)
def test_a_malformed_keys_file_is_refused_saying_why(text: str, problem: str) -> None:
    with pytest.raises(CodecError, match=problem):
        MasterKeys.parse(text)


def test_comments_and_blank_lines_are_ignored_and_the_first_key_is_active() -> None:
    keys = MasterKeys.parse(f"# rotated on Monday\n\n{NEW}\n{OLD}\n")

    assert keys.active_id == "new"
    assert list(keys.keys) == ["new", "old"]


def test_a_dev_keys_file_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "codec.keys"

    assert ensure_keys_file(path) is True
    first = path.read_text()
    assert ensure_keys_file(path) is False

    assert path.read_text() == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(MasterKeys.load(path).keys) == 1


def test_a_missing_keys_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="OMS_CODEC_KEYS_FILE"):
        MasterKeys.load(tmp_path / "absent.keys")
