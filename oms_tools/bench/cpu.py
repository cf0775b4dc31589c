"""CPU time per order, by process: what each part of the stack spends on one order.

Throughput on a small machine is CPU divided by CPU per order, and the machine's own speed
drifts between runs; CPU per order does not drift with it, so it is the figure to compare
two versions by. `CpuMeter` reads the CPU time (user + system, from /proc through psutil) of
every stack process with all its descendants, live and already exited (Postgres backends,
the Temporal server, the simulator), and of the bench process itself, at the start and the
end of a phase, from /proc/<pid>/stat (Linux, as the benches' stack runs).
"""

from __future__ import annotations

import os
from pathlib import Path

BENCH = "bench"
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its descendants: its own, its exited children's (as the
    kernel counts them when reaped) and every live descendant's."""
    total, seen, todo = 0.0, set(), [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _own(current)
        todo.extend(_children(current))
    return total


def _own(pid: int, children: bool = True) -> float:
    """utime + stime (+ cutime + cstime: its exited children's) of /proc/<pid>/stat; 0 for a
    process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the fields after it start past its ")".
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / _TICKS


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


class CpuMeter:
    """CPU seconds of each named process (and the bench, as "bench") over a phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        spent = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        # The bench's own threads only: the stack's processes are its descendants too.
        spent[BENCH] = _own(os.getpid(), children=False)
        return spent

    def per_unit_ms(self, units: int) -> dict[str, float]:
        """Milliseconds of CPU per unit (order, workflow) since `start`, by process (replicas
        of a service summed under its name) and in all ("total"), largest first."""
        spent: dict[str, float] = {}
        for name, seconds in self._now().items():
            role = name.split("-")[0]
            spent[role] = spent.get(role, 0.0) + seconds - self._start.get(name, 0.0)
        per_unit = {name: round(1000 * s / max(units, 1), 1) for name, s in spent.items()}
        ordered = dict(sorted(per_unit.items(), key=lambda kv: -kv[1]))
        return {"total": round(sum(per_unit.values()), 1), **ordered}
