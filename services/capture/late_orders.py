"""Late orders as a metric: how many orders are undelivered past their promised delivery
date today, read by the service's metrics refresher.

The count is ListOrders' late count with no other filter (the same query, counted at today in
UTC as ListOrders counts without `as_of`), so the gauge and the listing never disagree on what
late means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime

import asyncpg

from oms_platform import metrics
from services.capture import domain, store


def _today() -> date:
    return datetime.now(UTC).date()


def late_orders_gauge(
    pool: asyncpg.Pool, today: Callable[[], date] = _today
) -> Callable[[], Awaitable[None]]:
    """A read of the orders late `today` (UTC), for the metrics refresher."""

    async def read() -> None:
        late = domain.OrderFilter(late_before=domain.late_as_of(None, today()))
        async with pool.acquire() as conn:
            metrics.LATE_ORDERS.set(await store.count_orders(conn, late))

    return read
