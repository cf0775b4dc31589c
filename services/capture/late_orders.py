"""Late orders as a metric: how many orders are undelivered past their promised delivery
date today, read by the service's metrics refresher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from oms_platform import metrics
from services.capture import store


def late_orders_gauge(pool: asyncpg.Pool) -> Callable[[], Awaitable[None]]:
    """A read of the orders late today (UTC), for the metrics refresher."""

    async def read() -> None:
        async with pool.acquire() as conn:
            metrics.LATE_ORDERS.set(await store.count_late_today(conn))

    return read
