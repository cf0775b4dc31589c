"""How long the dev stack waits before starting a process that exited.

A process that dies straight after starting (a port still held, a database still recovering,
a bad setting) would otherwise be restarted in a tight loop that burns the CPU the rest of the
stack needs and floods the log. Each quick death doubles the wait, up to a cap; a process that
ran long enough to count as healthy starts over from the first delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential restart delays for one process: `initial`, doubling, at most `cap`."""

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
