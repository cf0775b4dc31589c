"""Postgres: connection pools, per-service migrations, stored idempotency and fresh record ids.

Each service owns one schema and is its only writer. A service's pool sets `search_path` to
its schema, so its named SQL never spells the schema and cannot reach another service's tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message

from oms_platform.errors import AlreadyExists

M = TypeVar("M", bound=Message)
T = TypeVar("T")

# What a background pass over the database meets when Postgres is away or refuses for the
# moment: the pass loops (oms_platform.passes) back off and try again.
DB_AWAY = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

SQL_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SQL_APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations"
SQL_RECORD_MIGRATION = "INSERT INTO schema_migrations (version) VALUES ($1)"
SQL_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext($1))"
SQL_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"

IDEMPOTENCY_DDL = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          text PRIMARY KEY,
    request_hash bytea NOT NULL,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- The call a key was used for (its request message's full name): a key belongs to one RPC,
-- so another RPC's request with the same bytes never replays its response. NULL on rows
-- stored before it existed.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS rpc text"""


def _platform_ddl() -> list[str]:
    from oms_platform.outbox import OUTBOX_DDL

    return [IDEMPOTENCY_DDL, OUTBOX_DDL]


# Tables every service schema has, owned by the platform rather than one service's
# migrations: stored idempotency keys and the outbox. Created before a schema's migrations.
PLATFORM_DDL = _platform_ddl()

SQL_CLAIM_KEY = """
INSERT INTO idempotency_keys (key, request_hash, rpc) VALUES ($1, $2, $3)
ON CONFLICT (key) DO NOTHING RETURNING key"""
SQL_STORED_RESPONSE = "SELECT request_hash, response, rpc FROM idempotency_keys WHERE key = $1"
SQL_STORE_RESPONSE = "UPDATE idempotency_keys SET response = $2 WHERE key = $1"
# A batch's keys, claimed in one statement and answered in one (KeyedBatch).
SQL_CLAIM_KEYS = """
INSERT INTO idempotency_keys (key, request_hash, rpc)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])
ON CONFLICT (key) DO NOTHING RETURNING key"""
SQL_STORED_RESPONSES = """
SELECT key, request_hash, response, rpc FROM idempotency_keys WHERE key = ANY($1::text[])"""
SQL_STORE_RESPONSES = """
UPDATE idempotency_keys AS k SET response = r.response
FROM unnest($1::text[], $2::bytea[]) AS r (key, response)
WHERE k.key = r.key"""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes through on its way back to the pool, beyond what the pool always
    does (roll back a transaction left open, drop listener callbacks): nothing. The default
    sends one more statement (unlock all, close all, unlisten all, reset all) on every release,
    doubling the round trips of a one-statement request; instead, code that changes session
    state undoes it before it lets the connection go (`session_setting`)."""


async def create_pool(dsn: str, schema: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections see only `schema` (plus pg_catalog)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"oms-{schema}"},
        init=_init_connection,
        reset=keep_session,
    )
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def session_setting(conn: Any, name: str, value: str) -> AsyncIterator[None]:
    """Set a session configuration parameter for the duration of the block, then reset it
    (pooled connections are handed back as they were lent; see `keep_session`)."""
    await conn.execute(f"SET {name} = {value}")
    try:
        yield
    finally:
        await conn.execute(f"RESET {name}")


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it does not exist (embedded Postgres only)."""
    params = dict(part.split("=", 1) for part in dsn.partition("?")[2].split("&") if "=" in part)
    base, _, name = dsn.partition("?")[0].rpartition("/")
    admin = await asyncpg.connect(
        f"{base}/postgres" + (f"?{dsn.partition('?')[2]}" if params else "")
    )
    try:
        if not await admin.fetchval(SQL_DATABASE_EXISTS, name):
            # CREATE DATABASE takes no parameters; the name comes from our own settings.
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def new_id() -> str:
    """A fresh record id."""
    return str(uuid.uuid4())


