"""The event log's sequencer on real Postgres: events get their sequence in commit order, so a
reader that has seen sequence N never later finds an event below N; the log is gap-free; an
order's events keep their write order; two sequencers (two replicas) never give one sequence
twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
from oms.events.v1 import events_pb2

from oms_platform import db
from oms_platform.outbox import event_id
from oms_tools.devstack.postgres import EmbeddedPostgres
from services.capture import bootstrap
from services.capture.store import events as log
from tests.integration.test_capture_service import own_database


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> asyncpg.Pool:
    dsn = await own_database(postgres, "oms_event_log_it")
    pool = await db.create_pool(dsn, bootstrap.SCHEMA, min_size=2, max_size=8)
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE order_events")
        await conn.execute("UPDATE event_log_head SET seq = 0")
    yield pool
    await pool.close()


def event(order_id: str, n: int) -> events_pb2.Event:
    e = events_pb2.Event(
        event_id=event_id(f"{order_id}:{n}"),
        type="order.status_changed" if n % 2 else "shipment.shipped",
        order_id=order_id,
        channel="web",
    )
    e.occurred_at.FromDatetime(datetime.now(UTC))
    e.order_status_changed.to_status = f"step-{n}"
    return e


async def test_a_transaction_committing_late_is_sequenced_after_what_readers_saw(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as slow, pool.acquire() as fast:
        # The slow transaction writes first (a lower write id) but commits last.
        tx = slow.transaction()
        await tx.start()
        await log.append_events(slow, [event("ord-slow", 1)])
        await log.append_events(fast, [event("ord-fast", 1), event("ord-fast", 2)])
        assert await log.sequence_pending(fast) == (2, 2)
        seen = await log.read_events(fast, 1, 100, log.LogFilter(), 100)
        assert [(e.order_id, e.sequence) for e in seen] == [("ord-fast", 1), ("ord-fast", 2)]
        await tx.commit()
        assert await log.sequence_pending(fast) == (3, 1)
        later = await log.read_events(fast, 3, 100, log.LogFilter(), 100)
        assert [(e.order_id, e.sequence) for e in later] == [("ord-slow", 3)]
        assert later[0].order_status_changed.to_status == "step-1"


async def test_concurrent_sequencers_give_each_event_one_place_and_keep_each_orders_order(
    pool: asyncpg.Pool,
) -> None:
    orders = [f"ord-{i}" for i in range(8)]

    async def writer(order_id: str) -> None:
        for n in range(25):
            async with pool.acquire() as conn, conn.transaction():
                await log.append_events(conn, [event(order_id, n)])

    async def sequencer(stop: asyncio.Event) -> None:
        while not stop.is_set():
            async with pool.acquire() as conn:
                await log.sequence_pending(conn, limit=7)
            await asyncio.sleep(0)

    stop = asyncio.Event()
    sequencers = [asyncio.create_task(sequencer(stop)) for _ in range(2)]
    await asyncio.gather(*(writer(o) for o in orders))
    stop.set()
    await asyncio.gather(*sequencers)
    async with pool.acquire() as conn:  # what the last passes left
        while (await log.sequence_pending(conn))[1]:
            pass
    async with pool.acquire() as conn:
        everything = await log.read_events(conn, 1, 10_000, log.LogFilter(), 10_000)
        assert await log.head(conn) == 200
    assert [e.sequence for e in everything] == list(range(1, 201))
    for order_id in orders:
        steps = [e.order_status_changed.to_status for e in everything if e.order_id == order_id]
        assert steps == [f"step-{n}" for n in range(25)]


async def test_filters_pick_types_families_channels_and_orders(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await log.append_events(conn, [event("ord-a", n) for n in range(4)])
        await log.append_events(conn, [event("ord-b", n) for n in range(4)])
        await log.sequence_pending(conn)
        family = await log.read_events(conn, 1, 100, log.LogFilter(types=["shipment.*"]), 100)
        assert [e.type for e in family] == ["shipment.shipped"] * 4
        one = await log.read_events(conn, 1, 100, log.LogFilter(order_ids=["ord-b"]), 100)
        assert [e.sequence for e in one] == [5, 6, 7, 8]
        none = await log.read_events(conn, 1, 100, log.LogFilter(channels=["store"]), 100)
        assert none == []
        # Writing an event id again changes nothing.
        await log.append_events(conn, [event("ord-a", 0)])
        assert await log.sequence_pending(conn) == (None, 0)


async def test_a_consumer_takes_each_event_once_across_two_replicas(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await log.append_events(conn, [event("ord-c", n) for n in range(10)])
        await log.sequence_pending(conn)

    taken: list[int] = []

    async def consume() -> None:
        while True:
            async with pool.acquire() as conn, conn.transaction():
                batch = await log.next_batch(
                    conn, "test-consumer", log.LogFilter(types=["shipment.*"]), 3, start=0
                )
                if batch.upto == await log.head(conn) and not batch.events:
                    return
                taken.extend(e.sequence for e in batch.events)
                await log.move_cursor(conn, "test-consumer", batch.upto)

    await asyncio.gather(consume(), consume())
    assert sorted(taken) == [1, 3, 5, 7, 9]
    assert len(taken) == len(set(taken))


async def test_erasing_an_orders_events_clears_reasons_and_keeps_ids_money_and_quantities(
    pool: asyncpg.Pool,
) -> None:
    canceled = event("ord-erased", 1)
    canceled.order_status_changed.reason = "Erin Erasable moved to 1 Forget-Me Lane"
    returned = events_pb2.Event(
        event_id=event_id("ord-erased:r"), type="return.requested", order_id="ord-erased"
    )
    returned.occurred_at.FromDatetime(datetime.now(UTC))
    returned.return_order_changed.return_order_id = "ro-1"
    returned.return_order_changed.reason = "too small for Erin"
    returned.return_order_changed.lines.add(order_line_id="l-1", sku="MUG-1", quantity=2)
    captured = events_pb2.Event(
        event_id=event_id("ord-erased:c"), type="order.captured", order_id="ord-erased"
    )
    captured.occurred_at.FromDatetime(datetime.now(UTC))
    captured.order_captured.grand_total.amount_minor = 2859
    captured.order_captured.fraud_reasons.append("ships to Erin Erasable, billed elsewhere")
    other = event("ord-kept", 1)
    other.order_status_changed.reason = "Erin Erasable"
    async with pool.acquire() as conn:
        await log.append_events(conn, [canceled, returned, captured, other])
        async with conn.transaction():
            assert await log.erase_events(conn, ["ord-erased"], ["Erin Erasable"]) == 3
        assert await log.erase_events(conn, ["ord-erased"], ["Erin Erasable"]) == 0
        await log.sequence_pending(conn)
        stored = {
            e.event_id: e for e in await log.read_events(conn, 1, 10**9, log.LogFilter(), 100)
        }
    assert stored[canceled.event_id].order_status_changed.reason == ""
    assert stored[canceled.event_id].order_status_changed.to_status == "step-1"
    kept = stored[returned.event_id].return_order_changed
    assert (kept.reason, kept.return_order_id) == ("", "ro-1")
    assert [(x.order_line_id, x.quantity) for x in kept.lines] == [("l-1", 2)]
    money = stored[captured.event_id].order_captured
    assert money.grand_total.amount_minor == 2859
    assert "Erin" not in money.fraud_reasons[0]
    assert stored[other.event_id].order_status_changed.reason == "Erin Erasable"
