"""Prometheus metrics of an oms process: what it counts, and the endpoint that serves them.

Every service process and the worker serve `/metrics` on `OMS_METRICS_PORT` (0 = off) from
one registry (prometheus-client's default). Labels are low-cardinality by rule: service,
method, code, schema, channel, status, category, operation, outcome — never an order id.

Counters and histograms are updated where the event happens (the gRPC gate, the outbox relay,
capture's progress recording, the payment gateway calls). Orders by status are counted as
transitions rather than read as a gauge of today's statuses: the dashboard wants a flow (orders
per minute by channel and status), a counter sums across capture replicas, and it costs no
query on a table that grows with every order. What only the database knows — rows
waiting in an outbox, process exceptions open — is read by a refresher every
`OMS_METRICS_REFRESH_SECONDS` in the service's own event loop (`Refresher`), because a scrape
runs on the HTTP server's thread and must not wait on Postgres. Connection pools are read at
scrape time: asyncpg keeps those counts in memory.

On the worker, the Temporal SDK's own runtime metrics (workflow task latency, schedule-to-start,
sticky cache, …) are served by the SDK on a private loopback port and folded into this
endpoint at scrape time (`TemporalRuntimeMetrics`), so every process has one URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from oms_platform import heap

log = structlog.get_logger("oms.metrics")

# Latency buckets (seconds) for calls that answer in milliseconds, sometimes in seconds.
RPC_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Submit to fulfilled: seconds on the dev stack, days with a real warehouse.
LIFECYCLE_BUCKETS = (
    1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400,
    7 * 86400, 14 * 86400,
)  # fmt: skip

RPC_SECONDS = Histogram(
    "oms_rpc_duration_seconds",
    "gRPC calls served, by service, method, type (unary, server_stream, client_stream) and "
    "status code, and how long each took",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
    buckets=RPC_BUCKETS,
)
OUTBOX_DELIVERED = Counter(
    "oms_outbox_delivered",
    "outbox rows delivered, by schema and kind (start: a lifecycle started; event: written to "
    "capture's event log)",
    ["schema", "kind"],
)
OUTBOX_ROWS = Gauge("oms_outbox_rows", "rows waiting in the outbox", ["schema"])
OUTBOX_OLDEST_AGE = Gauge(
    "oms_outbox_oldest_age_seconds",
    "age of the oldest row waiting in the outbox (0 when empty)",
    ["schema"],
)
OUTBOX_DEAD_LETTERS = Gauge(
    "oms_outbox_dead_letters_open", "outbox rows Temporal refused for good, still open", ["schema"]
)
LIFECYCLE_START_PACE = Gauge(
    "oms_lifecycle_start_pace_per_second",
    "lifecycle starts allowed per second while the front door is busy (0: not paced)",
    ["schema"],
)
LIFECYCLE_STARTS_PACED = Gauge(
    "oms_lifecycle_starts_paced", "1 while lifecycle starts are paced, else 0", ["schema"]
)
ORDER_TRANSITIONS = Counter(
    "oms_order_transitions",
    "orders entering a status (captured, allocated, fulfilled, canceled, …), by channel",
    ["channel", "status"],
)
ORDER_LIFECYCLE_SECONDS = Histogram(
    "oms_order_lifecycle_seconds",
    "time from an order's capture to its fulfilment, by channel",
    ["channel"],
    buckets=LIFECYCLE_BUCKETS,
)
EVENTS_SEQUENCED = Counter(
    "oms_events_sequenced", "events of the order event log given their sequence (all replicas sum)"
)
EVENT_LOG_LAG = Gauge(
    "oms_event_log_lag_seconds",
    "age of the oldest event written but not yet sequenced (0 when none waits)",
)
EVENT_STREAMS_OPEN = Gauge(
    "oms_event_streams_open", "SubscribeEvents streams this process serves right now"
)
EVENT_CURSOR_BEHIND = Gauge(
    "oms_event_cursor_behind",
    "how many sequences an oms consumer of the event log (webhooks, notifications) is behind "
    "the head",
    ["consumer"],
)
LATE_ORDERS = Gauge(
    "oms_late_orders",
    "orders neither fulfilled nor canceled whose promised delivery date is before today (UTC)",
)
PROCESS_EXCEPTIONS_OPEN = Gauge(
    "oms_process_exceptions_open", "process exceptions not yet resolved, by category", ["category"]
)
GATEWAY_CALLS = Counter(
    "oms_gateway_calls",
    "payment gateway calls, by operation and outcome (succeeded, declined, failed, timeout, …)",
    ["operation", "outcome"],
)
GATEWAY_SECONDS = Histogram(
    "oms_gateway_call_duration_seconds",
    "how long payment gateway calls took, by operation",
    ["operation"],
    buckets=RPC_BUCKETS,
)

# Outcomes: sent, skipped (opted out, no address), failed_attempt (retried later), failed
# (retry period over). Each notification counts once as sent, skipped or failed.
NOTIFICATIONS = Counter(
    "oms_notifications",
    "shopper notifications, by template (order_confirmed, order_shipped, …) and outcome "
    "(sent, skipped, failed_attempt, failed)",
    ["template", "outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "oms_webhook_deliveries",
    "webhook attempts and deliveries by outcome: delivered (a 2xx), failed (an attempt without "
    "one, retried later) and dead (given up after the retry period)",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "oms_webhook_attempt_duration_seconds",
    "how long each webhook POST took, answered or not",
    buckets=RPC_BUCKETS,
)
WEBHOOK_PENDING = Gauge(
    "oms_webhook_deliveries_pending",
    "webhook deliveries waiting to be sent (due, backing off, queued behind another of their "
    "order, or for a paused subscription)",
)


def observe_rpc(method: str, kind: str, code: str, seconds: float) -> None:
    """Count one served call; `method` is gRPC's `/package.Service/Method`, `kind` its type.

    The type is a label because a stream lives as long as its caller listens (WatchOrder: until
    the order is fulfilled): latency panels read unary calls only."""
    service, _, name = method.lstrip("/").rpartition("/")
    RPC_SECONDS.labels(service.rsplit(".", 1)[-1], name, kind, code).observe(seconds)


def serve(port: int, host: str) -> int:
    """Serve /metrics on host:port (0: not at all); returns the port, 0 when off."""
    if port <= 0:
        return 0
    server, _ = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("metrics served", url=f"http://{host}:{bound}/metrics")
    return bound


class PoolMetrics(Collector):
    """The connection pools of a process, read at scrape time."""

    def __init__(self) -> None:
        self._pools: dict[str, asyncpg.Pool] = {}

    def add(self, name: str, pool: asyncpg.Pool) -> None:
        """Report `pool` under `name` (its schema) from now on."""
        self._pools[name] = pool

    def discard(self, name: str) -> None:
        self._pools.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        in_use = GaugeMetricFamily(
            "oms_db_pool_connections", "open pool connections by state", labels=["pool", "state"]
        )
        limit = GaugeMetricFamily(
            "oms_db_pool_max_connections", "most connections the pool opens", labels=["pool"]
        )
        waiting = GaugeMetricFamily(
            "oms_db_pool_waiting", "tasks waiting for a pool connection", labels=["pool"]
        )
        for name, pool in list(self._pools.items()):
            size, idle = pool.get_size(), pool.get_idle_size()
            in_use.add_metric([name, "in_use"], size - idle)
            in_use.add_metric([name, "idle"], idle)
            limit.add_metric([name], pool.get_max_size())
            waiting.add_metric([name], _waiters(pool))
        yield from (in_use, limit, waiting)


def _waiters(pool: asyncpg.Pool) -> int:
    """Tasks blocked in `pool.acquire()`. asyncpg has no public count: its free connections sit
    in an asyncio queue, whose getters are exactly the waiting acquirers; 0 if that changes."""
    queue = getattr(pool, "_queue", None)
    getters = getattr(queue, "_getters", None)
    return sum(1 for g in getters if not g.done()) if getters is not None else 0


POOLS = PoolMetrics()
REGISTRY.register(POOLS)
# The garbage collector's time, counted from the import of this module (before `heap.settle`).
GC_TIME = heap.GcTime().install()
REGISTRY.register(GC_TIME)


@dataclass
class Refresher:
    """Reads gauges only the database knows, every `interval` seconds, in the service's loop."""

    name: str
    interval: float
    reads: list[Callable[[], Awaitable[None]]]

    async def run(self) -> None:
        """Refresh for ever; a failed read is logged and tried again next time."""
        while True:
            for read in self.reads:
                try:
                    await read()
                except Exception as error:  # Postgres away: the gauges keep their last values
                    log.warning("metrics refresh failed", refresher=self.name, error=str(error))
            await asyncio.sleep(self.interval)


