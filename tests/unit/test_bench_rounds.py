"""`oms bench lifecycle --rounds`: each round's ratio, and the median round's reported."""

from __future__ import annotations

import argparse
import json

import pytest

from oms_tools.bench.command import add_arguments
from oms_tools.bench.common import Run
from oms_tools.bench.lifecycle import _report

COST = {
    "events": 20.0, "workflow_tasks": 2.5, "activities": 0.0, "local_activities": 6.0,
    "signals": 2.0, "updates": 0.0, "timers": 0.0,
}  # fmt: skip


def phases(*per_minute: tuple[float, float]) -> list[Run]:
    """Lifecycle and baseline runs of 60 orders each, at the given orders/min, in order."""
    runs = []
    for lifecycle, baseline in per_minute:
        runs.append(Run("lifecycle", 60, 3600 / lifecycle, [1.0]))
        runs.append(Run("baseline", 60, 3600 / baseline, [1.0]))
    return runs


def reported(runs: list[Run], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    extra = {
        "orders": 60, "concurrency": 8, "baseline_activities": 12, "split_every": 0,
        "per_order": COST, "per_split_order": COST,
        "cpu_ms_per_order": {"total": 1.0}, "baseline_cpu_ms_per_order": {"total": 1.0},
    }  # fmt: skip
    _report(runs, True, extra)
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


def test_each_round_is_reported_and_the_median_round_gives_the_ratio_and_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = reported(phases((500, 1000), (600, 500), (450, 600)), capsys)
    assert report["rounds"] == [
        {"orders_per_min": 500.0, "baseline_per_min": 1000.0, "ratio": 0.5},
        {"orders_per_min": 600.0, "baseline_per_min": 500.0, "ratio": 1.2},
        {"orders_per_min": 450.0, "baseline_per_min": 600.0, "ratio": 0.75},
    ]
    # The middle ratio is 0.75, the third round's: its rate is the one reported with it.
    assert report["throughput_ratio"] == 0.75
    assert report["orders_per_min"] == 450.0
    assert len(report["runs"]) == 6  # type: ignore[arg-type]


def test_an_even_count_reports_the_lower_middle_round_and_one_round_is_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = reported(phases((500, 1000), (600, 500)), capsys)
    assert (report["throughput_ratio"], report["orders_per_min"]) == (0.5, 500.0)
    report = reported(phases((540, 600)), capsys)
    assert (report["throughput_ratio"], report["orders_per_min"]) == (0.9, 540.0)


@pytest.mark.parametrize("given", ["0", "-2", "two"])
def test_rounds_must_be_a_whole_number_of_one_or_more(given: str) -> None:
    parser = argparse.ArgumentParser(prog="oms bench", exit_on_error=False)
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["lifecycle", "--rounds", given])
    assert parser.parse_args(["lifecycle", "--rounds", "3"]).rounds == 3
