"""Changes to orders in flight, through the real workflow, services and Temporal: the Update
is serialized with the lifecycle and its reply carries the outcome."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from temporalio.client import WorkflowUpdateFailedError

from oms_platform.money import share
from oms_tools.samples import sample_order
from tests.conftest import System, wait_for
from tests.integration.helpers import local_activities
from workflows.types import (
    APPEASE_UPDATE,
    CANCEL_UPDATE,
    ChangeRequest,
    ChangeResult,
    ItemQuantity,
    order_workflow_id,
)

SETTLED = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}


async def cancel(system: System, order_id: str, lines: list[ItemQuantity]) -> ChangeResult:
    handle = system.client.get_workflow_handle(order_workflow_id(order_id))
    result: ChangeResult = await handle.execute_update(
        CANCEL_UPDATE,
        ChangeRequest(
            change_id=str(uuid.uuid4()), kind="cancel", reason="shopper asked", lines=lines
        ),
        result_type=ChangeResult,
    )
    return result


async def test_canceling_one_unit_releases_its_reservation_and_only_its_share_of_money(
    system: System,
) -> None:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    order = (await capture.SubmitOrder(sample_order(), timeout=10)).order
    await wait_for(capture, order.order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})
    tshirts = next(line for line in order.lines if line.sku == "SKU-TSHIRT-M")

    result = await cancel(system, order.order_id, [ItemQuantity(tshirts.order_line_id, 1)])

    # Units of a line are exact shares of each part of its money; cancels take the last unit.
    gross = tshirts.unit_price.amount_minor * tshirts.quantity
    discount = sum(d.amount.amount_minor for d in tshirts.discounts)
    discount += tshirts.allocated_order_discount.amount_minor
    tax = sum(t.amount.amount_minor for t in tshirts.taxes)
    last_unit = share(gross, 2, 1, 1) - share(discount, 2, 1, 1) + share(tax, 2, 1, 1)
    assert result.credited_minor == last_unit
    assert result.released_minor == result.credited_minor and result.refunded_minor == 0
    [fo] = (
        await fulfillment.ListFulfillmentOrders(
            fulfillment_pb2.ListFulfillmentOrdersRequest(order_id=order.order_id), timeout=10
        )
    ).fulfillment_orders
    fo_tshirts = next(line for line in fo.lines if line.order_line_id == tshirts.order_line_id)
    assert fo_tshirts.quantity == 1

    async with system.simulator():
        view = await wait_for(capture, order.order_id, SETTLED)
    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
    line = next(line for line in view.order.lines if line.order_line_id == tshirts.order_line_id)
    assert (line.quantities.canceled, line.quantities.fulfilled) == (1, 1)
    captured = view.payment_summary.captured.amount_minor
    assert captured + result.credited_minor == order.totals.grand_total.amount_minor
    assert captured == sum(invoice.total.amount_minor for invoice in view.invoices)


async def test_canceling_everything_voids_the_authorization_and_releases_every_unit(
    system: System,
) -> None:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    order = (await capture.SubmitOrder(sample_order(), timeout=10)).order
    await wait_for(capture, order.order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})

    result = await cancel(system, order.order_id, [])

    assert result.order_status == "canceled"
    assert result.credited_minor == order.totals.grand_total.amount_minor
    view = await wait_for(capture, order.order_id, SETTLED)
    assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED
    [fo] = view.fulfillment_orders
    assert fo.status == fulfillment_pb2.FULFILLMENT_ORDER_STATUS_CANCELED
    summary = await payments.GetPaymentSummary(
        payments_pb2.GetPaymentSummaryRequest(order_id=order.order_id), timeout=10
    )
    assert summary.summary.captured.amount_minor == 0
    assert all(a.status == payments_pb2.AUTHORIZATION_STATUS_VOIDED for a in summary.authorizations)
    # Everything released by the memo, whose one payments call also made the void.
    assert summary.summary.released.amount_minor == order.totals.grand_total.amount_minor
    steps = await local_activities(system.client, order.order_id)
    assert steps.count("credit_memo_and_refund") == 1
    assert not {"create_credit_memo", "refund_credit_memo", "void_authorization"} & set(steps)


async def test_a_cancel_racing_the_shipment_ends_either_shipped_or_canceled_never_a_mix(
    system: System,
) -> None:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(system.channel("fulfillment"))
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    order = (await capture.SubmitOrder(sample_order(), timeout=10)).order
    view = await wait_for(capture, order.order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})
    [fo] = view.fulfillment_orders
    await fulfillment.AcceptFulfillmentOrder(
        fulfillment_pb2.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )

    async def ship() -> str:
        try:
            await fulfillment.ConfirmShipment(
                fulfillment_pb2.ConfirmShipmentRequest(
                    fulfillment_order_id=fo.fulfillment_order_id,
                    idempotency_key="race",
                    carrier="UPS",
                    tracking_number="1ZRACE",
                )
            )
            return "shipped"
        except grpc.aio.AioRpcError as error:
            return error.code().name

    async def cancel_all() -> str:
        try:
            await cancel(system, order.order_id, [])
            return "canceled"
        except WorkflowUpdateFailedError as error:
            return str(error.cause)

    shipped, canceled = await asyncio.gather(ship(), cancel_all())
    assert (shipped == "shipped") != (canceled == "canceled"), (shipped, canceled)

    if shipped == "shipped":
        shipment_id = (
            (
                await fulfillment.GetFulfillmentOrder(
                    fulfillment_pb2.GetFulfillmentOrderRequest(
                        fulfillment_order_id=fo.fulfillment_order_id
                    )
                )
            )
            .fulfillment_order.shipments[0]
            .shipment_id
        )
        await fulfillment.ConfirmDelivery(
            fulfillment_pb2.ConfirmDeliveryRequest(shipment_id=shipment_id)
        )
    final = await wait_for(capture, order.order_id, SETTLED)
    summary = (
        await payments.GetPaymentSummary(
            payments_pb2.GetPaymentSummaryRequest(order_id=order.order_id)
        )
    ).summary
    total = order.totals.grand_total.amount_minor
    if shipped == "shipped":
        assert final.order.status == capture_pb2.ORDER_STATUS_FULFILLED
        assert summary.captured.amount_minor == summary.invoiced.amount_minor == total
    else:
        assert final.order.status == capture_pb2.ORDER_STATUS_CANCELED
        assert summary.captured.amount_minor == 0
        assert summary.authorized.amount_minor == 0


async def test_goodwill_before_shipping_is_taken_off_the_invoice_and_the_rest_of_the_hold_freed(
    system: System,
) -> None:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    order = (await capture.SubmitOrder(sample_order(), timeout=10)).order
    await wait_for(capture, order.order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})
    handle = system.client.get_workflow_handle(order_workflow_id(order.order_id))

    goodwill: ChangeResult = await handle.execute_update(
        APPEASE_UPDATE,
        ChangeRequest(
            change_id=str(uuid.uuid4()), kind="appease", reason="late dispatch", amount_minor=500
        ),
        result_type=ChangeResult,
    )
    async with system.simulator():
        view = await wait_for(capture, order.order_id, SETTLED)

    total = order.totals.grand_total.amount_minor
    assert goodwill.credited_minor == 500 and goodwill.refunded_minor == 0
    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
    [invoice] = view.invoices
    assert invoice.goodwill.amount_minor == 500
    assert invoice.total.amount_minor == total - 500
    assert view.payment_summary.captured.amount_minor == total - 500
    summary = await payments.GetPaymentSummary(
        payments_pb2.GetPaymentSummaryRequest(order_id=order.order_id), timeout=10
    )
    # Nothing stays held: the 5.00 the goodwill took off was released once delivered.
    assert summary.summary.authorized.amount_minor == 0
    reconciliation = await payments.GetReconciliation(
        payments_pb2.GetReconciliationRequest(order_id=order.order_id), timeout=10
    )
    assert reconciliation.reconciliation.agrees
    assert any("taken off what will be charged" in e.summary for e in view.timeline)
