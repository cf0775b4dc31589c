"""Running one oms service: the composition root every service process and test goes through.

A service package provides `bootstrap.py` with SCHEMA, MIGRATIONS and `build(ctx)`, which wires
its store, domain and servicer and returns what to serve and what to run in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health_pb2
from temporalio.client import Client

from oms_platform import auth, db, grpcutil, heap, metrics
from oms_platform import temporal as temporal_client
from oms_platform.backoff import Backoff
from oms_platform.codec import EncryptionCodec
from oms_platform.listen import Listener
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig

log = structlog.get_logger("oms.service")

# How long stopping waits for cancelled background tasks to end, and for the pool's
# connections to come back, before going on without them.
STOP_TASKS_SECONDS = 5.0
STOP_POOL_SECONDS = 5.0
# A task still running this long after being cancelled is cancelled again.
RECANCEL_SECONDS = 0.25


@dataclass
class ServiceContext:
    """What a service's `build` gets: settings, its own pool, and ways to reach the others."""

    name: str
    settings: Settings
    pool: asyncpg.Pool
    identity: auth.TokenSource
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _temporal: Client | None = None
    _codec: EncryptionCodec | None = None
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The process's one LISTEN connection (oms_platform/listen.py), run beside the server.
    listener: Listener = field(init=False)

    def __post_init__(self) -> None:
        self.listener = Listener(self.settings.dsn, listener_application_name(self.name))

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run `closer` when the service stops (e.g. to close a pool the service opened)."""
        self._closers.append(closer)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A shared client channel to another oms service."""
        if service not in self._channels:
            self._channels[service] = grpcutil.channel(
                self.settings.address_of(service),
                self.identity,
                tls=TLSConfig.from_settings(self.settings),
            )
        return self._channels[service]

    async def codec(self) -> EncryptionCodec:
        """The Temporal payload codec and its key vault, opened on first use (needs Postgres
        only, so shredding keys works while Temporal is down)."""
        async with self._opening:
            if self._codec is None:
                self._codec = await temporal_client.open_codec(
                    self.settings, listener=self.listener
                )
            return self._codec

    async def temporal(self) -> Client:
        """The Temporal client, connected on first use (a Temporal outage delays nothing else)."""
        if self._temporal is None:
            codec = await self.codec()
            async with self._opening:
                if self._temporal is None:
                    self._temporal = await temporal_client.connect(self.settings, codec)
        return self._temporal

    async def close(self) -> None:
        for closer in self._closers:
            with contextlib.suppress(Exception):
                await closer()
        for ch in self._channels.values():
            await ch.close()
        if self._codec is not None and self._codec.vault is not None:
            await self._codec.vault.close()


def listener_application_name(service: str) -> str:
    """How a service's LISTEN connection shows in pg_stat_activity."""
    return f"oms-{service}-listen"


@dataclass(frozen=True)
class BackgroundTask:
    """A job a service runs beside its server, for ever. `name` is also the service name its
    state answers to on the gRPC health service (e.g. `oms.outbox.capture`)."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]


@dataclass
class ServiceParts:
    """What a service serves (gRPC registrations and full service names) and runs beside."""

    registrations: list[grpcutil.Registration]
    service_names: list[str]
    background: list[BackgroundTask] = field(default_factory=list)
    # Reads of the gauges only the database knows (oms_platform/metrics.py), refreshed while
    # the process serves metrics.
    gauges: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


# Supervision of background tasks: the first restart waits this long, each further one twice
# as long up to the cap; a task that ran this long before failing starts over from the first.
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_AFTER_SECONDS = 60.0


async def supervise(
    task: BackgroundTask,
    health: Any,
    *,
    first_seconds: float = RESTART_FIRST_SECONDS,
    max_seconds: float = RESTART_MAX_SECONDS,
    reset_after_seconds: float = RESTART_RESET_AFTER_SECONDS,
) -> None:
    """Run `task` for ever: when it raises (or returns), log it with the traceback, report it
    NOT_SERVING under its name on `health`, and restart it with capped exponential back-off,
    SERVING again as it restarts. Cancelling stops it."""
    loop = asyncio.get_running_loop()
    backoff = Backoff(initial=first_seconds, cap=max_seconds, healthy_after=reset_after_seconds)
    while True:
        await _report(health, task.name, health_pb2.HealthCheckResponse.SERVING)
        started = loop.time()
        failure: Exception | None = None
        try:
            await task.run()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failure = error
        delay = backoff.delay_after(loop.time() - started)
        await _report(health, task.name, health_pb2.HealthCheckResponse.NOT_SERVING)
        log.error(
            "background task failed; restarting" if failure else "background task stopped",
            task=task.name,
            restart_in=delay,
            exc_info=failure,
        )
        await asyncio.sleep(delay)


async def _report(health: Any, name: str, status: Any) -> None:
    if health is not None:
        await health.set(name, status)


class Bootstrap(Protocol):
    """What a service package's `bootstrap.py` provides (the composition root of a service)."""

    SCHEMA: str
    MIGRATIONS: Path

    async def build(self, ctx: ServiceContext) -> ServiceParts: ...


