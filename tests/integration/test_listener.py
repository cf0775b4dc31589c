"""A process's one LISTEN connection (oms_platform/listen.py) against real Postgres: every
channel on one connection, a lost connection reconnected with every subscriber told to look
for itself, channels no one wants dropped, nothing left behind when it stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from oms_platform import db
from oms_platform.listen import Listener, woken
from oms_tools.devstack.postgres import EmbeddedPostgres

APP = "oms-test-listen"


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    url = postgres.dsn.rpartition("/")[0] + "/oms_listener_it"
    await db.ensure_database(url)
    return url


@pytest.fixture
async def sql(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


@contextlib.asynccontextmanager
async def running(listener: Listener) -> AsyncIterator[None]:
    task = asyncio.create_task(listener.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def connections(sql: asyncpg.Connection) -> int:
    return int(
        await sql.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APP)
    )


async def last_query_becomes(sql: asyncpg.Connection, query: str, seconds: float = 5.0) -> bool:
    """Whether the listener's connection (by its application_name) shows `query` as its last
    statement in pg_stat_activity within `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        last = await sql.fetchval(
            "SELECT query FROM pg_stat_activity WHERE application_name = $1", APP
        )
        if last is not None and last.strip() == query:
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.05)


async def until(condition: asyncio.Event, what: str) -> None:
    assert await woken(condition, 10), f"timed out waiting for {what}"


class Heard:
    """What one subscriber was called with, and an event set on each call."""

    def __init__(self) -> None:
        self.payloads: list[str | None] = []
        self.called = asyncio.Event()

    def __call__(self, payload: str | None) -> None:
        self.payloads.append(payload)
        self.called.set()

    async def next(self) -> str | None:
        await until(self.called, "a notification")
        self.called.clear()
        return self.payloads[-1]


async def test_every_channel_shares_one_connection_and_each_gets_only_its_own(
    dsn: str, sql: asyncpg.Connection
) -> None:
    listener = Listener(dsn, APP)
    orders, events, also_orders = Heard(), Heard(), Heard()
    listener.subscribe("orders", orders)
    listener.subscribe("events", events)
    async with running(listener):
        await until(listener.listening, "listening")
        # Each subscriber was told once to look for itself when its channel began.
        assert (await orders.next(), await events.next()) == (None, None)
        listener.subscribe("orders", also_orders)  # a late subscriber looks for itself too
        assert also_orders.payloads == [None]
        also_orders.called.clear()
        assert await connections(sql) == 1

        await sql.execute("SELECT pg_notify('orders', 'o-1')")
        assert await orders.next() == "o-1"
        assert await also_orders.next() == "o-1"
        await sql.execute("SELECT pg_notify('events', '42')")
        assert await events.next() == "42"
        assert orders.payloads == [None, "o-1"]
    assert await connections(sql) == 0


async def test_a_lost_connection_is_remade_and_every_subscriber_looks_for_itself(
    dsn: str, sql: asyncpg.Connection
) -> None:
    listener = Listener(dsn, APP, retry_first_seconds=0.05)
    heard = Heard()
    listener.subscribe("orders", heard)
    async with running(listener):
        await until(listener.listening, "listening")
        assert await heard.next() is None
        killed = await sql.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            APP,
        )
        assert killed == 1
        # What was notified while nobody listened is lost: the subscriber is told to look.
        await sql.execute("SELECT pg_notify('orders', 'missed')")
        assert await heard.next() is None
        await sql.execute("SELECT pg_notify('orders', 'o-2')")
        assert await heard.next() == "o-2"
        assert "missed" not in heard.payloads
        assert await connections(sql) == 1


async def test_a_channel_no_one_wants_is_no_longer_listened_to(
    dsn: str, sql: asyncpg.Connection
) -> None:
    listener = Listener(dsn, APP)
    kept, dropped = Heard(), Heard()
    listener.subscribe("kept", kept)
    unsubscribe = listener.subscribe("dropped", dropped)
    async with running(listener):
        await until(listener.listening, "listening")
        unsubscribe()
        unsubscribe()  # twice is harmless
        assert listener.channels() == {"kept"}
        await sql.execute("SELECT pg_notify('dropped', 'x')")
        await sql.execute("SELECT pg_notify('kept', 'y')")
        while await kept.next() != "y":
            pass
        assert dropped.payloads == [None]  # 'x' was sent before 'y': it was not delivered
        # Postgres itself saw the channel dropped: the listener's last statement is its UNLISTEN
        # (the filtering above would hide a LISTEN left behind).
        assert await last_query_becomes(sql, 'UNLISTEN "dropped"'), (
            "the listener never sent UNLISTEN for the dropped channel"
        )


async def test_without_subscribers_it_holds_no_connection(
    dsn: str, sql: asyncpg.Connection
) -> None:
    listener = Listener(dsn, APP)
    async with running(listener):
        await asyncio.sleep(0.3)
        assert await connections(sql) == 0
        heard = Heard()
        unsubscribe = listener.subscribe("late", heard)
        await until(listener.listening, "listening")
        assert await connections(sql) == 1
        await sql.execute("SELECT pg_notify('late', 'z')")
        while await heard.next() != "z":
            pass
        unsubscribe()
