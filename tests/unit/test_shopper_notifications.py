"""Shopper notifications and the shopper's view, without I/O: which event makes which message
and what it says, templates per locale with fallback and escaping, the retry schedule, and a
shopper's view of an order that carries none of the internal ids of the records it is built
from."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from oms.capture.v1 import capture_pb2 as pb
from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2

from services.capture import shopper_view
from services.capture.events.notifications import TEMPLATE_OF, params_of, retry_delay
from services.capture.events.notifications_templates import Templates


def test_a_refund_says_its_amount_exactly_from_minor_units() -> None:
    event = events_pb2.Event(type="refund.issued")
    event.refund_issued.amount.CopyFrom(common_pb2.Money(amount_minor=1205, currency="EUR"))
    assert params_of(event) == {"amount": "12.05 EUR"}
    event.refund_issued.amount.CopyFrom(common_pb2.Money(amount_minor=1500, currency="JPY"))
    assert params_of(event) == {"amount": "1500 JPY"}


def test_a_shipment_names_its_carrier_and_tracking_number_and_a_return_its_units() -> None:
    shipped = events_pb2.Event(type="shipment.shipped")
    shipped.shipment_changed.carrier = "UPS"
    shipped.shipment_changed.tracking_number = "1Z999"
    assert params_of(shipped) == {"carrier": "UPS", "tracking_number": "1Z999"}
    received = events_pb2.Event(type="return.received")
    received.return_order_changed.lines.add(order_line_id="l1", quantity=2)
    received.return_order_changed.lines.add(order_line_id="l2", quantity=1)
    assert params_of(received) == {"units": 3}


def test_only_the_six_shopper_events_make_messages() -> None:
    assert set(TEMPLATE_OF) == {
        "order.captured",
        "shipment.shipped",
        "shipment.delivered",
        "refund.issued",
        "return.received",
        "fulfillment.ready_for_pickup",
    }
    assert params_of(events_pb2.Event(type="payment.authorized")) is None


def test_a_pickup_mails_where_to_collect_and_no_shipped_message() -> None:
    ready = events_pb2.Event(
        type="fulfillment.ready_for_pickup",
        fulfillment_order_changed=events_pb2.FulfillmentOrderChanged(
            location_id="store-chicago", reason="ready for pickup at store store-chicago"
        ),
    )
    assert params_of(ready) == {
        "store": "store-chicago",
        "note": "ready for pickup at store store-chicago",
    }
    collected = events_pb2.Event(
        type="shipment.shipped",
        shipment_changed=events_pb2.ShipmentChanged(carrier="pickup", tracking_number="s"),
    )
    assert params_of(collected) is None


def test_templates_fall_back_to_the_language_then_to_the_default_and_escape_html() -> None:
    templates = Templates("en")
    params = {"order_ref": "R-1", "name": "Ada <3", "carrier": "A&B", "tracking_number": "T1"}
    german = templates.render("order_shipped", "de-AT", params)
    assert german.locale == "de"
    assert german.subject == "Ihre Bestellung R-1 wurde versandt"
    assert "Sendungsnummer: T1" in german.text
    assert "mit A&B unterwegs" in german.text  # plain text is not escaped
    assert "A&amp;B" in german.html and "Ada &lt;3" in german.html
    assert templates.render("order_shipped", "fr", params).locale == "en"
    assert templates.render("order_shipped", "../../etc", params).locale == "en"


def test_every_template_renders_in_every_shipped_locale() -> None:
    templates = Templates("en")
    params = {
        "order_ref": "R-1",
        "name": "",
        "carrier": "UPS",
        "tracking_number": "T1",
        "amount": "1.00 USD",
        "units": 1,
        "store": "store-chicago",
        "note": "",
    }
    for locale in ("en", "de"):
        for template in TEMPLATE_OF.values():
            rendered = templates.render(template, locale, params)
            assert rendered.locale == locale
            assert "R-1" in rendered.subject and "R-1" in rendered.text and rendered.html


def test_retries_wait_longer_each_time_up_to_the_cap() -> None:
    assert [retry_delay(n, 5.0, 30.0) for n in (1, 2, 3, 4, 5)] == [5.0, 10.0, 20.0, 30.0, 30.0]


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def test_the_shoppers_view_keeps_shipments_returns_and_refunds_and_no_internal_ids() -> None:
    money = common_pb2.Money(amount_minor=1000, currency="USD")
    order = pb.Order(
        order_id="ord-1",
        channel=pb.CHANNEL_WEB,
        channel_order_ref="R-1",
        status=pb.ORDER_STATUS_SHIPPED,
        currency="USD",
        shopper=pb.Shopper(shopper_id="shopper-secret-id", email="ada@example.com"),
        lines=[
            pb.OrderLine(
                order_line_id="line-1",
                sku="MUG",
                name="Mug",
                quantity=2,
                unit_price=money,
                total=money,
                quantities=pb.LineQuantities(ordered=2, fulfilled=2, return_initiated=1),
            )
        ],
        payment_method=payments_pb2.PaymentMethod(token="tok_secret"),
        fraud_reasons=["fraud-note-secret"],
    )
    fulfillment_order = fulfillment_pb2.FulfillmentOrder(
        fulfillment_order_id="fo-secret",
        location_id="loc-secret",
        shipments=[
            fulfillment_pb2.Shipment(
                shipment_id="shp-secret",
                fulfillment_order_id="fo-secret",
                carrier="UPS",
                tracking_number="1Z999",
                items=[fulfillment_pb2.ShipmentItem(order_line_id="line-1", quantity=2)],
                shipped_at=_ts(100),
                delivered_at=_ts(200),
            )
        ],
    )
    payments = payments_pb2.GetPaymentSummaryResponse(
        authorizations=[payments_pb2.Authorization(authorization_id="auth-secret")],
        captures=[payments_pb2.Capture(capture_id="cap-secret")],
        refunds=[
            payments_pb2.Refund(
                refund_id="refund-secret",
                credit_memo_id="cm-secret",
                capture_id="cap-secret",
                gateway_reference="gw-secret",
                status=payments_pb2.REFUND_STATUS_SUCCEEDED,
                amount=common_pb2.Money(amount_minor=500, currency="USD"),
                created_at=_ts(300),
            ),
            payments_pb2.Refund(
                refund_id="refund-failed-secret",
                status=payments_pb2.REFUND_STATUS_FAILED,
                failure_reason="gateway-secret",
            ),
        ],
    )
    return_order = servicing_pb2.ReturnOrder(
        return_order_id="ord-1-R1",
        status=servicing_pb2.RETURN_ORDER_STATUS_OPEN,
        reason="agent-note-secret",
        lines=[servicing_pb2.ReturnOrderLine(order_line_id="line-1", quantity_expected=1)],
    )
    view = shopper_view.shopper_order(order, [fulfillment_order], payments, [return_order])

    assert view.status == pb.ORDER_STATUS_SHIPPED
    assert view.lines[0].quantities.return_initiated == 1
    [shipment] = view.shipments
    assert (shipment.carrier, shipment.tracking_number) == ("UPS", "1Z999")
    assert shipment.status == pb.SHOPPER_SHIPMENT_STATUS_DELIVERED
    assert [(i.sku, i.quantity) for i in shipment.items] == [("MUG", 2)]
    assert [(r.return_order_id, r.lines[0].quantity_expected) for r in view.returns] == [
        ("ord-1-R1", 1)
    ]
    assert [(r.amount.amount_minor, r.refunded_at.seconds) for r in view.refunds] == [(500, 300)]
    wire = view.SerializeToString()
    for secret in (b"secret", b"ada@example.com"):
        assert secret not in wire
