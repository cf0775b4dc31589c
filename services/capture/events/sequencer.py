"""The event log's sequencer as a background task of every capture replica: it gives committed
events their sequence (services.capture.store.events.sequence_pass) as soon as it hears of
them, by NOTIFY from the writing transaction or in-process from SubmitOrder (which does not
NOTIFY), and on a poll interval for what another replica wrote. Replicas take turns at the
head's lock; Postgres going away is waited out with back-off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from oms_platform import metrics
from oms_platform.db import DB_AWAY
from oms_platform.listen import Listener, subscribed
from oms_platform.passes import Pacing, run_passes
from services.capture.store import events as event_log
from services.capture.store import parked_events

log = structlog.get_logger("oms.capture.events")

# Another replica held the head: it may not have seen our events, so look again this soon.
BUSY_RETRY_SECONDS = 0.005


class Sequencer:
    """Numbers what has been written, whenever woken and on every poll."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        listener: Listener | None,
        poll_seconds: float,
        batch_size: int = 1000,
        park_max_seconds: float = 60.0,
        pass_interval_seconds: float = 0.0,
    ) -> None:
        self._pool = pool
        # The process's LISTEN connection: a writing transaction's NOTIFY (any replica's)
        # wakes the sequencer; without one it polls.
        self._listener = listener
        self._pacing = Pacing(
            poll_seconds, retry_cap_seconds=10.0, min_interval_seconds=pass_interval_seconds
        )
        self._batch_size = batch_size
        self._park_max_seconds = park_max_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Sequence now: events were committed in this process."""
        self._wake.set()

    async def run(self) -> None:
        """Sequence until cancelled."""
        with subscribed(self._listener, event_log.EVENTS_WRITTEN_CHANNEL, lambda _: self.wake()):
            await run_passes(
                "event sequencer", self.sequence_once, self._wake, self._pacing, DB_AWAY
            )

    async def sequence_once(self) -> bool:
        """One pass; True when there may be more to number now."""
        async with self._pool.acquire() as conn:
            # Steps parked too long are logged first, and numbered in this pass.
            await parked_events.release_overdue(conn, self._park_max_seconds)
            done = await event_log.sequence_pass(conn, self._batch_size)
        if done.numbered:
            metrics.EVENTS_SEQUENCED.inc(done.numbered)
        if done.busy:
            await asyncio.sleep(BUSY_RETRY_SECONDS)
            return True
        return done.numbered >= self._batch_size


def log_gauges(pool: asyncpg.Pool) -> Callable[[], Awaitable[None]]:
    """A read of the log's lag and its consumers' distances from the head, for the metrics
    refresher."""

    async def read() -> None:
        async with pool.acquire() as conn:
            metrics.EVENT_LOG_LAG.set(await event_log.unsequenced_age(conn))
            for consumer, behind in (await event_log.cursor_distances(conn)).items():
                metrics.EVENT_CURSOR_BEHIND.labels(consumer).set(behind)

    return read
