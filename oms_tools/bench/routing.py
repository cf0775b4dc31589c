"""`oms bench routing`: how long routing takes, measured on the pure domain (no I/O), and with
the recipient located through the store among every US ZIP.

An order of `--lines` lines (one SKU each) is routed across `--locations` locations scattered
over the continental US, each stocking most SKUs, so no single location has everything and
routing has to search splits. The same run times a trivial baseline (one line, one location)
and reports the big order's latency as a multiple of it, so the number means the same on a
fast laptop and a slow CI runner.

Then, unless `--postal-codes 0`, a private embedded Postgres gets fulfillment's schema and every
US ZIP the `zipcodes` package ships (as `oms postal load us` loads them), and `--postal-codes`
orders of `--postal-lines` lines, each to a different real ZIP, are routed one after another as
fulfillment routes them: the recipient's coordinates looked up in Postgres (`coordinates_of`),
then the domain's plan over the same kind of scattered locations. Their p50/p99 are reported
against the same baseline, with the plan Postgres uses for the lookup.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oms_platform import db
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from services.fulfillment import bootstrap, domain, handlers, postal_data, store


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


# The lookup as routing runs it, for EXPLAIN (a ZIP+4, so every prefix length is probed).
EXPLAINED_CODE = "100010001"


async def measure_postal(
    destinations: int,
    lines: int,
    locations: int,
    seed: int,
    max_splits: int,
    stocked: float = 0.8,
) -> dict[str, Any]:
    """Route `destinations` orders of `lines` lines to as many distinct real US ZIPs, each
    recipient located through the store in a private Postgres holding every US ZIP."""
    policy = domain.RoutingPolicy(max_splits=max_splits)
    world = big_order(lines, locations, seed, stocked)
    [template] = world.groups
    data_dir = Path(tempfile.mkdtemp(prefix="oms-bench-routing-"))
    postgres = EmbeddedPostgres(data_dir / "pg" / "data", free_port(), durable=False)
    postgres.start()
    try:
        await db.ensure_database(postgres.dsn)
        await db.migrate(postgres.dsn, bootstrap.SCHEMA, bootstrap.MIGRATIONS)
        pool = await db.create_pool(postgres.dsn, bootstrap.SCHEMA, min_size=1, max_size=1)
        try:
            started = time.perf_counter()
            us = postal_data.us_zip_codes()
            await handlers.load_postal_codes(pool, [us])
            load_seconds = time.perf_counter() - started
            codes = random.Random(seed).sample(
                [c.postal_code for c in us.codes], min(destinations, len(us.codes))
            )
            async with pool.acquire() as conn:
                plan = await conn.fetch(
                    "EXPLAIN " + store.SQL_POSTAL_COORDINATES,
                    "US",
                    domain.postal_prefixes(EXPLAINED_CODE),
                )
                lookups: list[float] = []
                totals: list[float] = []
                located = 0
                for code in codes:
                    group = dataclasses.replace(
                        template, address=domain.PostalAddress(postal_code=code, country_code="US")
                    )
                    begun = time.perf_counter()
                    where = await store.coordinates_of(conn, group.address)
                    looked_up = time.perf_counter()
                    domain.route(
                        [group], world.candidates, world.availability, {"dg-1": where}, policy
                    )
                    lookups.append(looked_up - begun)
                    totals.append(time.perf_counter() - begun)
                    located += where is not None
        finally:
            await pool.close()
    finally:
        postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "codes_loaded": len(us.codes),
        "load_seconds": round(load_seconds, 2),
        "destinations": len(codes),
        "located": located,
        "lines": lines,
        "lookup": _summary(lookups),
        "lookup_and_routing": _summary(totals),
        "lookup_plan": [row[0] for row in plan],
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
    parser.add_argument(
        "--postal-codes",
        type=int,
        default=10_000,
        help="orders routed to as many distinct real US ZIPs, each located through Postgres "
        "with every US ZIP loaded (0: skip; starts a private Postgres)",
    )
    parser.add_argument("--postal-lines", type=int, default=5, help="lines of each of those orders")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


async def run(args: argparse.Namespace) -> int:
    """Entry point of `oms bench routing`."""
    max_splits = args.max_splits or Settings.from_env().routing_max_splits
    result = measure(args.lines, args.locations, args.runs, args.seed, max_splits, args.stocked)
    baseline = result["baseline (1 line, 1 location)"]
    if args.postal_codes > 0:
        postal = await measure_postal(
            args.postal_codes, args.postal_lines, args.locations, args.seed, max_splits,
            args.stocked,
        )  # fmt: skip
        total = postal["lookup_and_routing"]
        postal["p50_ratio"] = round(total["p50_ms"] / baseline["p50_ms"], 1)
        postal["p99_ratio"] = round(total["p99_ms"] / baseline["p99_ms"], 1)
        result["postal"] = postal
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
    if "postal" in result:
        _print_postal(result["postal"])
    return 0


def _print_postal(postal: dict[str, Any]) -> None:
    print(
        f"\nwith {postal['codes_loaded']:,} US ZIPs loaded in Postgres "
        f"({postal['load_seconds']} s to load): {postal['destinations']:,} orders of "
        f"{postal['lines']} lines to distinct ZIPs, {postal['located']:,} located"
    )
    print(f"{'case':<34} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name, key in (("postal lookup", "lookup"), ("lookup + routing", "lookup_and_routing")):
        row = postal[key]
        print(f"{name:<34} {row['p50_ms']:>9} {row['p99_ms']:>9} {row['mean_ms']:>9}")
    print(
        f"\nlookup + routing p50 = {postal['p50_ratio']} x baseline p50, "
        f"p99 = {postal['p99_ratio']} x baseline p99"
    )
    print("lookup plan: " + " / ".join(line.strip() for line in postal["lookup_plan"]))
