"""Tracing is off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set; set, spans reach an OTLP/gRPC
receiver (a real gRPC server speaking OpenTelemetry's collector protocol) named by service, and
a process that stops sends what it still held."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from oms_platform import tracing
from oms_platform.settings import Settings
from oms_tools.devstack.temporal_server import free_port, wait_for_port


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

    def spans(self) -> list[tuple[str, str]]:
        """(service name, span name) of every span received."""
        out = []
        for request in self.requests:
            for resource in request.resource_spans:
                names = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    out += [(names["service.name"], span.name) for span in scope.spans]
        return out


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    """An OTLP/gRPC receiver on a port of its own."""
    received = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield received, port
    finally:
        await server.stop(None)


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


def test_either_endpoint_variable_turns_it_on_unless_the_sdk_is_disabled() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}
    )


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
    # Only this test's span: the session's other services, running in this process while the
    # exporter was installed, may have had their own (their SQL) exported with it.
    [(resource, _)] = [
        (resource, span) for resource, span in spans if span.name == "CaptureInvoice"
    ]
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "oms-payments"


async def test_a_stopping_service_sends_the_spans_it_still_held(
    collector: tuple[Collector, int], settings: Settings
) -> None:
    """`oms serve` as the image runs it (the console script, stopped by SIGTERM): the batch
    would only go out in ten minutes, so the span arrives only if stopping flushes it. Health
    checks leave no span."""
    received, collector_port = collector
    port = free_port()
    env = {
        **os.environ,
        **replace(settings, payments_port=port).as_env(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    }
    oms = Path(sys.executable).parent / "oms"
    process = await asyncio.create_subprocess_exec(
        str(oms),
        "serve",
        "payments",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 60.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Without a token: refused, and traced all the same.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await payments_pb2_grpc.PaymentsServiceStub(channel).AuthorizePayment(
                    payments_pb2.AuthorizePaymentRequest(), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert ("oms-payments", "/oms.payments.v1.PaymentsService/AuthorizePayment") in received.spans()
    # Probes are not traced: they would bury the orders' traces.
    assert not [name for _, name in received.spans() if "grpc.health" in name]
