"""`--profile`: gRPC calls between a bench stack's processes, per unit, from their /metrics.

Every service counts the calls it serves (`oms_rpc_duration_seconds`, by service and method)
and the worker's Temporal SDK counts its own calls to the Temporal server (`temporal_request`
and the long polls, `temporal_long_request`, by operation), with the workflow tasks and local
activities it ran and the workflow tasks that failed, by the reason it gave. Every process also
counts the seconds its garbage collector took (`oms_gc_seconds`), read the same way. Read before
and after a phase, the differences divided by the units are the calls each unit cost. The bench
stack serves no metrics unless asked (`metrics_base`), since the dev stack's fixed metrics ports
would collide with a running `make dev`.
"""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from oms_platform.settings import Settings
from oms_tools.devstack import replicas
from oms_tools.devstack.temporal_server import free_port, is_free

SCRAPE_TIMEOUT_SECONDS = 5.0
# The seconds a process spent in garbage collection (oms_platform/heap.GcTime), every generation.
GC_SECONDS = "oms_gc_seconds_total"
# Samples read, and what each counts: (sample name, the label naming what was called).
_COUNTED = {
    "oms_rpc_duration_seconds_count": "grpc_method",
    "temporal_request_total": "operation",
    "temporal_long_request_total": "operation",
    "temporal_workflow_task_execution_latency_count": "",
    "temporal_local_activity_execution_latency_count": "",
    # Workflow tasks that failed, by why (the worker's report to the server).
    "temporal_workflow_task_execution_failed": "failure_reason",
    "temporal_workflow_task_execution_failed_total": "failure_reason",
}


def metrics_base() -> int:
    """A first metrics port whose run of ports (one per role of `replicas.METRICS_ROLES`, one
    replica each) is free right now."""
    for _ in range(50):
        base = free_port()
        if all(is_free(base + k) for k in range(1, len(replicas.METRICS_ROLES))):
            return base
    raise RuntimeError("no run of free ports for the bench stack's metrics")


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == GC_SECONDS:
                counts[GC_SECONDS] = counts.get(GC_SECONDS, 0.0) + sample.value
                continue
            label = _COUNTED.get(sample.name)
            if label is None:
                continue
            what = sample.labels.get(label, "") if label else sample.name
            if sample.name.startswith("oms_rpc"):
                what = f"{sample.labels.get('grpc_service', '')}.{what}"
            elif label == "failure_reason":
                what = f"temporal_workflow_task_failed:{what or 'unknown'}"
            counts[what] = counts.get(what, 0.0) + sample.value
    return counts


class CallCounter:
    """Counts the calls every process of the stack served or made between `start` and
    `per_unit`."""

    def __init__(self, settings: Settings) -> None:
        self.urls = {
            role: f"http://{settings.metrics_host}:{port}/metrics"
            for role in replicas.METRICS_ROLES
            for port in replicas.metrics_ports(settings, role)
        }
        self._start: dict[str, dict[str, float]] = {}

    async def _now(self) -> dict[str, dict[str, float]]:
        return {role: await asyncio.to_thread(_scrape, url) for role, url in self.urls.items()}

    async def start(self) -> None:
        self._start = await self._now()

    async def per_unit(self, units: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """By process: what it served (`Service.Method`) or, for the worker, asked of Temporal
        (`Operation`), per unit; the workflow tasks and local activities the worker ran; the
        calls between oms processes in all (`oms_calls`). Second, the milliseconds each process
        spent in garbage collection per unit, and their `total`."""
        end, units = await self._now(), max(units, 1)
        report: dict[str, dict[str, float]] = {}
        gc_ms: dict[str, float] = {}
        for role, counts in end.items():
            before = self._start.get(role, {})
            moved = {
                what: n - before.get(what, 0)
                for what, n in counts.items()
                if n - before.get(what, 0) > 0
            }
            collecting = moved.pop(GC_SECONDS, 0.0)
            if collecting:
                gc_ms[role] = round(collecting * 1000 / units, 2)
            if moved:
                per = {what: round(n / units, 2) for what, n in moved.items()}
                report[role] = dict(sorted(per.items(), key=lambda kv: -kv[1]))
        worker = report.get("worker", {})
        served = sum(sum(calls.values()) for role, calls in report.items() if role != "worker")
        report["total"] = {
            "oms_calls": round(served, 2),
            "worker_to_temporal": round(
                sum(n for what, n in worker.items() if not what.startswith("temporal_")), 2
            ),
            "workflow_tasks": worker.get("temporal_workflow_task_execution_latency_count", 0.0),
            "local_activities": worker.get("temporal_local_activity_execution_latency_count", 0.0),
        }
        gc_ms = dict(sorted(gc_ms.items(), key=lambda kv: -kv[1]))
        return report, {**gc_ms, "total": round(sum(gc_ms.values()), 2)}


def garbage_collection(gc_ms: dict[str, float], unit: str) -> str:
    """`per_unit`'s garbage collection figures as a line of the bench's report."""
    by_process = ", ".join(f"{role} {ms:g}" for role, ms in gc_ms.items() if role != "total")
    return f"garbage collection per {unit}: {gc_ms['total']:g} ms" + (
        f" ({by_process})" if by_process else ""
    )
