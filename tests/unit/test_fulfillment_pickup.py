"""Store pickup in fulfillment's domain, without a database: routing sends a pickup group only
to the store it names, and the fulfillment order moves ready → picked up, never collected twice
nor before it is set aside."""

from __future__ import annotations

import pytest

from oms_platform.errors import FailedPrecondition
from services.fulfillment import domain

CANDIDATES = [
    domain.Candidate("wh-east", 1, domain.Coordinates(40.7, -74.2), "warehouse"),
    domain.Candidate("store-chicago", 2, domain.Coordinates(41.9, -87.6), "store"),
    domain.Candidate("store-boston", 2, domain.Coordinates(42.4, -71.1), "store"),
]
STOCK = {("wh-east", "MUG"): 50, ("store-chicago", "MUG"): 2, ("store-boston", "MUG"): 2}


def group(pickup_at: str, quantity: int = 1) -> domain.DeliveryGroup:
    line = domain.RoutingLine("l-1", "MUG", quantity)
    return domain.DeliveryGroup("dg-1", domain.PostalAddress(), (line,), "pickup", pickup_at)


def test_a_pickup_group_goes_only_to_the_store_it_names() -> None:
    plan = domain.route([group("store-chicago")], CANDIDATES, STOCK, {})

    [allocation] = plan.groups[0].allocations
    assert allocation.location_id == "store-chicago"
    excluded = {e.location_id: e.reason for e in plan.groups[0].excluded}
    assert excluded["wh-east"] == "pickup at store store-chicago"
    assert excluded["store-boston"] == "pickup at store store-chicago"


def test_a_pickup_the_store_cannot_fill_is_not_sent_elsewhere() -> None:
    plan = domain.route([group("store-chicago", quantity=3)], CANDIDATES, STOCK, {})

    assert [a.location_id for a in plan.groups[0].allocations] == ["store-chicago"]
    assert [(u.sku, u.quantity) for u in plan.unallocated] == [("MUG", 1)]


def test_a_pickup_at_a_warehouse_is_not_routed() -> None:
    plan = domain.route([group("wh-east")], CANDIDATES, STOCK, {})

    assert plan.groups[0].allocations == ()
    excluded = {e.location_id: e.reason for e in plan.groups[0].excluded}
    assert excluded["wh-east"] == "pickup needs a store; wh-east is a warehouse"


def fo(status: str, pickup_at: str = "store-chicago") -> domain.FulfillmentOrder:
    line = domain.FulfillmentLine("l-1", "MUG", 2)
    return domain.FulfillmentOrder("fo-1", "o-1", "dg-1", "store-chicago", status, (line,),
                                   pickup_location_id=pickup_at)  # fmt: skip


def test_a_pickup_is_set_aside_once_then_collected_whole() -> None:
    assert domain.must_mark_ready(fo(domain.ALLOCATED))
    assert not domain.must_mark_ready(fo(domain.READY_FOR_PICKUP))
    plan = domain.plan_pickup(fo(domain.READY_FOR_PICKUP))
    assert plan.status_after == domain.PICKED_UP
    assert [(i.order_line_id, i.quantity) for i in plan.items] == [("l-1", 2)]


@pytest.mark.parametrize("status", [domain.ALLOCATED, domain.PICKED_UP, domain.CANCELED])
def test_a_pickup_not_ready_cannot_be_collected(status: str) -> None:
    with pytest.raises(FailedPrecondition, match="cannot confirm a pickup"):
        domain.plan_pickup(fo(status))


def test_a_shipped_order_is_not_a_pickup_and_a_pickup_does_not_ship() -> None:
    with pytest.raises(FailedPrecondition, match="not collected at a store"):
        domain.must_mark_ready(fo(domain.ACCEPTED, pickup_at=""))
    with pytest.raises(FailedPrecondition, match="ConfirmPickup"):
        domain.plan_shipment(fo(domain.ACCEPTED), [])


def test_a_pickup_not_collected_gives_up_every_unit_and_is_canceled() -> None:
    change = domain.plan_not_collected(fo(domain.READY_FOR_PICKUP))
    assert change.status_after == domain.CANCELED
    assert [(line.order_line_id, line.quantity) for line in change.lines] == [("l-1", 2)]
    assert change.frees_capacity
