"""End to end: every process of `oms dev` serves Prometheus metrics, and after orders went
through, each endpoint has the series an operator's dashboard reads, with values."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator

import pytest
from oms.capture.v1 import capture_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from oms_platform.metrics import TEMPORAL_SDK_SERIES, TEMPORAL_SDK_SERIES_ON_FAILURE
from oms_tools.devstack.replicas import METRICS_ROLES, metrics_ports
from oms_tools.samples import sample_order
from services.payments.simulated import DECLINE_TOKEN
from tests.e2e.conftest import DevStack, running

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of one /metrics endpoint: (name, labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples carrying `labels` (None when there is none)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    return sum(found) if found else None


def rpcs(samples: Samples, service: str, method: str) -> float | None:
    return value(
        samples,
        "oms_rpc_duration_seconds_count",
        grpc_service=service,
        grpc_method=method,
        grpc_type="unary",
        grpc_code="OK",
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """A stack of its own: counters start from zero, no other test's orders or kills."""
    with running(DevStack(tmp_path_factory.mktemp("metrics"))) as dev:
        yield dev


async def test_every_process_serves_the_series_its_dashboard_reads(stack: DevStack) -> None:
    ports = {role: metrics_ports(stack.settings, role)[0] for role in METRICS_ROLES}
    for role, port in ports.items():
        assert f"http://127.0.0.1:{port}/metrics" in stack.banner, role

    submitted = stack.cli("order", "submit", "--sample", "--json")
    assert submitted.returncode == 0, submitted.stderr
    order_id = json.loads(submitted.stdout)["order"]["order_id"]
    watched = stack.cli("order", "watch", order_id, "--json", "--timeout", "90")
    assert watched.returncode == 0, watched.stderr
    # A declined card: the order waits on a payment exception, open in servicing.
    async with stack.channel("capture") as channel:
        capture = capture_pb2_grpc.CaptureServiceStub(channel)
        await capture.SubmitOrder(sample_order(token=DECLINE_TOKEN))
    async with stack.channel("servicing") as channel:
        servicing = servicing_pb2_grpc.ServicingServiceStub(channel)
        await servicing.ListProcessExceptions(servicing_pb2.ListProcessExceptionsRequest())

    # Gauges only the database knows are refreshed every few seconds.
    async def exception_counted() -> None:
        samples = scrape(ports["servicing"])
        if value(samples, "oms_process_exceptions_open", category="payment"):
            found.update(samples)

    found: Samples = {}
    for _ in range(60):
        await exception_counted()
        if found:
            break
        await asyncio.sleep(0.5)
    capture_m = scrape(ports["capture"])
    assert (rpcs(capture_m, "CaptureService", "SubmitOrder") or 0) >= 2
    # The lifecycle reports its steps in batches (one call per step of the lifecycle).
    assert (rpcs(capture_m, "CaptureService", "RecordOrderProgressBatch") or 0) > 0
    assert (value(capture_m, "oms_rpc_duration_seconds_sum", grpc_method="SubmitOrder") or 0) > 0
    assert value(capture_m, "oms_order_transitions_total", channel="web", status="fulfilled")
    assert (value(capture_m, "oms_order_lifecycle_seconds_count", channel="web") or 0) >= 1
    assert (
        value(capture_m, "oms_outbox_delivered_total", schema="capture", kind="start") or 0
    ) >= 2
    assert value(capture_m, "oms_outbox_rows", schema="capture") is not None
    assert value(capture_m, "oms_outbox_oldest_age_seconds", schema="capture") is not None
    assert value(capture_m, "oms_lifecycle_starts_paced", schema="capture") is not None
    assert (value(capture_m, "oms_db_pool_max_connections", pool="capture") or 0) > 0
    assert (value(capture_m, "oms_db_pool_connections", pool="capture") or 0) > 0
    assert value(capture_m, "oms_db_pool_waiting", pool="capture") is not None

    payments_m = scrape(ports["payments"])
    assert (rpcs(payments_m, "PaymentsService", "AuthorizePayment") or 0) >= 2
    assert value(
        payments_m, "oms_gateway_calls_total", operation="authorize", outcome="succeeded"
    ), "approved authorizations"
    assert value(
        payments_m, "oms_gateway_calls_total", operation="authorize", outcome="declined"
    ), "the declined card"
    assert value(payments_m, "oms_gateway_calls_total", operation="capture", outcome="succeeded")
    assert (value(payments_m, "oms_gateway_call_duration_seconds_count") or 0) > 0

    fulfillment_m = scrape(ports["fulfillment"])
    assert (rpcs(fulfillment_m, "FulfillmentService", "CreateFulfillmentOrders") or 0) > 0
    assert value(fulfillment_m, "oms_outbox_rows", schema="fulfillment") is not None
    assert (value(fulfillment_m, "oms_db_pool_connections", pool="fulfillment") or 0) > 0

    assert value(found, "oms_process_exceptions_open", category="payment") == 1, "one declined"
    assert (rpcs(found, "ServicingService", "ListProcessExceptions") or 0) > 0
    assert (rpcs(found, "ServicingService", "RecordProcessException") or 0) > 0

    # The worker: the Temporal SDK's own runtime metrics, folded into its one endpoint.
    worker_m = scrape(ports["worker"])
    for name, kind in TEMPORAL_SDK_SERIES.items():
        if name in TEMPORAL_SDK_SERIES_ON_FAILURE:
            continue
        if kind == "histogram":
            assert (value(worker_m, f"{name}_count") or 0) > 0, name
        else:
            assert value(worker_m, name) is not None, name

    # Every service and the worker froze what it held once started (oms_platform/heap.py),
    # and counts its garbage collector's time by generation.
    for role, samples in {
        "capture": capture_m,
        "payments": payments_m,
        "fulfillment": fulfillment_m,
        "servicing": found,
        "worker": worker_m,
    }.items():
        assert (value(samples, "oms_gc_frozen_objects") or 0) > 10_000, role
        assert value(samples, "oms_gc_seconds_total", generation="0") is not None, role
