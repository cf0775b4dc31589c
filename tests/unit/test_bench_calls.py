"""What the benches' `--profile` reads from a process's /metrics, served over HTTP the way
every oms process serves it: the garbage collector's seconds, and failed workflow tasks by
the reason the worker gave."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, Counter, start_http_server

from oms_platform import heap
from oms_tools.bench import calls
from oms_tools.devstack.temporal_server import free_port


def test_a_scrape_reads_the_collectors_seconds_and_failed_workflow_tasks_by_reason() -> None:
    registry = CollectorRegistry()
    spent = heap.GcTime().install()
    try:
        registry.register(spent)
        # The Temporal SDK's counter, as the worker folds it into its endpoint.
        failed = Counter(
            "temporal_workflow_task_execution_failed",
            "failed workflow tasks",
            ["failure_reason"],
            registry=registry,
        )
        failed.labels("NonDeterminismError").inc(2)
        failed.labels("").inc()
        gc.collect()
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        try:
            counts = calls._scrape(f"http://127.0.0.1:{port}/metrics")
        finally:
            server.shutdown()
            thread.join()
    finally:
        spent.uninstall()
    assert counts[calls.GC_SECONDS] == sum(spent.seconds) > 0
    assert counts["temporal_workflow_task_failed:NonDeterminismError"] == 2
    assert counts["temporal_workflow_task_failed:unknown"] == 1
