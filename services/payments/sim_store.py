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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from oms_platform.sim_books import SimulatedBooks
from services.payments.gateway import GatewayResult

# ---- what the processor remembers ----------------------------------------------------------


@dataclass(frozen=True)
class GatewayOperation:
    """One operation the simulated gateway performed (an effect), for tests to inspect."""

    kind: str  # "authorize", "capture", "refund", "reverse" or "void"
    key: str
    reference: str
    amount_minor: int
    currency: str
    result: GatewayResult


def operation_log_line(operation: GatewayOperation) -> str:
    """One line of a simulated gateway's operation log (JSON, newline-terminated)."""
    return json.dumps(dataclasses.asdict(operation), sort_keys=True) + "\n"


def read_operation_log(path: str | Path) -> list[GatewayOperation]:
    """Every operation a simulated gateway appended to its operation log, in order."""
    operations: list[GatewayOperation] = []
    for line in Path(path).read_text().splitlines():
        fields = json.loads(line)
        result = GatewayResult(**fields.pop("result"))
        operations.append(GatewayOperation(**fields, result=result))
    return operations


@dataclass
class Hold:
    token: str
    amount_minor: int
    currency: str
    captured_minor: int = 0
    reversed_minor: int = 0
    voided: bool = False
    capture_attempts: int = 0

    @property
    def remaining_minor(self) -> int:
        return 0 if self.voided else self.amount_minor - self.captured_minor - self.reversed_minor


@dataclass
class Charge:
    token: str
    amount_minor: int
    currency: str
    refunded_minor: int = 0


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


class Session:
    """One operation's view of the processor's books: what it reads or keeps is held here
    (holds and charges are changed in place) and written back by its State when it ends."""

    def __init__(self, load: Callable[[str, str], Awaitable[Any]]) -> None:
        self._load = load
        self.touched: dict[tuple[str, str], Any] = {}
        self.operations: list[GatewayOperation] = []

    async def _get(self, kind: str, id_: str) -> Any:
        if (kind, id_) not in self.touched:
            value = await self._load(kind, id_)
            if value is None:
                return None
            self.touched[(kind, id_)] = value
        return self.touched[(kind, id_)]

    async def result(self, key: str) -> GatewayResult | None:
        found: GatewayResult | None = await self._get("result", key)
        return found

    async def hold(self, reference: str) -> Hold | None:
        found: Hold | None = await self._get("hold", reference)
        return found

    async def charge(self, reference: str) -> Charge | None:
        found: Charge | None = await self._get("charge", reference)
        return found

    async def balance(self, token: str) -> int | None:
        found: int | None = await self._get("balance", token)
        return found

    def keep_result(self, key: str, result: GatewayResult) -> None:
        self.touched[("result", key)] = result

    def keep_hold(self, reference: str, hold: Hold) -> None:
        self.touched[("hold", reference)] = hold

    def keep_charge(self, reference: str, charge: Charge) -> None:
        self.touched[("charge", reference)] = charge

    def keep_balance(self, token: str, balance: int) -> None:
        self.touched[("balance", token)] = balance

    def log(self, operation: GatewayOperation) -> None:
        self.operations.append(operation)


class State(Protocol):
    """A processor's books, opened one operation at a time."""

    def session(self) -> contextlib.AbstractAsyncContextManager[Session]: ...


@dataclass
class MemoryState:
    """The books in this process: gone when it exits. (Its log is the gateway's `operations`
    list.)"""

    records: dict[tuple[str, str], Any] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        async def load(kind: str, id_: str) -> Any:
            return self.records.get((kind, id_))

        session = Session(load)
        yield session
        self.records.update(session.touched)


class PostgresState:
    """The books in Postgres schema `simgateway`, shared by every payments process."""

    def __init__(self, dsn: str, gateway: str) -> None:
        self._books = SimulatedBooks(dsn, SCHEMA, DDL, max_size=4)
        self._gateway = gateway

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        pool = await self._books.pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL_LOCK)

            async def load(kind: str, id_: str) -> Any:
                raw = await conn.fetchval(SQL_GET, self._gateway, kind, id_)
                if raw is None:
                    return None
                return _decode(kind, json.loads(raw) if isinstance(raw, str) else raw)

            session = Session(load)
            yield session
            for (kind, id_), value in session.touched.items():
                data = value if kind == "balance" else dataclasses.asdict(value)
                await conn.execute(SQL_PUT, self._gateway, kind, id_, json.dumps(data))
            for op in session.operations:
                await conn.execute(
                    SQL_LOG, self._gateway, op.kind, op.key, json.dumps(dataclasses.asdict(op))
                )

    async def close(self) -> None:
        await self._books.close()


def _decode(kind: str, data: Any) -> Any:
    if kind == "result":
        return GatewayResult(**data)
    if kind == "hold":
        return Hold(**data)
    if kind == "charge":
        return Charge(**data)
    return int(data)


async def read_operations(dsn: str) -> list[GatewayOperation]:
    """Every operation the durable simulated gateways performed, in order (their own log)."""
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
