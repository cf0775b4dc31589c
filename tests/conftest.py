"""Shared fixtures: one real Postgres (embedded) and one real Temporal dev server per session,
and the four services on real gRPC ports. Started lazily: unit tests start nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest
import uvloop
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from temporalio.client import Client

from oms_platform import auth, db, temporal
from oms_platform.service import RunningService
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.simulator import Simulator
from oms_tools.devstack.temporal_server import TemporalDevServer, free_port
from oms_tools.registry import migrate_all, start_service
from tests.callers import channel_as, persona_channel
from workflows.worker import build_worker

# The tests' own master keys (tests/keys): histories recorded by tests are sealed with them.
TEST_CODEC_KEYS = Path(__file__).parent / "keys" / "codec-test.keys"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The tests' services, workers and clients run on the loop oms processes run on."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session", autouse=True)
def dev_keys() -> Path:
    """The dev issuer's keys and the internal secret where default settings look for them
    (tests' settings keep the default data directory's keys; stacks of their own make theirs)."""
    return auth.ensure_dev_keys(Settings().keys_dir)


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oms")


@pytest.fixture(scope="session")
def postgres(tmp_root: Path) -> Iterator[EmbeddedPostgres]:
    """A throw-away embedded Postgres cluster for the whole session."""
    server = EmbeddedPostgres(tmp_root / "pg" / "data", free_port(), durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def database(postgres: EmbeddedPostgres) -> str:
    """DSN of a database with every service's migrations applied."""
    await db.ensure_database(postgres.dsn)
    await migrate_all(Settings(database_url=postgres.dsn))
    return postgres.dsn


@pytest.fixture(scope="session")
def temporal_server(tmp_root: Path) -> Iterator[TemporalDevServer]:
    """A real Temporal dev server (headless) with the oms search attributes registered."""
    server = TemporalDevServer(tmp_root / "temporal" / "temporal.db", free_port(), 0, ui=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def settings(database: str) -> Settings:
    """Settings for in-process services: free ports, the test database, short delays, the
    tests' codec keys."""
    ports = {f"{name}_port": free_port() for name in SERVICES}
    return Settings.from_env(
        env={},
        codec_keys_file=str(TEST_CODEC_KEYS),
        database_url=database,
        task_queue=f"oms-test-{os.getpid()}",
        db_pool_min=1,
        db_pool_max=5,
        log_format="console",
        # Plans every few minutes, as `oms dev` allows them.
        subscription_minute_cadence=True,
        **ports,
    )


@pytest.fixture(scope="session")
async def services(settings: Settings) -> AsyncIterator[dict[str, RunningService]]:
    """All four services, started in this process on real gRPC ports (no Temporal needed
    until something is delivered to a workflow)."""
    running = {name: await start_service(name, settings) for name in SERVICES}
    try:
        yield running
    finally:
        await asyncio.gather(*(svc.stop(0.5) for svc in running.values()))


@pytest.fixture(scope="session")
def settings_with_temporal(settings: Settings, temporal_server: TemporalDevServer) -> Settings:
    return replace(settings, temporal_address=temporal_server.target)


@dataclass
class System:
    """The four services, a worker and a Temporal client, wired like a deployment."""

    settings: Settings
    client: Client
    services: dict[str, RunningService]
    _channels: dict[tuple[object, ...], grpc.aio.Channel] = field(default_factory=dict)

    def channel(
        self,
        service: str,
        role: str = "",
        subjects: dict[str, str] | None = None,
        **identity: object,
    ) -> grpc.aio.Channel:
        """A channel to `service` as `role` (a token like any caller's), kept for the session;
        without a role, each call goes as a persona the access table allows to make it (played
        by `subjects[role]` when given)."""
        key = (service, role, tuple(sorted((subjects or {}).items())), *sorted(identity.items()))
        if key not in self._channels:
            address = self.settings.address_of(service)
            self._channels[key] = (
                channel_as(self.settings, address, role, **identity)
                if role
                else persona_channel(self.settings, address, subjects)
            )
        return self._channels[key]

    @contextlib.asynccontextmanager
    async def simulator(
        self, step_seconds: float = 0.0, reject_rate: float = 0.0
    ) -> AsyncIterator[Simulator]:
        """Run the warehouse simulator for the duration of the block."""
        sim = Simulator(
            replace(
                self.settings,
                simulator_step_seconds=step_seconds,
                simulator_poll_seconds=0.05,
                simulator_reject_rate=reject_rate,
            )
        )
        task = asyncio.create_task(sim.run())
        try:
            yield sim
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sim.close()


async def migrated_database(postgres: EmbeddedPostgres, name: str) -> str:
    """A database of its own with every service's migrations applied, so relays started on it
    never deliver (and delete) outbox rows other tests assert on."""
    dsn = postgres.dsn.rpartition("/")[0] + f"/{name}"
    await db.ensure_database(dsn)
    await migrate_all(Settings(database_url=dsn))
    return dsn


@contextlib.asynccontextmanager
async def running_system(
    base: Settings, postgres: EmbeddedPostgres, name: str, **overrides: object
) -> AsyncIterator[System]:
    """Everything but the simulator, in this process, on a database and task queue named
    `name` of its own: services on their own free ports, the order worker, outbox relays
    delivering to the real Temporal server."""
    settings = replace(
        base,
        database_url=await migrated_database(postgres, name),
        task_queue=f"{name.replace('_', '-')}-{os.getpid()}",
        outbox_poll_seconds=0.05,
        **{f"{service}_port": free_port() for service in SERVICES},
        **overrides,  # type: ignore[arg-type]
    )
    running = {service: await start_service(service, settings) for service in SERVICES}
    client = await temporal.connect(settings)
    worker = build_worker(client, settings)
    try:
        async with worker:
            try:
                yield System(settings=settings, client=client, services=running)
            finally:
                await asyncio.gather(*(svc.stop(0.5) for svc in running.values()))
    finally:
        await temporal.close(client)


@pytest.fixture(scope="session")
async def system(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[System]:
    """The system the scenario tests share (database `oms_system`)."""
    async with running_system(
        settings_with_temporal,
        postgres,
        "oms_system",
        # Scenario settings: orders above 1,000.00 are held for fraud review, and the
        # marketplace's return window is two seconds so a late return can be tried.
        fraud_amount_threshold_minor=100_000,
        return_window_days_by_channel=f"marketplace={2 / 86400}",
    ) as system:
        yield system


async def wait_for(
    capture: capture_pb2_grpc.CaptureServiceStub, order_id: str, statuses: set[int]
) -> capture_pb2.GetOrderResponse:
    """GetOrder until the order is in one of `statuses` with every section of its view."""
    deadline = time.monotonic() + 60
    while True:
        view = await capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        if view.order.status in statuses and not view.missing_sections:
            return view
        assert time.monotonic() < deadline, f"order stuck in {view.order.status}"
        await asyncio.sleep(0.1)
