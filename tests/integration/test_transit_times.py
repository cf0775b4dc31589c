"""Transit times kept over gRPC (ListTransitTimes, SetTransitTime, DeleteTransitTime) on the real
fulfillment server and Postgres: an edit changes the very next EstimateDelivery, a new method
is estimated once added on purpose, bad bands are refused naming the field and its rule, and
only merchandisers and admins may edit."""

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

# 14 km from the seeded wh-east (Newark, New York time, 14:00 cut-off, one processing day).
NEW_YORK = common_pb2.PostalAddress(
    line1="1 Penn Plaza", city="New York", region="NY", postal_code="10001", country_code="US"
)
# Friday 2027-01-15, 14:30 in New York: past the cut-off before a weekend and Martin Luther
# King Jr. Day, so the parcel leaves on Wednesday the 20th.
FRIDAY_AFTER_CUT_OFF = datetime(2027, 1, 15, 19, 30, tzinfo=UTC)

SEEDED_STANDARD = [(0, 300, 2), (300, 1000, 3), (1000, 2000, 4), (2000, None, 5)]


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres, "oms_transit_times")


@pytest.fixture(scope="module")
async def sku(stub: Stub) -> str:
    """A SKU only wh-east has."""
    sku = f"SKU-TRANSIT-{uuid.uuid4().hex[:10].upper()}"
    await stub.SetInventoryLevels(
        pb.SetInventoryLevelsRequest(
            levels=[pb.InventoryLevel(location_id="wh-east", sku=sku, on_hand=10)]
        )
    )
    return sku


async def estimate(stub: Stub, sku: str, method: str) -> pb.DeliveryEstimate:
    at = Timestamp()
    at.FromDatetime(FRIDAY_AFTER_CUT_OFF)
    answer = await stub.EstimateDelivery(
        pb.EstimateDeliveryRequest(
            items=[pb.DeliveryItem(sku=sku, quantity=1)],
            address=NEW_YORK,
            delivery_methods=[method],
            ordered_at=at,
        )
    )
    [one] = answer.estimates
    return one


def bands(times: list[pb.TransitTime]) -> list[tuple[int, int | None, int]]:
    return [(t.from_km, t.to_km if t.HasField("to_km") else None, t.transit_days) for t in times]


async def standard_bands(stub: Stub) -> list[tuple[int, int | None, int]]:
    listed = await stub.ListTransitTimes(pb.ListTransitTimesRequest(delivery_method="standard"))
    return bands(list(listed.transit_times))


async def test_an_edited_band_changes_the_next_estimate_and_deleting_it_restores_it(
    stub: Stub, sku: str
) -> None:
    before = await estimate(stub, sku, "standard")
    assert (before.shipments[0].distance_km, before.shipments[0].transit_days) == (14, 2)
    assert (before.ship_date, before.delivery_date) == ("2027-01-20", "2027-01-22")

    # A band from 10 km splits the 0-300 km band: New York, 14 km away, now takes six days.
    added = await stub.SetTransitTime(
        pb.SetTransitTimeRequest(delivery_method="standard", from_km=10, transit_days=6)
    )
    try:
        assert added.added
        assert bands([added.transit_time]) == [(10, 300, 6)]
        assert bands(list(added.transit_times)) == [
            (0, 10, 2), (10, 300, 6), *SEEDED_STANDARD[1:],
        ]  # fmt: skip
        slower = await estimate(stub, sku, "standard")
        assert slower.shipments[0].transit_days == 6
        assert (slower.ship_date, slower.delivery_date) == ("2027-01-20", "2027-01-28")

        changed = await stub.SetTransitTime(
            pb.SetTransitTimeRequest(delivery_method="standard", from_km=10, transit_days=4)
        )
        assert not changed.added
        assert (await estimate(stub, sku, "standard")).delivery_date == "2027-01-26"
        # Express was not touched.
        assert (await estimate(stub, sku, "express")).delivery_date == "2027-01-21"
    finally:
        deleted = await stub.DeleteTransitTime(
            pb.DeleteTransitTimeRequest(delivery_method="standard", from_km=10)
        )
    assert deleted.deleted and bands([deleted.transit_time]) == [(10, None, 4)]
    assert bands(list(deleted.transit_times)) == SEEDED_STANDARD
    after = await estimate(stub, sku, "standard")
    assert (after.shipments[0].transit_days, after.delivery_date) == (2, "2027-01-22")

    # Deleting it again changes nothing.
    again = await stub.DeleteTransitTime(
        pb.DeleteTransitTimeRequest(delivery_method="standard", from_km=10)
    )
    assert not again.deleted and bands(list(again.transit_times)) == SEEDED_STANDARD


