"""OpenTelemetry traces across the whole path of an order, off unless asked for.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set (and the other standard `OTEL_*` variables, read by
the exporter itself), `configure(role)` installs a tracer provider exporting by OTLP/gRPC under
the service name `oms-<role>`. Then:

- every gRPC server gets OpenTelemetry's server interceptor and every client channel its
  client interceptors (`grpcutil`), so a call is one span on each side, linked by the
  `traceparent` header; the gate puts the order id on the server span (`oms.order_id`);
- asyncpg calls are spans (OpenTelemetry's asyncpg instrumentation): a service's SQL hangs
  under the RPC that ran it;
- the Temporal client and worker carry the SDK's `TracingInterceptor`: starting a workflow,
  running it, each activity, signals and updates are spans, their context in Temporal headers;
  every span about an order's workflow gets `oms.order_id` from its workflow id, so a trace
  backend finds all of an order's spans by that one attribute;
- the outbox, where a transaction's effect leaves for Temporal later and maybe from another
  replica, keeps the writing transaction's trace context in the row (`trace_context`), and the
  relay starts or signals the workflow in a span whose parent is that context. One order is
  therefore one trace: SubmitOrder → its SQL → the relay's start → the workflow → each
  activity → the service RPC it calls → that RPC's SQL.

`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` turns it on too; `OTEL_SDK_DISABLED=true` keeps it off.
Without either endpoint nothing is installed: no interceptor, no instrumented driver, no context
stored — tracing costs nothing. Tests install an in-memory exporter the same way
(`configure(role, exporter)`) and `reset()` after.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

ORDER_ID = "oms.order_id"
WORKFLOW_ID = "oms.workflow_id"
# Where the workflow id sits on the Temporal SDK's own spans (temporalio.contrib.opentelemetry).
TEMPORAL_WORKFLOW_ID = "temporalWorkflowID"

_provider: TracerProvider | None = None
_instrumented_asyncpg: Any = None


def active() -> bool:
    """True when spans are being recorded and exported."""
    return _provider is not None


def wanted(env: Mapping[str, str]) -> bool:
    """Whether `env` asks for traces: an OTLP endpoint (all signals' or the traces' own) is
    set and the SDK is not disabled."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class _OrderOfWorkflow(SpanProcessor):
    """Puts `oms.order_id` on every span that names an order's workflow: the Temporal SDK's
    spans (start, run, activities, signals, updates) and the outbox relay's. Done as spans
    start, because the SDK builds its own spans and takes no attributes of ours."""

    def __init__(self, order_of_workflow: Callable[[str], str | None]) -> None:
        self._order_of_workflow = order_of_workflow

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        attributes = span.attributes or {}
        workflow_id = attributes.get(TEMPORAL_WORKFLOW_ID) or attributes.get(WORKFLOW_ID)
        if isinstance(workflow_id, str) and ORDER_ID not in attributes:
            order_id = self._order_of_workflow(workflow_id)
            if order_id:
                span.set_attribute(ORDER_ID, order_id)


def configure(
    role: str,
    exporter: SpanExporter | None = None,
    *,
    order_of_workflow: Callable[[str], str | None] | None = None,
) -> bool:
    """Trace this process as `oms-<role>` when an OTLP endpoint is set (`wanted`), or into
    `exporter` (tests); returns whether tracing is on. `order_of_workflow` reads the order id
    out of a workflow id (the workflow's contract knows how; the platform does not), for
    `oms.order_id` on workflow spans. Call before servers, channels and Temporal clients are
    made: they look once."""
    global _provider, _instrumented_asyncpg
    if exporter is None:
        if not wanted(os.environ):
            return False
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processor: Any = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"oms-{role}"}))
    # Processors run in order: the order id is on a span before the exporter's sees it end.
    if order_of_workflow is not None:
        provider.add_span_processor(_OrderOfWorkflow(order_of_workflow))
    provider.add_span_processor(processor)
    _provider = provider
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    _instrumented_asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    _instrumented_asyncpg.instrument(tracer_provider=provider)
    return True


def reset() -> None:
    """Stop tracing: export what is still batched, uninstrument the driver. A process calls
    it last (the `oms` script exits without interpreter teardown, so no atexit hook would)."""
    global _provider, _instrumented_asyncpg
    if _instrumented_asyncpg is not None:
        _instrumented_asyncpg.uninstrument()
        _instrumented_asyncpg = None
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer() -> trace.Tracer:
    """oms' own tracer (a no-op one while tracing is off)."""
    if _provider is None:
        return trace.NoOpTracer()
    return _provider.get_tracer("oms")


def _traced_calls() -> Any:
    """Every call but health checks and reflection: probes (Kubernetes asks each pod every
    few seconds) would otherwise fill the trace backend with one-span traces."""
    from opentelemetry.instrumentation.grpc import filters

    return filters.negate(
        filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection."))
    )


def server_interceptors() -> list[Any]:
    """OpenTelemetry's gRPC server interceptor, or none while tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider, filter_=_traced_calls())]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """OpenTelemetry's gRPC client interceptors, or none while tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=_provider, filter_=_traced_calls()))  # type: ignore[no-untyped-call]


def temporal_interceptors() -> list[Any]:
    """The Temporal SDK's tracing interceptor (client and worker), or none while off."""
    if _provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(_provider.get_tracer("temporalio"))]


def tag_order(order_id: str) -> None:
    """Put the order id on the current span (an RPC's server span)."""
    if _provider is not None and order_id:
        trace.get_current_span().set_attribute(ORDER_ID, order_id)


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers, to store beside work done later (an outbox
    row); None while tracing is off or outside any span."""
    if _provider is None:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers or None


@contextlib.contextmanager
def continuing(headers: Mapping[str, str] | None, name: str, **attributes: str) -> Iterator[None]:
    """A span named `name` whose parent is the context in `headers` (as `carrier` stored it):
    work done later, elsewhere, on behalf of that trace. Nothing while tracing is off."""
    if _provider is None:
        yield
        return
    parent = propagate.extract(dict(headers or {}))
    with tracer().start_as_current_span(
        name, context=parent, kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        yield
