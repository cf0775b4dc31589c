"""Temporal payload encryption: AES-256-GCM under rotating master keys, with a data key per order
so an order's history can be made unreadable for good (crypto-shredding).

Every payload Temporal stores (workflow and activity inputs and results, signals, updates,
queries, memos, failure details) leaves our processes sealed:

- Payloads of an order's workflow (`order:<order_id>`) are sealed with that order's own random
  data key. The data key lives in Postgres (schema `vault`) wrapped by a master key; destroying
  it (`KeyVault.shred`) leaves every copy of the order's history undecodable.
- Anything else (other workflows, client calls without a workflow) is sealed with the active
  master key directly.

A sealed payload's metadata names the master key id and, for data-key payloads, the subject
(the workflow id), so decoding needs no context: the codec server, which gets none, decodes
the same payloads the worker does. Master keys come from a file of `<key_id>:<base64>` lines;
the first is used for new payloads and data keys, every listed key still decrypts, so a new key
is rolled out by putting it first and an old one retired once nothing needs it (`rewrap`).
Payloads that were never encrypted (histories recorded before the codec) decode unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from oms_platform import db
from oms_platform.converter import PayloadConverter
from oms_platform.files import create_once
from oms_platform.listen import Listener

log = structlog.get_logger("oms.codec")

ENCODING = b"binary/encrypted"
META_ENCODING = "encoding"
META_KEY_ID = "encryption-key-id"
META_SUBJECT = "encryption-subject"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per message
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ORDER_SUBJECT_PREFIX = "order:"

VAULT_SCHEMA = "vault"
VAULT_MIGRATIONS = Path(__file__).parent / "vault_migrations"
VAULT_POOL_MAX = 4
# Shreds are announced here so every process drops the cached key at once.
SHRED_CHANNEL = "oms_vault_shredded"

SQL_DATA_KEY = "SELECT kek_id, wrapped, shredded_at FROM data_keys WHERE subject = $1"
# Insert-if-absent: two processes racing on a new order's first payload both end up with the
# one key that won (the loser reads it back).
SQL_INSERT_DATA_KEY = """
INSERT INTO data_keys (subject, kek_id, wrapped) VALUES ($1, $2, $3)
ON CONFLICT (subject) DO NOTHING RETURNING subject"""
# A tombstone also for a subject that never had a key, so none is ever made for it later.
SQL_SHRED = """
INSERT INTO data_keys (subject, shredded_at) SELECT s, now() FROM unnest($1::text[]) AS s
ON CONFLICT (subject) DO UPDATE
SET kek_id = NULL, wrapped = NULL, shredded_at = coalesce(data_keys.shredded_at, now())"""
SQL_NOTIFY_SHRED = "SELECT pg_notify($1, s) FROM unnest($2::text[]) AS s"
SQL_EXPORT = """
SELECT subject, kek_id, wrapped FROM data_keys
WHERE subject = ANY($1::text[]) AND wrapped IS NOT NULL ORDER BY subject"""
SQL_IMPORT = """
INSERT INTO data_keys (subject, kek_id, wrapped) VALUES ($1, $2, $3)
ON CONFLICT (subject) DO NOTHING"""
SQL_TO_REWRAP = """
SELECT subject, kek_id, wrapped FROM data_keys
WHERE wrapped IS NOT NULL AND kek_id <> $1 ORDER BY subject LIMIT $2"""
SQL_REWRAP = "UPDATE data_keys SET kek_id = $3, wrapped = $4 WHERE subject = $1 AND kek_id = $2"


class CodecError(Exception):
    """A payload cannot be sealed or opened (unknown key, tampered with, no data key)."""


class Shredded(CodecError):
    """The subject's data key was destroyed: its payloads are gone for good."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"the data key of {subject} was shredded; its payloads cannot be decoded")
        self.subject = subject


def order_subject(workflow_id: str | None) -> str | None:
    """The subject whose data key seals a workflow's payloads: only order workflows have one."""
    if workflow_id and workflow_id.startswith(ORDER_SUBJECT_PREFIX):
        return workflow_id
    return None


