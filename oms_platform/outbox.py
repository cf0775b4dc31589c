"""Durable outbox: a service records "start this workflow" or "signal that workflow" in the
same transaction as its own change; a relay delivers the rows to Temporal afterwards.

A crash between commit and delivery loses nothing (the row stays), a Temporal outage only
delays delivery, and delivery is idempotent: starting a workflow whose id already exists
counts as done, and signals carry a key the workflow deduplicates on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from oms_platform.pacing import FrontDoorPacer

log = structlog.get_logger("oms.outbox")

# A Temporal call that takes longer than this fails the row's delivery for now; it is retried.
RPC_TIMEOUT = timedelta(seconds=5)

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('start', 'signal')),
    workflow_id   text NOT NULL,
    name          text NOT NULL,
    payload       jsonb NOT NULL,
    attempts      int NOT NULL DEFAULT 0,
    last_error    text,
    available_at  timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (available_at, id)"""

SQL_ENQUEUE = """
INSERT INTO outbox (kind, workflow_id, name, payload) VALUES ($1, $2, $3, $4)"""
SQL_NOTIFY = "SELECT pg_notify($1, '')"
SQL_CLAIM_BATCH = """
SELECT id, kind, workflow_id, name, payload FROM outbox
WHERE available_at <= now()
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED"""
SQL_DELETE_DELIVERED = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
SQL_POSTPONE = """
UPDATE outbox SET attempts = attempts + 1, last_error = $2,
    available_at = now()
        + least(interval '30 seconds', interval '200 milliseconds' * power(2, attempts))
WHERE id = $1"""


def channel_name(schema: str) -> str:
    """The NOTIFY channel a schema's relay listens on."""
    return f"oms_outbox_{schema}"


async def enqueue(
    conn: asyncpg.Connection, schema: str, kind: str, workflow_id: str, name: str, payload: Any
) -> None:
    """Record a delivery in the caller's transaction and wake the relay on commit."""
    await conn.execute(SQL_ENQUEUE, kind, workflow_id, name, payload)
    await conn.execute(SQL_NOTIFY, channel_name(schema))


class OutboxRelay:
    """Delivers a schema's outbox rows to Temporal in order of arrival, in batches."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        client_factory: Any,
        task_queue: str,
        start_options: Any = None,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
        prepare_start: Any = None,
        pacer: FrontDoorPacer | None = None,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._client_factory = client_factory
        self._client: Client | None = None
        self._task_queue = task_queue
        # Callable(payload) -> dict of extra start_workflow kwargs (e.g. search attributes).
        self._start_options = start_options
        # Callable(payload) -> the workflow's argument, completed at start time (e.g. with
        # durations from this deployment's settings).
        self._prepare_start = prepare_start
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        # Paces starts while the front door is busy (see oms_platform/pacing.py).
        self._pacer = pacer
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Deliver now: a row was committed in this process (no NOTIFY needed)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever; cancel the task to stop."""
        listener = await self._listen()
        backoff = 0.0
        try:
            while True:
                limit = self._batch_size
                if self._pacer is not None:
                    limit = self._pacer.allowance(self._batch_size)
                    if limit == 0:
                        await asyncio.sleep(
                            min(self._poll_seconds, max(0.01, self._pacer.seconds_until_next()))
                        )
                        continue
                try:
                    delivered = await self.deliver_once(limit)
                    if self._pacer is not None:
                        self._pacer.started(delivered)
                    backoff = 0.0
                except (
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    RuntimeError,
                ) as error:
                    # Temporal or Postgres is away: back off instead of retrying on every
                    # NOTIFY; the rows wait, nothing is lost.
                    backoff = min(5.0, max(self._poll_seconds, backoff * 2))
                    log.warning(
                        "outbox relay pass failed",
                        schema=self._schema,
                        error=str(error),
                        retry_in=backoff,
                    )
                    self._client = None
                    await asyncio.sleep(backoff)
                    continue
                if delivered >= limit:  # there may be more
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> _Held | None:
        try:
            conn = await self._pool.acquire()
        except (OSError, asyncpg.PostgresError):
            return None
        channel = channel_name(self._schema)

        def on_notify(*_: Any) -> None:
            self._wake.set()

        await conn.add_listener(channel, on_notify)
        # Held for the relay's lifetime; returned to the pool (listener removed) when it stops.
        return _Held(self._pool, conn, channel, on_notify)

    async def deliver_once(self, limit: int | None = None) -> int:
        """Deliver one batch of due rows (at most `limit`, default the batch size); returns
        how many were delivered."""
        if self._client is None:
            self._client = await self._client_factory()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(SQL_CLAIM_BATCH, limit or self._batch_size)
            if not rows:
                return 0
            by_workflow: dict[str, list[asyncpg.Record]] = defaultdict(list)
            for row in rows:
                by_workflow[row["workflow_id"]].append(row)
            results = await asyncio.gather(
                *(self._deliver_in_order(group) for group in by_workflow.values())
            )
            delivered = [i for ok_ids, _ in results for i in ok_ids]
            for _, failures in results:
                for row_id, error in failures:
                    await conn.execute(SQL_POSTPONE, row_id, error)
            if delivered:
                await conn.execute(SQL_DELETE_DELIVERED, delivered)
            return len(delivered)

    async def _deliver_in_order(
        self, rows: list[asyncpg.Record]
    ) -> tuple[list[int], list[tuple[int, str]]]:
        ok: list[int] = []
        for index, row in enumerate(rows):
            try:
                await self._deliver(row)
            except (RPCError, RuntimeError, OSError) as error:
                # Later rows of the same workflow wait, so signals keep their order.
                failures = [(row["id"], str(error))] + [
                    (r["id"], "waiting") for r in rows[index + 1 :]
                ]
                log.warning(
                    "outbox delivery failed", workflow_id=row["workflow_id"], error=str(error)
                )
                return ok, failures
            ok.append(row["id"])
        return ok, []

    async def _deliver(self, row: asyncpg.Record) -> None:
        assert self._client is not None
        if row["kind"] == "start":
            extra = self._start_options(row["payload"]) if self._start_options else {}
            # Already started means delivered before: the row outlived a crash.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                argument = row["payload"]
                if self._prepare_start is not None:
                    argument = self._prepare_start(argument)
                await self._client.start_workflow(
                    row["name"],
                    argument,
                    id=row["workflow_id"],
                    task_queue=self._task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    rpc_timeout=RPC_TIMEOUT,
                    **extra,
                )
            return
        try:
            await self._client.get_workflow_handle(row["workflow_id"]).signal(
                row["name"], row["payload"], rpc_timeout=RPC_TIMEOUT
            )
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                # The workflow has completed; nothing is waiting for this event any more.
                log.warning(
                    "signal target gone", workflow_id=row["workflow_id"], signal=row["name"]
                )
                return
            raise


class _Held:
    """A pool connection kept out of the pool for LISTEN, returned on close."""

    def __init__(self, pool: asyncpg.Pool, conn: Any, channel: str, callback: Any) -> None:
        self._pool = pool
        self._conn = conn
        self._channel = channel
        self._callback = callback

    async def close(self) -> None:
        await self._conn.remove_listener(self._channel, self._callback)
        await self._pool.release(self._conn)
