"""Outbox relays of several replicas on one outbox: every row is delivered once, and the rows
of one workflow reach it in the order they were recorded, as the workflow's own history shows.

Two relays, each with a pool of its own (as two processes have), share the capture schema's
outbox of a database of this test's own; rows start and signal recorder workflows on the
session's Temporal dev server, run by a worker in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from oms_platform import db, outbox, temporal
from oms_platform.listen import Listener
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import TemporalDevServer
from tests.conftest import TEST_CODEC_KEYS, migrated_database
from tests.integration.recorder_workflow import SignalRecorder

WORKFLOWS = 4
SIGNALS = 60


@contextlib.asynccontextmanager
async def recorders(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, name: str
) -> AsyncIterator[tuple[str, Client, str]]:
    """A database of its own, a Temporal client and a worker running SignalRecorder."""
    dsn = await migrated_database(postgres, name)
    client = await temporal.connect(
        Settings(
            database_url=dsn,
            temporal_address=temporal_server.target,
            codec_keys_file=str(TEST_CODEC_KEYS),
        )
    )
    task_queue = f"{name.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(client, task_queue=task_queue, workflows=[SignalRecorder]):
            yield dsn, client, task_queue
    finally:
        await temporal.close(client)


async def seen(client: Client, workflow_id: str) -> list[int]:
    """What the recorder has received, in its history's order."""
    answer: list[int] = await client.get_workflow_handle(workflow_id).query(SignalRecorder.seen)
    return answer


