"""The Postgres books of a simulated outside system (a payment processor, a carrier).

A simulator keeps its records in a schema of its own, apart from every service's, as the real
system keeps its books apart from ours: a restart forgets nothing and every replica of the
service using it sees the same books. The schema is created on first use.
"""

from __future__ import annotations

import asyncpg

from oms_platform import db

# Two processes creating a simulator's schema at once would race on the catalog; one at a time.
SQL_LOCK_DDL = "SELECT pg_advisory_xact_lock(hashtext($1))"


class SimulatedBooks:
    """A pool onto one simulator's schema, opened (and the schema created with `ddl`) on first
    use. Its SQL spells the schema: the pool's connections keep the default search path."""

    def __init__(self, dsn: str, schema: str, ddl: str, *, max_size: int = 2) -> None:
        self._dsn = dsn
        self._schema = schema
        self._ddl = ddl
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def pool(self) -> asyncpg.Pool:
        """The books' pool, created with the schema the first time it is asked for."""
        if self._pool is None:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._max_size,
                server_settings={"application_name": self._schema},
                reset=db.keep_session,  # no reset statement on every release
            )
            assert pool is not None
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(SQL_LOCK_DDL, f"{self._schema}-ddl")
                await conn.execute(self._ddl)
            self._pool = pool
        return self._pool

    async def close(self) -> None:
        """Close the pool (the next use opens it again)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
