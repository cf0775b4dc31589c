"""Adding items before fulfillment over real gRPC, through the real order workflow (the
`system` fixture): PreviewAddItems and SubmitAddItems on servicing, then the order's record in
capture, its fulfillment orders and its money; refusals leave nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import grpc
import pytest
from oms.capture.v1 import capture_pb2
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2 as pb

from oms_platform.grpcutil import field_violations
from oms_tools.samples import sample_order
from tests.conftest import System
from tests.integration.test_servicing_changes import (
    MUG,
    TSHIRT,
    Clients,
    a_delivered_order,
    a_key,
    an_allocated_order,
    line_of,
)


@pytest.fixture
def clients(system: System) -> Clients:
    return Clients(system)


CAP = pb.NewLineItem(sku="SKU-CAP", name="Cap", quantity=2, unit_price_minor=800, tax_minor=96)
CAP_TOTAL = 2 * 800 + 96


def submit(
    order_id: str, *, new: list[pb.NewLineItem], more: Sequence[pb.LineIncrease] = ()
) -> pb.SubmitAddItemsRequest:
    return pb.SubmitAddItemsRequest(
        order_id=order_id,
        idempotency_key=a_key(),
        reason="shopper wants a cap too",
        new_lines=new,
        increases=list(more),
    )


async def refusal(clients: Clients, request: pb.SubmitAddItemsRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await clients.servicing.SubmitAddItems(request)
    return error.value


def open_fulfillment_orders(fos: list[fulfillment_pb2.FulfillmentOrder]) -> list[str]:
    return [
        fo.fulfillment_order_id
        for fo in fos
        if fo.status != fulfillment_pb2.FULFILLMENT_ORDER_STATUS_CANCELED
    ]


async def reconciliation(clients: Clients, order_id: str) -> payments_pb2.Reconciliation:
    response = await clients.payments.GetReconciliation(
        payments_pb2.GetReconciliationRequest(order_id=order_id), timeout=10
    )
    return response.reconciliation


async def test_items_added_before_shipping_show_on_the_order_and_are_charged_in_full(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)
    total_before = view.order.totals.grand_total.amount_minor
    one_more_mug = pb.LineIncrease(order_line_id=mug.order_line_id, quantity=1, tax_minor=90)
    added = CAP_TOTAL + 1200 + 90

    preview = await clients.servicing.PreviewAddItems(
        pb.PreviewAddItemsRequest(order_id=order_id, new_lines=[CAP], increases=[one_more_mug])
    )
    unchanged = await clients.order(order_id)
    submitted = await clients.servicing.SubmitAddItems(
        submit(order_id, new=[CAP], more=[one_more_mug])
    )

    # The preview computes the same thing and changes nothing.
    assert (preview.preview.authorized_minor, preview.preview.grand_total_minor) == (
        added,
        total_before + added,
    )
    assert len(unchanged.order.lines) == 2 and len(unchanged.authorizations) == 1
    change = submitted.change
    assert (change.kind, change.status) == (pb.CHANGE_KIND_ADD_ITEMS, pb.CHANGE_STATUS_COMPLETED)
    assert (change.actor, change.reason) == ("agent:ada", "shopper wants a cap too")
    assert change.outcome.authorized_minor == added
    assert change.outcome.grand_total_minor == total_before + added
    [added_fo] = change.outcome.fulfillment_order_ids
    listed = await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    assert [c.change_id for c in listed.changes] == [change.change_id]
    assert listed.changes[0].outcome.authorized_minor == added

    # Capture's record: the new line, the mug's new quantity, the totals, the timeline.
    after = await clients.order(order_id)
    cap, mugs = line_of(after, "SKU-CAP"), line_of(after, MUG)
    assert (cap.quantity, cap.unit_price.amount_minor, cap.total.amount_minor) == (2, 800, 1696)
    assert (cap.quantities.ordered, cap.quantities.allocated) == (2, 2)
    assert cap.order_line_id in {i.order_line_id for i in change.outcome.lines}
    assert (mugs.quantity, mugs.quantities.allocated) == (2, 2)
    assert mugs.total.amount_minor == mug.total.amount_minor + 1290
    assert after.order.totals.grand_total.amount_minor == total_before + added
    assert after.order.totals.tax.amount_minor == view.order.totals.tax.amount_minor + 96 + 90
    assert (
        sum(line.total.amount_minor for line in after.order.lines)
        + (after.order.totals.shipping.amount_minor)
        == after.order.totals.grand_total.amount_minor
    )
    [event] = [e for e in after.timeline if e.kind == "change.add_items"]
    assert event.actor == "agent:ada"
    # Reserved where it ships from, and the difference held as a second authorization.
    fos = {fo.fulfillment_order_id: fo for fo in await clients.fulfillment_orders(order_id)}
    assert sorted((li.sku, li.quantity) for li in fos[added_fo].lines) == [("SKU-CAP", 2), (MUG, 1)]
    amounts = [
        a.amount.amount_minor
        for a in after.authorizations
        if a.status == payments_pb2.AUTHORIZATION_STATUS_APPROVED
    ]
    assert sorted(amounts) == sorted([total_before, added])

    async with system.simulator(step_seconds=0.0):
        settled = await clients.until(order_id, {capture_pb2.ORDER_STATUS_FULFILLED})

    new_total = total_before + added
    money = settled.payment_summary
    assert money.invoiced.amount_minor == money.captured.amount_minor == new_total
    assert sum(i.total.amount_minor for i in settled.invoices) == new_total
    assert line_of(settled, "SKU-CAP").quantities.fulfilled == 2
    assert line_of(settled, MUG).quantities.fulfilled == 2
    books = await reconciliation(clients, order_id)
    assert books.agrees and books.difference.amount_minor == 0
    assert books.captured.amount_minor == new_total


async def test_adding_items_once_the_order_has_shipped_is_refused_and_recorded(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_order(system, clients)
    order_id = view.order.order_id

    error = await refusal(clients, submit(order_id, new=[CAP]))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "items can be added only before fulfillment" in (error.details() or "")
    after = await clients.order(order_id)
    assert len(after.order.lines) == 2
    assert after.order.totals.grand_total == view.order.totals.grand_total
    [change] = (
        await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    ).changes
    assert (change.status, change.refusal_code) == (pb.CHANGE_STATUS_REFUSED, "FAILED_PRECONDITION")


async def test_items_no_location_stocks_are_refused_and_nothing_stays_reserved(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    nowhere = pb.NewLineItem(
        sku=f"SKU-NOWHERE-{uuid.uuid4().hex[:6]}", quantity=1, unit_price_minor=100
    )
    [original] = open_fulfillment_orders(await clients.fulfillment_orders(order_id))

    error = await refusal(
        clients,
        submit(
            order_id,
            new=[nowhere],
            more=[pb.LineIncrease(order_line_id=tshirt.order_line_id, quantity=1)],
        ),
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"no location can ship 1 x {nowhere.sku}" in (error.details() or "")
    # The T-shirt found a place before the other line came up short: canceled again.
    assert open_fulfillment_orders(await clients.fulfillment_orders(order_id)) == [original]
    after = await clients.order(order_id)
    assert line_of(after, TSHIRT).quantities.ordered == tshirt.quantity
    assert after.order.totals.grand_total == view.order.totals.grand_total
    assert len(after.authorizations) == 1

    async with system.simulator(step_seconds=0.0):
        settled = await clients.until(order_id, {capture_pb2.ORDER_STATUS_FULFILLED})
    assert (
        settled.payment_summary.captured.amount_minor == view.order.totals.grand_total.amount_minor
    )


async def test_a_declined_payment_for_the_difference_is_refused_and_releases_the_reservation(
    system: System, clients: Clients
) -> None:
    request = sample_order()
    # A gift card holding exactly the order: the difference cannot be authorized on it.
    total = request.grand_total.amount_minor
    request.payment_method.type = payments_pb2.PAYMENT_METHOD_TYPE_GIFT_CARD
    request.payment_method.token = f"gc_{total}_{uuid.uuid4().hex[:8]}"
    order_id = (await clients.capture.SubmitOrder(request, timeout=10)).order.order_id
    await clients.until(order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})
    [original] = open_fulfillment_orders(await clients.fulfillment_orders(order_id))

    error = await refusal(clients, submit(order_id, new=[CAP]))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "was declined (insufficient_funds)" in (error.details() or "")
    assert open_fulfillment_orders(await clients.fulfillment_orders(order_id)) == [original]
    after = await clients.order(order_id)
    assert [line.sku for line in after.order.lines] == [TSHIRT, MUG]
    assert after.payment_summary.authorized.amount_minor == total

    async with system.simulator(step_seconds=0.0):
        settled = await clients.until(order_id, {capture_pb2.ORDER_STATUS_FULFILLED})
    assert settled.payment_summary.captured.amount_minor == total
    assert (await reconciliation(clients, order_id)).agrees


async def test_a_lower_quantity_is_an_invalid_argument_naming_the_field(clients: Clients) -> None:
    view = await an_allocated_order(clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)

    error = await refusal(
        clients,
        submit(
            order_id, new=[], more=[pb.LineIncrease(order_line_id=mug.order_line_id, quantity=-1)]
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as previewed:
        await clients.servicing.PreviewAddItems(
            pb.PreviewAddItemsRequest(
                order_id=order_id,
                increases=[pb.LineIncrease(order_line_id=mug.order_line_id, quantity=0)],
            )
        )

    for refused in (error, previewed.value):
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        [(field, description)] = field_violations(refused)
        assert field == "increases[0].quantity"
        assert "cancel" in description
    assert line_of(await clients.order(order_id), MUG).quantity == 1
