"""Order watchers: the process's one LISTEN connection (oms_platform/listen.py) fans order
changes out to every WatchOrder stream, so watchers cost no connection and no polling of their
own.

RecordOrderProgress NOTIFYs `store.ORDER_CHANGED_CHANNEL` with the order id when it commits
(a new order has no watchers yet, so SubmitOrder does not); the hub wakes that order's
watchers, which then read what is new.
"""

from __future__ import annotations

from oms_platform.listen import Listener, StreamHub
from services.capture import store


class OrderWatchHub(StreamHub):
    """WatchOrder streams, subscribed per order id."""

    def __init__(
        self,
        listener: Listener,
        channel: str = store.ORDER_CHANGED_CHANNEL,
        max_watchers: int = 2000,
    ) -> None:
        super().__init__(listener, channel, what="WatchOrder", max_streams=max_watchers, keyed=True)
