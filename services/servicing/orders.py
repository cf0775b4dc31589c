"""Capture's orders as servicing asks about them: an adapter at the edge over capture's public
read (GetOrder), for when Temporal has no workflow for an order and servicing must tell an
order whose lifecycle has not started yet from one that does not exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from oms.capture.v1 import capture_pb2

from oms_platform import limits
from oms_platform.errors import NotFound
from services.servicing.lifecycles import RETRYABLE, LifecycleUnavailable

if TYPE_CHECKING:
    from oms.capture.v1.capture_pb2_grpc import CaptureServiceAsyncStub


class CaptureOrders:
    """Implements lifecycles.Orders over capture's GetOrder, within a short deadline."""

    def __init__(self, capture: CaptureServiceAsyncStub, deadline_seconds: float) -> None:
        self._capture = capture
        self._deadline = deadline_seconds

    async def is_pending(self, order_id: str) -> bool:
        """Whether capture acknowledged the order and its lifecycle has not started yet
        (capture's status is still pending); NotFound when capture has no such order,
        LifecycleUnavailable when capture did not answer."""
        view = await self._view(order_id)
        return view.order.status == capture_pb2.ORDER_STATUS_PENDING

    async def channel_of(self, order_id: str) -> str:
        """The order's channel as capture names it (web, marketplace, …)."""
        view = await self._view(order_id)
        return capture_pb2.Channel.Name(view.order.channel).removeprefix("CHANNEL_").lower()

    async def skus_of(self, order_id: str) -> dict[str, str]:
        """The SKU of each of the order's lines, by order line id."""
        view = await self._view(order_id)
        return {line.order_line_id: line.sku for line in view.order.lines}

    async def _view(self, order_id: str) -> capture_pb2.GetOrderResponse:
        try:
            view: capture_pb2.GetOrderResponse = await self._capture.GetOrder(
                capture_pb2.GetOrderRequest(order_id=order_id), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                # An id capture refuses as malformed names no order either.
                raise NotFound(f"no order {limits.echo(order_id)}") from None
            if error.code() not in RETRYABLE:
                # Capture refused servicing itself (a bug or a misconfiguration, not the
                # caller's to retry): the error boundary answers INTERNAL with a reference.
                raise RuntimeError(
                    f"capture answered {error.code().name} {error.details()} to servicing"
                ) from None
            raise LifecycleUnavailable(
                f"cannot tell whether order {order_id} exists: capture answered "
                f"{error.code().name} {error.details()}; retry with the same request"
            ) from None
        return view
