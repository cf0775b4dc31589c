"""The benchmark commands work end to end: `oms bench lifecycle` starts its private stack, drives
orders to delivery, runs the fixed baseline and reports what each order cost Temporal (and,
with --profile, where each process spent its CPU); `capture` reports the burst; `routing` the
pure plan and orders to real ZIPs located in Postgres; `servicing` the round trips of changes;
`memory` the worker's RSS; `events` what consumers of the event log cost and how late events
reach them; `subscriptions` one cycle of many subscribers. Only that they work and what they
count are checked here; speed is for the benches themselves to report (figures in timed tests
flake on shared machines)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oms_tools.devstack.replicas import METRICS_ROLES
from tests.e2e.conftest import BIN

pytestmark = pytest.mark.e2e


def test_bench_lifecycle_reports_throughput_the_cost_of_an_order_and_a_profile(
    tmp_path: Path,
) -> None:
    # One run both reports and profiles: a lifecycle bench starts a whole stack.
    report = _bench(
        "lifecycle", "--orders", "4", "--concurrency", "2", "--split-every", "2",
        "--profile", str(tmp_path),
    )  # fmt: skip
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
    # CPU per order by process: every part of the stack worked on the orders; the baseline
    # ran on the Temporal server and the bench's own worker only.
    cpu, baseline_cpu = report["cpu_ms_per_order"], report["baseline_cpu_ms_per_order"]
    for part in ("worker", "temporal", "postgres", "capture", "fulfillment", "payments"):
        assert cpu[part] > 0, part
    assert cpu["total"] == pytest.approx(sum(v for k, v in cpu.items() if k != "total"), abs=1)
    assert baseline_cpu["temporal"] > 0 and baseline_cpu["bench"] > 0

    profile = report["profile"]
    assert set(profile) == {"worker", "capture", "fulfillment", "payments", "servicing"}
    for name, process in profile.items():
        assert process["file"] == str(tmp_path / f"{name}.json")
        # A speedscope file (with no samples for a process idle throughout, e.g. servicing).
        assert "profiles" in json.loads(Path(process["file"]).read_text())
    # The worker ran every lifecycle, so it was busy and its top functions add up.
    assert profile["worker"]["busy_seconds"] > 0
    top = profile["worker"]["top"]
    # Each share is rounded to three places, so together they may pass 1 by half a
    # thousandth each.
    assert 0 < sum(f["share"] for f in top) <= 1 + 0.0005 * len(top)
    # SQL per order: every order is captured and committed in several transactions; the
    # most frequent statements come first.
    sql = report["statements"]
    assert sql["per_order"] > sql["transactions_per_order"] >= 1
    calls = [s["calls_per_order"] for s in sql["top"]]
    assert calls and calls == sorted(calls, reverse=True)
    # The time they took (lock waits included): the longest come first in a list of their own,
    # none longer than all of them, and none of the most frequent longer than the longest.
    spent = [s["ms_per_order"] for s in sql["slowest"]]
    assert sql["ms_per_order"] > 0 and spent == sorted(spent, reverse=True)
    assert max(s["ms_per_order"] for s in sql["top"]) <= spent[0] <= sql["ms_per_order"]
    # Calls per order, by the process that served them: each order submitted and routed once,
    # its progress reported, and the worker's workflow tasks and local activities counted.
    served = report["calls"]
    assert served["capture"]["CaptureService.SubmitOrder"] == 1
    assert served["fulfillment"]["FulfillmentService.CreateFulfillmentOrders"] == 1
    assert served["capture"]["CaptureService.RecordOrderProgressBatch"] >= 1
    assert served["total"]["workflow_tasks"] >= 2 and served["total"]["local_activities"] >= 4
    # The milliseconds each process's garbage collector took per order, and their sum (four
    # orders may see no collection at all: reading the seconds is tested in
    # tests/unit/test_bench_calls.py).
    gc_ms = report["gc_ms"]
    assert set(gc_ms) - {"total"} <= set(METRICS_ROLES)
    assert gc_ms["total"] == pytest.approx(
        sum(v for k, v in gc_ms.items() if k != "total"), abs=0.05
    )


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


def _bench(*args: str) -> dict[str, Any]:
    """`oms bench <args> --json`, its report parsed (the bench fails, and so the test, when a
    change did not do what it says)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    done = subprocess.run(
        [str(BIN / "oms"), "bench", *args, "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_bench_servicing_times_each_change_and_profile_counts_what_one_cancel_costs(
    tmp_path: Path,
) -> None:
    # One run both times every change and profiles the cancels: a servicing bench starts a
    # whole stack, and --profile probes the cancel phase whether or not the others run.
    report = _bench(
        "servicing", "--orders", "5", "--concurrency", "2", "--profile", str(tmp_path),
    )  # fmt: skip

    for change in ("cancel", "add_items", "appease", "return", "baseline"):
        assert report[f"{change}_p99_ms"] >= report[f"{change}_p50_ms"] > 0
    assert [run["count"] for run in report["runs"]] == [5] * 5
    # Each change did what it says: canceled, a mug more, $1 refunded, a return order each.
    assert report["checked"] == {
        "orders_canceled": 5,
        "items_added": 5,
        "goodwill_refunded": 5,
        "returns_opened": 5,
        "return_orders_listed": 5,
    }
    # What each cancel cost each process: the workflow's worker and the services it called.
    cpu = report["cancel_cpu_ms"]
    assert cpu["total"] == pytest.approx(sum(v for k, v in cpu.items() if k != "total"), abs=1)
    assert all(cpu[name] > 0 for name in ("worker", "temporal", "servicing", "payments"))

    probes = report["probes"]
    # Each cancel: one SubmitCancel at servicing, and the workflow's calls to the services
    # that release the stock, give the money back and record the order's progress.
    calls = probes["calls"]
    assert calls["servicing"]["ServicingService.SubmitCancel"] == 1
    assert calls["fulfillment"]["FulfillmentService.CancelFulfillmentOrderLines"] >= 1
    assert calls["payments"]["PaymentsService.CreateCreditMemo"] >= 1
    assert calls["capture"]["CaptureService.RecordOrderProgressBatch"] >= 1
    assert calls["total"]["oms_calls"] >= 4
    assert calls["total"]["workflow_tasks"] >= 1 and calls["total"]["local_activities"] >= 3
    # The Update's share of its order's history: accepted once, its steps as local activities.
    history = probes["history"]
    assert history["updates"] == 1
    assert history["workflow_tasks"] >= 1 and history["local_activities"] >= 3
    sql = probes["statements"]
    assert sql["per_order"] > 0 and sql["transactions_per_order"] >= 1
    assert any("idempotency_keys" in top["query"] for top in sql["top"])
    assert 0 < sql["slowest"][0]["ms_per_order"] <= sql["ms_per_order"]
    assert set(probes["profile"]) == {"worker", "capture", "fulfillment", "payments", "servicing"}
    for process in probes["profile"].values():
        assert "profiles" in json.loads(Path(process["file"]).read_text())


def test_bench_routing_reports_the_pure_plan_and_orders_to_real_zips_located_in_postgres() -> None:
    report = _bench("routing", "--runs", "10", "--postal-codes", "300")

    # The pure-domain figures, as before.
    assert report["routing"]["p50_ms"] > 0 and report["p50_ratio"] > 0
    assert report["baseline (1 line, 1 location)"]["p50_ms"] > 0
    # Orders to 300 distinct real ZIPs, every one located among all the US ZIPs loaded.
    postal = report["postal"]
    assert postal["codes_loaded"] > 40_000
    assert postal["destinations"] == postal["located"] == 300
    for case in ("lookup", "lookup_and_routing"):
        assert postal[case]["p99_ms"] >= postal[case]["p50_ms"] > 0
    assert postal["lookup_and_routing"]["p50_ms"] >= postal["lookup"]["p50_ms"]
    assert postal["p50_ratio"] > 0 and postal["p99_ratio"] > 0
    plan = "\n".join(postal["lookup_plan"])
    assert "postal_coordinates_pkey" in plan and "Seq Scan" not in plan


def test_bench_memory_reports_the_worker_rss_idle_cached_and_evicted() -> None:
    report = _bench("memory", "--orders", "10", "--concurrency", "4")

    assert report["orders"] == 10
    assert report["rss_cached_mib"] >= report["rss_idle_mib"] > 0
    assert report["rss_evicted_mib"] > 0 and report["rss_restarted_mib"] > 0
    assert report["replay_seconds"] > 0
    assert report["rss_by_process_mib"]["worker"] == report["rss_cached_mib"]


def test_bench_events_reports_the_consumers_cost_rates_and_lag_and_every_event_arrived() -> None:
    report = _bench(
        "events", "--orders", "6", "--concurrency", "2", "--subscribers", "2", "--webhooks", "1"
    )

    without, with_consumers = report["runs"]
    assert without["count"] == with_consumers["count"] == 6
    # Alternated: reference, consumers, consumers, reference, three orders each.
    assert [h["count"] for h in report["halves"]] == [3, 3, 3, 3]
    assert report["orders_per_min_without"] > 0 and report["orders_per_min_with"] > 0
    assert report["consumer_cost"] == pytest.approx(
        1 - report["orders_per_second_with"] / report["orders_per_second_without"], abs=0.01
    )
    # A delivered order's log: captured, paid, allocated, picked, packed, shipped, delivered …
    assert report["events_per_order"] >= 7
    assert report["events"] >= 6 * report["events_per_order"]
    rates = report["events_per_second_per_stream"]
    assert len(rates) == 2 and all(r > 0 for r in rates)
    assert report["events_per_second"] == pytest.approx(sum(rates), abs=0.02)
    assert report["lag_p99_ms"] >= report["lag_p50_ms"] > 0
    assert report["webhook_lag_p99_ms"] >= report["webhook_lag_p50_ms"] > 0
    # Every event of the run reached the receiver once (it may have more: events sequenced
    # between the subscription and the run), signed; each stream read the whole log in order.
    assert report["webhook_deliveries"] >= report["events"]
    assert report["webhook_deliveries_per_second"] > 0
    checked = report["checked"]
    assert checked["gaps"] == 0 and checked["webhook_missing"] == 0
    assert checked["signatures_verified"] >= 1 and checked["signatures_bad"] == 0
    assert all(n > report["events"] for n in checked["events_per_stream"])


def test_bench_subscriptions_reports_creation_the_cycle_and_growth_with_one_order_each() -> None:
    report = _bench("subscriptions", "--subscribers", "12", "--concurrency", "4", "--due-in", "8")

    assert report["subscribers"] == 12 and report["created_per_second"] > 0
    cycle = report["cycle"]
    # One cycle due for all: capture holds exactly one order for each subscription's cycle.
    assert cycle["orders"] == 12 and cycle["most_orders_for_one_cycle"] == 1
    assert 0 <= cycle["first_accepted_s"] <= cycle["half_accepted_s"] <= cycle["all_accepted_s"]
    assert [p["subscribers"] for p in report["growth"]] == [6, 12]
    # Each waiting subscription is a workflow in Temporal's database, which grows with them.
    idle, full = report["idle"], report["growth"][1]
    assert full["temporal_db_mib"] > idle["temporal_db_mib"] > 0
    assert report["after_cycle"]["worker_rss_mib"] > 0
    target = report["extrapolated"]
    assert target["subscribers"] == 50_000 and set(target["formulas"]) >= {
        "create_seconds", "cycle_seconds", "worker_rss_mib", "temporal_db_mib"
    }  # fmt: skip


def test_bench_servicing_cancel_only_times_the_cancel_and_its_baseline_alone() -> None:
    report = _bench("servicing", "--orders", "4", "--concurrency", "2", "--cancel-only")

    # Only the whole-order cancel and the read it is compared with ran, each once per order.
    assert [run["count"] for run in report["runs"]] == [4, 4]
    assert report["cancel_p99_ms"] >= report["cancel_p50_ms"] > 0
    assert report["baseline_p99_ms"] >= report["baseline_p50_ms"] > 0
    assert not any(key.startswith(("add_items", "appease", "return")) for key in report)
    # Every cancel answered with the order canceled (the bench fails otherwise).
    assert report["checked"] == {"orders_canceled": 4}
    cpu = report["cancel_cpu_ms"]
    assert all(cpu[name] > 0 for name in ("worker", "temporal", "servicing", "payments"))
    assert "probes" not in report
