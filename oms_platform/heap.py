"""The garbage collector of a long-running oms process (`Settings.gc_young_threshold`).

CPython frees most objects by reference counting; its cyclic collector runs besides, a young
collection every 700 net allocations of container objects and now and then a full one over
every object the process holds. Once a service or the worker has started, most of what it
holds stays for the process's life: the modules it imported (gRPC, protobuf, the Temporal
SDK, asyncpg, its own), its pools and servers. Every full collection walks all of it and
finds nothing there to free.

`settle(threshold)`, called once a process has started, collects once and freezes what
survives (`gc.freeze`: the collector never walks those objects again, nor frees them), then
runs young collections every `threshold` allocations rather than 700, so the short-lived
objects of a call mostly die by reference count before a collection meets them. Cycles made
after startup are collected as before. `GcTime` counts the seconds collections take, served
on /metrics (`oms_gc_seconds`) for the benches' `--profile` and a platform engineer's
dashboard.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


def settle(threshold: int) -> None:
    """Freeze what the started process holds and collect the young generation every
    `threshold` container allocations; 0 leaves the collector as CPython set it."""
    if threshold < 0:
        raise ValueError(f"OMS_GC_YOUNG_THRESHOLD must be 0 or more, not {threshold}")
    if threshold == 0:
        return
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)


class GcTime(Collector):
    """Seconds spent in the cyclic collector, by generation, counted from when it is
    installed (`install`), and the objects frozen out of its walks."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._began = 0.0

    def install(self) -> GcTime:
        """Start counting: called by every collection from now on."""
        gc.callbacks.append(self._observe)
        return self

    def uninstall(self) -> None:
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._began

    def collect(self) -> Iterator[Any]:
        spent = CounterMetricFamily(
            "oms_gc_seconds",
            "time the garbage collector's collections took, by generation (0 young, 2 full)",
            labels=["generation"],
        )
        for generation, seconds in enumerate(self.seconds):
            spent.add_metric([str(generation)], seconds)
        yield spent
        frozen = GaugeMetricFamily(
            "oms_gc_frozen_objects",
            "objects frozen out of the garbage collector's walks once the process started",
        )
        frozen.add_metric([], gc.get_freeze_count())
        yield frozen
