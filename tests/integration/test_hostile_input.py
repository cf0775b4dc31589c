"""Hostile input against every service: a NUL in a string, a 100 KB id, an unknown country, a
billion units, an amount near 2**63, a timestamp Python cannot hold, a forged page token. Each
is INVALID_ARGUMENT naming the field in a google.rpc.BadRequest, with a short reply, and the
service carries on."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc

from oms_platform import limits
from oms_platform.grpcutil import field_violations
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from tests.callers import persona_channel
from tests.integration.test_capture_import import stream
from tests.integration.test_capture_service import order_request

HUGE_ID = "o" * 100_000
NEAR_INT64 = 2**63 - 2
BILLION = 1_000_000_000
BEYOND_YEAR_9999 = limits.MAX_TIMESTAMP_SECONDS + 1


def forged(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


# A token of the right shape whose id carries a NUL (Postgres cannot even store it), one with
# a naive time, and plain garbage.
FORGED_TOKENS = [
    "garbage!",
    forged({"t": "2026-01-01T00:00:00+00:00", "id": "o\x00"}),
    forged({"t": "2026-01-01T00:00:00", "id": "o-1"}),
    forged([1, 2, 3]),
]


@pytest.fixture(scope="module")
async def stubs(
    settings: Settings, services: dict[str, RunningService]
) -> AsyncIterator[dict[str, Any]]:
    channels = {name: persona_channel(settings, settings.address_of(name)) for name in services}
    yield {
        "capture": capture_pb2_grpc.CaptureServiceStub(channels["capture"]),
        "fulfillment": fulfillment_pb2_grpc.FulfillmentServiceStub(channels["fulfillment"]),
        "payments": payments_pb2_grpc.PaymentsServiceStub(channels["payments"]),
        "servicing": servicing_pb2_grpc.ServicingServiceStub(channels["servicing"]),
        "health": {n: health_pb2_grpc.HealthStub(c) for n, c in channels.items()},
    }
    for channel in channels.values():
        await channel.close()


async def refused(call: Any) -> list[tuple[str, str]]:
    """The field violations of a call that must be INVALID_ARGUMENT, with a short reply."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert len(error.details() or "") < 2_000
    return field_violations(error)


def named(violations: list[tuple[str, str]]) -> set[str]:
    return {f for f, _ in violations}


def address(country_code: str = "US") -> common_pb2.PostalAddress:
    return common_pb2.PostalAddress(
        line1="1 Main St", city="Seattle", postal_code="98101", country_code=country_code
    )


def usd(amount_minor: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency="USD")


# ---- capture ----------------------------------------------------------------------------------


async def test_capture_refuses_hostile_orders_naming_each_field(stubs: dict[str, Any]) -> None:
    capture = stubs["capture"]
    nul = order_request()
    nul.shopper.name = "Ada\x00Lovelace"
    assert named(await refused(capture.SubmitOrder(nul))) == {"shopper.name"}

    zz = order_request()
    zz.delivery_groups[0].address.country_code = "ZZ"
    [(field, rule)] = await refused(capture.SubmitOrder(zz))
    assert field == "delivery_groups[0].address.country_code" and "ISO 3166-1" in rule

    units = order_request()
    units.lines[0].quantity = BILLION
    assert "lines[0].quantity" in named(await refused(capture.SubmitOrder(units)))

    price = order_request()
    price.lines[0].unit_price.amount_minor = NEAR_INT64
    assert "lines[0].unit_price.amount_minor" in named(await refused(capture.SubmitOrder(price)))

    # Each within its own ceiling, together past what one line may cost.
    gross = order_request()
    gross.lines[0].quantity = limits.MAX_QUANTITY
    gross.lines[0].unit_price.amount_minor = limits.MAX_AMOUNT_MINOR
    assert "lines[0].unit_price" in named(await refused(capture.SubmitOrder(gross)))


async def test_capture_refuses_unknown_enum_numbers_by_name(stubs: dict[str, Any]) -> None:
    capture = stubs["capture"]
    channel = order_request()
    channel.channel = 99  # type: ignore[assignment]
    channel.payment_method.type = 42  # type: ignore[assignment]
    found = dict(await refused(capture.SubmitOrder(channel)))
    assert "must be one of web" in found["channel"]
    assert "must be one of card" in found["payment_method.type"]
    listing = capture_pb2.ListOrdersRequest(channel=99)  # type: ignore[arg-type]
    assert named(await refused(capture.ListOrders(listing))) == {"channel"}
    listing = capture_pb2.ListOrdersRequest(statuses=[77])  # type: ignore[list-item]
    assert named(await refused(capture.ListOrders(listing))) == {"statuses[0]"}


