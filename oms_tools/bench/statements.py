"""`--profile`: SQL statements per order, from Postgres's pg_stat_statements.

The embedded Postgres loads the extension with tracking off (it costs nothing then); for the
measured phase the bench turns tracking on, resets the counts, and afterwards reads how many
statements ran per order and which ran most, then turns tracking off again. Only statements
run on the bench stack's database are counted.
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
        """Statements (and transactions) per unit, and the `top` statements by calls."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                """SELECT s.query, s.calls FROM pg_stat_statements s
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
        return {
            "per_order": round(calls / units, 1),
            "transactions_per_order": round(commits / units, 1),
            "top": [
                {"calls_per_order": round(r["calls"] / units, 2), "query": _one_line(r["query"])}
                for r in rows[: self.top]
            ],
        }


def _one_line(query: str) -> str:
    return " ".join(query.split())[:160]
