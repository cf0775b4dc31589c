"""GetOrderForShopper's answer: the order as GetOrder assembles it (the order, its fulfillment
orders with shipments, its payments, plus its return orders), stripped to what its shopper
may see. What is kept is listed field by field, so nothing new on the internal records
(payment ids, tokens, gateway references, exception ids, notes, addresses of locations)
leaks into the shopper's view by default."""

from __future__ import annotations

from collections.abc import Iterable

from oms.capture.v1 import capture_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2

# The sections fetched from the other services, by the names `missing_sections` reports.
SHIPMENTS, REFUNDS, RETURNS = "shipments", "refunds", "returns"


def shopper_order(
    order: pb.Order,
    fulfillment_orders: Iterable[fulfillment_pb2.FulfillmentOrder] = (),
    payments: payments_pb2.GetPaymentSummaryResponse | None = None,
    return_orders: Iterable[servicing_pb2.ReturnOrder] = (),
) -> pb.ShopperOrder:
    """The shopper's view of `order` and the sections that could be fetched."""
    sku_of = {line.order_line_id: line.sku for line in order.lines}
    view = pb.ShopperOrder(
        order_id=order.order_id,
        channel_order_ref=order.channel_order_ref,
        status=order.status,
        currency=order.currency,
        totals=order.totals,
        lines=[
            pb.ShopperOrderLine(
                order_line_id=line.order_line_id,
                sku=line.sku,
                name=line.name,
                quantities=line.quantities,
                unit_price=line.unit_price,
                total=line.total,
            )
            for line in order.lines
        ],
        created_at=order.created_at,
        updated_at=order.updated_at,
    )
    shipments = [s for fo in fulfillment_orders for s in fo.shipments]
    shipments.sort(key=lambda s: (s.shipped_at.ToNanoseconds(), s.shipment_id))
    for shipment in shipments:
        out = view.shipments.add(
            carrier=shipment.carrier,
            service=shipment.service,
            tracking_number=shipment.tracking_number,
            status=pb.SHOPPER_SHIPMENT_STATUS_DELIVERED
            if shipment.HasField("delivered_at")
            else pb.SHOPPER_SHIPMENT_STATUS_IN_TRANSIT,
            items=[
                pb.ShopperItem(
                    order_line_id=item.order_line_id,
                    sku=sku_of.get(item.order_line_id, ""),
                    quantity=item.quantity,
                )
                for item in shipment.items
            ],
        )
        if shipment.HasField("shipped_at"):
            out.shipped_at.CopyFrom(shipment.shipped_at)
        if shipment.HasField("delivered_at"):
            out.delivered_at.CopyFrom(shipment.delivered_at)
    for return_order in return_orders:
        view.returns.add(
            return_order_id=return_order.return_order_id,
            status=return_order.status,
            lines=[
                pb.ShopperReturnLine(
                    order_line_id=line.order_line_id,
                    sku=sku_of.get(line.order_line_id, ""),
                    quantity_expected=line.quantity_expected,
                    quantity_received=line.quantity_received,
                )
                for line in return_order.lines
            ],
            created_at=return_order.created_at,
        )
    if payments is not None:
        refunds = [r for r in payments.refunds if r.status == payments_pb2.REFUND_STATUS_SUCCEEDED]
        refunds.sort(key=lambda r: r.created_at.ToNanoseconds())
        for refund in refunds:
            view.refunds.add(amount=refund.amount, refunded_at=refund.created_at)
    return view
