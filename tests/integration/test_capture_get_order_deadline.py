"""GetOrder answers within its deadline when a service it asks is slow: with what it has,
naming what is missing. The slow service is a tiny fake gRPC server (outside capture)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from tests.callers import persona_channel
from tests.integration.test_capture_service import isolated_settings, order_request, own_database

pb = capture_pb2
DEADLINE = 0.5


class QuickFulfillment(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    """Answers at once with one fulfillment order for whatever order is asked about."""

    async def ListFulfillmentOrders(
        self, request: fulfillment_pb2.ListFulfillmentOrdersRequest, context: object
    ) -> fulfillment_pb2.ListFulfillmentOrdersResponse:
        return fulfillment_pb2.ListFulfillmentOrdersResponse(
            fulfillment_orders=[
                fulfillment_pb2.FulfillmentOrder(
                    fulfillment_order_id="fo-1", order_id=request.order_id, location_id="wh-east"
                )
            ]
        )


class SlowServicing(servicing_pb2_grpc.ServicingServiceServicer):
    """Takes far longer than GetOrder's deadline."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def ListProcessExceptions(
        self, request: servicing_pb2.ListProcessExceptionsRequest, context: object
    ) -> servicing_pb2.ListProcessExceptionsResponse:
        self.asked.set()
        await asyncio.sleep(30)
        return servicing_pb2.ListProcessExceptionsResponse()


@pytest.fixture
async def peers() -> AsyncIterator[tuple[str, SlowServicing]]:
    server = grpc.aio.server()
    slow = SlowServicing()
    fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(QuickFulfillment(), server)
    servicing_pb2_grpc.add_ServicingServiceServicer_to_server(slow, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", slow
    await server.stop(0)


async def test_a_slow_service_costs_its_section_not_the_answer(
    postgres: EmbeddedPostgres, peers: tuple[str, SlowServicing]
) -> None:
    address, slow = peers
    settings = isolated_settings(
        await own_database(postgres, "oms_capture_deadline_it"),
        get_order_deadline_seconds=DEADLINE,
        fulfillment_address=address,
        servicing_address=address,
        # payments: nothing listens on its port, so that section fails fast.
    )
    running = await start_service("capture", settings, port=0)
    try:
        async with persona_channel(settings, f"127.0.0.1:{running.port}") as channel:
            stub = capture_pb2_grpc.CaptureServiceStub(channel)
            order = (await stub.SubmitOrder(order_request())).order
            started = time.monotonic()
            view = await stub.GetOrder(pb.GetOrderRequest(order_id=order.order_id), timeout=10)
            elapsed = time.monotonic() - started
    finally:
        await running.stop(0.5)

    assert slow.asked.is_set(), "the slow service was asked"
    assert DEADLINE * 0.9 <= elapsed < DEADLINE + 0.5, f"answered after {elapsed:.2f}s"
    assert view.order.order_id == order.order_id
    assert [e.kind for e in view.timeline] == ["order.captured"]
    assert [fo.fulfillment_order_id for fo in view.fulfillment_orders] == ["fo-1"]
    assert list(view.missing_sections) == ["payments", "servicing"]
