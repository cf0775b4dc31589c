"""Delivery promises as the lifecycle reports them, and which orders are late, without
Temporal or a database: a group is promised the latest date of its fulfillment orders that
still count, each report carries only the groups whose promise changed, and the day late
orders are counted at (which orders are late is the store's query, tested against Postgres
in tests/integration/test_late_orders.py)."""

from __future__ import annotations

from datetime import date

import pytest
from oms.capture.v1 import capture_pb2

from oms_platform.errors import InvalidArgument
from services.capture import convert as capture_convert
from services.capture import domain as capture
from workflows import promises
from workflows.ledger import Ledger
from workflows.state import LedgerState, LineBuckets, PromiseState
from workflows.types import (
    DeliveryPromiseData,
    FulfillmentOrderData,
    ItemQuantity,
    LifecycleLine,
    RoutingLineData,
)


def ledger() -> Ledger:
    """Two delivery groups: g-1 with a tee line and a mug line, g-2 with a cap line."""
    lines = [
        LifecycleLine("l-1", "g-1", "SKU-TEE", 2, 2000, 0, 0),
        LifecycleLine("l-2", "g-1", "SKU-MUG", 1, 1000, 0, 0),
        LifecycleLine("l-3", "g-2", "SKU-CAP", 1, 1000, 0, 0),
    ]
    return Ledger(LedgerState(lines=[LineBuckets(line) for line in lines]))


def fo(fo_id: str, group: str, line: str, quantity: int, day: str) -> FulfillmentOrderData:
    return FulfillmentOrderData(
        fo_id,
        "wh-east",
        group,
        [RoutingLineData(line, "SKU", quantity)],
        promised_delivery_date=day,
    )


def test_a_group_is_promised_its_latest_fulfillment_order_and_each_change_is_reported_once() -> (
    None
):
    book, state = ledger(), PromiseState()
    book.add_fulfillment_order(fo("fo-1", "g-1", "l-1", 2, "2026-12-02"))
    book.add_fulfillment_order(fo("fo-2", "g-1", "l-2", 1, "2026-12-04"))
    book.add_fulfillment_order(fo("fo-3", "g-2", "l-3", 1, "2026-12-01"))
    assert promises.changes(book, state) == [
        DeliveryPromiseData("g-1", "2026-12-04"),
        DeliveryPromiseData("g-2", "2026-12-01"),
    ]
    assert promises.changes(book, state) == []


def test_a_shipment_s_promise_replaces_the_routed_one() -> None:
    book, state = ledger(), PromiseState()
    book.add_fulfillment_order(fo("fo-1", "g-1", "l-1", 2, "2026-12-02"))
    promises.changes(book, state)
    book.ship("fo-1", [ItemQuantity("l-1", 2)])
    promises.shipped(state, "fo-1", "2026-12-07")
    assert promises.changes(book, state) == [DeliveryPromiseData("g-1", "2026-12-07")]
    # A shipment that brings no promise keeps the fulfillment order's.
    promises.shipped(state, "fo-1", "")
    assert promises.group_promises(book, state) == {"g-1": "2026-12-02"}


def test_a_fulfillment_order_whose_units_all_left_no_longer_counts() -> None:
    book, state = ledger(), PromiseState()
    book.add_fulfillment_order(fo("fo-1", "g-1", "l-1", 2, "2026-12-02"))
    book.add_fulfillment_order(fo("fo-2", "g-1", "l-2", 1, "2026-12-09"))
    promises.changes(book, state)
    book.remove_open_units("fo-2", [ItemQuantity("l-2", 1)])  # rejected or canceled
    assert promises.changes(book, state) == [DeliveryPromiseData("g-1", "2026-12-02")]
    book.remove_open_units("fo-1", [ItemQuantity("l-1", 2)])
    assert promises.changes(book, state) == [DeliveryPromiseData("g-1", "")]


def test_a_replacement_s_promise_becomes_the_group_s_when_the_units_leave_for_it() -> None:
    book, state = ledger(), PromiseState()
    book.add_fulfillment_order(fo("fo-1", "g-1", "l-1", 2, "2026-12-02"))
    promises.changes(book, state)
    # Rejected, moved or sent to a new address: the units leave fo-1 for fo-2.
    book.remove_open_units("fo-1", [ItemQuantity("l-1", 2)])
    book.add_fulfillment_order(fo("fo-2", "g-1", "l-1", 2, "2026-12-01"))
    assert promises.changes(book, state) == [DeliveryPromiseData("g-1", "2026-12-01")]


def test_late_orders_are_counted_as_of_the_day_asked_or_today() -> None:
    today = date(2026, 12, 7)
    assert capture.late_as_of(None, today) == today
    assert capture.late_as_of(date(2026, 12, 1), today) == date(2026, 12, 1)
    asked = capture_pb2.ListOrdersRequest(late=True, as_of="2026-12-01")
    assert capture_convert.filter_from_pb(asked, today).late_before == date(2026, 12, 1)
    assert (
        capture_convert.filter_from_pb(capture_pb2.ListOrdersRequest(), today).late_before is None
    )
    with pytest.raises(InvalidArgument) as refused:
        capture_convert.filter_from_pb(
            capture_pb2.ListOrdersRequest(late=True, as_of="tomorrow"), today
        )
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("as_of", "must be a date, YYYY-MM-DD")
    ]
