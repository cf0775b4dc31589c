"""Per-order data keys in the vault (real Postgres): sealing with them, racing processes,
caching, crypto-shredding seen by every process, rotation and re-wrapping, export and import."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import WorkflowSerializationContext

from oms_platform.codec import (
    META_KEY_ID,
    META_SUBJECT,
    CodecError,
    EncryptionCodec,
    KeyVault,
    MasterKeys,
    Shredded,
    new_key_line,
)
from oms_tools.devstack.postgres import EmbeddedPostgres
from tests.conftest import migrated_database

OLD = new_key_line("old")
NEW = new_key_line("new")
KEYS = MasterKeys.parse(OLD)


def a_subject() -> str:
    return f"order:{uuid.uuid4()}"


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


def for_order(vault: KeyVault, subject: str) -> EncryptionCodec:
    """The codec as the SDK hands it a payload of `subject`'s workflow."""
    codec = EncryptionCodec(vault.keys, vault)
    return codec.with_context(WorkflowSerializationContext("default", subject))


@pytest.fixture
async def vaults(database: str) -> AsyncIterator[list[KeyVault]]:
    """Opens vaults (as separate processes would) and closes them after the test."""
    opened: list[KeyVault] = []
    yield opened
    for vault in opened:
        await vault.close()


async def open_vault(
    opened: list[KeyVault], dsn: str, keys: MasterKeys = KEYS, cache_size: int = 100
) -> KeyVault:
    vault = await KeyVault.open(dsn, keys, cache_size=cache_size)
    opened.append(vault)
    if cache_size:
        await vault.wait_listening()
    return vault


async def test_an_orders_payloads_are_sealed_with_its_data_key_and_open_in_another_process(
    database: str, vaults: list[KeyVault]
) -> None:
    subject = a_subject()
    one = await open_vault(vaults, database)
    other = await open_vault(vaults, database)

    [sealed] = await for_order(one, subject).encode([plain("ada@example.com")])

    assert sealed.metadata[META_SUBJECT] == subject.encode()
    assert sealed.metadata[META_KEY_ID] == b"old"
    assert b"ada@example.com" not in sealed.data
    # Decoding needs no context: the metadata names the subject.
    [opened] = await EncryptionCodec(KEYS, other).decode([sealed])
    assert opened == plain("ada@example.com")


async def test_two_processes_racing_on_a_new_order_agree_on_one_data_key(
    database: str, vaults: list[KeyVault]
) -> None:
    subject = a_subject()
    processes = [await open_vault(vaults, database) for _ in range(4)]

    sealed = await asyncio.gather(
        *(for_order(v, subject).encode([plain(f"from {i}")]) for i, v in enumerate(processes))
    )

    # Every process opens every other's payloads: there is one key.
    for vault in processes:
        codec = EncryptionCodec(KEYS, vault)
        for i, [payload] in enumerate(sealed):
            assert await codec.decode([payload]) == [plain(f"from {i}")]
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM vault.data_keys WHERE subject = $1", subject
        )
    finally:
        await conn.close()
    assert rows == 1


async def test_a_cached_data_key_costs_no_database_round_trip(
    database: str, vaults: list[KeyVault]
) -> None:
    subject = a_subject()
    vault = await open_vault(vaults, database)
    codec = for_order(vault, subject)
    [first] = await codec.encode([plain("first")])

    await vault.pool.close()  # from here on, any database access would fail

    [second] = await codec.encode([plain("second")])
    assert await EncryptionCodec(KEYS, vault).decode([first, second]) == [
        plain("first"),
        plain("second"),
    ]


async def test_many_payloads_of_a_new_order_at_once_make_one_key(
    database: str, vaults: list[KeyVault]
) -> None:
    subject = a_subject()
    vault = await open_vault(vaults, database)

    sealed = await asyncio.gather(
        *(for_order(vault, subject).encode([plain("x")]) for _ in range(50))
    )

    reader = await open_vault(vaults, database, cache_size=0)
    for [payload] in sealed:
        assert await EncryptionCodec(KEYS, reader).decode([payload]) == [plain("x")]