# ---- master keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterKeys:
    """The key-encryption keys, in file order: the first seals, all of them open."""

    keys: dict[str, bytes]
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise CodecError("no master key: the codec keys file lists none")
        self._ciphers.update({kid: AESGCM(key) for kid, key in self.keys.items()})

    @property
    def active_id(self) -> str:
        """The key new payloads and new data keys are sealed with."""
        return next(iter(self.keys))

    def cipher(self, key_id: str) -> AESGCM:
        """The AES-GCM cipher of master key `key_id`."""
        try:
            return self._ciphers[key_id]
        except KeyError:
            raise CodecError(
                f"master key {key_id!r} is not in the codec keys file (was it removed too early?)"
            ) from None

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        """Keys from `<key_id>:<base64 of 32 bytes>` lines (blank lines and # comments skipped)."""
        keys: dict[str, bytes] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key_id, sep, encoded = line.partition(":")
            key_id = key_id.strip()
            if not sep or not KEY_ID.match(key_id):
                raise CodecError(f"codec keys line {number}: expected <key_id>:<base64 key>")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise CodecError(f"codec keys line {number}: the key is not base64") from None
            if len(key) != KEY_BYTES:
                raise CodecError(f"codec keys line {number}: a key is {KEY_BYTES} bytes")
            if key_id in keys:
                raise CodecError(f"codec keys line {number}: key id {key_id!r} is listed twice")
            keys[key_id] = key
        return cls(keys)

    @classmethod
    def load(cls, path: Path) -> MasterKeys:
        """Keys from the file at `path`."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise CodecError(
                f"no codec keys file at {path}: set OMS_CODEC_KEYS_FILE, or run `oms dev` once "
                "to create a development key"
            ) from None
        return cls.parse(text)


def new_key_line(key_id: str | None = None) -> str:
    """A fresh master key as a keys-file line (id defaults to today's date)."""
    key_id = key_id or f"k{datetime.now(UTC):%Y%m%d%H%M%S}"
    if not KEY_ID.match(key_id):
        raise CodecError(f"key id {key_id!r}: letters, digits, '.', '_' and '-' only")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def ensure_keys_file(path: Path) -> bool:
    """Create a keys file with one new key unless one exists; True if it was created."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Never overwritten, even if two starts race (a lost key is lost data).
    return create_once(
        path,
        (
            "# oms payload codec master keys: the first line seals, every line opens.\n"
            f"{new_key_line()}\n"
        ).encode(),
    )


# ---- sealing -------------------------------------------------------------------------------


def _aad(kind: bytes, key_id: str, subject: str) -> bytes:
    # What the ciphertext is bound to: moving it to another subject or key id (or a wrapped
    # key to another row) fails authentication instead of decrypting under the wrong name.
    return b"oms/" + kind + b"/v1\x00" + key_id.encode() + b"\x00" + subject.encode()


def _seal(cipher: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + cipher.encrypt(nonce, plaintext, aad)


def _open(cipher: AESGCM, sealed: bytes, aad: bytes, what: str) -> bytes:
    try:
        return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise CodecError(f"{what} failed authentication: tampered with, or a wrong key") from None


def seal_secret(keys: MasterKeys, kind: str, subject: str, plaintext: bytes) -> tuple[str, bytes]:
    """A small secret oms must keep in clear use (a webhook signing secret), sealed for storage
    with the active master key and bound to `kind` and `subject`: (master key id, sealed)."""
    key_id = keys.active_id
    return key_id, _seal(keys.cipher(key_id), plaintext, _aad(kind.encode(), key_id, subject))


def open_secret(keys: MasterKeys, kind: str, subject: str, key_id: str, sealed: bytes) -> bytes:
    """A secret `seal_secret` sealed (CodecError if its master key is gone or it was moved)."""
    aad = _aad(kind.encode(), key_id, subject)
    return _open(keys.cipher(key_id), sealed, aad, f"the {kind} secret of {subject}")


def is_encrypted(payload: Payload) -> bool:
    """Whether `payload` was sealed by this codec."""
    return payload.metadata.get(META_ENCODING) == ENCODING


# ---- the vault of data keys ----------------------------------------------------------------


async def migrate_vault(dsn: str) -> list[str]:
    """Apply the vault's pending migrations to its own schema."""
    return await db.migrate(dsn, VAULT_SCHEMA, VAULT_MIGRATIONS, platform_tables=False)


@dataclass(frozen=True)
class DataKey:
    """An unwrapped data key and the master key that wraps it."""

    kek_id: str
    cipher: AESGCM


_SHREDDED = None  # cached as the value of a shredded subject


class KeyVault:
    """Per-subject data keys in Postgres, wrapped by the master keys, cached unwrapped in memory.

    `cache_size=0` reads the database on every lookup (the codec server: a shred must show at
    once, and people decode at human rates). Caching processes listen for shreds and evict:
    on the process's one LISTEN connection when given it (oms_platform/listen.py), else on a
    listener of the vault's own.
    """

    def __init__(self, pool: asyncpg.Pool, keys: MasterKeys, *, cache_size: int = 10_000) -> None:
        self.pool = pool
        self.keys = keys
        self.cache_size = cache_size
        self._cache: OrderedDict[str, DataKey | None] = OrderedDict()
        self._loading: dict[tuple[str, bool], asyncio.Future[DataKey | None]] = {}
        # Bumped by every eviction; a lookup that raced one does not cache what it read.
        self._evictions = 0
        self._listener: Listener | None = None
        self._own_listener: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] = lambda: None

    @classmethod
    async def open(
        cls,
        dsn: str,
        keys: MasterKeys,
        *,
        cache_size: int = 10_000,
        listener: Listener | None = None,
    ) -> KeyVault:
        """A vault on the `vault` schema of `dsn`; caching ones listen for shreds, on
        `listener` or on one of their own."""
        # min_size 0: opening connects nothing, so a client can be built while Postgres is down.
        pool = await db.create_pool(dsn, VAULT_SCHEMA, 0, VAULT_POOL_MAX)
        vault = cls(pool, keys, cache_size=cache_size)
        if cache_size > 0:
            if listener is None:
                listener = Listener(dsn, "oms-vault-listen")
                vault._own_listener = asyncio.create_task(
                    listener.run(), name="vault-shred-listener"
                )
            vault._listener = listener
            vault._unsubscribe = listener.subscribe(SHRED_CHANNEL, vault._on_shred)
        return vault

    async def close(self) -> None:
        """Stop listening and close the pool."""
        self._unsubscribe()
        if self._own_listener is not None:
            self._own_listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._own_listener
        await self.pool.close()

    async def wait_listening(self, within: float = 10.0) -> None:
        """Wait until shreds of other processes reach this one (tests, start-up)."""
        if self._listener is not None:
            async with asyncio.timeout(within):
                await self._listener.listening.wait()

    async def sealing_key(self, subject: str) -> DataKey:
        """`subject`'s data key, made on first use; refused for a shredded subject."""
        key = await self._lookup(subject, create=True)
        if key is None:
            raise Shredded(subject)
        return key

    async def opening_key(self, subject: str) -> DataKey:
        """`subject`'s existing data key."""
        key = await self._lookup(subject, create=False)
        if key is None:
            raise Shredded(subject)
        return key

    async def shred(self, subjects: Iterable[str]) -> None:
        """Destroy the subjects' data keys for good, leaving tombstones; every process forgets
        its cached copy (this one at once, the others on the notification)."""
        names = sorted(set(subjects))
        if not names:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL_SHRED, names)
            await conn.execute(SQL_NOTIFY_SHRED, SHRED_CHANNEL, names)
        self._evict(names)
        log.info("data keys shredded", subjects=len(names))

    async def export(self, subjects: Iterable[str]) -> list[dict[str, str]]:
        """The subjects' wrapped data keys (still sealed by their master key), e.g. to travel with
        a recorded history."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(SQL_EXPORT, sorted(set(subjects)))
        return [
            {
                "subject": r["subject"],
                "kek_id": r["kek_id"],
                "wrapped": base64.b64encode(bytes(r["wrapped"])).decode(),
            }
            for r in rows
        ]

    async def import_keys(self, records: Iterable[dict[str, str]]) -> None:
        """Store exported wrapped keys whose subjects have none (a tombstone wins)."""
        async with self.pool.acquire() as conn, conn.transaction():
            for r in records:
                self.keys.cipher(r["kek_id"])  # refuse keys no master key here can unwrap
                await conn.execute(
                    SQL_IMPORT, r["subject"], r["kek_id"], base64.b64decode(r["wrapped"])
                )

    async def rewrap(self, batch: int = 500) -> int:
        """Re-wrap every data key under the active master key, so older master keys can be
        retired; returns how many were re-wrapped. Safe to run again or concurrently."""
        active = self.keys.active_id
        done = 0
        while True:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(SQL_TO_REWRAP, active, batch)
                for r in rows:
                    data_key = self._unwrap(r["subject"], r["kek_id"], bytes(r["wrapped"]))
                    wrapped = self._wrap(r["subject"], active, data_key)
                    await conn.execute(SQL_REWRAP, r["subject"], r["kek_id"], active, wrapped)
            done += len(rows)
            if len(rows) < batch:
                break
        self._evict(None)
        return done

    # -- internals --

    def _wrap(self, subject: str, kek_id: str, data_key: bytes) -> bytes:
        return _seal(self.keys.cipher(kek_id), data_key, _aad(b"data-key", kek_id, subject))

    def _unwrap(self, subject: str, kek_id: str, wrapped: bytes) -> bytes:
        aad = _aad(b"data-key", kek_id, subject)
        return _open(self.keys.cipher(kek_id), wrapped, aad, f"the data key of {subject}")

    async def _lookup(self, subject: str, *, create: bool) -> DataKey | None:
        if subject in self._cache:
            self._cache.move_to_end(subject)
            return self._cache[subject]
        # One database trip per subject however many payloads ask at once.
        pending = self._loading.get((subject, create))
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[DataKey | None] = asyncio.get_running_loop().create_future()
        self._loading[(subject, create)] = future
        evictions = self._evictions
        try:
            key = await self._fetch(subject, create=create)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        else:
            future.set_result(key)
            if self.cache_size > 0 and evictions == self._evictions:
                self._cache[subject] = key
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return key
        finally:
            del self._loading[(subject, create)]

    async def _fetch(self, subject: str, *, create: bool) -> DataKey | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SQL_DATA_KEY, subject)
            if row is None and create:
                kek_id = self.keys.active_id
                wrapped = self._wrap(subject, kek_id, AESGCM.generate_key(bit_length=256))
                if await conn.fetchval(SQL_INSERT_DATA_KEY, subject, kek_id, wrapped):
                    log.debug("data key created", subject=subject)
                # Read back whichever key won a race with another process.
                row = await conn.fetchrow(SQL_DATA_KEY, subject)
        if row is None:
            raise CodecError(f"no data key for {subject} in this vault")
        if row["wrapped"] is None:
            return _SHREDDED
        kek_id = str(row["kek_id"])
        return DataKey(kek_id, AESGCM(self._unwrap(subject, kek_id, bytes(row["wrapped"]))))

    def _evict(self, subjects: Sequence[str] | None) -> None:
        self._evictions += 1
        if subjects is None:
            self._cache.clear()
            return
        for subject in subjects:
            self._cache.pop(subject, None)

    def _on_shred(self, subject: str | None) -> None:
        # None: shreds announced while nobody listened are unknown, so forget everything.
        self._evict(None if subject is None else [subject])


# ---- the codec -----------------------------------------------------------------------------


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM payload codec; an order workflow's payloads use the order's data key."""

    def __init__(self, keys: MasterKeys, vault: KeyVault | None, subject: str | None = None):
        self.keys = keys
        self.vault = vault
        self.subject = subject if vault is not None else None

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        """This codec for the workflow (or its activity) a payload belongs to."""
        workflow_id: str | None = None
        if isinstance(context, WorkflowSerializationContext | ActivitySerializationContext):
            workflow_id = context.workflow_id
        subject = order_subject(workflow_id)
        if subject == self.subject:
            return self
        return EncryptionCodec(self.keys, self.vault, subject)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Seal each payload (the subject's data key, or the active master key)."""
        if self.subject is not None and self.vault is not None:
            data_key = await self.vault.sealing_key(self.subject)
            kek_id, cipher, subject = data_key.kek_id, data_key.cipher, self.subject
        else:
            kek_id, subject = self.keys.active_id, ""
            cipher = self.keys.cipher(kek_id)
        aad = _aad(b"payload", kek_id, subject)
        metadata = {META_ENCODING: ENCODING, META_KEY_ID: kek_id.encode()}
        if subject:
            metadata[META_SUBJECT] = subject.encode()
        return [
            Payload(metadata=metadata, data=_seal(cipher, p.SerializeToString(), aad))
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Open each sealed payload; others (recorded before encryption) pass unchanged."""
        return [await self.decode_one(p) for p in payloads]

    async def decode_one(self, payload: Payload) -> Payload:
        """Open one payload; raises Shredded or CodecError when it cannot be."""
        if not is_encrypted(payload):
            return payload
        kek_id = payload.metadata.get(META_KEY_ID, b"").decode()
        subject = payload.metadata.get(META_SUBJECT, b"").decode()
        if subject:
            if self.vault is None:
                raise CodecError(f"payload sealed with the data key of {subject}; no vault here")
            cipher = (await self.vault.opening_key(subject)).cipher
        else:
            cipher = self.keys.cipher(kek_id)
        plain = _open(cipher, payload.data, _aad(b"payload", kek_id, subject), "payload")
        opened = Payload()
        opened.ParseFromString(plain)
        return opened


def data_converter(codec: EncryptionCodec) -> DataConverter:
    """Temporal's data converter sealing payloads with `codec`; failure messages and stack traces
    travel inside the sealed failure attributes too (they may quote order data)."""
    return DataConverter(
        payload_converter_class=PayloadConverter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
