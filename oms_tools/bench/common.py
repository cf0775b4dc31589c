"""What every bench shares: a measured phase, a private stack, a bench caller, lanes of calls
and orders brought to a status."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform import auth, grpcutil
from oms_platform.settings import SERVICES, Settings
from oms_platform.tls import TLSConfig
from oms_tools.devstack.stack import Stack
from oms_tools.devstack.temporal_server import free_port
from oms_tools.samples import sample_order

# How long an order may take to reach the status a bench waits for.
STATUS_TIMEOUT_SECONDS = 120.0


@dataclass
class Run:
    """One measured phase."""

    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return percentile_ms(self.latencies, q)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 2),
            "p50_ms": round(self.percentile(0.5), 1),
            "p99_ms": round(self.percentile(0.99), 1),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 1) if self.latencies else 0,
        }


def percentile_ms(seconds: list[float], q: float) -> float:
    """The `q` quantile (0..1, nearest rank) of durations in seconds, in milliseconds; 0 when
    there are none."""
    ordered = sorted(seconds)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index] * 1000


def bench_settings(data_dir: Path) -> Settings:
    """A private stack on free ports, so a running `make dev` is left alone."""
    ports: dict[str, Any] = {f"{name}_port": free_port() for name in SERVICES}
    addresses: dict[str, Any] = {f"{name}_address": "" for name in SERVICES}
    return Settings.from_env(
        data_dir=str(data_dir),
        database_url="",
        temporal_address="",
        embedded_postgres_port=free_port(),
        embedded_temporal_port=free_port(),
        embedded_temporal_ui_port=free_port(),
        codec_server_port=free_port(),
        # The stack's mail sink (shopper notifications) on a free port too, for the same reason.
        smtp_port=free_port(),
        # No metrics endpoints: their fixed dev ports would collide with a running `make dev`.
        dev_metrics_port=0,
        simulator=True,
        dev_load_postal_codes=False,
        simulator_step_seconds=0.0,
        # Lifecycles end at delivery (no return window), so a workflow's result marks it.
        return_window_days=0.0,
        simulator_poll_seconds=0.05,
        outbox_poll_seconds=0.05,
        log_format="json",
        # Quiet unless asked for (OMS_LOG_LEVEL=info shows, e.g., when starts were paced).
        log_level=os.environ.get("OMS_LOG_LEVEL", "warning"),
        **ports,
        **addresses,
    )


@contextlib.asynccontextmanager
async def private_stack(prefix: str, keep: bool, **overrides: Any) -> AsyncIterator[Stack]:
    """A private stack (`bench_settings`, with `overrides`) running for the block; its data
    directory is removed after unless `keep`. Yields the started stack, whose `settings` are
    those it serves and whose `pids()` name its processes (for memory and profiles)."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    stack = Stack(replace(bench_settings(data_dir), **overrides))
    try:
        # Inside the try: a stack that fails to start stops what it had started (Postgres,
        # Temporal, the services), rather than leaving them running on their own.
        await stack.start()
        yield stack
    finally:
        stack.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def bench_caller(settings: Settings, role: str) -> auth.TokenSource:
    """A bench's identity: a token from the bench stack's own dev issuer, like any caller's."""
    return auth.dev_persona(settings, f"bench-{role}", role, ttl_seconds=24 * 3600)


async def drive(
    count: int, concurrency: int, call: Callable[[int], Awaitable[Any]]
) -> tuple[float, list[float]]:
    """Run `await call(i)` for i in 0..count-1 from `concurrency` lanes; (elapsed, latencies)."""
    latencies = [0.0] * count
    indexes = iter(range(count))

    async def lane() -> None:
        for i in indexes:
            sent = time.perf_counter()
            await call(i)
            latencies[i] = time.perf_counter() - sent

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies


async def wait_for_status(
    stub: capture_pb2_grpc.CaptureServiceStub,
    order_id: str,
    wanted: capture_pb2.OrderStatus.ValueType,
    deadline: float,
) -> capture_pb2.Order:
    """Poll GetOrder until the order is `wanted`; RuntimeError if it goes on hold, is
    canceled (unless that is wanted) or is not there by `deadline` (monotonic clock)."""
    while True:
        request = capture_pb2.GetOrderRequest(order_id=order_id)
        view: capture_pb2.GetOrderResponse = await stub.GetOrder(request, timeout=30)
        status = view.order.status
        if status == wanted:
            return view.order
        name = capture_pb2.OrderStatus.Name(status)
        if status in (capture_pb2.ORDER_STATUS_ON_HOLD, capture_pb2.ORDER_STATUS_CANCELED):
            raise RuntimeError(f"order {order_id} went {name}, not the status waited for")
        if time.monotonic() > deadline:
            raise RuntimeError(f"order {order_id} still {name} after the timeout")
        await asyncio.sleep(0.05)


async def allocated_orders(
    settings: Settings, count: int, concurrency: int
) -> list[capture_pb2.Order]:
    """Submit `count` sample orders from `concurrency` lanes and wait until every one is
    ALLOCATED (with the simulator off, its workflow then waits for the shipment)."""
    orders: list[capture_pb2.Order] = [capture_pb2.Order()] * count
    storefront = bench_caller(settings, auth.STOREFRONT)
    tls = TLSConfig.from_settings(settings)
    async with grpcutil.channel(settings.address_of("capture"), storefront, tls=tls) as channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)

        async def submit_and_wait(i: int) -> None:
            response = await stub.SubmitOrder(sample_order(), timeout=30)
            # Each order its own time: with many orders, the last are submitted long after
            # the first (no more than `concurrency` wait at once).
            deadline = time.monotonic() + STATUS_TIMEOUT_SECONDS
            orders[i] = await wait_for_status(
                stub, response.order.order_id, capture_pb2.ORDER_STATUS_ALLOCATED, deadline
            )

        await drive(count, concurrency, submit_and_wait)
    return orders


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` (VmRSS in /proc/<pid>/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError(f"no VmRSS for process {pid}")
