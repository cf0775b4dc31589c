"""Split payments, billing addresses and fraud screening at capture, over real gRPC and
Postgres: what the order shows, its timeline, and the lifecycle payload in the outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2

from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from tests.callers import persona_channel
from tests.integration.test_capture_service import (
    isolated_settings,
    order_request,
    outbox_rows,
    own_database,
    unique,
)

pb = capture_pb2


@pytest.fixture(scope="module")
async def screening_settings(postgres: EmbeddedPostgres) -> Settings:
    return isolated_settings(
        await own_database(postgres, "oms_capture_screening_it"),
        fraud_amount_threshold_minor=50_000,
        fraud_max_orders_per_shopper_per_hour=2,
    )


@pytest.fixture(scope="module")
async def capture(
    screening_settings: Settings,
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    running = await start_service("capture", screening_settings, port=0)
    async with persona_channel(screening_settings, f"127.0.0.1:{running.port}") as channel:
        yield capture_pb2_grpc.CaptureServiceStub(channel)
    await running.stop(0.5)


@pytest.fixture(scope="module")
async def sql(screening_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(screening_settings.dsn)
    yield conn
    await conn.close()


def address(country: str) -> common_pb2.PostalAddress:
    return common_pb2.PostalAddress(
        line1="1 Rue de Rivoli", city="Paris", postal_code="75001", country_code=country
    )


async def payload(sql: asyncpg.Connection, order_id: str) -> dict[str, Any]:
    [row] = await outbox_rows(sql, order_id)
    return dict(json.loads(row["payload"]))


async def kinds(capture: capture_pb2_grpc.CaptureServiceStub, order_id: str) -> list[str]:
    timeline = await capture.GetOrderTimeline(pb.GetOrderTimelineRequest(order_id=order_id))
    return [e.kind for e in timeline.events]


async def test_a_gift_card_then_a_card_and_a_billing_address_reach_the_lifecycle(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    request = order_request()
    request.payment_method.CopyFrom(
        payments_pb2.PaymentMethod(type=payments_pb2.PAYMENT_METHOD_TYPE_GIFT_CARD, token="gc_25")
    )
    request.billing_address.CopyFrom(address("us"))
    request.additional_payment_methods.append(
        payments_pb2.PaymentMethod(type=payments_pb2.PAYMENT_METHOD_TYPE_CARD, token="tok_visa")
    )
    order = (await capture.SubmitOrder(request)).order
    # Readers see tokens masked to their last four; the lifecycle gets them whole (below).
    assert [m.token for m in order.additional_payment_methods] == ["…visa"]
    assert order.billing_address.country_code == "US"
    assert list(order.fraud_reasons) == []
    stored = (await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))).order
    assert stored.additional_payment_methods == order.additional_payment_methods
    assert stored.billing_address == order.billing_address

    sent = await payload(sql, order.order_id)
    assert sent["payment_method"]["type"] == "gift_card"
    assert sent["additional_payment_methods"] == [
        {"type": "card", "token": "tok_visa", "preauthorization_ref": ""}
    ]
    assert sent["fraud_reasons"] == []
    assert await kinds(capture, order.order_id) == ["order.captured"]


async def test_a_bad_additional_payment_method_is_named_by_position(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    request = order_request()
    request.billing_address.country_code = "FR"
    request.additional_payment_methods.append(payments_pb2.PaymentMethod())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.SubmitOrder(request)
    details = raised.value.details() or ""
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for path in (
        "additional_payment_methods[0].type",
        "additional_payment_methods[0].token",
        "billing_address.line1",
        "billing_address.city",
    ):
        assert path in details


async def test_a_large_order_billed_abroad_is_flagged_with_both_reasons(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    request = order_request()
    request.billing_address.CopyFrom(address("FR"))
    request.lines[0].unit_price.amount_minor = 30_000  # 2 x 300.00: over 500.00
    request.grand_total.amount_minor = 2859 - 2000 + 60_000
    order = (await capture.SubmitOrder(request)).order
    assert list(order.fraud_reasons) == [
        "grand total 608.59 USD is above the screening threshold of 500.00 USD",
        "billing country FR differs from shipping country US",
    ]
    assert await kinds(capture, order.order_id) == ["order.captured", "fraud.flagged"]
    assert (await payload(sql, order.order_id))["fraud_reasons"] == list(order.fraud_reasons)


async def test_a_shopper_over_the_hourly_limit_is_flagged_even_when_orders_race(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    email = f"{unique('busy')}@example.com"
    first = (await capture.SubmitOrder(order_request(email=email))).order  # creates the shopper
    rest = await asyncio.gather(
        *(capture.SubmitOrder(order_request(email=email)) for _ in range(5))
    )
    orders = [first, *(r.order for r in rest)]
    assert len({o.shopper.shopper_id for o in orders}) == 1
    flagged = [o for o in orders if o.fraud_reasons]
    # Limit 2: the first two of the hour pass, the four after them are flagged.
    assert len(flagged) == 4
    assert {r for o in flagged for r in o.fraud_reasons} == {
        f"shopper placed {n} orders within an hour (more than 2)" for n in (3, 4, 5, 6)
    }
