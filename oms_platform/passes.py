"""The loop every background consumer of a table runs: a pass, then wait to be woken.

The event sequencer, the webhook fan-out and the notification consumer and sender each take
the next batch of work in one pass. `run_passes` runs such a pass for ever:

- the wake event is cleared *before* each pass, so a wake-up that arrives during a pass
  (a NOTIFY for a row committed meanwhile) means another pass rather than being lost;
- a pass that says there may be more goes again at once; otherwise the loop waits until woken
  or `poll_seconds` passed (what other replicas wrote, work falling due);
- a transient failure (the database away) is logged and waited out with back-off; anything
  else is raised to the service's supervision;
- with `min_interval_seconds`, a pass that follows a wake-up starts at most that long after
  the one before. Under load every commit NOTIFYs, and a pass per NOTIFY costs a transaction
  for a handful of rows; a pass per interval takes the same rows in far fewer transactions,
  and adds at most that much delay. A pass that says there may be more (a full batch: a
  backlog) goes again at once: waiting would gather nothing and only hold the backlog back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from oms_platform.backoff import Backoff
from oms_platform.listen import woken

log = structlog.get_logger("oms.passes")


@dataclass(frozen=True)
class Pacing:
    """How a pass loop waits: `poll_seconds` when idle and not woken, at most one pass per
    `min_interval_seconds`, back-off from `poll_seconds` up to `retry_cap_seconds` after
    transient failures."""

    poll_seconds: float
    retry_cap_seconds: float = 30.0
    min_interval_seconds: float = 0.0


async def run_passes(
    name: str,
    one_pass: Callable[[], Awaitable[bool]],
    wake: asyncio.Event,
    pacing: Pacing,
    transient: tuple[type[BaseException], ...],
) -> None:
    """Run `one_pass` (True: there may be more now) until cancelled; see the module."""
    backoff = Backoff(initial=pacing.poll_seconds, cap=pacing.retry_cap_seconds)
    last_start = float("-inf")
    more = False
    while True:
        wait = last_start + pacing.min_interval_seconds - time.monotonic()
        if wait > 0 and not more:
            await asyncio.sleep(wait)
        last_start = time.monotonic()
        wake.clear()  # before the pass: a wake-up during it means another pass
        try:
            more = await one_pass()
            backoff.reset()
        except transient as error:
            more = False
            delay = backoff.delay_after(0.0)
            log.warning(f"{name} pass failed", error=str(error), retry_in=delay)
            await asyncio.sleep(delay)
            continue
        if not more:
            await woken(wake, pacing.poll_seconds)
