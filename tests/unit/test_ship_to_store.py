"""Ship-to-store in fulfillment's domain, without a database: a pickup group its store cannot
fill goes to the warehouse nearest the store (only those the store accepts) when the store
accepts ship-to-store, and stays unallocated as before when it does not; the fulfillment order
is shipped to the store, received there (its units reserved at the store from then on), and
only then set aside."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oms_platform.errors import FailedPrecondition
from services.fulfillment import domain

ANY_WAREHOUSE = domain.ShipToStore(accepted=True)
# The shopper's address is in Boston (nearest wh-east); the store is in Chicago, nearest
# wh-central; wh-west is far from both.
BOSTON = domain.PostalAddress(postal_code="02108", country_code="US")
SHOPPER = domain.Coordinates(42.36, -71.06)


def candidates(setting: domain.ShipToStore) -> list[domain.Candidate]:
    return [
        domain.Candidate("wh-east", 1, domain.Coordinates(40.7, -74.2), "warehouse"),
        domain.Candidate("wh-central", 2, domain.Coordinates(39.1, -94.6), "warehouse"),
        domain.Candidate("wh-west", 1, domain.Coordinates(34.0, -118.2), "warehouse"),
        domain.Candidate(
            "store-chicago", 3, domain.Coordinates(41.9, -87.6), "store", ship_to_store=setting
        ),
        domain.Candidate("store-boston", 3, domain.Coordinates(42.4, -71.1), "store"),
    ]


def pickup(*lines: tuple[str, int]) -> domain.DeliveryGroup:
    routing_lines = tuple(
        domain.RoutingLine(f"l-{i}", sku, quantity) for i, (sku, quantity) in enumerate(lines, 1)
    )
    return domain.DeliveryGroup("dg-1", BOSTON, routing_lines, "pickup", "store-chicago")


def route(
    group: domain.DeliveryGroup, stock: dict[tuple[str, str], int], setting: domain.ShipToStore
) -> domain.GroupPlan:
    plan = domain.route([group], candidates(setting), stock, {"dg-1": SHOPPER})
    return plan.groups[0]


def placed(plan: domain.GroupPlan) -> list[tuple[str, str, int]]:
    return [(a.location_id, ln.sku, ln.quantity) for a in plan.allocations for ln in a.lines]


def test_a_pickup_its_store_lacks_goes_to_the_warehouse_nearest_the_store_not_the_shopper() -> None:
    stock = {("wh-east", "MUG"): 9, ("wh-central", "MUG"): 9, ("wh-west", "MUG"): 9}

    plan = route(pickup(("MUG", 2)), stock, ANY_WAREHOUSE)

    assert placed(plan) == [("wh-central", "MUG", 2)]
    assert plan.unallocated == ()
    said = " | ".join(plan.decisions)
    assert "store store-chicago has not got 2 of MUG" in said
    assert "from store store-chicago" in said
    assert "could not be placed" not in said


def test_a_store_that_does_not_accept_ship_to_store_leaves_the_units_unallocated() -> None:
    stock = {("wh-east", "MUG"): 9, ("wh-central", "MUG"): 9}

    plan = route(pickup(("MUG", 2)), stock, domain.ShipToStore())

    assert plan.allocations == ()
    assert [(u.sku, u.quantity) for u in plan.unallocated] == [("MUG", 2)]
    assert "only locations not considered have them available" in " | ".join(plan.decisions)


def test_only_the_warehouses_the_store_accepts_ship_to_it() -> None:
    stock = {("wh-central", "MUG"): 9, ("wh-west", "MUG"): 9}
    only_west = domain.ShipToStore(accepted=True, from_location_ids=("wh-west",))

    plan = route(pickup(("MUG", 1)), stock, only_west)

    assert placed(plan) == [("wh-west", "MUG", 1)]
    excluded = {e.location_id: e.reason for e in plan.excluded}
    assert excluded["wh-central"] == "store store-chicago accepts ship-to-store only from wh-west"


def test_what_the_store_has_is_collected_there_and_only_the_rest_shipped_to_it() -> None:
    stock = {("store-chicago", "MUG"): 5, ("store-chicago", "TEE"): 1, ("wh-east", "TEE"): 9}

    plan = route(pickup(("MUG", 2), ("TEE", 3)), stock, ANY_WAREHOUSE)

    assert sorted(placed(plan)) == [
        ("store-chicago", "MUG", 2),
        ("store-chicago", "TEE", 1),
        ("wh-east", "TEE", 2),
    ]
    assert plan.unallocated == ()


def test_a_store_that_has_everything_ships_nothing_to_itself() -> None:
    stock = {("store-chicago", "MUG"): 5, ("wh-central", "MUG"): 9}

    plan = route(pickup(("MUG", 2)), stock, ANY_WAREHOUSE)

    assert placed(plan) == [("store-chicago", "MUG", 2)]
    assert any("not considered" in d for d in plan.decisions)


def test_ship_to_store_never_ships_from_another_store_and_says_so_when_nothing_can() -> None:
    stock = {("store-boston", "MUG"): 9}

    plan = route(pickup(("MUG", 1)), stock, ANY_WAREHOUSE)

    assert plan.allocations == ()
    assert [(u.sku, u.quantity) for u in plan.unallocated] == [("MUG", 1)]
    excluded = {e.location_id: e.reason for e in plan.excluded}
    assert excluded["store-boston"].startswith("ship-to-store store-chicago ships from a warehouse")


def test_other_delivery_methods_are_not_shipped_to_a_store() -> None:
    stock = {("wh-east", "MUG"): 9, ("wh-central", "MUG"): 9}
    group = replace(pickup(("MUG", 1)), delivery_method="standard", pickup_location_id="")

    plan = route(group, stock, ANY_WAREHOUSE)

    assert placed(plan) == [("wh-east", "MUG", 1)]  # nearest the shopper, as always


def location(type_: str, setting: domain.ShipToStore) -> domain.Location:
    return domain.Location(
        "store-chicago", "Chicago", type_, domain.PostalAddress(), 41.9, -87.6, 1, True,
        ship_to_store=setting,
    )  # fmt: skip


def test_only_a_store_accepts_ship_to_store_and_only_from_known_warehouses() -> None:
    types = {"wh-east": "warehouse", "store-boston": "store"}
    setting = domain.ShipToStore(True, ("wh-east", "store-boston", "wh-nowhere", "wh-east"))

    violations = domain.ship_to_store_violations(location("store", setting), types)

    assert [(v.field, v.description) for v in violations] == [
        ("location.ship_to_store.from_location_ids[1]", "store-boston is a store, not a warehouse"),
        ("location.ship_to_store.from_location_ids[2]", "unknown location 'wh-nowhere'"),
        ("location.ship_to_store.from_location_ids[3]", "is repeated"),
    ]
    [refused] = domain.ship_to_store_violations(location("warehouse", ANY_WAREHOUSE), types)
    assert refused.field == "location.ship_to_store.accepted"


def test_an_upsert_that_leaves_the_setting_out_keeps_the_stored_one() -> None:
    stored = location("store", domain.ShipToStore(True, ("wh-east",)))
    renamed = replace(location("store", domain.ShipToStore()), name="Chicago Store")

    assert domain.with_ship_to_store(renamed, None, stored).ship_to_store == stored.ship_to_store
    # A new location left without one accepts none; one named is what is kept.
    assert domain.with_ship_to_store(renamed, None, None).ship_to_store == domain.ShipToStore()
    assert domain.with_ship_to_store(renamed, ANY_WAREHOUSE, stored).ship_to_store == (
        ANY_WAREHOUSE
    )


def fo(status: str, **extra: object) -> domain.FulfillmentOrder:
    line = domain.FulfillmentLine("l-1", "MUG", 2)
    return domain.FulfillmentOrder(
        "fo-1", "o-1", "dg-1", "wh-central", status, (line,),
        pickup_location_id="store-chicago", **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_transfer_leaves_once_and_only_then_can_the_store_set_it_aside() -> None:
    assert domain.must_ship_to_store(fo(domain.PACKED))
    assert not domain.must_ship_to_store(fo(domain.IN_TRANSIT_TO_STORE))
    with pytest.raises(FailedPrecondition, match="not been shipped to store store-chicago"):
        domain.must_mark_ready(fo(domain.PACKED))
    assert domain.must_mark_ready(fo(domain.IN_TRANSIT_TO_STORE))
    with pytest.raises(FailedPrecondition, match="cannot ship it to store"):
        domain.must_ship_to_store(fo(domain.READY_FOR_PICKUP))
    # Never the shopper's shipment.
    with pytest.raises(FailedPrecondition, match="ShipToStore"):
        domain.plan_shipment(fo(domain.PACKED), [])


def test_a_pickup_the_store_fills_itself_is_not_shipped_to_it() -> None:
    own = replace(fo(domain.ALLOCATED), location_id="store-chicago")
    with pytest.raises(FailedPrecondition, match="not shipped to a store"):
        domain.must_ship_to_store(own)


def test_units_are_reserved_at_the_warehouse_until_the_store_received_them() -> None:
    assert fo(domain.ALLOCATED).stock_location_id == "wh-central"
    received = fo(domain.READY_FOR_PICKUP, received_at_store_at=object())
    assert received.stock_location_id == "store-chicago"


def test_the_pickup_store_hands_it_over_whoever_ships_it() -> None:
    assert fo(domain.IN_TRANSIT_TO_STORE).handover_location_id == "store-chicago"
    own = replace(fo(domain.ALLOCATED), location_id="store-chicago")
    assert own.handover_location_id == "store-chicago"
    shipped = replace(fo(domain.ALLOCATED), pickup_location_id="")
    assert shipped.handover_location_id == "wh-central"


def test_a_received_one_not_collected_gives_back_stock_at_the_store_but_no_warehouse_slot() -> None:
    received = fo(domain.READY_FOR_PICKUP, received_at_store_at=object())
    for change in (domain.plan_not_collected(received), domain.plan_cancel(received)):
        assert change is not None
        assert (change.status_after, change.holds_stock) == (domain.CANCELED, True)
        assert change.received_at_store
        # The warehouse did its work the day the order was made: that slot stays used.
        assert not change.frees_capacity
    # Before the transfer left, the warehouse's slot is given back.
    packed = domain.plan_cancel(fo(domain.PACKED))
    assert packed is not None and packed.frees_capacity


def test_units_in_transit_can_be_canceled_but_release_nothing_and_not_be_rejected() -> None:
    in_transit = fo(domain.IN_TRANSIT_TO_STORE)
    change = domain.plan_line_change(in_transit, domain.CANCELED, [domain.LineQuantity("l-1", 2)])
    assert change.status_after == domain.CANCELED
    assert not change.holds_stock
    assert not change.frees_capacity
    with pytest.raises(FailedPrecondition):
        domain.plan_line_change(in_transit, domain.REJECTED, [])
