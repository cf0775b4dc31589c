"""FulfillmentService alone over real gRPC and Postgres, for the modules that test it without
the rest of the system. A module defines its `dsn` fixture (`fulfillment_database`, shared or
of its own) and asks for the fixtures below by name (tests/integration/conftest.py offers
them to every module; one that defines its own of the same name keeps its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

import asyncpg
import pytest
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import db
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from services.fulfillment import bootstrap
from tests.callers import persona_channel

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = fulfillment_pb2_grpc.FulfillmentServiceAsyncStub
else:
    Stub = fulfillment_pb2_grpc.FulfillmentServiceStub


async def fulfillment_database(postgres: EmbeddedPostgres, name: str = "") -> str:
    """The test database, or with `name` a database of that name, with fulfillment's
    migrations (only: other services may not exist there)."""
    dsn = postgres.dsn if not name else postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    await db.ensure_database(dsn)
    await db.migrate(dsn, bootstrap.SCHEMA, bootstrap.MIGRATIONS)
    return dsn


async def start_fulfillment(dsn: str, keep: str = "", **overrides: object) -> RunningService:
    """The service on a free port with its background tasks (outbox relay, sweepers) stopped,
    so the rows they would act on stay to be checked; but for the task named `keep`."""
    settings = Settings.from_env(
        env={},
        database_url=dsn,
        db_pool_min=1,
        db_pool_max=10,
        log_format="console",
        **overrides,
    )
    running = await start_service("fulfillment", settings, port=0)
    for task in running.tasks:
        if not keep or not task.get_name().endswith(f":{keep}"):
            task.cancel()
    return running


@pytest.fixture(scope="module")
async def fulfillment(dsn: str) -> AsyncIterator[RunningService]:
    """The service over the module's `dsn`, its background tasks stopped."""
    running = await start_fulfillment(dsn)
    try:
        yield running
    finally:
        await running.stop(0.5)


@pytest.fixture(scope="module")
async def stub(fulfillment: RunningService) -> AsyncIterator[Stub]:
    """A client of it; each call as a persona the access table allows to make it."""
    channel = persona_channel(fulfillment.context.settings, f"127.0.0.1:{fulfillment.port}")
    try:
        yield cast("Stub", fulfillment_pb2_grpc.FulfillmentServiceStub(channel))
    finally:
        await channel.close()


@pytest.fixture
async def sql(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the module's database, to check and arrange rows directly (fulfillment's
    tables found without their schema's name)."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f"{bootstrap.SCHEMA},public"})
    try:
        yield conn
    finally:
        await conn.close()
