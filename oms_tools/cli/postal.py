"""`oms postal load us | --file PATH` and `oms postal list`: the postal codes distance routing
locates recipients by, written straight into fulfillment's schema (like `oms migrate`: an
operator's step, not a service call)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from oms_platform import db
from oms_platform.settings import Settings
from services.fulfillment import domain, handlers, postal_data
from services.fulfillment.store import SCHEMA

# The data sets that ship inside a package, by the name `oms postal load` takes.
DATASETS = {"us": postal_data.us_zip_codes}


@asynccontextmanager
async def _fulfillment_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(settings.dsn, SCHEMA, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


def _read(args: argparse.Namespace) -> list[domain.CountryPostalCodes]:
    """The countries the command names, read and checked (nothing written yet)."""
    if args.file:
        countries = frozenset(c.upper() for c in args.country)
        return postal_data.geonames_file(Path(args.file), countries)
    return [DATASETS[args.dataset]()]


async def cmd_postal(settings: Settings, args: argparse.Namespace) -> int:
    """`oms postal load` and `oms postal list`."""
    if args.postal_command == "list":
        async with _fulfillment_pool(settings) as pool:
            counts = await handlers.postal_code_counts(pool)
        if args.json:
            print(json.dumps([vars(c) for c in counts], indent=2))
            return 0
        print(f"{'country':<8} {'codes':>8}  source")
        for c in counts:
            print(f"{c.country_code:<8} {c.codes:>8,}  {c.source}")
        return 0
    if bool(args.dataset) == bool(args.file):
        print("error: name a data set (us) or --file PATH, not both", file=sys.stderr)
        return 2
    if args.country and not args.file:
        print("error: --country picks lines of a --file", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        countries = _read(args)
    except domain.MalformedPostalData as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {args.file}: {error.strerror or error}", file=sys.stderr)
        return 1
    async with _fulfillment_pool(settings) as pool:
        await handlers.load_postal_codes(pool, countries)
    seconds = time.monotonic() - started
    report = {
        c.country_code: {"loaded": len(c.codes), "skipped": c.skipped, "source": c.source}
        for c in countries
    }
    if args.json:
        print(json.dumps({"countries": report, "seconds": round(seconds, 2)}, indent=2))
        return 0
    for country, figures in report.items():
        skipped = figures["skipped"]
        without = f" ({skipped:,} without coordinates left out)" if skipped else ""
        print(
            f"{country}: {figures['loaded']:,} postal codes loaded from "
            f"{figures['source']}{without}"
        )
    print(f"in {seconds:.1f} s")
    return 0
