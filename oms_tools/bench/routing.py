"""`oms bench routing`: how long routing takes, measured on the pure domain (no I/O).

An order of `--lines` lines (one SKU each) is routed across `--locations` locations scattered
over the continental US, each stocking most SKUs, so no single location has everything and
routing has to search splits. The same run times a trivial baseline (one line, one location)
and reports the big order's latency as a multiple of it, so the number means the same on a
fast laptop and a slow CI runner.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oms_platform.settings import Settings
from services.fulfillment import domain


@dataclass(frozen=True)
class Scenario:
    """An order and the world it is routed in."""

    groups: list[domain.DeliveryGroup]
    candidates: list[domain.Candidate]
    availability: dict[tuple[str, str], int]
    destinations: dict[str, domain.Coordinates | None]

    def route(self, policy: domain.RoutingPolicy) -> domain.RoutingPlan:
        """Route it once."""
        return domain.route(
            self.groups, self.candidates, self.availability, self.destinations, policy
        )


def big_order(lines: int, locations: int, seed: int, stocked: float = 0.8) -> Scenario:
    """`lines` lines across `locations` locations, each stocking a share `stocked` of SKUs."""
    rng = random.Random(seed)
    candidates = [
        domain.Candidate(
            location_id=f"loc-{i:03d}",
            priority=rng.randint(1, 3),
            coordinates=domain.Coordinates(rng.uniform(26, 48), rng.uniform(-122, -71)),
            type=rng.choice(domain.LOCATION_TYPES),
        )
        for i in range(locations)
    ]
    order_lines = tuple(
        domain.RoutingLine(f"line-{i:03d}", f"SKU-{i:03d}", rng.randint(1, 3)) for i in range(lines)
    )
    availability = {
        (c.location_id, line.sku): rng.randint(1, 20)
        for c in candidates
        for line in order_lines
        if rng.random() < stocked
    }
    group = domain.DeliveryGroup(
        "dg-1", domain.PostalAddress(postal_code="60607", country_code="US"), order_lines
    )
    return Scenario([group], candidates, availability, {"dg-1": domain.Coordinates(41.88, -87.65)})


def trivial_order() -> Scenario:
    """The baseline: one line, one location that has it."""
    here = domain.Coordinates(41.88, -87.65)
    group = domain.DeliveryGroup(
        "dg-1",
        domain.PostalAddress(postal_code="60607", country_code="US"),
        (domain.RoutingLine("line-1", "SKU-1", 1),),
    )
    return Scenario(
        [group], [domain.Candidate("loc-1", 1, here)], {("loc-1", "SKU-1"): 5}, {"dg-1": here}
    )


def _timings(call: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    out: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(samples, 0.5) * 1000, 3),
        "p99_ms": round(_percentile(samples, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
    }


def measure(
    lines: int, locations: int, runs: int, seed: int, max_splits: int, stocked: float = 0.8
) -> dict[str, Any]:
    """Time the big order and the baseline in the same process; report both and the ratio."""
    policy = domain.RoutingPolicy(max_splits=max_splits)
    scenario = big_order(lines, locations, seed, stocked)
    baseline = trivial_order()
    plan = scenario.route(policy)
    big = _timings(lambda: scenario.route(policy), runs, warmup=3)
    small = _timings(lambda: baseline.route(policy), runs * 10, warmup=30)
    big_summary, small_summary = _summary(big), _summary(small)
    return {
        "lines": lines,
        "locations": locations,
        "runs": runs,
        "seed": seed,
        "stocked": stocked,
        "max_splits": max_splits,
        "plan": {
            "fulfillment_orders": len(plan.groups[0].allocations),
            "unallocated_units": sum(line.quantity for line in plan.unallocated),
        },
        "routing": big_summary,
        "baseline (1 line, 1 location)": small_summary,
        "p50_ratio": round(big_summary["p50_ms"] / small_summary["p50_ms"], 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `oms bench routing`."""
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--stocked", type=float, default=0.8, help="share of SKUs each location stocks"
    )
    parser.add_argument(
        "--max-splits", type=int, default=0, help="default: the routing_max_splits setting"
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench routing`."""
    max_splits = args.max_splits or Settings.from_env().routing_max_splits
    result = measure(args.lines, args.locations, args.runs, args.seed, max_splits, args.stocked)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
        return 0
    plan = result["plan"]
    print(
        f"routing {result['lines']} lines across {result['locations']} locations "
        f"({result['runs']} runs, {result['stocked']:.0%} of SKUs stocked per location, "
        f"max {max_splits} splits): "
        f"{plan['fulfillment_orders']} fulfillment orders, "
        f"{plan['unallocated_units']} units unallocated"
    )
    print(f"{'case':<34} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name in ("routing", "baseline (1 line, 1 location)"):
        row = result[name]
        print(f"{name:<34} {row['p50_ms']:>9} {row['p99_ms']:>9} {row['mean_ms']:>9}")
    print(f"\nrouting p50 = {result['p50_ratio']} x baseline p50")
    return 0
