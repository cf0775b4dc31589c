"""Background work that yields to the front door.

On one machine, starting order lifecycles as fast as orders arrive lets their processing
(Temporal, the worker, the services' activity calls, their Postgres commits) take the CPU
and the disk from SubmitOrder. The outbox relay therefore asks a `FrontDoorPacer` how many
lifecycles it may start. While SubmitOrder is busy and its latency is above the target,
starts drop to a floor at once; from there the pace is halved again whenever the target is
missed and raised a little whenever it is met with room to spare, at most once a window,
because processing lags its starts by seconds. When the front door is quiet, or meets the
target while starting many times the floor, starts are not paced at all. Orders are never
refused or reordered: a paced start waits in the outbox, exactly as it would during a
Temporal outage.

Where Temporal and the worker run on machines of their own, processing does not slow the
front door, the target is met, and nothing is ever paced.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("oms.pacing")

# The quantile of SubmitOrder latency held against the target.
QUANTILE = 0.95
# Below this many SubmitOrders in a window the front door is not busy enough to protect.
MIN_SAMPLES = 20
# The front door is looked at this many times a window (engaging needs only one look).
LOOKS_PER_WINDOW = 4
# A missed target halves the pace; a window well within it (under this share of the target)
# raises it by a share of the floor; in between it holds.
DECREASE = 0.5
WELL_WITHIN = 0.5
INCREASE_OF_FLOOR = 0.5
# Pacing stops once the pace reaches this many times the floor with the target met.
UNPACED_AT_FLOORS = 20


@dataclass(frozen=True)
class PacerSettings:
    """Target SubmitOrder latency (0 = never pace), the lowest pace, the evaluation window."""

    target_seconds: float
    floor_per_second: float
    window_seconds: float = 2.0


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank); 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class FrontDoorPacer:
    """Decides how many background starts may go now, from front-door latency."""

    def __init__(
        self, settings: PacerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()
        # Starts per second while paced; None while not paced.
        self._pace: float | None = None
        self._tokens = 0.0
        self._refilled_at = clock()
        self._looked_at = clock()
        self._changed_at = clock()

    @property
    def pace(self) -> float | None:
        """Starts per second allowed now, or None when starts are not paced."""
        return self._pace

    def observe(self, latency_seconds: float) -> None:
        """Record one SubmitOrder's latency."""
        self._samples.append((self._clock(), latency_seconds))

    def started(self, count: int) -> None:
        """Record that `count` background starts went out."""
        if self._pace is not None:
            self._tokens -= count

    def allowance(self, wanted: int) -> int:
        """How many of `wanted` starts may go now (all of them when not paced)."""
        now = self._clock()
        self._refill(now)
        if now - self._looked_at >= self._settings.window_seconds / LOOKS_PER_WINDOW:
            self._look(now)
        if self._pace is None:
            return wanted
        return max(0, min(wanted, int(self._tokens)))

    def seconds_until_next(self) -> float:
        """How long until one more start is allowed (0 when not paced)."""
        if self._pace is None:
            return 0.0
        return max(0.0, (1.0 - self._tokens) / self._pace)

    def _refill(self, now: float) -> None:
        if self._pace is not None:
            self._tokens = min(
                max(1.0, self._pace), self._tokens + (now - self._refilled_at) * self._pace
            )
        self._refilled_at = now

    def _look(self, now: float) -> None:
        before = self._pace
        self._adjust(now)
        if self._pace != before:
            self._changed_at = now
            log.info(
                "lifecycle starts paced" if self._pace is not None else "lifecycle starts unpaced",
                starts_per_second=None if self._pace is None else round(self._pace, 2),
            )

    def _adjust(self, now: float) -> None:
        s = self._settings
        self._looked_at = now
        while self._samples and self._samples[0][0] < now - s.window_seconds:
            self._samples.popleft()
        latencies = [latency for _, latency in self._samples]
        if s.target_seconds <= 0 or len(latencies) < MIN_SAMPLES:
            self._pace = None  # not busy: nothing to protect
            return
        observed = quantile(latencies, QUANTILE)
        if self._pace is None:
            if observed > s.target_seconds:  # busy and slow: straight to the floor
                self._pace, self._tokens = s.floor_per_second, 0.0
            return
        if now - self._changed_at < s.window_seconds:
            return  # the last change has not had a window to show its effect
        if observed > s.target_seconds:
            self._pace = max(s.floor_per_second, self._pace * DECREASE)
            self._tokens = min(self._tokens, max(1.0, self._pace))
        elif observed < s.target_seconds * WELL_WITHIN:
            self._pace += s.floor_per_second * INCREASE_OF_FLOOR
            if self._pace >= s.floor_per_second * UNPACED_AT_FLOORS:
                self._pace = None
