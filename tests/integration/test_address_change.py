"""Address changes before shipment over real gRPC, through the real order workflow (the
`system` fixture): the order's record shows the new address, the group's units move to the
warehouse nearer it, and once a unit shipped the change is refused naming the state.

Routing ranks by postal coordinates; the seeded three-digit prefixes (fulfillment's
0002_seed.sql) place Philadelphia (the sample order's 19106) next to wh-east and San
Francisco (941..) next to wh-west."""

from __future__ import annotations

import uuid

import grpc
import pytest
from oms.capture.v1 import capture_pb2
from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2
from oms.servicing.v1 import servicing_pb2 as pb

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from tests.conftest import System
from tests.integration.helpers import eventually, logged_types
from tests.integration.test_fulfillment_service import level
from tests.integration.test_servicing_changes import Clients, an_allocated_order, oms

SAN_FRANCISCO = common_pb2.PostalAddress(
    line1="1 Market St", city="San Francisco", region="CA", postal_code="94105", country_code="us"
)
NEAR_PHILADELPHIA = common_pb2.PostalAddress(
    line1="30 Chestnut St", city="Philadelphia", region="PA", postal_code="19107", country_code="US"
)


@pytest.fixture
def clients(system: System) -> Clients:
    return Clients(system)


def submit(
    view: capture_pb2.GetOrderResponse, address: common_pb2.PostalAddress
) -> pb.SubmitAddressChangeRequest:
    return pb.SubmitAddressChangeRequest(
        order_id=view.order.order_id,
        delivery_group_id=view.order.delivery_groups[0].delivery_group_id,
        idempotency_key=f"key-{uuid.uuid4()}",
        address=address,
        reason="shopper moved",
    )


async def open_locations(clients: Clients, order_id: str) -> list[str]:
    return sorted(
        fo.location_id
        for fo in await clients.fulfillment_orders(order_id)
        if fo.status == fulfillment_pb2.FULFILLMENT_ORDER_STATUS_ALLOCATED
    )


async def reserved(clients: Clients, units: dict[str, int]) -> dict[tuple[str, str], int]:
    """Units reserved of each SKU at wh-east and wh-west."""
    return {
        (location, sku): (await level(clients.fulfillment, sku, location)).reserved
        for location in ("wh-east", "wh-west")
        for sku in units
    }


