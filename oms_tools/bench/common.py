"""What every bench shares: a measured phase, a private stack, a bench caller."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from oms_platform import auth
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.stack import Stack
from oms_tools.devstack.temporal_server import free_port


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
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] * 1000

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
        # No metrics endpoints: their fixed dev ports would collide with a running `make dev`.
        dev_metrics_port=0,
        simulator=True,
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
async def bench_stack(prefix: str, keep: bool, **overrides: Any) -> AsyncIterator[Settings]:
    """A private stack (`bench_settings`, with `overrides`) running for the block; its data
    directory is removed after unless `keep`. Yields the settings the started stack serves."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    stack = Stack(replace(bench_settings(data_dir), **overrides))
    settings = await stack.start()
    try:
        yield settings
    finally:
        stack.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def bench_caller(settings: Settings, role: str) -> auth.TokenSource:
    """A bench's identity: a token from the bench stack's own dev issuer, like any caller's."""
    return auth.dev_persona(settings, f"bench-{role}", role, ttl_seconds=24 * 3600)
