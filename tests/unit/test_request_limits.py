"""oms_platform.request_limits: every request of every RPC walked against the limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from oms.capture.v1 import capture_pb2
from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2
from oms.subscriptions.v1 import subscriptions_pb2

from oms_platform import limits, request_limits
from oms_platform.errors import InvalidArgument

SERVICES = [
    capture_pb2.DESCRIPTOR.services_by_name["CaptureService"],
    fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"],
    payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],
    servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"],
    subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionsService"],
    events_pb2.DESCRIPTOR.services_by_name["EventsService"],
]


def request_fields() -> Iterator[tuple[Descriptor, FieldDescriptor]]:
    """Every field of every message a request of any RPC can carry."""
    seen: set[str] = set()
    todo = [method.input_type for service in SERVICES for method in service.methods]
    while todo:
        message = todo.pop()
        if message.full_name in seen or message.full_name == "google.protobuf.Timestamp":
            continue
        seen.add(message.full_name)
        for field in message.fields:
            yield message, field
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                todo.append(field.message_type)


def test_every_string_repeated_and_integer_field_of_every_request_has_a_rule() -> None:
    # A new field must be classified on purpose; the defaults only keep it bounded meanwhile.
    unruled = []
    for message, field in request_fields():
        where = f"{message.name}.{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING and not request_limits.text_rule(
            message, field
        ):
            unruled.append(f"string {where}")
        if field.is_repeated and request_limits.count_limit(message, field) is None:
            unruled.append(f"repeated {where}")
        if (
            field.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64)
            and where not in request_limits.INT_RULES
        ):
            unruled.append(f"integer {where}")
    assert unruled == []


def violated(message: Any) -> dict[str, str]:
    return {v.field: v.description for v in request_limits.violations(message)}


def an_order() -> capture_pb2.SubmitOrderRequest:
    return capture_pb2.SubmitOrderRequest(
        idempotency_key="k-1",
        channel=capture_pb2.CHANNEL_WEB,
        channel_order_ref="web-1",
        shopper=capture_pb2.Shopper(email="ada@example.com", name="Ada Lovelace"),
        currency="USD",
        delivery_groups=[
            capture_pb2.DeliveryGroup(
                ref="home",
                address=common_pb2.PostalAddress(
                    line1="1 Main St", city="Springfield", postal_code="12345", country_code="US"
                ),
            )
        ],
        lines=[
            capture_pb2.OrderLine(
                delivery_group_ref="home",
                sku="MUG",
                quantity=2,
                unit_price=common_pb2.Money(amount_minor=1_250, currency="USD"),
            )
        ],
        grand_total=common_pb2.Money(amount_minor=2_500, currency="USD"),
    )


def test_a_well_formed_order_breaks_no_limit() -> None:
    assert violated(an_order()) == {}


def test_hostile_values_are_named_by_their_paths() -> None:
    order = an_order()
    order.shopper.name = "Ada\x00Lovelace"
    order.channel_order_ref = "r" * 100_000
    order.delivery_groups[0].address.country_code = "ZZ"
    order.lines[0].quantity = 1_000_000_000
    order.lines[0].unit_price.amount_minor = 2**63 - 1
    order.lines.add().sku = "MUG\u0085"
    found = violated(order)
    assert set(found) == {
        "shopper.name",
        "channel_order_ref",
        "delivery_groups[0].address.country_code",
        "lines[0].quantity",
        "lines[0].unit_price.amount_minor",
        "lines[1].sku",
    }
    assert "U+0000" in found["shopper.name"]
    assert "'ZZ' is not an ISO 3166-1" in found["delivery_groups[0].address.country_code"]


def test_out_of_range_timestamps_and_nan_are_named() -> None:
    listing = capture_pb2.ListOrdersRequest()
    listing.created_from.seconds = limits.MAX_TIMESTAMP_SECONDS + 1
    listing.created_to.nanos = -5
    assert set(violated(listing)) == {"created_from", "created_to"}
    upsert = fulfillment_pb2.UpsertLocationRequest(
        location=fulfillment_pb2.Location(location_id="wh", latitude=float("nan"))
    )
    assert set(violated(upsert)) == {"location.latitude"}


def test_too_many_entries_are_refused_and_not_walked_past_the_cap() -> None:
    feed = fulfillment_pb2.SetInventoryLevelsRequest(
        levels=[
            fulfillment_pb2.InventoryLevel(location_id="wh", sku="\x00")
            for _ in range(limits.MAX_LEVELS + 5)
        ]
    )
    found = request_limits.violations(feed)
    assert found[0].field == "levels"
    assert len(found) == 1 + limits.MAX_LEVELS  # the entries past the cap are never looked at


def test_order_discounts_and_line_discounts_have_their_own_caps() -> None:
    order = an_order()
    for _ in range(limits.MAX_DISCOUNTS_PER_LINE + 1):
        order.discounts.add()
        order.lines[0].discounts.add()
    assert set(violated(order)) == {"lines[0].discounts"}


def test_free_text_may_span_lines_but_ids_may_not() -> None:
    cancel = servicing_pb2.SubmitCancelRequest(
        order_id="o-1\n", idempotency_key="k", reason="lost\nin transit"
    )
    assert set(violated(cancel)) == {"order_id"}


def test_check_raises_invalid_argument_with_every_violation() -> None:
    with pytest.raises(InvalidArgument) as raised:
        request_limits.check(capture_pb2.GetOrderRequest(order_id="o" * 100_000))
    assert [v.field for v in raised.value.violations] == ["order_id"]


class Echo:
    """A servicer with one RPC of each kind the guard handles."""

    async def GetOrder(self, request: Any, context: Any) -> str:
        return "got"

    async def WatchOrder(self, request: Any, context: Any) -> AsyncIterator[str]:
        yield "watched"

    async def ImportOrders(self, requests: Any, context: Any) -> str:
        return "imported"


async def test_the_guard_checks_unary_and_server_streaming_requests_first() -> None:
    service = capture_pb2.DESCRIPTOR.services_by_name["CaptureService"]
    servicer: Any = Echo()
    for name in (
        "SubmitOrder",
        "ListOrders",
        "GetOrderTimeline",
        "RecordOrderProgress",
        "RecordOrderProgressBatch",
        "GetOrderForShopper",
        "RecordOrderEvents",
    ):
        setattr(servicer, name, servicer.GetOrder)
    servicer.EraseShopper = servicer.GetOrder
    guarded = request_limits.guard(servicer, service)

    ok = capture_pb2.GetOrderRequest(order_id="o-1")
    bad = capture_pb2.GetOrderRequest(order_id="o\x00")
    assert await guarded.GetOrder(ok, None) == "got"
    with pytest.raises(InvalidArgument):
        await guarded.GetOrder(bad, None)
    watch = capture_pb2.WatchOrderRequest
    assert [r async for r in guarded.WatchOrder(watch(order_id="o-1"), None)] == ["watched"]
    with pytest.raises(InvalidArgument):
        _ = [r async for r in guarded.WatchOrder(watch(order_id="o\x00"), None)]
    # A stream of requests is the servicer's to check, message by message.
    assert guarded.ImportOrders == servicer.ImportOrders