async def test_a_new_method_is_estimated_once_added_and_not_once_its_last_band_is_gone(
    stub: Stub, sku: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as typo:
        await stub.SetTransitTime(
            pb.SetTransitTimeRequest(delivery_method="two_day", from_km=0, transit_days=2)
        )
    assert typo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(grpcutil.field_violations(typo.value)) == {
        "delivery_method": "unknown delivery method 'two_day' (known: express, overnight, "
        "standard); set new_method to add it"
    }

    await stub.SetTransitTime(
        pb.SetTransitTimeRequest(
            delivery_method="two_day", from_km=0, transit_days=2, new_method=True
        )
    )
    await stub.SetTransitTime(
        pb.SetTransitTimeRequest(delivery_method="two_day", from_km=1000, transit_days=3)
    )
    every = await stub.EstimateDelivery(
        pb.EstimateDeliveryRequest(items=[pb.DeliveryItem(sku=sku, quantity=1)], address=NEW_YORK)
    )
    assert [e.delivery_method for e in every.estimates] == [
        "express", "overnight", "standard", "two_day",
    ]  # fmt: skip
    assert (await estimate(stub, sku, "two_day")).delivery_date == "2027-01-22"

    with pytest.raises(grpc.aio.AioRpcError) as first_goes_last:
        await stub.DeleteTransitTime(
            pb.DeleteTransitTimeRequest(delivery_method="two_day", from_km=0)
        )
    assert first_goes_last.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert first_goes_last.value.details() == (
        "from_km: the 0 km band of delivery method 'two_day' is deleted last: delete its bands "
        "from 1,000 km first"
    )
    await stub.DeleteTransitTime(
        pb.DeleteTransitTimeRequest(delivery_method="two_day", from_km=1000)
    )
    gone = await stub.DeleteTransitTime(
        pb.DeleteTransitTimeRequest(delivery_method="two_day", from_km=0)
    )
    assert gone.deleted and list(gone.transit_times) == []
    unpromised = await estimate(stub, sku, "two_day")
    assert not unpromised.promised
    assert unpromised.reason == "no transit times are set for delivery method 'two_day'"


async def test_bad_bands_are_refused_naming_each_field_and_rule_and_nothing_is_written(
    stub: Stub,
) -> None:
    async def refused(request: pb.SetTransitTimeRequest) -> dict[str, str]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SetTransitTime(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return dict(grpcutil.field_violations(raised.value))

    assert await refused(
        pb.SetTransitTimeRequest(delivery_method="Same Day", from_km=-5, transit_days=61)
    ) == {
        "delivery_method": "must be lower-case letters, digits, '-' or '_', starting with a "
        "letter (e.g. 'two_day')",
        "from_km": "must be from 0 to 20,000 km",
        "transit_days": "must be from 0 to 60 business days",
    }
    assert await refused(
        pb.SetTransitTimeRequest(delivery_method="standard", from_km=25_000, transit_days=3)
    ) == {"from_km": "must be from 0 to 20,000 km"}
    assert await refused(
        pb.SetTransitTimeRequest(delivery_method="pickup", from_km=0, transit_days=0)
    ) == {"delivery_method": "pickup is collected at a store: no carrier carries it"}
    assert await refused(
        pb.SetTransitTimeRequest(
            delivery_method="same_day", from_km=50, transit_days=0, new_method=True
        )
    ) == {"from_km": "a new delivery method's first band starts at 0 km"}

    with pytest.raises(grpc.aio.AioRpcError) as first:
        await stub.DeleteTransitTime(pb.DeleteTransitTimeRequest(delivery_method="standard"))
    assert first.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "delete its bands from 300, 1,000 and 2,000 km first" in (first.value.details() or "")

    assert await standard_bands(stub) == SEEDED_STANDARD
    listed = await stub.ListTransitTimes(pb.ListTransitTimesRequest())
    assert sorted({t.delivery_method for t in listed.transit_times}) == [
        "express", "overnight", "standard",
    ]  # fmt: skip


async def test_merchandisers_edit_agents_read_and_warehouses_do_neither(
    fulfillment: RunningService,
) -> None:
    settings = fulfillment.context.settings
    address = f"127.0.0.1:{fulfillment.port}"
    set_days = pb.SetTransitTimeRequest(delivery_method="express", from_km=300, transit_days=1)
    channels = {
        auth.MERCHANDISER: channel_as(settings, address, auth.MERCHANDISER),
        auth.AGENT: channel_as(settings, address, auth.AGENT),
        auth.WAREHOUSE: channel_as(settings, address, auth.WAREHOUSE, locations=["wh-east"]),
    }
    try:
        stubs = {r: fulfillment_pb2_grpc.FulfillmentServiceStub(c) for r, c in channels.items()}
        assert not (await stubs[auth.MERCHANDISER].SetTransitTime(set_days)).added
        listed = await stubs[auth.AGENT].ListTransitTimes(pb.ListTransitTimesRequest())
        assert len(listed.transit_times) == 12
        for role, call in (
            (auth.AGENT, stubs[auth.AGENT].SetTransitTime(set_days)),
            (auth.WAREHOUSE, stubs[auth.WAREHOUSE].ListTransitTimes(pb.ListTransitTimesRequest())),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
    finally:
        for channel in channels.values():
            await channel.close()