def migration_files(directory: Path) -> list[Path]:
    """The service's migrations in the order they apply (append-only, numbered)."""
    return sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))


async def migrate(
    dsn: str, schema: str, directory: Path, *, platform_tables: bool = True
) -> list[str]:
    """Apply `directory`'s pending migrations to `schema`; returns the versions applied.
    `platform_tables`: also the idempotency and outbox tables every service schema has."""
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute(SQL_MIGRATION_LOCK, f"migrate:{schema}")
            # The schema name is a fixed service name, never user input.
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(SQL_CREATE_MIGRATIONS_TABLE)
            for ddl in PLATFORM_DDL if platform_tables else []:
                await conn.execute(ddl)
            done = {r["version"] for r in await conn.fetch(SQL_APPLIED_MIGRATIONS)}
            for path in migration_files(directory):
                version = path.stem
                if version in done:
                    continue
                await conn.execute(path.read_text())
                await conn.execute(SQL_RECORD_MIGRATION, version)
                applied_now.append(version)
    finally:
        await conn.close()
    return applied_now


def request_fingerprint(request: Message) -> bytes:
    """A stable hash of a request's content, to tell a retry from a different request."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


async def idempotent(
    pool: asyncpg.Pool,
    key: str,
    request: Message,
    response_type: type[M],
    action: Callable[[Any], Awaitable[T]],
    encode: Callable[[T], M],
    *,
    first_wins: bool = False,
) -> tuple[M, T | None]:
    """Run `action` once per idempotency key, in one transaction with storing its encoded
    response.

    `action` is the use case: it takes the transaction's connection and returns a domain
    value; `encode` turns that value into the response the caller gets, and whose bytes are
    kept as the key's answer. Returns (response, value): value is what `action` returned, or
    None when the response is a replay. The same key with the same request (same RPC, same
    target, same content) returns the stored response; with another RPC's request or a
    different request it raises AlreadyExists naming the key. Two concurrent calls with one
    key serialize on the key's row: one acts, the other replays. `first_wins`: see
    `idempotent_in`.
    """
    async with pool.acquire() as conn, conn.transaction():
        return await idempotent_in(
            conn, key, request, response_type, action, encode, first_wins=first_wins
        )


async def idempotent_in(
    conn: Any,
    key: str,
    request: Message,
    response_type: type[M],
    action: Callable[[Any], Awaitable[T]],
    encode: Callable[[T], M],
    *,
    first_wins: bool = False,
) -> tuple[M, T | None]:
    """`idempotent` inside the caller's transaction on `conn`: for a call that makes several
    keyed changes that commit together or not at all (a batch).

    `first_wins`: the same key with a different request of the same RPC replays the stored
    response instead of being refused. For records whose key names the fact itself (a
    workflow's step), where a later telling may differ in detail: the first one recorded
    stands."""
    fingerprint = request_fingerprint(request)
    rpc = request.DESCRIPTOR.full_name
    claimed = await conn.fetchval(SQL_CLAIM_KEY, key, fingerprint, rpc)
    if claimed is None:
        row = await conn.fetchrow(SQL_STORED_RESPONSE, key)
        return _replay(row, key, rpc, fingerprint, response_type, first_wins), None
    value = await action(conn)
    # Encoded inside the transaction: the stored answer commits with the effect or not at all.
    response = encode(value)
    await conn.execute(SQL_STORE_RESPONSE, key, response.SerializeToString())
    return response, value


def _replay(
    row: Any, key: str, rpc: str, fingerprint: bytes, response_type: type[M], first_wins: bool
) -> M:
    """The stored response a key seen before answers with (`row`: its stored row, None when
    it is claimed but not answered in this snapshot), or AlreadyExists: the key was used for
    another RPC, is in use by a call not yet committed, or (unless `first_wins`) was used with
    a different request."""
    if row is not None and row["rpc"] is not None and row["rpc"] != rpc:
        raise AlreadyExists(
            "idempotency_key",
            f"idempotency key {key[:128]!r} was already used for another call "
            f"({row['rpc'].rsplit('.', 1)[-1].removesuffix('Request')}); "
            "a key belongs to one call",
        )
    if row is None or row["response"] is None:
        raise AlreadyExists("idempotency_key", f"idempotency key {key!r} is in use")
    if bytes(row["request_hash"]) != fingerprint and not first_wins:
        raise AlreadyExists(
            "idempotency_key",
            f"idempotency key {key!r} was already used with a different request",
        )
    stored = response_type()
    stored.ParseFromString(row["response"])
    return stored


class KeyedBatch:
    """Several keyed calls of one RPC made in the caller's transaction, as `idempotent_in`
    makes each, with their keys claimed in one statement and their responses stored in one:
    `claim`, then for each call in order `replay(n)` (its stored response, or None: make it and
    `answer(n, response)`), then `store`. A key given twice in the batch is made once: the
    later call replays the earlier one's answer."""

    def __init__(
        self,
        keyed: Sequence[tuple[str, Message]],
        fingerprints: list[bytes],
        fresh: set[str],
        stored: dict[str, Any],
        first_wins: bool,
    ) -> None:
        self._keyed = list(keyed)
        self._fingerprints = fingerprints
        self._fresh = fresh
        self._stored = stored
        self._first_wins = first_wins
        self._first_of: dict[str, int] = {}
        self._answers: dict[int, Message] = {}

    @classmethod
    async def claim(
        cls, conn: Any, keyed: Sequence[tuple[str, Message]], *, first_wins: bool = False
    ) -> KeyedBatch:
        """Claim every key of `keyed` ((key, request) per call) in the caller's transaction;
        keys claimed before are read back in one more statement."""
        keys = [key for key, _ in keyed]
        fingerprints = [request_fingerprint(request) for _, request in keyed]
        rpcs = [request.DESCRIPTOR.full_name for _, request in keyed]
        fresh = {r["key"] for r in await conn.fetch(SQL_CLAIM_KEYS, keys, fingerprints, rpcs)}
        seen = [key for key in dict.fromkeys(keys) if key not in fresh]
        stored = {r["key"]: r for r in await conn.fetch(SQL_STORED_RESPONSES, seen)} if seen else {}
        return cls(keyed, fingerprints, fresh, stored, first_wins)

    def replay(self, n: int, response_type: type[M]) -> M | None:
        """Call `n`'s stored response (a key seen before, or earlier in this batch), None when
        it is to be made now; AlreadyExists as `idempotent_in` refuses."""
        key, request = self._keyed[n]
        rpc = request.DESCRIPTOR.full_name
        fingerprint = self._fingerprints[n]
        earlier = self._first_of.setdefault(key, n)
        if earlier != n:
            if self._fingerprints[earlier] != fingerprint and not self._first_wins:
                raise AlreadyExists(
                    "idempotency_key",
                    f"idempotency key {key!r} was already used with a different request",
                )
            answer = self._answers.get(earlier)
            if answer is None:  # the earlier call replayed what was stored before
                return self.replay(earlier, response_type)
            again = response_type()
            again.ParseFromString(answer.SerializeToString())
            return again
        if key in self._fresh:
            return None
        return _replay(
            self._stored.get(key), key, rpc, fingerprint, response_type, self._first_wins
        )

    def answer(self, n: int, response: Message) -> None:
        """Call `n` was made: `response` is its answer, stored by `store`."""
        self._answers[n] = response

    async def store(self, conn: Any) -> None:
        """Store the answers of the calls made, in one statement."""
        if self._answers:
            await conn.execute(
                SQL_STORE_RESPONSES,
                [self._keyed[n][0] for n in self._answers],
                [response.SerializeToString() for response in self._answers.values()],
            )
