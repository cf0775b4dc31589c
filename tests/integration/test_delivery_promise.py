"""EstimateDelivery through the real fulfillment gRPC server on a real Postgres: a location's
cut-off, processing days and time zone set through UpsertLocation, business days skipping a
weekend and a public holiday, transit days by method and distance band, the reason a method
cannot be promised, and nothing reserved."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth, grpcutil
from oms_platform.service import RunningService
from oms_tools.devstack.postgres import EmbeddedPostgres
from tests.callers import channel_as
from tests.integration.fulfillment_server import Stub, fulfillment_database

# 10001 is in the seeded ZIP prefix 100 (New York), 14 km from Newark.
NEW_YORK = common_pb2.PostalAddress(
    line1="1 Penn Plaza", city="New York", region="NY", postal_code="10001", country_code="US"
)
# A ZIP prefix nobody seeded: the distance is unknown.
NOWHERE_KNOWN = common_pb2.PostalAddress(
    line1="1 Main St", city="Bismarck", region="ND", postal_code="58501", country_code="US"
)


def ordered_at(text: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(text).replace(tzinfo=UTC))
    return stamp


@pytest.fixture(scope="module")
async def newark(stub: Stub) -> str:
    """A warehouse in Newark working New York time: orders before 14:00 start that business
    day, and leave one business day after they start."""
    location_id = f"promise-nj-{uuid.uuid4().hex[:8]}"
    await stub.UpsertLocation(
        pb.UpsertLocationRequest(
            location=pb.Location(
                location_id=location_id,
                name="Newark promise warehouse",
                type=pb.LOCATION_TYPE_WAREHOUSE,
                address=common_pb2.PostalAddress(
                    line1="1 Port St", city="Newark", postal_code="07102", country_code="US"
                ),
                latitude=40.7357,
                longitude=-74.1724,
                priority=1,
                enabled=True,
                timezone="America/New_York",
                cutoff_local_time="14:00",
                processing_days=1,
            )
        )
    )
    return location_id


async def stocked(stub: Stub, location_id: str, on_hand: int) -> str:
    sku = f"SKU-PROMISE-{uuid.uuid4().hex[:10].upper()}"
    await stub.SetInventoryLevels(
        pb.SetInventoryLevelsRequest(
            levels=[pb.InventoryLevel(location_id=location_id, sku=sku, on_hand=on_hand)]
        )
    )
    return sku


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres, "oms_delivery_promise")


async def test_a_friday_order_after_the_cut_off_before_a_monday_holiday_gets_its_dates(
    stub: Stub, newark: str
) -> None:
    sku = await stocked(stub, newark, 5)
    # Friday 2027-01-15 at 14:30 in New York, past the 14:00 cut-off; Saturday and Sunday
    # follow, then Martin Luther King Jr. Day on Monday the 18th.
    response = await stub.EstimateDelivery(
        pb.EstimateDeliveryRequest(
            items=[pb.DeliveryItem(sku=sku, quantity=2)],
            address=NEW_YORK,
            delivery_methods=["standard", "express"],
            ordered_at=ordered_at("2027-01-15T19:30:00"),
        )
    )

    standard, express = response.estimates
    assert (standard.delivery_method, standard.promised, standard.reason) == ("standard", True, "")
    # Processing starts Tuesday the 19th and takes a business day: it leaves Wednesday.
    assert standard.ship_date == "2027-01-20"
    assert standard.delivery_date == "2027-01-22"  # two business days within 300 km
    [shipment] = standard.shipments
    assert shipment.location_id == newark
    assert [(i.sku, i.quantity) for i in shipment.items] == [(sku, 2)]
    assert (shipment.distance_km, shipment.transit_days) == (14, 2)
    assert (shipment.ship_date, shipment.delivery_date) == ("2027-01-20", "2027-01-22")
    assert (express.ship_date, express.delivery_date) == ("2027-01-20", "2027-01-21")

    # The same moment is before the cut-off once the location works Los Angeles time, where
    # it is 11:30: processing starts that Friday, and the parcel leaves on Tuesday.
    listed = await stub.ListLocations(pb.ListLocationsRequest())
    stored = next(loc for loc in listed.locations if loc.location_id == newark)
    assert (stored.timezone, stored.cutoff_local_time, stored.processing_days) == (
        "America/New_York",
        "14:00",
        1,
    )
    try:
        # Only the time zone is sent: the cut-off and processing days stay as they are.
        moved = pb.Location()
        moved.CopyFrom(stored)
        moved.ClearField("cutoff_local_time")
        moved.ClearField("processing_days")
        moved.timezone = "America/Los_Angeles"
        upserted = await stub.UpsertLocation(pb.UpsertLocationRequest(location=moved))
        assert (upserted.location.cutoff_local_time, upserted.location.processing_days) == (
            "14:00",
            1,
        )
        [pacific] = (
            await stub.EstimateDelivery(
                pb.EstimateDeliveryRequest(
                    items=[pb.DeliveryItem(sku=sku, quantity=2)],
                    address=NEW_YORK,
                    delivery_methods=["standard"],
                    ordered_at=ordered_at("2027-01-15T19:30:00"),
                )
            )
        ).estimates
        assert (pacific.ship_date, pacific.delivery_date) == ("2027-01-19", "2027-01-21")
    finally:
        await stub.UpsertLocation(pb.UpsertLocationRequest(location=stored))

    # An estimate reserves nothing.
    availability = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
    assert [(lv.on_hand, lv.reserved) for lv in availability.levels] == [(5, 0)]


async def test_thanksgiving_and_an_unknown_distance_and_every_method_when_none_is_named(
    stub: Stub, newark: str
) -> None:
    sku = await stocked(stub, newark, 1)
    # Wednesday before Thanksgiving, 13:00 in New York: it leaves Friday (Thursday is a holiday).
    response = await stub.EstimateDelivery(
        pb.EstimateDeliveryRequest(
            items=[pb.DeliveryItem(sku=sku, quantity=1)],
            address=NOWHERE_KNOWN,
            ordered_at=ordered_at("2026-11-25T18:00:00"),
        )
    )
    by_method = {e.delivery_method: e for e in response.estimates}
    assert list(by_method) == ["express", "overnight", "standard"]
    standard = by_method["standard"]
    assert standard.ship_date == "2026-11-27"
    # Unlocated: the longest band, five business days.
    [shipment] = standard.shipments
    assert not shipment.HasField("distance_km") and shipment.transit_days == 5
    assert standard.delivery_date == "2026-12-04"
    assert by_method["overnight"].delivery_date == "2026-11-30"


async def test_a_method_that_cannot_be_promised_says_why(stub: Stub, newark: str) -> None:
    sku = await stocked(stub, newark, 1)
    response = await stub.EstimateDelivery(
        pb.EstimateDeliveryRequest(
            items=[pb.DeliveryItem(sku=sku, quantity=3)],
            address=NEW_YORK,
            delivery_methods=["standard", "pigeon"],
        )
    )
    standard, pigeon = response.estimates
    assert not standard.promised and standard.ship_date == "" and not standard.shipments
    assert standard.reason == (
        f"not in stock at any location that can ship it: 2 of '{sku}' (items[0])"
    )
    assert not pigeon.promised
    assert pigeon.reason == "no transit times are set for delivery method 'pigeon'"


async def test_bad_input_is_refused_naming_each_field_and_rule(stub: Stub, newark: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.EstimateDelivery(
            pb.EstimateDeliveryRequest(
                items=[pb.DeliveryItem(sku="", quantity=0)],
                address=common_pb2.PostalAddress(postal_code="10001"),
                delivery_methods=["standard", "standard"],
                ordered_at=ordered_at("2150-01-01T00:00:00"),
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(grpcutil.field_violations(raised.value)) == {
        "items[0].sku": "is required",
        "items[0].quantity": "must be positive",
        "address.country_code": "is required: its business days count",
        "delivery_methods[1]": "repeats delivery_methods[0]",
        "ordered_at": "must be from 2000-01-01 to 2099-12-31",
    }

    listed = await stub.ListLocations(pb.ListLocationsRequest())
    location = next(loc for loc in listed.locations if loc.location_id == newark)
    location.timezone = "Mars/Olympus_Mons"
    location.cutoff_local_time = "2pm"
    location.processing_days = 31
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpsertLocation(pb.UpsertLocationRequest(location=location))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in grpcutil.field_violations(refused.value)} == {
        "location.timezone",
        "location.cutoff_local_time",
        "location.processing_days",
    }


async def test_a_storefront_may_ask_and_a_warehouse_may_not(
    fulfillment: RunningService, newark: str
) -> None:
    settings = fulfillment.context.settings
    address = f"127.0.0.1:{fulfillment.port}"
    request = pb.EstimateDeliveryRequest(
        items=[pb.DeliveryItem(sku="SKU-NONE", quantity=1)],
        address=NEW_YORK,
        delivery_methods=["standard"],
    )
    storefront = channel_as(settings, address, auth.STOREFRONT)
    warehouse = channel_as(settings, address, auth.WAREHOUSE, locations=[newark])
    try:
        answer = await fulfillment_pb2_grpc.FulfillmentServiceStub(storefront).EstimateDelivery(
            request
        )
        assert not answer.estimates[0].promised
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await fulfillment_pb2_grpc.FulfillmentServiceStub(warehouse).EstimateDelivery(request)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await storefront.close()
        await warehouse.close()
