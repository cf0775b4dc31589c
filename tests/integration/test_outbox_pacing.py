"""Capture's outbox relay while the front door is busy and slow: lifecycle starts are paced at
the floor, oldest first, the rest wait in the outbox, and every one starts once the
front door is quiet. Real Postgres, real Temporal dev server (no worker: started workflows
just wait)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
from temporalio.client import Client

from oms_platform import db, outbox, temporal
from oms_platform.pacing import FrontDoorPacer, PacerSettings
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import TemporalDevServer
from tests.conftest import TEST_CODEC_KEYS, migrated_database

ORDERS = 30
FLOOR = 4.0


async def test_starts_are_paced_while_the_front_door_is_slow_oldest_first_and_all_start_after(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    dsn = await migrated_database(postgres, "oms_outbox_pacing")
    pool = await db.create_pool(dsn, "capture", 1, 3)
    client = await temporal.connect(
        Settings(
            database_url=dsn,
            temporal_address=temporal_server.target,
            codec_keys_file=str(TEST_CODEC_KEYS),
        )
    )
    run = uuid.uuid4().hex[:8]
    workflow_ids = [f"pacing:{run}:{i:02d}" for i in range(ORDERS)]
    async with pool.acquire() as conn, conn.transaction():
        for workflow_id in workflow_ids:
            await outbox.enqueue(conn, "capture", "start", workflow_id, "OrderLifecycle", {})

    pacer = FrontDoorPacer(PacerSettings(0.02, FLOOR, window_seconds=0.5))
    busy = asyncio.Event()
    busy.set()

    async def slow_front_door() -> None:
        """SubmitOrders at 100/s taking 60 ms each, while `busy` is set."""
        while busy.is_set():
            pacer.observe(0.06)
            await asyncio.sleep(0.01)

    # Already busy and slow before the relay begins, so its first starts are paced.
    front_door = asyncio.create_task(slow_front_door())
    await asyncio.sleep(0.6)
    relay = outbox.OutboxRelay(
        pool, "capture", lambda: _client(client), f"pacing-{run}", poll_seconds=0.05, pacer=pacer
    )
    relay_task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(2.0)
        left = await _waiting(pool)
        started_while_busy = ORDERS - len(left)
        # 2 s at 4/s, plus a start or two of slack for the first evaluation.
        assert 4 <= started_while_busy <= 11, started_while_busy
        # The outbox drains from the front: the oldest rows went first.
        assert left == workflow_ids[started_while_busy:]

        busy.clear()  # the front door goes quiet
        deadline = time.monotonic() + 20
        while await _waiting(pool):
            assert time.monotonic() < deadline, "the rest never started"
            await asyncio.sleep(0.1)
    finally:
        busy.clear()
        relay_task.cancel()
        front_door.cancel()
        for task in (relay_task, front_door):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pool.close()

    started = [
        (await client.get_workflow_handle(w).describe()).id for w in workflow_ids
    ]  # each one exists exactly under its id
    await temporal.close(client)
    assert started == workflow_ids


async def _client(client: Client) -> Client:
    return client


async def _waiting(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT workflow_id FROM outbox ORDER BY id")
    return [row["workflow_id"] for row in rows]
