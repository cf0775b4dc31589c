"""Who may change incoming supply, on the real fulfillment server and Postgres: a warehouse
updates, cancels and receives only its own locations' supply; another location's is
PERMISSION_DENIED and left as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth
from oms_platform.service import RunningService
from oms_tools.devstack.postgres import EmbeddedPostgres
from tests.callers import channel_as
from tests.integration.fulfillment_server import Stub, fulfillment_database
from tests.integration.test_fulfillment_service import new_sku

IN_A_WEEK = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
IN_TWO_WEEKS = (datetime.now(UTC) + timedelta(days=14)).date().isoformat()


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres)


@pytest.fixture
async def warehouses(
    fulfillment: RunningService,
) -> AsyncIterator[dict[str, fulfillment_pb2_grpc.FulfillmentServiceStub]]:
    """A warehouse caller scoped to each of wh-east and wh-west."""
    settings = fulfillment.context.settings
    address = f"127.0.0.1:{fulfillment.port}"
    channels = {
        location: channel_as(settings, address, auth.WAREHOUSE, locations=[location])
        for location in ("wh-east", "wh-west")
    }
    try:
        yield {loc: fulfillment_pb2_grpc.FulfillmentServiceStub(c) for loc, c in channels.items()}
    finally:
        for channel in channels.values():
            await channel.close()


async def test_a_warehouse_changes_and_receives_only_its_own_locations_supply(
    stub: Stub, warehouses: dict[str, fulfillment_pb2_grpc.FulfillmentServiceStub]
) -> None:
    sku = new_sku()
    created = await stub.CreateSupply(
        pb.CreateSupplyRequest(
            idempotency_key=f"po-{sku}",
            kind=pb.SUPPLY_KIND_PURCHASE_ORDER,
            location_id="wh-east",
            sku=sku,
            quantity=5,
            expected_date=IN_A_WEEK,
        )
    )
    supply_id = created.supply.supply_id
    west, east = warehouses["wh-west"], warehouses["wh-east"]

    for name, call in (
        ("update", west.UpdateSupply(
            pb.UpdateSupplyRequest(supply_id=supply_id, expected_date=IN_TWO_WEEKS)
        )),
        ("cancel", west.CancelSupply(pb.CancelSupplyRequest(supply_id=supply_id))),
        ("receive", west.ReceiveSupply(
            pb.ReceiveSupplyRequest(idempotency_key=f"r-{sku}", supply_id=supply_id, quantity=2)
        )),
    ):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert supply_id in (denied.value.details() or ""), name
    [untouched] = (await stub.ListSupply(pb.ListSupplyRequest(sku=sku))).supply
    assert (untouched.status, untouched.expected_date, untouched.quantity_received) == (
        pb.SUPPLY_STATUS_OPEN,
        IN_A_WEEK,
        0,
    )

    received = await east.ReceiveSupply(
        pb.ReceiveSupplyRequest(idempotency_key=f"r-{sku}", supply_id=supply_id, quantity=2)
    )
    assert received.supply.quantity_received == 2
    moved = await east.UpdateSupply(
        pb.UpdateSupplyRequest(supply_id=supply_id, expected_date=IN_TWO_WEEKS)
    )
    assert moved.supply.expected_date == IN_TWO_WEEKS


async def test_a_warehouse_asking_for_unknown_supply_is_told_it_does_not_exist(
    warehouses: dict[str, fulfillment_pb2_grpc.FulfillmentServiceStub],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await warehouses["wh-west"].CancelSupply(pb.CancelSupplyRequest(supply_id="no-such"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