async def test_a_new_address_nearer_another_warehouse_reroutes_the_unshipped_units(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id
    group_id = view.order.delivery_groups[0].delivery_group_id
    assert await open_locations(clients, order_id) == ["wh-east"]

    preview = await clients.servicing.PreviewAddressChange(
        pb.PreviewAddressChangeRequest(
            order_id=order_id, delivery_group_id=group_id, address=SAN_FRANCISCO
        )
    )
    assert preview.preview.rerouted
    assert list(preview.preview.location_ids) == ["wh-west"]
    assert await open_locations(clients, order_id) == ["wh-east"]  # a preview keeps nothing
    units: dict[str, int] = {}
    for line in view.order.lines:
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    reserved_before = await reserved(clients, units)

    changed = (await clients.servicing.SubmitAddressChange(submit(view, SAN_FRANCISCO))).change

    assert changed.status == pb.CHANGE_STATUS_COMPLETED
    assert changed.kind == pb.CHANGE_KIND_ADDRESS_CHANGE
    assert changed.outcome.rerouted
    assert list(changed.outcome.location_ids) == ["wh-west"]
    assert await open_locations(clients, order_id) == ["wh-west"]
    after = await clients.order(order_id)
    shipped_to = after.order.delivery_groups[0].address
    assert (shipped_to.city, shipped_to.postal_code, shipped_to.country_code) == (
        "San Francisco",
        "94105",
        "US",
    )
    # Every unit is still allocated, now at wh-west: its reservations moved with it.
    assert all(line.quantities.allocated == line.quantity for line in after.order.lines)
    reserved_after = await reserved(clients, units)
    for sku, quantity in units.items():
        assert reserved_after["wh-east", sku] == reserved_before["wh-east", sku] - quantity
        assert reserved_after["wh-west", sku] == reserved_before["wh-west", sku] + quantity
    events = events_pb2_grpc.EventsServiceStub(system.channel("capture", auth.ADMIN))
    types = await eventually(
        lambda: logged_types(events, order_id),
        lambda found: "order.address_changed" in found,
        "the address change in the log",
    )
    assert "order.address_changed" in types


async def test_the_group_s_promise_follows_the_route_to_the_new_address(
    clients: Clients,
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id
    group = view.order.delivery_groups[0]
    await eventually(
        lambda: clients.order(order_id),
        lambda v: bool(v.order.delivery_groups[0].promised_delivery_date),
        "the group's first promise",
    )

    changed = (await clients.servicing.SubmitAddressChange(submit(view, SAN_FRANCISCO))).change

    assert changed.outcome.rerouted
    [moved] = [
        fo
        for fo in await clients.fulfillment_orders(order_id)
        if fo.status == fulfillment_pb2.FULFILLMENT_ORDER_STATUS_ALLOCATED
    ]
    assert moved.location_id == "wh-west"
    # What checkout would be told for the new address by this method, when the units moved.
    estimated = await clients.fulfillment.EstimateDelivery(
        fulfillment_pb2.EstimateDeliveryRequest(
            items=[
                fulfillment_pb2.DeliveryItem(sku=ln.sku, quantity=ln.quantity) for ln in moved.lines
            ],
            address=SAN_FRANCISCO,
            delivery_methods=[group.delivery_method],
            ordered_at=moved.created_at,
        )
    )
    [parcel] = estimated.estimates[0].shipments
    assert parcel.location_id == "wh-west"
    assert moved.promised_delivery_date == parcel.delivery_date
    # The change's report to capture carried it: the record shows it once the change is made.
    after = await clients.order(order_id)
    assert after.order.delivery_groups[0].promised_delivery_date == parcel.delivery_date
    assert after.order.promised_delivery_date == parcel.delivery_date


async def test_a_new_address_near_the_same_warehouse_keeps_the_fulfillment_orders(
    clients: Clients,
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id
    before = [fo.fulfillment_order_id for fo in await clients.fulfillment_orders(order_id)]

    changed = (await clients.servicing.SubmitAddressChange(submit(view, NEAR_PHILADELPHIA))).change

    assert changed.status == pb.CHANGE_STATUS_COMPLETED
    assert not changed.outcome.rerouted
    assert list(changed.outcome.location_ids) == ["wh-east"]
    assert [fo.fulfillment_order_id for fo in await clients.fulfillment_orders(order_id)] == before
    assert (await clients.order(order_id)).order.delivery_groups[0].address.postal_code == "19107"


async def test_an_address_is_checked_as_submit_order_checks_one(clients: Clients) -> None:
    view = await an_allocated_order(clients)
    bad = common_pb2.PostalAddress(line1="1 Main St", postal_code="94105", country_code="US")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.servicing.SubmitAddressChange(submit(view, bad))

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("address.city", "is required") in field_violations(refused.value)


async def test_an_address_change_is_refused_once_a_unit_of_the_group_shipped(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id
    [fo] = await clients.fulfillment_orders(order_id)
    warehouse = clients.fulfillment
    line = fo.lines[0]
    fo_id = fo.fulfillment_order_id
    await warehouse.AcceptFulfillmentOrder(
        fulfillment_pb2.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id)
    )
    await warehouse.MarkFulfillmentOrderPicked(
        fulfillment_pb2.MarkFulfillmentOrderPickedRequest(fulfillment_order_id=fo_id)
    )
    await warehouse.MarkFulfillmentOrderPacked(
        fulfillment_pb2.MarkFulfillmentOrderPackedRequest(fulfillment_order_id=fo_id)
    )
    await warehouse.ConfirmShipment(
        fulfillment_pb2.ConfirmShipmentRequest(
            fulfillment_order_id=fo.fulfillment_order_id,
            idempotency_key=f"ship-{uuid.uuid4()}",
            carrier="UPS",
            tracking_number="1Z999",
            items=[fulfillment_pb2.ShipmentItem(order_line_id=line.order_line_id, quantity=1)],
        )
    )
    await clients.until(order_id, {capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED})

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.servicing.SubmitAddressChange(submit(view, SAN_FRANCISCO))

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has shipped 1 unit(s)" in (refused.value.details() or "")
    assert "partially_shipped" in (refused.value.details() or "")
    assert {fo.location_id for fo in await clients.fulfillment_orders(order_id)} == {"wh-east"}


async def test_an_agent_previews_then_submits_an_address_change_with_the_cli(
    system: System, clients: Clients
) -> None:
    view = await an_allocated_order(clients)
    order_id = view.order.order_id
    group_id = view.order.delivery_groups[0].delivery_group_id
    address = (
        "--group", group_id, "--line1", "1 Market St", "--city", "San Francisco",
        "--region", "CA", "--postal-code", "94105", "--country", "US",
    )  # fmt: skip

    preview_code, previewed, preview_err = await oms(
        system, "order", "change-address", order_id, *address, "--preview"
    )
    after_preview = await open_locations(clients, order_id)
    unsaid_code, _, unsaid = await oms(
        system, "order", "change-address", order_id, *address, "--submit"
    )
    code, out, err = await oms(
        system, "order", "change-address", order_id, *address, "--submit",
        "--reason", "shopper moved", subject="agent:ada",
    )  # fmt: skip

    assert (preview_code, preview_err) == (0, "")
    assert "would move from wh-east to wh-west" in previewed
    assert "moves to wh-west" in previewed
    assert after_preview == ["wh-east"]  # a preview keeps nothing
    assert unsaid_code != 0 and "--reason" in unsaid
    assert (code, err) == (0, "")
    assert out.startswith("address_change chg-") and "by agent:ada: shopper moved" in out
    assert "moves to wh-west" in out
    assert await open_locations(clients, order_id) == ["wh-west"]
    shipped_to = (await clients.order(order_id)).order.delivery_groups[0].address
    assert (shipped_to.city, shipped_to.postal_code) == ("San Francisco", "94105")
