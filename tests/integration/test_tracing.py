"""Traces: one order, submitted over gRPC and run through its whole lifecycle by the real
services, worker and Temporal, is one connected OpenTelemetry trace — from the SubmitOrder
call, through the outbox and the workflow, to the payments RPC that captures its invoice and
that RPC's SQL. Spans go to an in-memory exporter installed the way `OTEL_EXPORTER_OTLP_ENDPOINT`
installs the OTLP one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from oms_platform import db, outbox, tracing
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.samples import sample_order
from tests.conftest import System, migrated_database, running_system, wait_for
from workflows.types import order_id_of_workflow


@pytest.fixture(scope="module")
async def traced(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[tuple[System, InMemorySpanExporter]]:
    """A system of its own, started with tracing on (servers, channels, the Temporal client and
    worker look once, when they are made); tracing off again after."""
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter, order_of_workflow=order_id_of_workflow)
    try:
        async with running_system(settings_with_temporal, postgres, "oms_tracing") as system:
            yield system, exporter
    finally:
        tracing.reset()


def chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """`span` and its ancestors, up to the root (parents must all have been recorded)."""
    out = [span]
    while out[-1].parent is not None:
        parent = by_id.get(out[-1].parent.span_id)
        assert parent is not None, f"{out[-1].name}'s parent was not recorded: the trace breaks"
        out.append(parent)
    return out


async def test_one_order_is_one_connected_trace_from_submit_to_invoice_capture(
    traced: tuple[System, InMemorySpanExporter],
) -> None:
    system, exporter = traced
    stub = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    async with system.simulator():
        order_id = (await stub.SubmitOrder(sample_order(), timeout=10)).order.order_id
        await wait_for(stub, order_id, {capture_pb2.ORDER_STATUS_FULFILLED})

    spans = exporter.get_finished_spans()
    [submit] = [
        s
        for s in spans
        if s.name == "/oms.capture.v1.CaptureService/SubmitOrder" and s.kind == SpanKind.SERVER
    ]
    assert submit.attributes is not None and submit.attributes[tracing.ORDER_ID] == order_id
    trace_id = submit.context.trace_id
    mine = [s for s in spans if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in mine}
    names = {s.name for s in mine}

    # The invoice and its capture (one payments call): the server span, and its SQL beneath it.
    captures = [
        s
        for s in mine
        if s.name == "/oms.payments.v1.PaymentsService/CreateInvoice" and s.kind == SpanKind.SERVER
    ]
    assert len(captures) == 1, "the invoice's capture is not (once) in SubmitOrder's trace"
    [capture_rpc] = captures
    path = chain(capture_rpc, by_id)
    hops = [(s.name, s.kind) for s in reversed(path)]
    submit_rpc = "/oms.capture.v1.CaptureService/SubmitOrder"
    capture_invoice = "/oms.payments.v1.PaymentsService/CreateInvoice"
    assert hops == [
        (submit_rpc, SpanKind.CLIENT),  # the storefront's call (its channel is traced too)
        (submit_rpc, SpanKind.SERVER),  # capture
        ("outbox start OrderLifecycle", SpanKind.PRODUCER),  # capture's relay, later
        ("StartWorkflow:OrderLifecycle", SpanKind.CLIENT),
        ("StartActivity:invoice_and_capture", SpanKind.CLIENT),  # the workflow, on the worker
        ("RunActivity:invoice_and_capture", SpanKind.SERVER),
        (capture_invoice, SpanKind.CLIENT),  # the activity's call
        (capture_invoice, SpanKind.SERVER),  # payments
    ], hops
    assert path[-2] is submit
    sql_under_capture = [
        s for s in mine if s.parent is not None and s.parent.span_id == capture_rpc.context.span_id
    ]
    assert any(
        s.attributes and s.attributes.get("db.system") == "postgresql" for s in sql_under_capture
    )

    # SubmitOrder's own SQL, and the workflow span naming the order.
    assert any(
        s.parent is not None
        and s.parent.span_id == submit.context.span_id
        and s.attributes
        and s.attributes.get("db.system") == "postgresql"
        for s in mine
    )
    [run] = [s for s in mine if s.name == "RunWorkflow:OrderLifecycle"]
    assert (
        run.parent is not None and by_id[run.parent.span_id].name == "StartWorkflow:OrderLifecycle"
    )
    assert run.attributes is not None
    assert run.attributes.get("temporalWorkflowID") == f"order:{order_id}"
    # Every span about the order's workflow names the order, so a trace backend finds them
    # all by `oms.order_id`: the relay's start, the start and run, each activity.
    about_workflow = [s for s in path if s.name.startswith(("outbox ", "StartWorkflow:"))]
    about_workflow += [s for s in mine if s.name.startswith(("RunWorkflow:", "RunActivity:"))]
    assert len(about_workflow) >= 6
    for span in about_workflow:
        assert span.attributes is not None
        assert span.attributes.get(tracing.ORDER_ID) == order_id, span.name

    # Every step of the happy path is in this trace, and each service RPC it called.
    for step in ("authorize_payment", "create_fulfillment_orders", "invoice_and_capture"):
        assert f"RunActivity:{step}" in names, step
    for rpc in (
        "/oms.payments.v1.PaymentsService/AuthorizePayment",
        "/oms.fulfillment.v1.FulfillmentService/CreateFulfillmentOrders",
        "/oms.payments.v1.PaymentsService/CreateInvoice",
    ):
        assert rpc in names, rpc
    # Nothing in this trace hangs loose: every parent was recorded in it.
    for span in mine:
        chain(span, by_id)


async def test_a_dead_lettered_row_redelivered_later_still_continues_its_writers_trace(
    traced: tuple[System, InMemorySpanExporter], postgres: EmbeddedPostgres
) -> None:
    """A row Temporal refuses (a search attribute the namespace lacks) is dead-lettered; an
    operator fixes the cause and redelivers it: both deliveries hang under the span of the
    transaction that wrote the row, and the workflow start is in that trace."""
    system, exporter = traced
    dsn = await migrated_database(postgres, "oms_tracing_dead_letters")
    pool = await db.create_pool(dsn, "fulfillment", 1, 2)
    workflow_id = f"traced:{uuid.uuid4().hex[:8]}"
    task_queue = f"nobody-polls-{workflow_id}"  # the workflow only needs to be started
    try:
        with tracing.tracer().start_as_current_span("ShipFulfillmentOrder") as writer:
            async with pool.acquire() as conn, conn.transaction():
                await outbox.enqueue(conn, "fulfillment", "start", workflow_id, "Nothing", {})
        unregistered = TypedSearchAttributes(
            [SearchAttributePair(SearchAttributeKey.for_keyword("OmsNeverRegistered"), "x")]
        )

        async def client() -> Any:
            return system.client

        misconfigured = outbox.OutboxRelay(
            pool,
            "fulfillment",
            client,
            task_queue,
            start_options=lambda _payload: {"search_attributes": unregistered},
            dead_letter_after=1,
        )
        assert await misconfigured.deliver_once() == 0
        [letter] = await outbox.list_dead_letters(pool, "fulfillment")
        assert letter.workflow_id == workflow_id
        await outbox.redeliver(pool, "fulfillment", letter.id, "ops@example.com")
        fixed = outbox.OutboxRelay(pool, "fulfillment", client, task_queue)
        assert await fixed.deliver_once() == 1
        await system.client.get_workflow_handle(workflow_id).terminate("test done")
    finally:
        await pool.close()

    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.context.trace_id == writer.get_span_context().trace_id
    ]
    deliveries = [s for s in spans if s.name == "outbox start Nothing"]
    assert len(deliveries) == 2  # refused, then delivered after the redelivery
    for delivery in deliveries:
        assert delivery.parent is not None
        assert delivery.parent.span_id == writer.get_span_context().span_id
    # Each delivery asked Temporal to start it (refused the first time, started the second).
    starts = [s for s in spans if s.name == "StartWorkflow:Nothing"]
    assert sorted(s.parent.span_id for s in starts if s.parent) == sorted(
        d.context.span_id for d in deliveries
    )
