"""Tracing is off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set; set, spans reach an OTLP/gRPC
receiver (a real gRPC server speaking OpenTelemetry's collector protocol) named by service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from oms_platform import tracing


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """What an OpenTelemetry collector receives."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def no_tracing() -> Iterator[None]:
    tracing.reset()
    yield
    tracing.reset()


def test_without_an_endpoint_nothing_is_installed(
    no_tracing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.configure("capture") is False
    assert not tracing.active()
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    assert tracing.temporal_interceptors() == []
    assert tracing.carrier() is None


async def test_with_an_endpoint_spans_reach_the_collector(
    no_tracing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        assert tracing.configure("payments") is True
        assert tracing.server_interceptors() and tracing.client_interceptors()
        with tracing.tracer().start_as_current_span("CaptureInvoice"):
            carried = tracing.carrier()
        assert carried is not None and "traceparent" in carried
        # reset() flushes: the batch goes out now, as it would on a process's shutdown.
        await asyncio.to_thread(tracing.reset)
    finally:
        await server.stop(None)
    spans = [
        (resource.resource, span)
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert [span.name for _, span in spans] == ["CaptureInvoice"]
    [(resource, _)] = spans
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "oms-payments"
