"""End to end: the stack started exactly as `make dev` starts it (`oms dev` in a process of its
own, embedded Postgres and Temporal), driven over gRPC and through the `oms` CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2

from oms_platform import temporal
from oms_platform.settings import SERVICES
from oms_tools.samples import sample_order
from tests.e2e.conftest import BIN, DevStack, wait_for_status

pytestmark = pytest.mark.e2e


def test_the_banner_names_every_endpoint(stack: DevStack) -> None:
    for name in SERVICES:
        assert f"127.0.0.1:{stack.port(name)}" in stack.banner
    assert f"http://127.0.0.1:{stack.env['OMS_EMBEDDED_TEMPORAL_UI_PORT']}" in stack.banner


def test_every_service_answers_reflection_and_health_checks(stack: DevStack) -> None:
    expected = {
        "capture": "oms.capture.v1.CaptureService",
        "fulfillment": "oms.fulfillment.v1.FulfillmentService",
        "payments": "oms.payments.v1.PaymentsService",
        "servicing": "oms.servicing.v1.ServicingService",
    }
    for name, full_name in expected.items():
        address = f"127.0.0.1:{stack.port(name)}"
        listed = subprocess.run(
            [str(BIN / "grpcurl"), "-plaintext", address, "list"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert full_name in listed.stdout.split()
        health = subprocess.run(
            [str(BIN / "grpcurl"), "-plaintext", "-d", json.dumps({"service": full_name}),
             address, "grpc.health.v1.Health/Check"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert json.loads(health.stdout) == {"status": "SERVING"}


async def test_a_sample_order_is_fulfilled_with_capture_equal_to_the_invoice_total(
    stack: DevStack,
) -> None:
    submitted = stack.cli("order", "submit", "--sample", "--json")
    assert submitted.returncode == 0, submitted.stderr
    order_id = json.loads(submitted.stdout)["order"]["order_id"]

    watched = stack.cli("order", "watch", order_id, "--json", "--timeout", "90")
    assert watched.returncode == 0, watched.stderr
    kinds = [json.loads(line)["kind"] for line in watched.stdout.splitlines()]
    assert kinds[0] == "order.captured" and kinds[-1] == "order.fulfilled"

    async with stack.channel("capture") as channel:
        view = await wait_for_status(capture_pb2_grpc.CaptureServiceStub(channel), order_id)

    order = view.order
    assert order.status == capture_pb2.ORDER_STATUS_FULFILLED
    total = order.totals.grand_total.amount_minor
    invoiced = sum(invoice.total.amount_minor for invoice in view.invoices)
    assert invoiced == total == view.payment_summary.captured.amount_minor
    assert view.payment_summary.balance_due.amount_minor == 0
    assert all(line.quantities.fulfilled == line.quantity for line in order.lines)
    assert all(line.quantities.allocated == 0 for line in order.lines)
    [fo] = view.fulfillment_orders
    assert fo.status == fulfillment_pb2.FULFILLMENT_ORDER_STATUS_SHIPPED
    [shipment] = fo.shipments
    assert shipment.tracking_number and shipment.HasField("delivered_at")
    timeline = [event.kind for event in view.timeline]
    expected = [
        "order.captured",
        "payment.authorized",
        "fulfillment.allocated",
        "shipment.shipped",
        "payment.captured",
        "shipment.delivered",
        "order.fulfilled",
    ]
    assert [kind for kind in timeline if kind in expected] == expected

    client = await temporal.connect(stack.settings)
    try:
        found = [
            wf.id
            async for wf in client.list_workflows(
                "OrderStatus = 'fulfilled' AND OrderChannel = 'web' "
                f"AND WorkflowId = 'order:{order_id}'"
            )
        ]
    finally:
        await temporal.close(client)
    assert found == [f"order:{order_id}"]


async def test_a_declined_card_cancels_the_order_and_raises_a_payment_exception(
    stack: DevStack,
) -> None:
    async with stack.channel("capture") as channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)
        response = await stub.SubmitOrder(sample_order(token="tok_decline"), timeout=10)
        view = await wait_for_status(stub, response.order.order_id)

    assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED
    [authorization] = view.authorizations
    assert authorization.status == payments_pb2.AUTHORIZATION_STATUS_DECLINED
    assert view.payment_summary.captured.amount_minor == 0
    assert view.fulfillment_orders == []
    assert "card_declined" in view.process_exceptions[0].message
    assert "declined" in view.timeline[-1].summary


async def test_ctrl_c_stops_everything_and_a_restart_keeps_the_orders(stack: DevStack) -> None:
    listed = stack.cli("order", "list", "--json")
    before = {o["order_id"]: o["status"] for o in json.loads(listed.stdout).get("orders", [])}
    assert before, "the earlier tests submitted orders"

    assert stack.stop() == 0
    stack.start()

    listed = stack.cli("order", "list", "--json")
    after = {o["order_id"]: o["status"] for o in json.loads(listed.stdout)["orders"]}
    assert after == before


def _descendants(pid: int) -> dict[int, tuple[str, int, int | None]]:
    """Every process below `pid`: its command line, its niceness and its session group's
    niceness (Linux autogroup; None where the kernel has none), from /proc."""
    found: dict[int, tuple[str, int, int | None]] = {}
    parents = {pid}
    while parents:
        children: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                group = (entry / "autogroup").read_text() if (entry / "autogroup").exists() else ""
            except OSError:
                continue  # exited meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            if int(fields[1]) in parents and int(entry.name) not in found:
                group_nice = int(group.split("nice")[1]) if "nice" in group else None
                found[int(entry.name)] = (command, int(fields[16]), group_nice)
                children.add(int(entry.name))
        parents = children
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads niceness from /proc")
def test_capture_and_postgres_run_ahead_of_what_may_lag(stack: DevStack) -> None:
    """On one machine the front door keeps its CPU priority; Temporal, the worker, the
    simulator and the services the lifecycle calls run 10 lower (OMS_STACK_BACKGROUND_NICENESS),
    as processes and, where Linux schedules each session as a group, as session groups."""
    assert stack.process is not None
    own = os.getpriority(os.PRIO_PROCESS, stack.process.pid)
    processes = _descendants(stack.process.pid).values()

    def niceness_of(marker: str) -> set[tuple[int, int | None]]:
        return {(nice - own, group) for command, nice, group in processes if marker in command}

    grouped = Path("/proc/self/autogroup").exists()
    assert niceness_of("serve capture") == {(0, 0 if grouped else None)}
    assert niceness_of("postgres -D") == {(0, 0 if grouped else None)}
    background = min(10, 19 - own)
    for marker in ("serve fulfillment", "serve payments", "serve servicing", "cli worker",
                   "cli simulator", "server start-dev"):  # fmt: skip
        assert niceness_of(marker) == {(background, 10 if grouped else None)}, marker
