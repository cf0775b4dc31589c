"""Changes to orders and process-exception resolution over real gRPC, through the real order
workflow: the four services, a worker and a Temporal dev server (the `system` fixture), with
the warehouse simulator stepping instantly when an order should ship."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from oms_platform.money import format_minor, share
from oms_tools.samples import sample_order
from tests.callers import oms_cli
from tests.conftest import System
from workflows.types import order_workflow_id

if TYPE_CHECKING:
    from oms.capture.v1.capture_pb2_grpc import CaptureServiceAsyncStub
    from oms.servicing.v1.servicing_pb2_grpc import ServicingServiceAsyncStub

TSHIRT, MUG = "SKU-TSHIRT-M", "SKU-MUG"


class Clients:
    """Stubs for the four services of the system under test."""

    def __init__(self, system: System) -> None:
        self.capture: CaptureServiceAsyncStub = capture_pb2_grpc.CaptureServiceStub(
            system.channel("capture")
        )
        # Agent Ada's token: what she changes is recorded as hers.
        self.servicing: ServicingServiceAsyncStub = servicing_pb2_grpc.ServicingServiceStub(
            system.channel("servicing", subjects={auth.AGENT: "agent:ada"})
        )
        self.fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(
            system.channel("fulfillment")
        )
        self.payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))

    async def order(self, order_id: str) -> capture_pb2.GetOrderResponse:
        return await self.capture.GetOrder(
            capture_pb2.GetOrderRequest(order_id=order_id), timeout=10
        )

    async def until(
        self, order_id: str, statuses: Collection[int], seconds: float = 60
    ) -> capture_pb2.GetOrderResponse:
        """Poll the order until its status is one of `statuses`."""
        deadline = time.monotonic() + seconds
        while True:
            view = await self.order(order_id)
            if view.order.status in statuses:
                return view
            assert time.monotonic() < deadline, (
                f"order {order_id} stuck in {capture_pb2.OrderStatus.Name(view.order.status)}"
            )
            await asyncio.sleep(0.1)

    async def summary(self, order_id: str) -> payments_pb2.GetPaymentSummaryResponse:
        return await self.payments.GetPaymentSummary(
            payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
        )

    async def fulfillment_orders(self, order_id: str) -> list[fulfillment_pb2.FulfillmentOrder]:
        response = await self.fulfillment.ListFulfillmentOrders(
            fulfillment_pb2.ListFulfillmentOrdersRequest(order_id=order_id), timeout=10
        )
        return list(response.fulfillment_orders)

    async def exceptions(self, order_id: str) -> list[pb.ProcessException]:
        response = await self.servicing.ListProcessExceptions(
            pb.ListProcessExceptionsRequest(order_id=order_id), timeout=10
        )
        return list(response.process_exceptions)

    async def until_exceptions(
        self, order_id: str, count: int, seconds: float = 60
    ) -> list[pb.ProcessException]:
        """Poll until the order has `count` process exceptions (newest first)."""
        deadline = time.monotonic() + seconds
        while len(found := await self.exceptions(order_id)) < count:
            assert time.monotonic() < deadline, f"{len(found)} exception(s), wanted {count}"
            await asyncio.sleep(0.1)
        return found


@pytest.fixture
def clients(system: System) -> Clients:
    return Clients(system)


def a_key() -> str:
    return f"key-{uuid.uuid4()}"


def line_of(view: capture_pb2.GetOrderResponse, sku: str) -> capture_pb2.OrderLine:
    return next(line for line in view.order.lines if line.sku == sku)


def unit_share(line: capture_pb2.OrderLine, first_unit: int, quantity: int = 1) -> int:
    """The exact money of units first_unit.. of a line: gross - discounts + tax, each part
    shared unit by unit (the way invoices and credit memos take it)."""
    gross = line.unit_price.amount_minor * line.quantity
    discount = sum(d.amount.amount_minor for d in line.discounts)
    discount += line.allocated_order_discount.amount_minor
    tax = sum(t.amount.amount_minor for t in line.taxes)
    q = line.quantity
    return (
        share(gross, q, first_unit, quantity)
        - share(discount, q, first_unit, quantity)
        + share(tax, q, first_unit, quantity)
    )


async def an_order(clients: Clients, token: str = "tok_visa") -> str:
    response = await clients.capture.SubmitOrder(sample_order(token=token), timeout=10)
    return response.order.order_id


async def an_allocated_order(clients: Clients) -> capture_pb2.GetOrderResponse:
    """An order routed to a location and waiting there (no simulator runs)."""
    order_id = await an_order(clients)
    return await clients.until(order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})


async def a_delivered_order(system: System, clients: Clients) -> capture_pb2.GetOrderResponse:
    """An order shipped, captured and delivered (its return window still open)."""
    order_id = await an_order(clients)
    async with system.simulator(step_seconds=0.0):
        return await clients.until(order_id, {capture_pb2.ORDER_STATUS_FULFILLED})


def cancel(order_id: str, *lines: tuple[str, int]) -> pb.SubmitCancelRequest:
    return pb.SubmitCancelRequest(
        order_id=order_id,
        idempotency_key=a_key(),
        reason="shopper changed her mind",
        lines=[pb.ItemQuantity(order_line_id=line, quantity=q) for line, q in lines],
    )


# ---- cancels ----------------------------------------------------------------------------------


async def test_canceling_one_unit_before_shipping_releases_only_its_share(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    its_share = unit_share(tshirt, first_unit=1)  # cancels take units from the back

    preview = await clients.servicing.PreviewCancel(
        pb.PreviewCancelRequest(
            order_id=order_id,
            lines=[pb.ItemQuantity(order_line_id=tshirt.order_line_id, quantity=1)],
        )
    )
    submitted = await clients.servicing.SubmitCancel(cancel(order_id, (tshirt.order_line_id, 1)))

    change = submitted.change
    assert preview.preview.credited_minor == its_share
    assert change.status == pb.CHANGE_STATUS_COMPLETED
    assert change.kind == pb.CHANGE_KIND_CANCEL
    assert (change.actor, change.reason) == ("agent:ada", "shopper changed her mind")
    assert change.outcome.released_minor == its_share
    assert change.outcome.refunded_minor == 0
    assert change.outcome.credit_memo_id
    [fo] = await clients.fulfillment_orders(order_id)
    fo_tshirt = next(li for li in fo.lines if li.order_line_id == tshirt.order_line_id)
    fo_mug = next(li for li in fo.lines if li.order_line_id != tshirt.order_line_id)
    assert (fo_tshirt.quantity, fo_tshirt.quantity_canceled) == (1, 1)
    assert (fo_mug.quantity, fo_mug.quantity_canceled) == (1, 0)
    money = (await clients.summary(order_id)).summary
    assert money.released.amount_minor == its_share
    after = await clients.order(order_id)
    assert line_of(after, TSHIRT).quantities.canceled == 1
    listed = await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    assert [c.change_id for c in listed.changes] == [change.change_id]

    async with system.simulator(step_seconds=0.0):
        settled = await clients.until(order_id, {capture_pb2.ORDER_STATUS_FULFILLED})
    grand_total = settled.order.totals.grand_total.amount_minor
    assert settled.payment_summary.captured.amount_minor == grand_total - its_share


async def test_a_retried_cancel_gets_the_same_answer_and_cancels_once(
    clients: Clients,
) -> None:
    view = await an_allocated_order(clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)
    request = cancel(order_id, (mug.order_line_id, 1))

    other = pb.SubmitCancelRequest()
    other.CopyFrom(request)
    other.reason = "another reason"

    first = await clients.servicing.SubmitCancel(request)
    again = await clients.servicing.SubmitCancel(request)
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await clients.servicing.SubmitCancel(other)

    assert again.change == first.change
    assert line_of(await clients.order(order_id), MUG).quantities.canceled == 1
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_canceling_everything_cancels_the_order_and_voids_the_authorization(
    clients: Clients,
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id

    submitted = await clients.servicing.SubmitCancel(cancel(order_id))

    change = submitted.change
    assert change.outcome.order_status == "canceled"
    assert sorted((i.order_line_id, i.quantity) for i in change.outcome.lines) == sorted(
        (line.order_line_id, line.quantity) for line in view.order.lines
    )
    settled = await clients.until(order_id, {capture_pb2.ORDER_STATUS_CANCELED})
    assert all(line.quantities.canceled == line.quantity for line in settled.order.lines)
    money = await clients.summary(order_id)
    assert money.summary.authorized.amount_minor == 0
    assert money.summary.captured.amount_minor == 0
    assert [a.status for a in money.authorizations] == [payments_pb2.AUTHORIZATION_STATUS_VOIDED]
    [fo] = await clients.fulfillment_orders(order_id)
    assert fo.status == fulfillment_pb2.FULFILLMENT_ORDER_STATUS_CANCELED


async def test_a_change_to_a_closed_order_is_refused_as_closed(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id
    await clients.servicing.SubmitCancel(cancel(order_id))
    result = await system.client.get_workflow_handle(order_workflow_id(order_id)).result()
    assert result["status"] == "canceled"

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await clients.servicing.SubmitCancel(cancel(order_id))

    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == f"order {order_id} is closed"


async def test_canceling_more_than_remains_is_refused_and_recorded_as_refused(
    clients: Clients,
) -> None:
    view = await an_allocated_order(clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)

    with pytest.raises(grpc.aio.AioRpcError) as previewed:
        await clients.servicing.PreviewCancel(
            pb.PreviewCancelRequest(
                order_id=order_id,
                lines=[pb.ItemQuantity(order_line_id=mug.order_line_id, quantity=2)],
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as submitted:
        await clients.servicing.SubmitCancel(cancel(order_id, (mug.order_line_id, 2)))
    with pytest.raises(grpc.aio.AioRpcError) as unknown_line:
        await clients.servicing.SubmitCancel(cancel(order_id, ("no-such-line", 1)))

    for error in (previewed.value, submitted.value):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "only 1 unit(s) of SKU-MUG can still be canceled" in (error.details() or "")
    assert unknown_line.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(unknown_line.value)] == ["lines[0].order_line_id"]
    changes = (
        await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    ).changes
    assert [(c.status, c.refusal_code) for c in changes] == [
        (pb.CHANGE_STATUS_REFUSED, "FAILED_PRECONDITION"),
        (pb.CHANGE_STATUS_REFUSED, "INVALID_ARGUMENT"),
    ]
    assert line_of(await clients.order(order_id), MUG).quantities.canceled == 0


async def test_a_change_to_an_order_that_does_not_exist_is_not_found(clients: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await clients.servicing.SubmitCancel(cancel(f"order-{uuid.uuid4()}"))

    assert error.value.code() == grpc.StatusCode.NOT_FOUND


# ---- after delivery -----------------------------------------------------------------------------


async def test_a_return_refunds_exactly_the_units_share_on_receipt(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_order(system, clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    its_share = unit_share(tshirt, first_unit=0)  # returns credit invoiced units from the front
    item = pb.ReturnItem(
        order_line_id=tshirt.order_line_id,
        quantity=1,
        reason="too small",
        condition=pb.ITEM_CONDITION_OPENED,
    )

    preview = await clients.servicing.PreviewReturn(
        pb.PreviewReturnRequest(order_id=order_id, lines=[item])
    )
    opened = await clients.servicing.SubmitReturn(
        pb.SubmitReturnRequest(
            order_id=order_id, idempotency_key=a_key(), reason="too small", lines=[item]
        )
    )
    return_order_id = opened.change.outcome.return_order_id
    received = await clients.servicing.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_order_id=return_order_id,
            order_id=order_id,
            idempotency_key=a_key(),
            accepted=[
                pb.ReceivedItem(
                    order_line_id=tshirt.order_line_id,
                    quantity=1,
                    condition=pb.ITEM_CONDITION_NEW,
                )
            ],
        )
    )

    assert preview.preview.credited_minor == its_share
    assert opened.change.outcome.refunded_minor == 0
    assert received.change.outcome.refunded_minor == its_share
    money = (await clients.summary(order_id)).summary
    assert money.refunded.amount_minor == its_share
    rma = received.return_order
    assert (rma.return_order_id, rma.status) == (return_order_id, pb.RETURN_ORDER_STATUS_RECEIVED)
    [line] = rma.lines
    assert (line.quantity_expected, line.quantity_accepted, line.reason, line.condition) == (
        1,
        1,
        "too small",
        pb.ITEM_CONDITION_NEW,
    )
    listed = await clients.servicing.ListReturnOrders(pb.ListReturnOrdersRequest(order_id=order_id))
    assert [r.return_order_id for r in listed.return_orders] == [return_order_id]
    after = line_of(await clients.order(order_id), TSHIRT).quantities
    assert (after.return_initiated, after.returned) == (1, 1)


async def test_an_exchange_for_a_cheaper_item_ships_it_and_refunds_the_difference(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_order(system, clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    returned_value = unit_share(tshirt, first_unit=0)

    exchanged = await clients.servicing.SubmitExchange(
        pb.SubmitExchangeRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason="wants a mug instead",
            lines=[
                pb.ExchangeItem(
                    order_line_id=tshirt.order_line_id,
                    quantity=1,
                    replacement_sku=MUG,
                    replacement_unit_price_minor=1000,
                    condition=pb.ITEM_CONDITION_NEW,
                )
            ],
        )
    )

    outcome = exchanged.change.outcome
    assert exchanged.change.kind == pb.CHANGE_KIND_EXCHANGE
    assert outcome.refunded_minor == returned_value - 1000
    assert outcome.charged_minor == 0
    [replacement_id] = outcome.fulfillment_order_ids
    fos = {fo.fulfillment_order_id: fo for fo in await clients.fulfillment_orders(order_id)}
    assert [(li.sku, li.quantity) for li in fos[replacement_id].lines] == [(MUG, 1)]
    [rma] = (
        await clients.servicing.ListReturnOrders(pb.ListReturnOrdersRequest(order_id=order_id))
    ).return_orders
    assert rma.return_order_id == outcome.return_order_id
    assert [(li.order_line_id, li.quantity_expected, li.condition) for li in rma.lines] == [
        (tshirt.order_line_id, 1, pb.ITEM_CONDITION_NEW)
    ]


async def test_previewing_an_exchange_and_a_reship_says_what_they_would_do_and_keeps_nothing(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_order(system, clients)
    order_id, tshirt, mug = view.order.order_id, line_of(view, TSHIRT), line_of(view, MUG)
    returned_value = unit_share(tshirt, first_unit=0)

    def exchange(price: int) -> pb.PreviewExchangeRequest:
        return pb.PreviewExchangeRequest(
            order_id=order_id,
            lines=[
                pb.ExchangeItem(
                    order_line_id=tshirt.order_line_id,
                    quantity=1,
                    replacement_sku="SKU-TSHIRT-L",
                    replacement_unit_price_minor=price,
                )
            ],
        )

    dearer = (await clients.servicing.PreviewExchange(exchange(returned_value + 250))).preview
    cheaper = (await clients.servicing.PreviewExchange(exchange(returned_value - 100))).preview
    reship = (
        await clients.servicing.PreviewReship(
            pb.PreviewReshipRequest(
                order_id=order_id,
                lines=[pb.ItemQuantity(order_line_id=mug.order_line_id, quantity=1)],
            )
        )
    ).preview
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await clients.servicing.PreviewReship(
            pb.PreviewReshipRequest(
                order_id=order_id,
                lines=[pb.ItemQuantity(order_line_id=mug.order_line_id, quantity=5)],
            )
        )

    assert (dearer.charged_minor, dearer.credited_minor) == (250, 0)
    assert (cheaper.charged_minor, cheaper.credited_minor) == (0, 100)
    assert "would ship 1 unit(s) again at no charge" in reship.summary
    assert too_many.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "only 1 unit(s) of SKU-MUG shipped" in (too_many.value.details() or "")
    # Nothing was recorded: no change, no return order, no new fulfillment order.
    changes = await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    assert list(changes.changes) == []
    assert len(await clients.fulfillment_orders(order_id)) == len(view.fulfillment_orders)
    assert (await clients.summary(order_id)).summary.captured == view.payment_summary.captured


async def test_an_appeasement_on_a_delivered_order_refunds_the_amount(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_order(system, clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)

    preview = await clients.servicing.PreviewAppeasement(
        pb.PreviewAppeasementRequest(order_id=order_id, percent_basis_points=5000)
    )
    given = await clients.servicing.SubmitAppeasement(
        pb.SubmitAppeasementRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason="late delivery",
            order_line_id=mug.order_line_id,
            amount_minor=300,
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await clients.servicing.SubmitAppeasement(
            pb.SubmitAppeasementRequest(
                order_id=order_id,
                idempotency_key=a_key(),
                reason="again",
                order_line_id=mug.order_line_id,
                amount_minor=mug.total.amount_minor,
            )
        )

    grand_total = view.order.totals.grand_total.amount_minor
    assert preview.preview.credited_minor == grand_total // 2
    assert (given.change.outcome.credited_minor, given.change.outcome.refunded_minor) == (300, 300)
    assert (await clients.summary(order_id)).summary.refunded.amount_minor == 300
    assert too_much.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "exceeds" in (too_much.value.details() or "")


async def test_a_reship_creates_a_new_fulfillment_order_at_no_charge(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_order(system, clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)
    captured = view.payment_summary.captured.amount_minor

    reshipped = await clients.servicing.SubmitReship(
        pb.SubmitReshipRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason=pb.RESHIP_REASON_DAMAGED,
            note="box crushed",
            lines=[pb.ItemQuantity(order_line_id=mug.order_line_id, quantity=1)],
        )
    )

    [new_fo_id] = reshipped.change.outcome.fulfillment_order_ids
    assert reshipped.change.reason == "parcel damaged: box crushed"
    fos = {fo.fulfillment_order_id: fo for fo in await clients.fulfillment_orders(order_id)}
    assert [(li.order_line_id, li.quantity) for li in fos[new_fo_id].lines] == [
        (mug.order_line_id, 1)
    ]
    assert (await clients.summary(order_id)).summary.captured.amount_minor == captured


# ---- process exceptions -------------------------------------------------------------------------


async def test_resolving_an_exception_the_order_is_not_waiting_on_is_refused(
    clients: Clients,
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id
    recorded = await clients.servicing.RecordProcessException(
        pb.RecordProcessExceptionRequest(
            idempotency_key=a_key(),
            order_id=order_id,
            category=pb.PROCESS_EXCEPTION_CATEGORY_CARRIER,
            severity=pb.PROCESS_EXCEPTION_SEVERITY_LOW,
            message="carrier pickup missed",
        )
    )
    exception_id = recorded.process_exception.process_exception_id

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await clients.servicing.ResolveProcessException(
            pb.ResolveProcessExceptionRequest(
                process_exception_id=exception_id, action=pb.RESOLUTION_ACTION_RETRY
            )
        )

    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"not waiting on process exception {exception_id}" in (error.value.details() or "")
    [still] = await clients.exceptions(order_id)
    assert still.status == pb.PROCESS_EXCEPTION_STATUS_NEW


async def test_a_declined_capture_is_retried_then_skipped_through_resolutions(
    system: System, clients: Clients
) -> None:
    """The simulated gateway fails every capture on a tok_fail_capture authorization, so a
    retry raises a second exception; skipping that one lets the order finish uncaptured."""
    order_id = await an_order(clients, token="tok_fail_capture")
    async with system.simulator(step_seconds=0.0):
        await clients.until(order_id, {capture_pb2.ORDER_STATUS_ON_HOLD})
        [first] = await clients.until_exceptions(order_id, 1)

        retried = await clients.servicing.ResolveProcessException(
            pb.ResolveProcessExceptionRequest(
                process_exception_id=first.process_exception_id,
                action=pb.RESOLUTION_ACTION_RETRY,
                note="gateway says it is back",
            )
        )
        again = await clients.servicing.ResolveProcessException(
            pb.ResolveProcessExceptionRequest(
                process_exception_id=first.process_exception_id,
                action=pb.RESOLUTION_ACTION_RETRY,
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as conflicting:
            await clients.servicing.ResolveProcessException(
                pb.ResolveProcessExceptionRequest(
                    process_exception_id=first.process_exception_id,
                    action=pb.RESOLUTION_ACTION_SKIP,
                )
            )
        second, _first = await clients.until_exceptions(order_id, 2)
        skipped = await clients.servicing.ResolveProcessException(
            pb.ResolveProcessExceptionRequest(
                process_exception_id=second.process_exception_id,
                action=pb.RESOLUTION_ACTION_SKIP,
                note="collect by invoice",
            )
        )
        settled = await clients.until(order_id, {capture_pb2.ORDER_STATUS_FULFILLED})

    resolved = retried.process_exception
    assert first.category == pb.PROCESS_EXCEPTION_CATEGORY_PAYMENT
    assert "processor_unavailable" in first.message
    assert resolved.status == pb.PROCESS_EXCEPTION_STATUS_RESOLVED
    assert (resolved.resolution_action, resolved.resolution_note, resolved.resolved_by) == (
        pb.RESOLUTION_ACTION_RETRY,
        "gateway says it is back",
        "agent:ada",
    )
    assert resolved.HasField("resolved_at")
    assert again.process_exception == resolved
    assert conflicting.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already resolved with retry" in (conflicting.value.details() or "")
    assert second.process_exception_id != first.process_exception_id
    assert skipped.process_exception.resolution_action == pb.RESOLUTION_ACTION_SKIP
    assert settled.payment_summary.captured.amount_minor == 0
    captures = (await clients.summary(order_id)).captures
    assert len(captures) == 2
    assert {c.status for c in captures} == {payments_pb2.CAPTURE_STATUS_FAILED}


# ---- the agent's CLI ---------------------------------------------------------------------------


async def oms(system: System, *args: str, subject: str = "") -> tuple[int, str, str]:
    """Run the `oms` CLI against the system under test (as `subject` when given)."""
    return await oms_cli(system.settings, *args, subject=subject)


async def test_an_agent_cancels_a_unit_and_lists_changes_and_exceptions_with_the_cli(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    its_share = format_minor(unit_share(tshirt, first_unit=1), "USD")

    preview_code, previewed, _ = await oms(
        system, "order", "cancel", order_id, "--line", tshirt.order_line_id, "--qty", "1",
        "--reason", "duplicate", "--preview",
    )  # fmt: skip
    code, out, err = await oms(
        system, "order", "cancel", order_id, "--line", tshirt.order_line_id, "--qty", "1",
        "--reason", "duplicate", subject="agent:ada",
    )  # fmt: skip
    listed_code, listed, _ = await oms(system, "order", "changes", order_id, "--json")
    refused_code, _, refused = await oms(
        system, "order", "cancel", order_id, "--line", "no-such-line", "--reason", "typo"
    )
    exceptions_code, exceptions, _ = await oms(
        system, "exception", "list", "--order", order_id, "--json"
    )

    assert preview_code == 0 and f"would give back {its_share}" in previewed
    assert (code, err) == (0, "")
    assert out.startswith("cancel chg-")
    assert "by agent:ada: duplicate" in out
    assert f"released {its_share}" in out
    assert listed_code == 0
    [change] = json.loads(listed)["changes"]
    assert (change["kind"], change["status"]) == ("CHANGE_KIND_CANCEL", "CHANGE_STATUS_COMPLETED")
    assert refused_code == 1
    assert "INVALID_ARGUMENT" in refused and "lines[0].order_line_id" in refused
    assert (exceptions_code, json.loads(exceptions)) == (0, {})


async def test_an_agent_gives_goodwill_on_a_line_with_the_cli(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_order(system, clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)
    three = format_minor(300, "USD")

    preview_code, previewed, preview_err = await oms(
        system, "order", "appease", order_id, "--line", mug.order_line_id, "--amount", "300",
        "--preview",
    )  # fmt: skip
    code, out, err = await oms(
        system, "order", "appease", order_id, "--line", mug.order_line_id, "--amount", "300",
        "--reason", "late delivery", subject="agent:ada",
    )  # fmt: skip

    assert (preview_code, preview_err) == (0, "")
    assert f"would give back {three}" in previewed
    assert (code, err) == (0, "")
    assert out.startswith("appeasement chg-") and "by agent:ada: late delivery" in out
    assert f"refunded {three}" in out
    summary = (await clients.summary(order_id)).summary
    assert summary.refunded.amount_minor == 300
