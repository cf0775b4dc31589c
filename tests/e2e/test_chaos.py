"""Chaos: orders keep coming while the worker, the payments service, Postgres and the Temporal
server are killed (SIGKILL) one after another. The storefront retries UNAVAILABLE with the same
idempotency key; every order still ends fulfilled without an agent, every order's money
reconciles, and the simulated processor's own log shows one successful capture per invoice.

Prints its figures (orders, kills, time to settle, codes the storefront saw) with `-s`.
"""

from __future__ import annotations

import asyncio
import collections
import time

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_tools.samples import sample_order
from services.payments.sim_store import read_operations
from tests.e2e.conftest import DevStack, kill, running, submit_with_retries

# The whole drill: about half a minute of submitting, then settling; its own time limit.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Orders arrive at about 6.7 a second from first to last, so every kill finds dozens in
# flight, and orders keep arriving after the last kill.
ORDERS = 240
SUBMITTERS = 8
SUBMIT_SPAN_SECONDS = 36.0
# When (seconds after the first order) each process is killed, in this order: each a
# different process, so none waits for another's restart.
KILLS = (("worker", 5.0), ("payments", 13.0), ("postgres", 21.0), ("temporal", 29.0))
SETTLE_WITHIN_SECONDS = 600.0


async def test_orders_survive_killing_every_process_in_turn(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dev = DevStack(tmp_path_factory.mktemp("chaos"))
    with running(dev) as stack:
        codes: collections.Counter[str] = collections.Counter()
        killed: list[tuple[str, int, float]] = []
        async with stack.channel("capture") as channel:
            capture = capture_pb2_grpc.CaptureServiceStub(channel)
            requests = [sample_order() for _ in range(ORDERS)]
            queue: asyncio.Queue[capture_pb2.SubmitOrderRequest] = asyncio.Queue()
            for request in requests:
                queue.put_nowait(request)
            order_ids: list[str] = []
            began = time.monotonic()
            pause = SUBMIT_SPAN_SECONDS * SUBMITTERS / ORDERS

            async def submitter() -> None:
                while not queue.empty():
                    request = queue.get_nowait()
                    order_ids.append(await submit_with_retries(capture, request, codes))
                    await asyncio.sleep(pause)

            async def chaos() -> None:
                for role, at in KILLS:
                    await asyncio.sleep(max(0.0, began + at - time.monotonic()))
                    killed.append((role, kill(stack, role), round(time.monotonic() - began, 1)))

            await asyncio.gather(chaos(), *(submitter() for _ in range(SUBMITTERS)))
            submitted = time.monotonic() - began
            assert len(set(order_ids)) == ORDERS

            pending = set(order_ids)
            views: dict[str, capture_pb2.GetOrderResponse] = {}
            deadline = began + SETTLE_WITHIN_SECONDS
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} orders unsettled"
                for order_id in list(pending):
                    try:
                        view = await capture.GetOrder(
                            capture_pb2.GetOrderRequest(order_id=order_id), timeout=5
                        )
                    except grpc.aio.AioRpcError:
                        continue
                    if view.order.status == capture_pb2.ORDER_STATUS_FULFILLED:
                        views[order_id] = view
                        pending.discard(order_id)
                    assert view.order.status != capture_pb2.ORDER_STATUS_CANCELED, order_id
                await asyncio.sleep(1.0)
            settled = time.monotonic() - began

        captured_at_gateway = collections.defaultdict(list)
        # The processor's own books (its log commits with each effect; the JSON-lines mirror
        # could miss a line when payments dies right after a commit).
        for op in await read_operations(stack.settings.dsn):
            if op.kind == "capture" and op.result.succeeded:
                captured_at_gateway[op.key.split(":", 1)[0]].append(op)
        async with stack.channel("payments") as channel:
            payments = payments_pb2_grpc.PaymentsServiceStub(channel)
            for order_id, view in views.items():
                summary = await payments.GetPaymentSummary(
                    payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
                )
                reconciliation = (
                    await payments.GetReconciliation(
                        payments_pb2.GetReconciliationRequest(order_id=order_id), timeout=10
                    )
                ).reconciliation
                assert reconciliation.agrees, order_id
                total = view.order.totals.grand_total.amount_minor
                assert reconciliation.invoiced.amount_minor == total, order_id
                assert reconciliation.captured.amount_minor == total, order_id
                charges = captured_at_gateway[order_id]
                # The processor charged once per invoice, and exactly the invoiced money.
                assert len(charges) == len(summary.invoices) == 1, (order_id, charges)
                assert sum(op.amount_minor for op in charges) == total, order_id

        figures = {
            "orders": ORDERS,
            "kills": killed,
            "submitted_in_s": round(submitted, 1),
            "all_fulfilled_after_s": round(settled, 1),
            "storefront_codes": dict(codes),
            "process_exceptions": sum(len(v.process_exceptions) for v in views.values()),
        }
        print(f"\nchaos: {figures}")
        # Fulfilled without an agent: no order needed anyone to resolve an exception.
        assert not any(v.process_exceptions for v in views.values()), figures
        assert [role for role, _, _ in killed] == [role for role, _ in KILLS]
