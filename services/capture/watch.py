"""Order watchers: the process's one LISTEN connection (oms_platform/listen.py) fans order
changes out to every WatchOrder stream, so watchers cost no connection and no polling of their
own.

RecordOrderProgress NOTIFYs `store.ORDER_CHANGED_CHANNEL` with the order id when it commits
(a new order has no watchers yet, so SubmitOrder does not); the hub wakes that order's
watchers, which then read what is new.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from oms_platform.errors import ResourceExhausted
from oms_platform.listen import Listener
from services.capture import store


class OrderWatchHub:
    """Subscriptions per order id, woken by the process's one listener connection."""

    def __init__(
        self,
        listener: Listener,
        channel: str = store.ORDER_CHANGED_CHANNEL,
        max_watchers: int = 2000,
    ) -> None:
        self._listener = listener
        self._max_watchers = max_watchers
        self._channel = channel
        self._subscribers: dict[str, set[asyncio.Event]] = {}

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
        """Follow order changes until cancelled (after a reconnect of the process's listener,
        when changes may have been missed, every watcher reads for itself)."""
        await self._listener.hold(self._channel, self._on_notify)

    def _on_notify(self, order_id: str | None) -> None:
        if order_id is None:
            self._wake_all()
            return
        for event in self._subscribers.get(order_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for watchers in self._subscribers.values():
            for event in watchers:
                event.set()
