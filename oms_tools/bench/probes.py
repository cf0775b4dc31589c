"""`--profile`: what a bench records while its measured phase runs, per unit of work: a py-spy
profile of each process, SQL statements (pg_stat_statements), and from every process's /metrics
the calls it served and the time its garbage collector took. The stack must serve metrics
(`calls.metrics_base`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oms_tools.bench.calls import CallCounter
from oms_tools.bench.profile import Profiler
from oms_tools.bench.statements import TOP, StatementCounter
from oms_tools.devstack.stack import Stack


class Probes:
    """Started before the measured phase, stopped after it."""

    def __init__(self, stack: Stack, directory: Path, top: int = TOP) -> None:
        self.profiler = Profiler(directory, stack.pids())
        self.statements = StatementCounter(stack.settings.database_url, top=top)
        self.calls = CallCounter(stack.settings)

    async def start(self) -> None:
        await self.statements.start()
        await self.calls.start()
        self.profiler.start()

    def stop_profile(self) -> dict[str, Any]:
        """Stop sampling (as soon as the phase ends: what follows is not the phase's)."""
        return self.profiler.stop()

    async def per_unit(self, units: int) -> dict[str, Any]:
        """The statements, the calls and the garbage collectors' milliseconds per unit."""
        calls, gc_ms = await self.calls.per_unit(units)
        return {
            "statements": await self.statements.per_unit(units),
            "calls": calls,
            "gc_ms": gc_ms,
        }

    async def stop(self, units: int) -> dict[str, Any]:
        """Per unit: the profile summary, the statements, the calls and the garbage collectors'
        milliseconds."""
        return {"profile": self.stop_profile(), **await self.per_unit(units)}
