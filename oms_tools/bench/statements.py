"""`--profile`: SQL statements per order, from Postgres's pg_stat_statements.

The embedded Postgres loads the extension with tracking off (it costs nothing then); for the
measured phase the bench turns tracking on, resets the counts, and afterwards reads how many
statements ran per order and which ran most, then turns tracking off again. Only statements
run on the bench stack's database are counted.

It also reads the time the statements took (pg_stat_statements' execution time, from the
statement's start to its result, so a wait for a row or advisory lock held by another
transaction counts): in all per order, and the statements that took longest. Under
concurrency these are the rows every order contends for (a best-selling SKU's inventory
level, say), which the counts alone do not show.
"""

from __future__ import annotations

from typing import Any

import asyncpg

TOP = 12


class StatementCounter:
    """Counts statements in the stack's database between `start` and `per_unit`."""

    def __init__(self, dsn: str, top: int = TOP) -> None:
        self.dsn = dsn
        self.top = top

    async def start(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'top'")
            await conn.execute("SELECT pg_reload_conf()")
            await conn.execute("SELECT pg_stat_statements_reset()")
        finally:
            await conn.close()

    async def per_unit(self, units: int) -> dict[str, Any]:
        """Statements (and transactions) per unit and their milliseconds per unit; the `top`
        statements by calls, and by time (`slowest`)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                """SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s
                   JOIN pg_database d ON d.oid = s.dbid
                   WHERE d.datname = current_database() ORDER BY s.calls DESC"""
            )
            await conn.execute("ALTER SYSTEM RESET pg_stat_statements.track")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        units = max(units, 1)
        calls = sum(r["calls"] for r in rows)
        # Explicit transactions (asyncpg's `COMMIT;`); a statement alone commits on its own.
        commits = sum(r["calls"] for r in rows if r["query"].strip(" ;\n").upper() == "COMMIT")
        spent = sum(r["total_exec_time"] for r in rows)
        slowest = sorted(rows, key=lambda r: -r["total_exec_time"])
        return {
            "per_order": round(calls / units, 1),
            "transactions_per_order": round(commits / units, 1),
            "ms_per_order": round(spent / units, 2),
            "top": [_summary(r, units) for r in rows[: self.top]],
            "slowest": [_summary(r, units) for r in slowest[: self.top]],
        }


def _summary(row: asyncpg.Record, units: int) -> dict[str, Any]:
    return {
        "calls_per_order": round(row["calls"] / units, 2),
        "ms_per_order": round(row["total_exec_time"] / units, 2),
        "query": _one_line(row["query"]),
    }


def _one_line(query: str) -> str:
    return " ".join(query.split())[:160]


def report(sql: dict[str, Any], unit: str) -> list[str]:
    """`per_unit`'s figures as printed lines: the statements that ran most and those that took
    longest, each with its calls and milliseconds per `unit`."""
    lines = [
        f"SQL per {unit}: {sql['per_order']:g} statements in {sql['transactions_per_order']:g} "
        f"transactions, {sql['ms_per_order']:g} ms (waits for locks included); most frequent "
        "(calls, ms):"
    ]
    lines += [_line(s) for s in sql["top"]]
    lines.append(f"longest in all, per {unit} (calls, ms):")
    lines += [_line(s) for s in sql["slowest"]]
    return lines


def _line(summary: dict[str, Any]) -> str:
    calls, ms = summary["calls_per_order"], summary["ms_per_order"]
    return f"  {calls:>6g} {ms:>7g}  {summary['query']}"