SQL_OUTBOX_LAG = """
SELECT count(*) AS rows, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age,
       (SELECT count(*) FROM outbox_dead_letters WHERE status = 'open') AS dead
FROM outbox"""


def outbox_lag(pool: asyncpg.Pool, schema: str) -> Callable[[], Awaitable[None]]:
    """A read of `schema`'s outbox depth, oldest row and open dead letters."""

    async def read() -> None:
        row = await pool.fetchrow(SQL_OUTBOX_LAG)
        assert row is not None
        OUTBOX_ROWS.labels(schema).set(row["rows"])
        OUTBOX_OLDEST_AGE.labels(schema).set(float(row["age"]))
        OUTBOX_DEAD_LETTERS.labels(schema).set(row["dead"])

    return read


def set_exceptions_open(by_category: dict[str, int]) -> None:
    """Open process exceptions per category; a category no longer open drops to 0."""
    for category in _EXCEPTION_CATEGORIES_SEEN:
        by_category.setdefault(category, 0)
    for category, count in by_category.items():
        PROCESS_EXCEPTIONS_OPEN.labels(category).set(count)
        _EXCEPTION_CATEGORIES_SEEN.add(category)


_EXCEPTION_CATEGORIES_SEEN: set[str] = set()


def record_pace(schema: str, pace: float | None) -> None:
    """What the relay's pacer allows now (None: not paced)."""
    LIFECYCLE_STARTS_PACED.labels(schema).set(0 if pace is None else 1)
    LIFECYCLE_START_PACE.labels(schema).set(pace or 0.0)


