"""Fulfillment's inventory as servicing uses it: putting returned units back into stock, over
fulfillment's public AdjustInventory RPC with servicing's own identity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
from oms.fulfillment.v1 import fulfillment_pb2

from oms_platform.errors import FailedPrecondition
from services.servicing.lifecycles import RETRYABLE, LifecycleUnavailable

if TYPE_CHECKING:
    from oms.fulfillment.v1.fulfillment_pb2_grpc import FulfillmentServiceAsyncStub


class FulfillmentInventory:
    """Restocks returned units at a location; one adjustment per key, however often asked
    (fulfillment answers a repeated key with its first result)."""

    def __init__(self, fulfillment: FulfillmentServiceAsyncStub, deadline_seconds: float) -> None:
        self._fulfillment = fulfillment
        self._deadline = deadline_seconds

    async def restock(
        self, key: str, location_id: str, units: Sequence[tuple[str, int]], reason: str
    ) -> None:
        """Put `units` (SKU, quantity) back on hand at `location_id`. FailedPrecondition
        when fulfillment refuses (an unknown location, say); LifecycleUnavailable when it did
        not answer (retry with the same request)."""
        request = fulfillment_pb2.AdjustInventoryRequest(
            idempotency_key=key,
            adjustments=[
                fulfillment_pb2.InventoryAdjustment(
                    location_id=location_id,
                    sku=sku,
                    kind=fulfillment_pb2.INVENTORY_ADJUSTMENT_KIND_RECEIVED,
                    quantity=quantity,
                    reason=reason,
                )
                for sku, quantity in units
            ],
        )
        try:
            await self._fulfillment.AdjustInventory(request, timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            if error.code() in RETRYABLE:
                raise LifecycleUnavailable(
                    f"fulfillment did not restock: {error.code().name} {error.details()}; "
                    "retry with the same request"
                ) from None
            raise FailedPrecondition(
                f"location_id: the return was received, but fulfillment refused to restock "
                f"it: {error.details()}"
            ) from None