async def test_capture_refuses_a_huge_id_without_echoing_it(stubs: dict[str, Any]) -> None:
    capture = stubs["capture"]
    for call in (
        capture.GetOrder(capture_pb2.GetOrderRequest(order_id=HUGE_ID)),
        capture.GetOrderTimeline(capture_pb2.GetOrderTimelineRequest(order_id=HUGE_ID)),
    ):
        [(field, rule)] = await refused(call)
        assert field == "order_id" and rule == "must be at most 128 characters"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in capture.WatchOrder(capture_pb2.WatchOrderRequest(order_id=HUGE_ID)):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [("order_id", "must be at most 128 characters")]


async def test_capture_refuses_out_of_range_times_and_forged_page_tokens(
    stubs: dict[str, Any],
) -> None:
    capture = stubs["capture"]
    listing = capture_pb2.ListOrdersRequest()
    listing.created_from.seconds = BEYOND_YEAR_9999
    assert named(await refused(capture.ListOrders(listing))) == {"created_from"}
    for token in FORGED_TOKENS:
        request = capture_pb2.ListOrdersRequest(page_token=token)
        assert named(await refused(capture.ListOrders(request))) == {"page_token"}
    progress = capture_pb2.RecordOrderProgressRequest(order_id="o-1", idempotency_key="k")
    progress.event.kind = "order.noted"
    progress.event.at.nanos = -1
    assert named(await refused(capture.RecordOrderProgress(progress))) == {"event.at"}


async def test_an_import_reports_each_hostile_order_and_stores_the_others(
    stubs: dict[str, Any],
) -> None:
    good = capture_pb2.ImportOrdersRequest(order=order_request())
    nul = capture_pb2.ImportOrdersRequest(order=order_request())
    nul.order.channel_order_ref = "ref\x00"
    late = capture_pb2.ImportOrdersRequest(order=order_request(), historical=True)
    late.placed_at.seconds = BEYOND_YEAR_9999
    zz = capture_pb2.ImportOrdersRequest(order=order_request())
    zz.order.delivery_groups[0].address.country_code = "ZZ"

    response = await stubs["capture"].ImportOrders(stream([nul, good, late, zz]))

    assert (response.imported, response.failed) == (1, 3)
    outcome = {r.index: (r.error_code, [v.field for v in r.violations]) for r in response.results}
    assert outcome == {
        0: ("INVALID_ARGUMENT", ["channel_order_ref"]),
        1: ("", []),
        2: ("INVALID_ARGUMENT", ["placed_at"]),
        3: ("INVALID_ARGUMENT", ["delivery_groups[0].address.country_code"]),
    }


# ---- fulfillment ------------------------------------------------------------------------------


async def test_fulfillment_refuses_hostile_requests_naming_each_field(
    stubs: dict[str, Any],
) -> None:
    fulfillment = stubs["fulfillment"]

    def route(**line: Any) -> fulfillment_pb2.CreateFulfillmentOrdersRequest:
        return fulfillment_pb2.CreateFulfillmentOrdersRequest(
            order_id="o-1",
            idempotency_key="k-1",
            delivery_groups=[
                fulfillment_pb2.RoutingDeliveryGroup(
                    delivery_group_id="g",
                    address=address(line.pop("country_code", "US")),
                    lines=[fulfillment_pb2.RoutingLine(order_line_id="l", sku="MUG", **line)],
                )
            ],
        )

    nul = route(quantity=1)
    nul.delivery_groups[0].lines[0].sku = "MUG\x00"
    assert named(await refused(fulfillment.CreateFulfillmentOrders(nul))) == {
        "delivery_groups[0].lines[0].sku"
    }
    assert named(await refused(fulfillment.CreateFulfillmentOrders(route(quantity=BILLION)))) == {
        "delivery_groups[0].lines[0].quantity"
    }
    assert named(
        await refused(fulfillment.CreateFulfillmentOrders(route(quantity=1, country_code="ZZ")))
    ) == {"delivery_groups[0].address.country_code"}
    [(field, _)] = await refused(
        fulfillment.GetFulfillmentOrder(
            fulfillment_pb2.GetFulfillmentOrderRequest(fulfillment_order_id=HUGE_ID)
        )
    )
    assert field == "fulfillment_order_id"
    feed = fulfillment_pb2.SetInventoryLevelsRequest(
        levels=[fulfillment_pb2.InventoryLevel(location_id="wh-east", sku="MUG", on_hand=2**62)]
    )
    assert named(await refused(fulfillment.SetInventoryLevels(feed))) == {"levels[0].on_hand"}
    location = fulfillment_pb2.UpsertLocationRequest(
        location=fulfillment_pb2.Location(
            location_id="wh-zz",
            name="Nowhere",
            type=fulfillment_pb2.LOCATION_TYPE_WAREHOUSE,
            address=address("ZZ"),
            latitude=float("nan"),
            priority=2**31 - 1,
        )
    )
    assert named(await refused(fulfillment.UpsertLocation(location))) == {
        "location.address.country_code",
        "location.latitude",
        "location.priority",
    }
    for token in FORGED_TOKENS:
        request = fulfillment_pb2.ListFulfillmentOrdersRequest(page_token=token)
        assert named(await refused(fulfillment.ListFulfillmentOrders(request))) == {"page_token"}


