"""`oms supply`, `oms reservations` and `oms transit` run as a person runs them, against the real
fulfillment server on Postgres: each prints what it did, and the server's own answers
(availability, estimates) show it was done."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as pb

from oms_platform.service import RunningService
from oms_tools.devstack.postgres import EmbeddedPostgres
from tests.callers import oms_cli
from tests.integration.fulfillment_server import Stub, fulfillment_database

# 14 km from the seeded wh-east (Newark).
NEW_YORK = common_pb2.PostalAddress(postal_code="10001", country_code="US")


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres, "oms_fulfillment_cli")


async def oms(fulfillment: RunningService, *args: str) -> tuple[int, str, str]:
    """The `oms` CLI against the module's fulfillment server."""
    return await oms_cli(
        fulfillment.context.settings,
        *args,
        env={"OMS_FULFILLMENT_ADDRESS": f"127.0.0.1:{fulfillment.port}"},
    )


def lines(out: str) -> list[list[str]]:
    """The printed lines, split into their columns."""
    return [line.split() for line in out.splitlines()]


async def on_hand(stub: Stub, sku: str) -> list[tuple[str, int, int]]:
    found = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
    return [(lv.location_id, lv.on_hand, lv.reserved) for lv in found.levels]


async def test_transit_set_list_and_delete_change_what_estimates_promise(
    fulfillment: RunningService, stub: Stub
) -> None:
    code, listed, err = await oms(fulfillment, "transit", "list", "--method", "express")
    assert (code, err) == (0, "")
    assert lines(listed) == [
        ["method", "from", "km", "to", "km", "days"],
        ["express", "0", "300", "1"],
        ["express", "300", "1000", "1"],
        ["express", "1000", "2000", "2"],
        ["express", "2000", "-", "2"],
    ]

    code, out, err = await oms(
        fulfillment, "transit", "set", "express", "--from-km", "5", "--days", "3"
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "express: band from 5 km added, 3 business days"
    assert ["express", "5", "300", "3"] in lines(out)
    sku = f"SKU-CLI-{uuid.uuid4().hex[:8].upper()}"
    await stub.SetInventoryLevels(
        pb.SetInventoryLevelsRequest(
            levels=[pb.InventoryLevel(location_id="wh-east", sku=sku, on_hand=1)]
        )
    )
    question = pb.EstimateDeliveryRequest(
        items=[pb.DeliveryItem(sku=sku, quantity=1)], address=NEW_YORK, delivery_methods=["express"]
    )
    [express] = (await stub.EstimateDelivery(question)).estimates
    assert express.shipments[0].transit_days == 3

    code, out, err = await oms(fulfillment, "transit", "delete", "express", "--from-km", "5")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "express: band from 5 km deleted"
    assert ["express", "0", "300", "1"] in lines(out)
    [express] = (await stub.EstimateDelivery(question)).estimates
    assert express.shipments[0].transit_days == 1

    code, out, err = await oms(
        fulfillment, "transit", "set", "exprses", "--from-km", "0", "--days", "1"
    )
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error: INVALID_ARGUMENT: invalid request: delivery_method: unknown delivery method "
        "'exprses' (known: express, overnight, standard); set new_method to add it",
        "  delivery_method: unknown delivery method 'exprses' (known: express, overnight, "
        "standard); set new_method to add it",
    ]

    code, out, err = await oms(fulfillment, "transit", "list", "--json")
    assert code == 0 and len(json.loads(out)["transit_times"]) == 12


async def test_supply_is_created_listed_changed_received_and_canceled(
    fulfillment: RunningService, stub: Stub
) -> None:
    sku = f"SKU-CLI-{uuid.uuid4().hex[:8].upper()}"
    expected = (date.today() + timedelta(days=30)).isoformat()
    code, out, err = await oms(
        fulfillment, "supply", "create", "--kind", "purchase_order", "--location", "wh-east",
        "--sku", sku, "--qty", "5", "--expected", expected, "--reference", "PO-77", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    supply_id = json.loads(out)["supply"]["supply_id"]

    code, out, err = await oms(fulfillment, "supply", "list", "--sku", sku)
    assert (code, err) == (0, "")
    assert lines(out) == [
        ["supply", "kind", "reference", "location", "sku", "expected", "qty", "received",
         "promised", "status"],
        [supply_id, "purchase_order", "PO-77", "wh-east", sku, expected, "5", "0", "0", "open"],
    ]  # fmt: skip

    code, out, err = await oms(fulfillment, "supply", "update", supply_id, "--qty", "8")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"supply {supply_id} changed"
    assert lines(out)[2][6] == "8"

    code, out, err = await oms(fulfillment, "supply", "receive", supply_id, "--qty", "3")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"supply {supply_id}: 3 received"
    assert lines(out)[2][6:] == ["8", "3", "0", "open"]
    assert out.splitlines()[-1] == "no backordered fulfillment order released"
    assert await on_hand(stub, sku) == [("wh-east", 3, 0)]

    code, out, err = await oms(fulfillment, "supply", "receive", supply_id, "--qty", "9")
    assert code == 1 and out == ""
    assert err.splitlines()[-1] == (
        f"  quantity: exceeds the 5 units of supply {supply_id} still expected"
    )

    code, out, err = await oms(fulfillment, "supply", "cancel", supply_id, "--reason", "late")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"supply {supply_id} canceled"
    assert lines(out)[2][-1] == "canceled"


async def test_a_reservation_holds_units_until_it_is_released(
    fulfillment: RunningService, stub: Stub
) -> None:
    sku = f"SKU-CLI-{uuid.uuid4().hex[:8].upper()}"
    await stub.SetInventoryLevels(
        pb.SetInventoryLevelsRequest(
            levels=[pb.InventoryLevel(location_id="wh-east", sku=sku, on_hand=3)]
        )
    )
    code, out, err = await oms(
        fulfillment, "reservations", "reserve", "--line", f"{sku},2", "--postal-code", "10001",
        "--ttl", "600",
    )  # fmt: skip
    assert (code, err) == (0, "")
    first, *rest = out.splitlines()
    assert first.startswith("reservation ") and " [held], expires " in first
    reservation_id = first.split()[1]
    assert lines("\n".join(rest)) == [
        ["sku", "qty", "held", "at", "held"],
        [sku, "2", "wh-east", "2"],
    ]
    assert await on_hand(stub, sku) == [("wh-east", 3, 2)]

    code, out, err = await oms(fulfillment, "reservations", "show", reservation_id, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["reservation"]["status"] == "RESERVATION_STATUS_HELD"

    code, out, err = await oms(fulfillment, "reservations", "release", reservation_id)
    assert (code, err) == (0, "")
    assert out.startswith(f"reservation {reservation_id} [released]")
    assert await on_hand(stub, sku) == [("wh-east", 3, 0)]

    code, out, err = await oms(
        fulfillment, "reservations", "reserve", "--line", f"{sku},4", "--postal-code", "10001"
    )
    assert code == 1 and out == ""
    assert err.splitlines()[0].startswith("error: FAILED_PRECONDITION: not enough stock")
