"""End to end: the stack started exactly as `make dev` starts it (`oms dev` in a process of its
own, embedded Postgres and Temporal), driven over gRPC and through the `oms` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2
from temporalio.client import Client

from oms_platform.devstack.temporal_server import free_port
from oms_platform.samples import sample_order
from oms_platform.settings import SERVICES

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


class DevStack:
    """`oms dev` as a child process with its own data directory and ports."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {
            **os.environ,
            "OMS_DATA_DIR": str(data_dir),
            "OMS_EMBEDDED_POSTGRES_PORT": str(free_port()),
            "OMS_EMBEDDED_TEMPORAL_PORT": str(free_port()),
            "OMS_EMBEDDED_TEMPORAL_UI_PORT": str(free_port()),
            "OMS_SIMULATOR_STEP_SECONDS": "0.2",
            "OMS_SIMULATOR_POLL_SECONDS": "0.1",
            "OMS_OUTBOX_POLL_SECONDS": "0.1",
            **{f"OMS_{name.upper()}_PORT": str(free_port()) for name in SERVICES},
        }
        for name in ("DATABASE_URL", "TEMPORAL_ADDRESS"):
            self.env.pop(f"OMS_{name}", None)
        self.process: subprocess.Popen[str] | None = None
        self.banner = ""

    def port(self, service: str) -> int:
        return int(self.env[f"OMS_{service.upper()}_PORT"])

    @property
    def temporal(self) -> str:
        return f"127.0.0.1:{self.env['OMS_EMBEDDED_TEMPORAL_PORT']}"

    def start(self, timeout: float = 120.0) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "oms"), "dev"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError("oms dev exited:\n" + "".join(lines))
            lines.append(line)
            if "stop: Ctrl-C" in line:
                self.banner = "".join(lines)
                return
        raise TimeoutError("oms dev printed no banner:\n" + "".join(lines))

    def stop(self) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "oms"), *args], env=self.env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    dev = DevStack(tmp_path_factory.mktemp("dev"))
    dev.start()
    try:
        yield dev
    finally:
        if dev.process is not None and dev.process.poll() is None:
            dev.stop()


async def wait_for_status(
    stub: capture_pb2_grpc.CaptureServiceStub, order_id: str, within: float = 90.0
) -> capture_pb2.GetOrderResponse:
    deadline = time.monotonic() + within
    while True:
        view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        settled = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}
        if view.order.status in settled and not view.missing_sections:
            return view
        assert time.monotonic() < deadline, f"order still {view.order.status}"
        await asyncio.sleep(0.2)


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

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('capture')}") as channel:
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

    client = await Client.connect(stack.temporal)
    found = [
        wf.id
        async for wf in client.list_workflows(
            "OrderStatus = 'fulfilled' AND OrderChannel = 'web' "
            f"AND WorkflowId = 'order:{order_id}'"
        )
    ]
    assert found == [f"order:{order_id}"]


async def test_a_declined_card_cancels_the_order_and_raises_a_payment_exception(
    stack: DevStack,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('capture')}") as channel:
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