# ---- payments ---------------------------------------------------------------------------------


async def test_payments_refuses_hostile_requests_naming_each_field(stubs: dict[str, Any]) -> None:
    payments = stubs["payments"]
    method = payments_pb2.PaymentMethod(type=payments_pb2.PAYMENT_METHOD_TYPE_CARD, token="tok")
    authorize = payments_pb2.AuthorizePaymentRequest(
        order_id="o-1", idempotency_key="k-1", payment_method=method, amount=usd(NEAR_INT64)
    )
    assert named(await refused(payments.AuthorizePayment(authorize))) == {"amount.amount_minor"}
    authorize.amount.amount_minor = 100
    authorize.payment_method.token = "tok\x00"
    assert named(await refused(payments.AuthorizePayment(authorize))) == {"payment_method.token"}
    invoice = payments_pb2.CreateInvoiceRequest(
        order_id="o-1",
        fulfillment_order_id="fo-1",
        idempotency_key="k-1",
        lines=[
            payments_pb2.ChargeableLine(
                order_line_id="l",
                sku="MUG",
                quantity_ordered=BILLION,
                gross=usd(100),
                quantity_to_invoice=BILLION,
            )
        ],
    )
    assert named(await refused(payments.CreateInvoice(invoice))) == {
        "lines[0].quantity_ordered",
        "lines[0].quantity_to_invoice",
    }
    [(field, _)] = await refused(
        payments.GetPaymentSummary(payments_pb2.GetPaymentSummaryRequest(order_id=HUGE_ID))
    )
    assert field == "order_id"
    [(field, _)] = await refused(
        payments.CaptureInvoice(
            payments_pb2.CaptureInvoiceRequest(invoice_id="i-1", idempotency_key="k" * 100_000)
        )
    )
    assert field == "idempotency_key"


# ---- servicing --------------------------------------------------------------------------------


async def test_servicing_refuses_hostile_requests_naming_each_field(
    stubs: dict[str, Any],
) -> None:
    servicing = stubs["servicing"]
    cancel = servicing_pb2.SubmitCancelRequest(
        order_id="o-1",
        idempotency_key="k-1",
        reason="shopper asked\x00",
        lines=[servicing_pb2.ItemQuantity(order_line_id="l", quantity=BILLION)],
    )
    assert named(await refused(servicing.SubmitCancel(cancel))) == {
        "reason",
        "lines[0].quantity",
    }
    appease = servicing_pb2.SubmitAppeasementRequest(
        order_id="o-1", idempotency_key="k-1", reason="late", amount_minor=NEAR_INT64
    )
    assert named(await refused(servicing.SubmitAppeasement(appease))) == {"amount_minor"}
    [(field, _)] = await refused(
        servicing.GetProcessException(
            servicing_pb2.GetProcessExceptionRequest(process_exception_id=HUGE_ID)
        )
    )
    assert field == "process_exception_id"
    listing = servicing_pb2.ListProcessExceptionsRequest()
    listing.created_before.seconds = -(2**62)
    assert named(await refused(servicing.ListProcessExceptions(listing))) == {"created_before"}
    for token in FORGED_TOKENS:
        request = servicing_pb2.ListProcessExceptionsRequest(page_token=token)
        assert named(await refused(servicing.ListProcessExceptions(request))) == {"page_token"}


async def test_every_service_is_still_serving_after_all_that(stubs: dict[str, Any]) -> None:
    for health in stubs["health"].values():
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
