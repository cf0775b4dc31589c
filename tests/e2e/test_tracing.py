"""End to end: `oms dev` with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports, from its separate
processes, one connected trace per order to an OTLP receiver — continuing the trace of the
storefront that called SubmitOrder, through capture, its outbox, the worker, to payments
capturing the invoice."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from oms.capture.v1 import capture_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from oms_tools.samples import sample_order
from tests.e2e.conftest import DevStack, running, wait_for_status

pytestmark = pytest.mark.e2e

# A shipment's invoice and its capture are one payments call.
CAPTURE_INVOICE = "/oms.payments.v1.PaymentsService/CreateInvoice"
SUBMIT_ORDER = "/oms.capture.v1.CaptureService/SubmitOrder"


@dataclass(frozen=True)
class Received:
    """One span as the receiver got it, with the service (process) that sent it."""

    service: str
    span: trace_pb2.Span


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC receiver: what an OpenTelemetry collector would get from the stack."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Received] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource in request.resource_spans:
                names = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    self._spans += [Received(names["service.name"], s) for s in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Received]:
        with self._lock:
            return list(self._spans)


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevStack, Collector]]:
    """A stack of its own exporting to a receiver in this test, batches sent every 200 ms."""
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    dev = DevStack(
        tmp_path_factory.mktemp("tracing"),
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    try:
        with running(dev):
            yield dev, collector
    finally:
        server.stop(None)


async def test_an_order_is_one_trace_across_the_stacks_processes(
    traced_stack: tuple[DevStack, Collector],
) -> None:
    stack, collector = traced_stack
    # The storefront is traced too: its instrumentation sends the W3C header with the call.
    storefront_trace, storefront_span = secrets.token_hex(16), secrets.token_hex(8)
    stub = capture_pb2_grpc.CaptureServiceStub(stack.channel("capture"))
    submitted = await stub.SubmitOrder(
        sample_order(),
        timeout=30,
        metadata=(("traceparent", f"00-{storefront_trace}-{storefront_span}-01"),),
    )
    order_id = submitted.order.order_id
    await wait_for_status(stub, order_id)

    # The processes send in batches: wait until the chain from payments' capture of the
    # invoice up to SubmitOrder has arrived, then walk it parent by parent.
    deadline = time.monotonic() + 30
    while True:
        mine = [r for r in collector.spans() if r.span.trace_id.hex() == storefront_trace]
        by_id = {r.span.span_id: r for r in mine}
        captures = [
            r
            for r in mine
            if r.span.name == CAPTURE_INVOICE and r.span.kind == trace_pb2.Span.SPAN_KIND_SERVER
        ]
        hops = captures[:1]
        while hops and hops[-1].span.parent_span_id in by_id:
            hops.append(by_id[hops[-1].span.parent_span_id])
        if hops and hops[-1].span.name == SUBMIT_ORDER:
            break
        assert time.monotonic() < deadline, (
            "no connected chain from the invoice's capture to SubmitOrder; the trace holds "
            f"{sorted({(r.service, r.span.name) for r in mine})}"
        )
        await asyncio.sleep(0.2)
    assert len(captures) == 1
    capture = captures[0]
    top = hops[-1]
    assert (top.service, top.span.name) == ("oms-capture", SUBMIT_ORDER)
    assert top.span.parent_span_id.hex() == storefront_span
    path = [(r.service, r.span.name) for r in reversed(hops)]
    assert path == [
        ("oms-capture", SUBMIT_ORDER),
        ("oms-capture", "outbox start OrderLifecycle"),
        ("oms-capture", "StartWorkflow:OrderLifecycle"),
        ("oms-worker", "StartActivity:invoice_and_capture"),
        ("oms-worker", "RunActivity:invoice_and_capture"),
        ("oms-worker", CAPTURE_INVOICE),
        ("oms-payments", CAPTURE_INVOICE),
    ], path
    # The order id is on the spans an engineer searches by.
    tagged = (SUBMIT_ORDER, "outbox start OrderLifecycle", "StartWorkflow:OrderLifecycle")
    for hop in hops:
        if hop.span.name in tagged or hop.span.name.startswith("RunActivity:"):
            attributes = {a.key: a.value.string_value for a in hop.span.attributes}
            assert attributes.get("oms.order_id") == order_id, hop.span.name
    # Payments' SQL for the capture is in the trace, under its RPC.
    assert any(
        r.service == "oms-payments" and r.span.parent_span_id == capture.span.span_id for r in mine
    )
    # Fulfillment took part (its RPC and SQL), and the warehouse simulator traced its calls.
    services = {r.service for r in collector.spans()}
    assert {"oms-capture", "oms-fulfillment", "oms-payments", "oms-worker"} <= {
        r.service for r in mine
    }
    assert "oms-simulator" in services
