"""Sample orders for the CLI, the benchmark and the end-to-end tests."""

from __future__ import annotations

import uuid

from oms.capture.v1 import capture_pb2
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2

from oms_platform import wire
from oms_platform.wire import money_to_pb

CHANNELS = wire.CHANNEL_TO_PB


def _usd(amount_minor: int) -> common_pb2.Money:
    return money_to_pb(amount_minor, "USD")


def sample_order(
    *,
    channel: str = "web",
    token: str = "tok_visa",
    email: str = "ada@example.com",
    key: str | None = None,
) -> capture_pb2.SubmitOrderRequest:
    """Two lines shipping to Philadelphia: 2 T-shirts with a line discount and tax, 1 mug,
    an order-level discount and a shipping charge. Every submit is a new order unless `key`
    repeats."""
    key = key or str(uuid.uuid4())
    tshirts = 2 * 2500 - 500 + 338  # price x qty - line discount + tax
    mug = 1200 + 90
    shipping = 599
    order_discount = 300
    return capture_pb2.SubmitOrderRequest(
        idempotency_key=key,
        channel=CHANNELS[channel],
        channel_order_ref=f"{channel.upper()}-{key[:13]}",
        shopper=capture_pb2.Shopper(
            kind=capture_pb2.SHOPPER_KIND_PERSON, email=email, name="Ada Lovelace"
        ),
        currency="USD",
        delivery_groups=[
            capture_pb2.DeliveryGroup(
                ref="home",
                recipient_name="Ada Lovelace",
                address=common_pb2.PostalAddress(
                    line1="1 Market St",
                    city="Philadelphia",
                    region="PA",
                    postal_code="19106",
                    country_code="US",
                ),
                delivery_method="standard",
                shipping_charge=_usd(shipping),
            )
        ],
        lines=[
            capture_pb2.OrderLine(
                delivery_group_ref="home",
                sku="SKU-TSHIRT-M",
                name="T-shirt, size M",
                quantity=2,
                unit_price=_usd(2500),
                discounts=[capture_pb2.Adjustment(code="TEE10", amount=_usd(500))],
                taxes=[capture_pb2.TaxLine(name="PA sales tax", amount=_usd(338))],
            ),
            capture_pb2.OrderLine(
                delivery_group_ref="home",
                sku="SKU-MUG",
                name="Mug",
                quantity=1,
                unit_price=_usd(1200),
                taxes=[capture_pb2.TaxLine(name="PA sales tax", amount=_usd(90))],
            ),
        ],
        discounts=[
            capture_pb2.Adjustment(
                code="WELCOME3", description="$3 off", amount=_usd(order_discount)
            )
        ],
        grand_total=_usd(tshirts + mug + shipping - order_discount),
        payment_method=payments_pb2.PaymentMethod(
            type=payments_pb2.PAYMENT_METHOD_TYPE_CARD, token=token
        ),
    )


# SKUs the benchmark stocks at exactly one warehouse each, so an order with both must split.
SPLIT_SKUS = {"BENCH-EAST-ONLY": "wh-east", "BENCH-WEST-ONLY": "wh-west"}


def split_order(*, key: str | None = None) -> capture_pb2.SubmitOrderRequest:
    """The sample order plus one unit each of two SKUs no single location holds together:
    it ships as two fulfillment orders (given SPLIT_SKUS are stocked)."""
    request = sample_order(key=key)
    request.ClearField("lines")
    for sku in SPLIT_SKUS:
        request.lines.append(
            capture_pb2.OrderLine(
                delivery_group_ref="home", sku=sku, name=sku, quantity=1, unit_price=_usd(1000)
            )
        )
    request.ClearField("discounts")
    shipping = request.delivery_groups[0].shipping_charge.amount_minor
    request.grand_total.CopyFrom(_usd(2 * 1000 + shipping))
    return request
