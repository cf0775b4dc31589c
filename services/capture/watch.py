"""Order watchers: one LISTEN connection per process fans order changes out to every
WatchOrder stream, so watchers cost no connection and no polling of their own.

RecordOrderProgress NOTIFYs `store.ORDER_CHANGED_CHANNEL` with the order id when it commits
(a new order has no watchers yet, so SubmitOrder does not); the hub wakes that order's
watchers, which then read what is new.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg
import structlog

from oms_platform.errors import ResourceExhausted
from services.capture import store

log = structlog.get_logger("oms.capture.watch")

# How the listener connection shows in pg_stat_activity.
APPLICATION_NAME = "oms-capture-watch"


class OrderWatchHub:
    """Subscriptions per order id, woken by the process's one listener connection."""

    def __init__(
        self,
        dsn: str,
        channel: str = store.ORDER_CHANGED_CHANNEL,
        retry_seconds: float = 1.0,
        max_watchers: int = 2000,
    ) -> None:
        self._dsn = dsn
        self._max_watchers = max_watchers
        self._channel = channel
        self._retry_seconds = retry_seconds
        self._subscribers: dict[str, set[asyncio.Event]] = {}
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def subscribe(self, order_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the order changes (and after a reconnect, when changes
        may have been missed); the watcher clears it before reading. ResourceExhausted when
        the process already serves its most watchers."""
        if self.watcher_count() >= self._max_watchers:
            raise ResourceExhausted(
                f"this process serves its most open WatchOrder streams ({self._max_watchers}); "
                "retry shortly (another replica may have room)"
            )
        event = asyncio.Event()
        self._subscribers.setdefault(order_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._subscribers.get(order_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._subscribers[order_id]

    def watcher_count(self) -> int:
        """How many watchers are subscribed right now."""
        return sum(len(w) for w in self._subscribers.values())

    async def run(self) -> None:
        """Listen until cancelled, reconnecting when the connection is lost."""
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": APPLICATION_NAME}
                )
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("order watch listener cannot connect", error=str(error))
                await asyncio.sleep(self._retry_seconds)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                await conn.add_listener(self._channel, self._on_notify)
                self.listening.set()
                # Whatever changed while nobody listened is read now.
                self._wake_all()
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("order watch listener failed", error=str(error))
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
            log.warning("order watch listener lost; reconnecting")
            await asyncio.sleep(self._retry_seconds)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, order_id: object) -> None:
        for event in self._subscribers.get(str(order_id), ()):
            event.set()

    def _wake_all(self) -> None:
        for watchers in self._subscribers.values():
            for event in watchers:
                event.set()
