"""Where the simulated gateways keep what a processor remembers: results by idempotency key,
authorization holds, captured charges, gift card balances and the log of operations.

`MemoryState` keeps them in the process (unit tests). `PostgresState` keeps them in a schema
of their own (`simgateway`), as an external processor keeps its books apart from ours: a
payments restart forgets nothing, and replicas of payments share one processor. Every
operation runs in one transaction under one lock, so two replicas never interleave on a hold
or a balance, and its operation row commits with its effect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

if TYPE_CHECKING:
    from services.payments.gateway import GatewayOperation, GatewayResult, _Charge, _Hold

SCHEMA = "simgateway"

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.records (
    gateway  text NOT NULL,
    kind     text NOT NULL CHECK (kind IN ('result', 'hold', 'charge', 'balance')),
    id       text NOT NULL,
    data     jsonb NOT NULL,
    PRIMARY KEY (gateway, kind, id)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.operations (
    seq        bigserial PRIMARY KEY,
    gateway    text NOT NULL,
    kind       text NOT NULL,
    key        text NOT NULL,
    operation  jsonb NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
)"""
# One lock for the whole simulated processor: its operations are short and few per order.
SQL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('oms-simulated-gateway'))"
SQL_GET = f"SELECT data FROM {SCHEMA}.records WHERE gateway = $1 AND kind = $2 AND id = $3"
SQL_PUT = f"""
INSERT INTO {SCHEMA}.records (gateway, kind, id, data) VALUES ($1, $2, $3, $4)
ON CONFLICT (gateway, kind, id) DO UPDATE SET data = EXCLUDED.data"""
SQL_LOG = f"""
INSERT INTO {SCHEMA}.operations (gateway, kind, key, operation) VALUES ($1, $2, $3, $4)"""
SQL_OPERATIONS = f"SELECT operation FROM {SCHEMA}.operations ORDER BY seq"


class Session(Protocol):
    """One operation's view of the processor's books; changes are kept when it ends."""

    async def result(self, key: str) -> GatewayResult | None: ...
    async def hold(self, reference: str) -> _Hold | None: ...
    async def charge(self, reference: str) -> _Charge | None: ...
    async def balance(self, token: str) -> int | None: ...
    def keep_result(self, key: str, result: GatewayResult) -> None: ...
    def keep_hold(self, reference: str, hold: _Hold) -> None: ...
    def keep_charge(self, reference: str, charge: _Charge) -> None: ...
    def keep_balance(self, token: str, balance: int) -> None: ...
    def log(self, operation: GatewayOperation) -> None: ...


class State(Protocol):
    """A processor's books, opened one operation at a time."""

    def session(self) -> contextlib.AbstractAsyncContextManager[Session]: ...


@dataclass
class MemoryState:
    """The books in this process: gone when it exits."""

    results: dict[str, GatewayResult] = field(default_factory=dict)
    holds: dict[str, _Hold] = field(default_factory=dict)
    charges: dict[str, _Charge] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        yield _MemorySession(self)


class _MemorySession:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    async def result(self, key: str) -> GatewayResult | None:
        return self._s.results.get(key)

    async def hold(self, reference: str) -> _Hold | None:
        return self._s.holds.get(reference)

    async def charge(self, reference: str) -> _Charge | None:
        return self._s.charges.get(reference)

    async def balance(self, token: str) -> int | None:
        return self._s.balances.get(token)

    def keep_result(self, key: str, result: GatewayResult) -> None:
        self._s.results[key] = result

    def keep_hold(self, reference: str, hold: _Hold) -> None:
        self._s.holds[reference] = hold

    def keep_charge(self, reference: str, charge: _Charge) -> None:
        self._s.charges[reference] = charge

    def keep_balance(self, token: str, balance: int) -> None:
        self._s.balances[token] = balance

    def log(self, operation: GatewayOperation) -> None:
        """The in-memory processor's log is the gateway's `operations` list."""


class PostgresState:
    """The books in Postgres schema `simgateway`, shared by every payments process."""

    def __init__(self, dsn: str, gateway: str) -> None:
        self._dsn = dsn
        self._gateway = gateway
        self._pool: asyncpg.Pool | None = None

    async def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=4, server_settings={"application_name": SCHEMA}
            )
            assert pool is not None
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(SQL_LOCK_DDL)
                await conn.execute(DDL)
            self._pool = pool
        return self._pool

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL_LOCK)
            session = _PostgresSession(conn, self._gateway)
            yield session
            await session.flush()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# Two processes creating the schema at once would race on the catalog; one at a time.
SQL_LOCK_DDL = "SELECT pg_advisory_xact_lock(hashtext('oms-simulated-gateway-ddl'))"


class _PostgresSession:
    def __init__(self, conn: Any, gateway: str) -> None:
        self._conn = conn
        self._gateway = gateway
        # Everything read or kept, written back at the end (holds are changed in place).
        self._touched: dict[tuple[str, str], Any] = {}
        self._operations: list[GatewayOperation] = []

    async def _get(self, kind: str, id_: str) -> Any:
        if (kind, id_) in self._touched:
            return self._touched[(kind, id_)]
        raw = await self._conn.fetchval(SQL_GET, self._gateway, kind, id_)
        if raw is None:
            return None
        value = _decode(kind, json.loads(raw) if isinstance(raw, str) else raw)
        self._touched[(kind, id_)] = value
        return value

    async def result(self, key: str) -> GatewayResult | None:
        found: GatewayResult | None = await self._get("result", key)
        return found

    async def hold(self, reference: str) -> _Hold | None:
        found: _Hold | None = await self._get("hold", reference)
        return found

    async def charge(self, reference: str) -> _Charge | None:
        found: _Charge | None = await self._get("charge", reference)
        return found

    async def balance(self, token: str) -> int | None:
        found: int | None = await self._get("balance", token)
        return found

    def keep_result(self, key: str, result: GatewayResult) -> None:
        self._touched[("result", key)] = result

    def keep_hold(self, reference: str, hold: _Hold) -> None:
        self._touched[("hold", reference)] = hold

    def keep_charge(self, reference: str, charge: _Charge) -> None:
        self._touched[("charge", reference)] = charge

    def keep_balance(self, token: str, balance: int) -> None:
        self._touched[("balance", token)] = balance

    def log(self, operation: GatewayOperation) -> None:
        self._operations.append(operation)

    async def flush(self) -> None:
        for (kind, id_), value in self._touched.items():
            data = value if kind == "balance" else dataclasses.asdict(value)
            await self._conn.execute(SQL_PUT, self._gateway, kind, id_, json.dumps(data))
        for op in self._operations:
            await self._conn.execute(
                SQL_LOG, self._gateway, op.kind, op.key, json.dumps(dataclasses.asdict(op))
            )


def _decode(kind: str, data: Any) -> Any:
    from services.payments.gateway import GatewayResult, _Charge, _Hold

    if kind == "result":
        return GatewayResult(**data)
    if kind == "hold":
        return _Hold(**data)
    if kind == "charge":
        return _Charge(**data)
    return int(data)


async def read_operations(dsn: str) -> list[GatewayOperation]:
    """Every operation the durable simulated gateways performed, in order (their own log)."""
    from services.payments.gateway import GatewayOperation, GatewayResult

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(SQL_OPERATIONS)
    finally:
        await conn.close()
    out: list[GatewayOperation] = []
    for row in rows:
        fields = json.loads(row["operation"])
        result = GatewayResult(**fields.pop("result"))
        out.append(GatewayOperation(**fields, result=result))
    return out