async def test_a_shredded_order_decodes_nowhere_and_is_never_sealed_again(
    database: str, vaults: list[KeyVault]
) -> None:
    subject = a_subject()
    writer = await open_vault(vaults, database)
    caching_reader = await open_vault(vaults, database)
    uncached_reader = await open_vault(vaults, database, cache_size=0)
    [sealed] = await for_order(writer, subject).encode([plain("ada@example.com")])
    # The other process has the key cached before the shred.
    assert await EncryptionCodec(KEYS, caching_reader).decode([sealed]) == [
        plain("ada@example.com")
    ]

    await writer.shred([subject])

    with pytest.raises(Shredded, match=f"the data key of {subject} was shredded"):
        await EncryptionCodec(KEYS, uncached_reader).decode([sealed])
    with pytest.raises(Shredded):
        await EncryptionCodec(KEYS, writer).decode([sealed])
    # The caching process hears of the shred (NOTIFY) and forgets its copy.
    for _ in range(100):
        try:
            await EncryptionCodec(KEYS, caching_reader).decode([sealed])
        except Shredded:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("a process that had the key cached still decodes after the shred")
    with pytest.raises(Shredded):
        await for_order(writer, subject).encode([plain("again")])
    with pytest.raises(Shredded):
        await for_order(uncached_reader, subject).encode([plain("again")])
    # The tombstone keeps no key material.
    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow("SELECT * FROM vault.data_keys WHERE subject = $1", subject)
    finally:
        await conn.close()
    assert row["wrapped"] is None and row["kek_id"] is None and row["shredded_at"] is not None


async def test_shredding_a_subject_that_never_had_a_key_refuses_one_later(
    database: str, vaults: list[KeyVault]
) -> None:
    subject = a_subject()
    vault = await open_vault(vaults, database)

    await vault.shred([subject])
    await vault.shred([subject])  # idempotent

    with pytest.raises(Shredded):
        await for_order(vault, subject).encode([plain("x")])


async def test_a_payload_moved_to_another_orders_name_does_not_open(
    database: str, vaults: list[KeyVault]
) -> None:
    vault = await open_vault(vaults, database)
    ours, theirs = a_subject(), a_subject()
    await for_order(vault, theirs).encode([plain("their key exists")])
    [sealed] = await for_order(vault, ours).encode([plain("ada@example.com")])

    sealed.metadata[META_SUBJECT] = theirs.encode()

    with pytest.raises(CodecError, match="failed authentication"):
        await EncryptionCodec(KEYS, vault).decode([sealed])


async def test_rotation_keeps_old_orders_readable_and_rewrap_lets_the_old_key_go(
    postgres: EmbeddedPostgres, vaults: list[KeyVault]
) -> None:
    # A database of its own: a rewrap goes over every data key, and the shared one holds keys
    # other tests wrapped under master keys this test does not have.
    database = await migrated_database(postgres, "oms_vault_rotation")
    old_order, new_order = a_subject(), a_subject()
    before = await open_vault(vaults, database, MasterKeys.parse(OLD))
    [old_payload] = await for_order(before, old_order).encode([plain("old order")])

    rotated_keys = MasterKeys.parse(f"{NEW}\n{OLD}")
    rotated = await open_vault(vaults, database, rotated_keys)
    [new_payload] = await for_order(rotated, new_order).encode([plain("new order")])

    assert new_payload.metadata[META_KEY_ID] == b"new"
    assert await EncryptionCodec(rotated_keys, rotated).decode([old_payload, new_payload]) == [
        plain("old order"),
        plain("new order"),
    ]
    # Without the old master key, the old order's data key cannot be unwrapped...
    only_new = MasterKeys.parse(NEW)
    bare = await open_vault(vaults, database, only_new, cache_size=0)
    with pytest.raises(CodecError, match="'old'"):
        await EncryptionCodec(only_new, bare).decode([old_payload])
    # ...until every data key is re-wrapped under the new one.
    assert await rotated.rewrap() >= 1
    assert await EncryptionCodec(only_new, bare).decode([old_payload]) == [plain("old order")]
    assert await rotated.rewrap() == 0


async def test_an_exported_data_key_opens_its_payloads_in_a_fresh_database(
    database: str, postgres: EmbeddedPostgres, vaults: list[KeyVault]
) -> None:
    subject = a_subject()
    source = await open_vault(vaults, database)
    [sealed] = await for_order(source, subject).encode([plain("travels")])

    exported = await source.export([subject])
    fresh = await open_vault(vaults, await migrated_database(postgres, "oms_vault_import"))
    with pytest.raises(CodecError, match="no data key"):
        await EncryptionCodec(KEYS, fresh).decode([sealed])
    await fresh.import_keys(exported)

    assert await EncryptionCodec(KEYS, fresh).decode([sealed]) == [plain("travels")]
    assert "travels" not in str(exported)
