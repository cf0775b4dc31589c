"""Stored idempotency for a batch of keyed calls (`db.KeyedBatch`), on real Postgres: the same
rules as one call at a time (`db.idempotent_in`), with the keys claimed and answered in one
statement each.

Requests are protobuf messages of two RPCs (capture's progress step and its submit), since a
key belongs to one RPC.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from oms.capture.v1 import capture_pb2 as pb

from oms_platform import db
from oms_platform.errors import AlreadyExists
from oms_tools.devstack.postgres import EmbeddedPostgres
from tests.conftest import migrated_database


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    dsn = await migrated_database(postgres, "oms_keyed_batch")
    made = await db.create_pool(dsn, "capture", 1, 3)
    try:
        yield made
    finally:
        await made.close()


def step(key: str, summary: str = "allocated") -> pb.RecordOrderProgressRequest:
    request = pb.RecordOrderProgressRequest(order_id="o-1", idempotency_key=key)
    request.event.kind, request.event.summary = "fulfillment.allocated", summary
    return request


ANSWER = pb.RecordOrderProgressResponse(order=pb.Order(order_id="o-1"))


async def run(
    pool: asyncpg.Pool, keyed: list[tuple[str, pb.RecordOrderProgressRequest]], **options: bool
) -> list[pb.RecordOrderProgressResponse | None]:
    """Each call's replayed answer (None: made now, and answered with ANSWER), committed."""
    replays: list[pb.RecordOrderProgressResponse | None] = []
    async with pool.acquire() as conn, conn.transaction():
        batch = await db.KeyedBatch.claim(conn, keyed, **options)
        for n in range(len(keyed)):
            replayed = batch.replay(n, pb.RecordOrderProgressResponse)
            if replayed is None:
                batch.answer(n, ANSWER)
            replays.append(replayed)
        await batch.store(conn)
    return replays


async def test_new_keys_are_made_and_answered_and_a_second_batch_replays_them(
    pool: asyncpg.Pool,
) -> None:
    a, b = (f"k:{uuid.uuid4().hex}" for _ in range(2))
    keyed = [(a, step(a)), (b, step(b))]
    assert await run(pool, keyed) == [None, None]
    assert await run(pool, keyed) == [ANSWER, ANSWER]
    # One call at a time replays the batch's answers too.
    async with pool.acquire() as conn, conn.transaction():
        replayed, made = await db.idempotent_in(
            conn, a, step(a), pb.RecordOrderProgressResponse, _never, _never
        )
    assert (replayed, made) == (ANSWER, None)


async def test_a_key_given_twice_is_made_once_and_the_second_replays_the_first(
    pool: asyncpg.Pool,
) -> None:
    a, b = (f"k:{uuid.uuid4().hex}" for _ in range(2))
    assert await run(pool, [(a, step(a)), (b, step(b)), (a, step(a))]) == [None, None, ANSWER]
    # Told differently the second time: refused, unless the first telling wins.
    c = f"k:{uuid.uuid4().hex}"
    with pytest.raises(AlreadyExists, match="already used with a different request"):
        await run(pool, [(c, step(c)), (c, step(c, "told differently"))])
    assert await run(pool, [(c, step(c)), (c, step(c, "told differently"))], first_wins=True) == [
        None,
        ANSWER,
    ]


async def test_a_key_stored_before_follows_the_rules_of_one_call(pool: asyncpg.Pool) -> None:
    a, b = (f"k:{uuid.uuid4().hex}" for _ in range(2))
    assert await run(pool, [(a, step(a))]) == [None]
    # A different request under a stored key: refused, or the first telling replayed.
    with pytest.raises(AlreadyExists, match="already used with a different request"):
        await run(pool, [(b, step(b)), (a, step(a, "told differently"))])
    assert await run(pool, [(a, step(a, "told differently"))], first_wins=True) == [ANSWER]
    # The refused batch left nothing: its new key is free and made now.
    assert await run(pool, [(b, step(b))]) == [None]
    # A key used for another RPC is refused whatever the request, first_wins or not.
    other = f"k:{uuid.uuid4().hex}"
    async with pool.acquire() as conn, conn.transaction():
        await db.idempotent_in(
            conn,
            other,
            pb.SubmitOrderRequest(idempotency_key=other),
            pb.RecordOrderProgressResponse,
            _nothing,
            lambda _: pb.RecordOrderProgressResponse(),
        )
    with pytest.raises(AlreadyExists, match="already used for another call"):
        await run(pool, [(other, step(other))], first_wins=True)


async def _never(_: object) -> object:
    raise AssertionError("a replay makes nothing")


async def _nothing(_: object) -> None:
    return None
