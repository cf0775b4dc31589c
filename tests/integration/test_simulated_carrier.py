"""The simulated carrier's parcels in Postgres: every servicing replica, and a restarted one,
talks to the same carrier."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.servicing.carrier import (
    DELIVERED,
    IN_TRANSIT,
    LABEL_CREATED,
    LabelRequest,
    SimulatedCarrier,
)


async def test_replicas_starting_at_once_share_one_carrier_s_parcels(database: str) -> None:
    replicas = [SimulatedCarrier(database) for _ in range(3)]
    key = f"return-label:{uuid.uuid4()}"
    request = LabelRequest("rma-1", "order-1", (("SKU-1", 2),))
    try:
        # Each replica creates the carrier's book on first use; started together, none fails.
        labels = await asyncio.gather(*(c.create_return_label(key, request) for c in replicas))
        assert len({label.tracking_number for label in labels}) == 1
        tracking = labels[0].tracking_number
        assert await replicas[1].track(tracking) == LABEL_CREATED
        await replicas[0].report(tracking, IN_TRANSIT)
        assert await replicas[2].track(tracking) == IN_TRANSIT
        # A replica closed and used again (a restart) finds the parcel where it was left.
        await replicas[2].close()
        await replicas[1].report(tracking, DELIVERED)
        assert await replicas[2].track(tracking) == DELIVERED
        with pytest.raises(LookupError, match="has no parcel"):
            await replicas[0].track("SP-NO-SUCH-PARCEL")
    finally:
        for carrier in replicas:
            await carrier.close()
