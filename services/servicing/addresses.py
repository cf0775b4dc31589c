"""Where a delivery group's units would ship from at a new address, as servicing previews an
address change: fulfillment's ChangeDeliveryAddress asked with `preview` (nothing is kept),
over servicing's own identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from oms.fulfillment.v1 import fulfillment_pb2

from oms_platform.errors import FailedPrecondition, NotFound
from oms_platform.postal import PostalAddress
from oms_platform.wire import postal_address_to_pb
from services.servicing.lifecycles import RETRYABLE, LifecycleUnavailable

if TYPE_CHECKING:
    from oms.fulfillment.v1.fulfillment_pb2_grpc import FulfillmentServiceAsyncStub


@dataclass(frozen=True)
class Rerouting:
    """Whether the group's unshipped units would leave their locations, and for which."""

    rerouted: bool
    from_location_ids: tuple[str, ...]
    to_location_ids: tuple[str, ...]


class FulfillmentRouting:
    """Asks fulfillment how a new address would route a delivery group."""

    def __init__(self, fulfillment: FulfillmentServiceAsyncStub, deadline_seconds: float) -> None:
        self._fulfillment = fulfillment
        self._deadline = deadline_seconds

    async def preview(
        self, order_id: str, delivery_group_id: str, address: PostalAddress
    ) -> Rerouting:
        """Where routing would place the group's unshipped units for `address`. NotFound when
        nothing of the group was routed yet, FailedPrecondition when fulfillment refuses,
        LifecycleUnavailable when it did not answer (retry)."""
        request = fulfillment_pb2.ChangeDeliveryAddressRequest(
            order_id=order_id,
            delivery_group_id=delivery_group_id,
            address=postal_address_to_pb(address),
            preview=True,
        )
        try:
            answer = await self._fulfillment.ChangeDeliveryAddress(request, timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            if error.code() in RETRYABLE:
                raise LifecycleUnavailable(
                    f"fulfillment did not answer: {error.code().name} {error.details()}; "
                    "retry with the same request"
                ) from None
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"delivery_group_id: {error.details()}") from None
            raise FailedPrecondition(str(error.details())) from None
        return Rerouting(
            answer.rerouted, tuple(answer.from_location_ids), tuple(answer.to_location_ids)
        )
