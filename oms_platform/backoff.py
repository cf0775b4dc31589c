"""How long to wait before trying again something that failed: a dev-stack process that
exited, a service's background task that raised, an outbox relay whose Temporal or Postgres
is away.

Something that fails straight after starting (a port still held, a database still recovering,
a bad setting) would otherwise be retried in a tight loop that burns the CPU others need and
floods the log. Each quick failure doubles the wait, up to a cap; a run long enough to count
as healthy (or a `reset` after a success) starts over from the first delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential retry delays for one thing that fails: `initial`, doubling, at most `cap`."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    # A run at least this long resets the delay to `initial`: the last death was not part of
    # a crash loop.
    healthy_after: float = 30.0
    _next: float = field(default=-1.0, repr=False)

    def delay_after(self, ran_for: float) -> float:
        """The wait before the next start, for a process that ran `ran_for` seconds."""
        if self._next < 0 or ran_for >= self.healthy_after:
            self._next = self.initial
        delay = min(self._next, self.cap)
        self._next = min(self.cap, self._next * self.factor)
        return delay

    def reset(self) -> None:
        """Start over from `initial`: what was retried has succeeded."""
        self._next = -1.0
