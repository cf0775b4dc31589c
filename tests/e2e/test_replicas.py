"""Replicas are safe: `oms dev --replicas 2` runs two replicas of every service and two workers
on one Temporal and one Postgres. A storefront submits 200 orders, its calls spread round robin
over the capture replicas; halfway through, one replica of each service and one worker are
killed (SIGKILL). The stack restarts them; meanwhile the other replicas carry on. Every order
ends fulfilled without an agent, by exactly one workflow run (no lifecycle started twice),
and its money reconciles.

Prints its figures (time to submit and to settle, codes the storefront saw) with `-s`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import temporal
from oms_platform.settings import SERVICES
from oms_tools.devstack import replicas
from oms_tools.samples import sample_order
from tests.e2e.conftest import DevStack, kill, running, submit_with_retries

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPLICAS = 2
ORDERS = 200
SUBMITTERS = 8
# Orders come in over this long (7.5 a second), so the kills find lifecycles at every step.
SUBMIT_SPAN_SECONDS = 26.7
# One replica of each of these is killed once half the orders are in.
KILLED = (*SERVICES, "worker")
# Generous: the machine running the tests may be shared (settling takes about a minute alone).
SETTLE_WITHIN_SECONDS = 480.0


async def settled_orders(capture: capture_pb2_grpc.CaptureServiceStub, status: int) -> set[str]:
    """Ids of every order in `status`, as the order list shows them."""
    found: set[str] = set()
    token = ""
    while True:
        page = await capture.ListOrders(
            capture_pb2.ListOrdersRequest(statuses=[status], page_size=500, page_token=token),  # type: ignore[list-item]
            timeout=10,
        )
        found.update(order.order_id for order in page.orders)
        token = page.next_page_token
        if not token:
            return found


async def test_two_replicas_of_everything_lose_nothing_when_one_of_each_is_killed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dev = DevStack(
        tmp_path_factory.mktemp("replicas"),
        replicas=REPLICAS,
        # Quick warehouse steps, and lifecycle starts never held back for the front door: the
        # whole run stays within a few minutes on two cores.
        OMS_SIMULATOR_STEP_SECONDS="0.05",
        OMS_INGEST_LATENCY_TARGET_MS="0",
    )
    with running(dev) as stack:
        settings = stack.settings
        for service in SERVICES:
            listed = replicas.addresses(settings, service)
            assert len(listed.split(",")) == REPLICAS
            assert listed.replace(",", ", ") in stack.banner, service
        assert f"{REPLICAS} workers" in stack.banner

        codes: collections.Counter[str] = collections.Counter()
        killed: dict[int, str] = {}
        async with stack.channel("capture") as channel:
            capture = capture_pb2_grpc.CaptureServiceStub(channel)
            queue = [sample_order() for _ in range(ORDERS)]
            order_ids: list[str] = []
            began = time.monotonic()
            pause = SUBMIT_SPAN_SECONDS * SUBMITTERS / ORDERS

            async def submitter() -> None:
                while queue:
                    order_ids.append(await submit_with_retries(capture, queue.pop(), codes))
                    if len(order_ids) >= ORDERS // 2 and not killed:
                        for role in KILLED:
                            killed[kill(stack, role)] = role
                    await asyncio.sleep(pause)

            await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
            submitted = time.monotonic() - began
            assert len(set(order_ids)) == ORDERS
            assert sorted(killed.values()) == sorted(KILLED)

            pending = set(order_ids)
            while pending:
                assert time.monotonic() < began + SETTLE_WITHIN_SECONDS, (
                    f"{len(pending)} orders not fulfilled"
                )
                await asyncio.sleep(1.0)
                try:
                    pending -= await settled_orders(capture, capture_pb2.ORDER_STATUS_FULFILLED)
                    canceled = await settled_orders(capture, capture_pb2.ORDER_STATUS_CANCELED)
                except grpc.aio.AioRpcError:
                    continue
                assert not canceled & set(order_ids), canceled
            settled = time.monotonic() - began

            views = {
                order_id: await capture.GetOrder(
                    capture_pb2.GetOrderRequest(order_id=order_id), timeout=10
                )
                for order_id in order_ids
            }
        for order_id, view in views.items():
            assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED, order_id
            assert not view.missing_sections, order_id
            # Fulfilled without an agent: no process exception was raised for it.
            assert not view.process_exceptions, order_id

        # Every killed replica was reaped and started again by the stack, on its own.
        exited = {r["pid"]: r["process"] for r in stack.events("process exited")}
        restarted = {r["process"] for r in stack.events("process restarted")}
        for pid, role in killed.items():
            name = exited[pid]
            assert name.startswith(f"{role}-"), (pid, role, name)
            assert name in restarted, name

        # Both capture replicas took orders: the storefront's calls were spread.
        logs = Path(stack.env["OMS_DATA_DIR"]) / "logs"
        for name in ("capture-1", "capture-2"):
            assert "order captured" in (logs / f"{name}.log").read_text(), name

        # One workflow per order, one run each: no lifecycle started twice.
        client = await temporal.connect(settings)
        try:
            runs = collections.Counter(
                [wf.id async for wf in client.list_workflows("WorkflowType = 'OrderLifecycle'")]
            )
        finally:
            await temporal.close(client)
        assert runs == collections.Counter(f"order:{order_id}" for order_id in order_ids)

        async with stack.channel("payments") as channel:
            payments = payments_pb2_grpc.PaymentsServiceStub(channel)
            for order_id, view in views.items():
                reconciliation = (
                    await payments.GetReconciliation(
                        payments_pb2.GetReconciliationRequest(order_id=order_id), timeout=10
                    )
                ).reconciliation
                total = view.order.totals.grand_total.amount_minor
                assert reconciliation.agrees, order_id
                assert reconciliation.invoiced.amount_minor == total, order_id
                assert reconciliation.captured.amount_minor == total, order_id

        figures = {
            "orders": ORDERS,
            "killed": sorted(killed.values()),
            "submitted_in_s": round(submitted, 1),
            "all_fulfilled_after_s": round(settled, 1),
            "storefront_codes": dict(codes),
        }
        print(f"\nreplicas: {figures}")