async def test_two_relays_deliver_every_row_once_and_each_workflows_rows_in_order(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    async with recorders(postgres, temporal_server, "oms_outbox_replicas") as (
        dsn,
        client,
        task_queue,
    ):
        run = uuid.uuid4().hex[:8]
        workflow_ids = [f"replicas:{run}:{w}" for w in range(WORKFLOWS)]
        writer = await db.create_pool(dsn, "capture", 1, 2)
        # Every workflow's rows, in the order they are recorded: its start, then its signals.
        queues = {
            w: [("start", "SignalRecorder", {})]
            + [("signal", "event", {"n": n}) for n in range(SIGNALS)]
            for w in workflow_ids
        }
        shuffle = random.Random(13)

        async def record(count: int) -> None:
            """`count` rows, each in a transaction of its own, workflows interleaved."""
            for _ in range(count):
                pending = [w for w, rows in queues.items() if rows]
                if not pending:
                    return
                workflow_id = shuffle.choice(pending)
                kind, name, payload = queues[workflow_id].pop(0)
                async with writer.acquire() as conn, conn.transaction():
                    await outbox.enqueue(conn, "capture", kind, workflow_id, name, payload)

        # A backlog before the relays begin (both claim at once), then rows keep coming.
        await record(WORKFLOWS * (SIGNALS + 1) // 2)
        pools = [await db.create_pool(dsn, "capture", 1, 3) for _ in range(2)]
        relays = [
            outbox.OutboxRelay(pool, "capture", lambda: _as_is(client), task_queue,
                               batch_size=5, poll_seconds=0.02)
            for pool in pools
        ]  # fmt: skip
        tasks = [asyncio.create_task(relay.run()) for relay in relays]
        try:
            while any(queues.values()):
                await record(3)
                await asyncio.sleep(0.005)
            deadline = time.monotonic() + 60
            while await writer.fetchval("SELECT count(*) FROM outbox"):
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks]
                assert time.monotonic() < deadline, "the relays left rows undelivered"
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for pool in pools:
                await pool.close()

        assert await writer.fetchval("SELECT count(*) FROM outbox_dead_letters") == 0
        await writer.close()
        for workflow_id in workflow_ids:
            # Once each (no gap, no repeat), in the order recorded.
            assert await seen(client, workflow_id) == list(range(SIGNALS)), workflow_id
            await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_a_postponed_row_is_not_overtaken_by_the_rows_recorded_after_it(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    async with recorders(postgres, temporal_server, "oms_outbox_postponed") as (
        dsn,
        client,
        task_queue,
    ):
        run = uuid.uuid4().hex[:8]
        held, free = f"postponed:{run}:held", f"postponed:{run}:free"
        pool = await db.create_pool(dsn, "capture", 1, 3)
        relay = outbox.OutboxRelay(pool, "capture", lambda: _as_is(client), task_queue)
        try:
            async with pool.acquire() as conn, conn.transaction():
                for workflow_id in (held, free):
                    await outbox.enqueue(
                        conn, "capture", "start", workflow_id, "SignalRecorder", {}
                    )
            assert await relay.deliver_once() == 2
            async with pool.acquire() as conn, conn.transaction():
                for n in range(3):
                    for workflow_id in (held, free):
                        payload = {"n": n}
                        await outbox.enqueue(
                            conn, "capture", "signal", workflow_id, "event", payload
                        )
            # As a failed delivery leaves it: the held workflow's first signal is due later,
            # its next ones (never tried) are due now.
            first = await pool.fetchval("SELECT min(id) FROM outbox WHERE workflow_id = $1", held)
            await pool.execute(
                "UPDATE outbox SET attempts = 3, available_at = now() + interval '1 hour' "
                "WHERE id = $1",
                first,
            )
            # The other workflow goes on; the held one's later signals wait behind the first.
            assert await relay.deliver_once() == 3
            assert await seen(client, free) == [0, 1, 2]
            assert await seen(client, held) == []
            assert await pool.fetchval("SELECT count(*) FROM outbox") == 3

            await pool.execute("UPDATE outbox SET available_at = now() WHERE id = $1", first)
            assert await relay.deliver_once() == 3
            assert await seen(client, held) == [0, 1, 2]
        finally:
            await pool.close()
        for workflow_id in (held, free):
            await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_a_row_recorded_while_a_pass_runs_goes_in_the_next_pass_not_at_the_next_poll(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    async with recorders(postgres, temporal_server, "oms_outbox_woken") as (
        dsn,
        client,
        task_queue,
    ):
        run = uuid.uuid4().hex[:8]
        first, second = f"woken:{run}:first", f"woken:{run}:second"
        pool = await db.create_pool(dsn, "capture", 1, 3)
        gated = _FirstStartHeld(client)
        # Polling every 30 s: only a wake-up can deliver the second row within the test.
        relay = outbox.OutboxRelay(pool, "capture", lambda: _as_is(gated), task_queue,
                                   poll_seconds=30.0, pass_interval_seconds=0.01)  # fmt: skip
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, "capture", "start", first, "SignalRecorder", {})
        task = asyncio.create_task(relay.run())
        try:
            await asyncio.wait_for(gated.entered.wait(), 10)
            # The first pass has claimed its row and is delivering it: this row is too late
            # for that claim, and its commit wakes the relay as a service's commit does.
            async with pool.acquire() as conn, conn.transaction():
                await outbox.enqueue(conn, "capture", "start", second, "SignalRecorder", {})
            relay.wake()
            gated.release.set()
            deadline = time.monotonic() + 5
            while await pool.fetchval("SELECT count(*) FROM outbox"):
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "the second row waited for the poll"
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.close()
        for workflow_id in (first, second):
            handle = client.get_workflow_handle(workflow_id)
            assert (await handle.describe()).id == workflow_id  # started
            await handle.terminate("test over")


async def test_a_row_committed_by_another_process_wakes_a_listening_relay(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    """The NOTIFY recorded with the row reaches a relay listening on another connection, on
    commit: the row is delivered long before the relay would poll. A row rolled back is never
    delivered, and its notification never sent."""
    async with recorders(postgres, temporal_server, "oms_outbox_notified") as (
        dsn,
        client,
        task_queue,
    ):
        run = uuid.uuid4().hex[:8]
        kept, dropped = f"notified:{run}:kept", f"notified:{run}:dropped"
        relay_pool = await db.create_pool(dsn, "capture", 1, 3)
        writer = await db.create_pool(dsn, "capture", 1, 2)
        listener = Listener(dsn, "test-outbox-listener")
        listening = asyncio.create_task(listener.run())
        # Polling every 30 s: only the commit's notification can deliver the row in the test.
        relay = outbox.OutboxRelay(relay_pool, "capture", lambda: _as_is(client), task_queue,
                                   poll_seconds=30.0, listener=listener)  # fmt: skip
        task = asyncio.create_task(relay.run())
        try:
            await asyncio.wait_for(listener.listening.wait(), 10)
            await asyncio.sleep(0.3)  # the relay's first pass (an empty outbox) is over
            with contextlib.suppress(_RolledBack):
                async with writer.acquire() as conn, conn.transaction():
                    await outbox.enqueue(conn, "capture", "start", dropped, "SignalRecorder", {})
                    raise _RolledBack
            async with writer.acquire() as conn, conn.transaction():
                await outbox.enqueue(conn, "capture", "start", kept, "SignalRecorder", {})
            deadline = time.monotonic() + 5
            while await relay_pool.fetchval("SELECT count(*) FROM outbox"):
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "the committed row waited for the poll"
                await asyncio.sleep(0.02)
        finally:
            for background in (task, listening):
                background.cancel()
            await asyncio.gather(task, listening, return_exceptions=True)
            await relay_pool.close()
            await writer.close()
        handle = client.get_workflow_handle(kept)
        assert (await handle.describe()).id == kept  # started
        await handle.terminate("test over")
        assert await _started(client, dropped) is False


class _RolledBack(Exception):
    """Raised to roll a test's transaction back."""


async def _started(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


class _FirstStartHeld:
    """The Temporal client, except that the first workflow start waits for `release`."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def start_workflow(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await self._client.start_workflow(*args, **kwargs)

    def get_workflow_handle(self, workflow_id: str) -> Any:
        return self._client.get_workflow_handle(workflow_id)


async def _as_is(client: Any) -> Any:
    return client