@dataclass
class RunningService:
    """A started service: its server, bound port and background tasks."""

    name: str
    server: grpc.aio.Server
    port: int
    context: ServiceContext
    tasks: list[asyncio.Task[Any]]
    # The server's health service: "" and every service name answer SERVING while it runs.
    health: Any = None
    stopping: bool = field(default=False, init=False)

    async def stop(self, grace: float | None = None, *, not_serving_for: float = 0.0) -> None:
        """Graceful shutdown: answer NOT_SERVING (for `not_serving_for` seconds still serving,
        so load balancers notice), stop accepting, give in-flight calls `grace` seconds
        (default: the shutdown_grace_seconds setting), then stop background work. Once only:
        a second call (a second signal) returns at once."""
        if self.stopping:
            return
        self.stopping = True
        if self.health is not None:
            # enter_graceful_shutdown sets "" and every registered name to NOT_SERVING and
            # keeps them there: nothing can set SERVING again while we go down.
            await self.health.enter_graceful_shutdown()
        log.info("service not serving", service=self.name, stopping_in=not_serving_for)
        if not_serving_for > 0:
            await asyncio.sleep(not_serving_for)
        if grace is None:
            grace = self.context.settings.shutdown_grace_seconds
        await self.server.stop(grace)
        stuck = await cancel_all(self.tasks, STOP_TASKS_SECONDS)
        for task in stuck:
            log.warning("background task did not stop", service=self.name, task=task.get_name())
        await self.context.close()
        metrics.POOLS.discard(self.name)
        try:
            await asyncio.wait_for(self.context.pool.close(), STOP_POOL_SECONDS)
        except TimeoutError:
            log.warning("database pool did not close; terminating it", service=self.name)
            self.context.pool.terminate()


async def cancel_all(tasks: list[asyncio.Task[Any]], seconds: float) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait at most `seconds` for them to end, cancelling again those that
    swallowed a cancellation (a library catching it as it completes), and return those still
    running: a task that does not end must not keep the process from going down."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(
            pending, timeout=min(RECANCEL_SECONDS, max(0.0, deadline - loop.time()))
        )
    return pending


async def start_service(
    name: str, module: Bootstrap, settings: Settings, port: int | None = None
) -> RunningService:
    """Start service `name`, composed by `module`, on `port` (default: its configured port; 0
    picks a free one)."""
    # Keys first: a service that cannot check tokens must not start (nothing runs open).
    authenticator = auth.Authenticator.from_settings(settings)
    identity = auth.ServiceIdentity.for_process(settings, f"service:{name}", auth.SERVICE)
    pool = await db.create_pool(
        settings.dsn, module.SCHEMA, settings.db_pool_min, settings.db_pool_max
    )
    context = ServiceContext(name=name, settings=settings, pool=pool, identity=identity)
    parts: ServiceParts = await module.build(context)
    bind_port = settings.port_of(name) if port is None else port
    server, bound, health = await grpcutil.start_server(
        parts.registrations,
        parts.service_names,
        f"{settings.host}:{bind_port}",
        authenticator,
        reflection_enabled=settings.grpc_reflection,
        tls=TLSConfig.from_settings(settings),
        limits=grpcutil.ServerLimits(
            max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            keepalive_seconds=settings.grpc_keepalive_seconds,
            keepalive_timeout_seconds=settings.grpc_keepalive_timeout_seconds,
            max_connection_age_seconds=settings.grpc_max_connection_age_seconds,
            max_connection_age_grace_seconds=settings.grpc_max_connection_age_grace_seconds,
        ),
    )
    background = [BackgroundTask(f"oms.listen.{name}", context.listener.run), *parts.background]
    if settings.metrics_port:
        metrics.POOLS.add(name, pool)
        if parts.gauges:
            refresher = metrics.Refresher(name, settings.metrics_refresh_seconds, parts.gauges)
            background.append(BackgroundTask(f"oms.metrics.{name}", refresher.run))
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(supervise(job, health), name=f"{name}:{job.name}") for job in background
    ]
    log.info("service started", service=name, port=bound)
    return RunningService(
        name=name, server=server, port=bound, context=context, tasks=tasks, health=health
    )


async def serve_forever(name: str, module: Bootstrap, settings: Settings) -> None:
    """Run a service until SIGINT or SIGTERM, then shut down gracefully."""
    running = await start_service(name, module, settings)
    metrics.serve(settings.metrics_port, settings.metrics_host)
    heap.settle(settings.gc_young_threshold)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("service stopping", service=name)
    await running.stop(
        settings.shutdown_grace_seconds, not_serving_for=settings.shutdown_not_serving_seconds
    )
    log.info("service stopped", service=name)
