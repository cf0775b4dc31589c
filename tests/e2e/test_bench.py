"""The benchmark command works end to end: `oms bench lifecycle` starts its private stack, drives
orders to delivery, runs the fixed baseline and reports what each order cost Temporal. Only
that it works and what it counts are checked here; its speed is for the bench itself to report
(figures in timed tests flake on shared machines)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.conftest import BIN

pytestmark = pytest.mark.e2e


def test_bench_lifecycle_reports_throughput_and_the_cost_of_an_order() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    done = subprocess.run(
        [str(BIN / "oms"), "bench", "lifecycle", "--orders", "4", "--concurrency", "2",
         "--split-every", "2", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    lifecycle, baseline = report["runs"]
    assert lifecycle["count"] == 4 and baseline["count"] == 4
    assert report["baseline_activities"] == 12
    assert report["throughput_ratio"] > 0 and report["orders_per_min"] > 0
    one, split = report["per_order"], report["per_split_order"]
    # A delivered order authorizes, reserves, invoices and captures at least once each, and
    # hears of its shipment and delivery; a split order ships twice.
    assert one["activities"] + one["local_activities"] >= 4
    assert one["events"] > one["workflow_tasks"] > 0
    assert split["events"] > one["events"]


def test_bench_capture_reports_the_burst_and_how_long_its_lifecycles_took_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    done = subprocess.run(
        [str(BIN / "oms"), "bench", "capture", "--orders", "60", "--concurrency", "4",
         "--shoppers", "20", "--drain-minutes", "3", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["accepted_per_minute"] > 0 and report["throughput_ratio"] > 0
    # The warm-up's 100 orders and the burst's 60 were all captured, then all started.
    assert report["lifecycle_starts_waiting_in_outbox"] <= 160
    assert report["drain"]["drained_after_seconds"] is not None