@contextlib.contextmanager
def gateway_call(operation: str) -> Iterator[Callable[[str], None]]:
    """Time one gateway call; the body reports its outcome (`error` if it raises first)."""
    outcome = ["error"]
    started = time.perf_counter()
    try:
        yield lambda result: outcome.__setitem__(0, result)
    finally:
        GATEWAY_SECONDS.labels(operation).observe(time.perf_counter() - started)
        GATEWAY_CALLS.labels(operation, outcome[0]).inc()


# The Temporal SDK runtime series the dashboard and alert rules read (the SDK names them; with
# `durations_as_seconds` its histograms are in seconds; the SDK writes counters without a
# suffix, and folding them into this registry adds `_total`). Seen on the worker's endpoint
# after an order (tests/e2e/test_metrics.py asserts each is there), except the failure counter,
# which the SDK registers at the first failed workflow task: tests/integration/test_metrics.py
# fails one and finds `temporal_workflow_task_execution_failed_total`.
TEMPORAL_SDK_SERIES = {
    "temporal_workflow_task_execution_latency": "histogram",
    "temporal_workflow_task_schedule_to_start_latency": "histogram",
    # The lifecycle's steps run as local activities (inside workflow tasks).
    "temporal_local_activity_execution_latency": "histogram",
    "temporal_sticky_cache_size": "gauge",
    "temporal_worker_task_slots_available": "gauge",
    "temporal_workflow_task_execution_failed": "counter",
}
TEMPORAL_SDK_SERIES_ON_FAILURE = {"temporal_workflow_task_execution_failed"}


class TemporalRuntimeMetrics(Collector):
    """The Temporal SDK runtime's metrics, fetched from its loopback endpoint at each scrape."""

    def __init__(self, url: str) -> None:
        self._url = url

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self._url, timeout=2.0) as answer:
                text = answer.read().decode()
        except OSError as error:
            log.warning("temporal runtime metrics unavailable", error=str(error))
            return
        yield from text_string_to_metric_families(text)


def temporal_runtime(port: int, registry: CollectorRegistry = REGISTRY) -> Any:
    """A Temporal SDK runtime exporting its metrics on 127.0.0.1:`port`, folded into this
    process's /metrics (`registry`); durations in seconds, as every other oms histogram."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}", durations_as_seconds=True)
        )
    )
    registry.register(TemporalRuntimeMetrics(f"http://127.0.0.1:{port}/metrics"))
    return runtime
