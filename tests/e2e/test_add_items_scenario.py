"""An agent adds items to an order before it ships, with the `oms` CLI, end to end: the
system of the scenarios (services on real ports, the worker, Postgres, Temporal), the CLI as
a separate process talking gRPC to it, stock of the test's own SKUs so reservations can be
counted, then the warehouse simulator ships everything and the money is checked."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from oms.capture.v1 import capture_pb2 as cpb
from oms.payments.v1 import payments_pb2 as ppb
from oms.servicing.v1 import servicing_pb2 as spb

from oms_platform.money import format_minor
from tests.e2e.test_scenarios import Client, an_order, line_of, oms, sku  # noqa: F401

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


async def cli(client: Client, *args: str, subject: str = "") -> tuple[int, str, str]:
    """Run `oms <args>` against the system under test (as `subject` when given); (exit code,
    stdout, stderr)."""
    settings = client.system.settings
    env = {
        **os.environ,
        **{
            f"OMS_{name.upper()}_ADDRESS": settings.address_of(name)
            for name in ("capture", "fulfillment", "payments", "servicing")
        },
        **({"OMS_CLI_SUBJECT": subject} if subject else {}),
    }
    # Not subprocess.run: the services answering it run on this event loop.
    process = await asyncio.create_subprocess_exec(
        str(BIN / "oms"), *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def as_json(client: Client, *args: str, subject: str = "") -> Any:
    code, out, err = await cli(client, *args, "--json", subject=subject)
    assert code == 0, err
    return json.loads(out)


async def test_an_agent_adds_a_line_and_units_with_the_cli_and_the_order_ships_them_all(
    oms: Client,  # noqa: F811
) -> None:
    lamp, bulb, shade = sku("LAMP"), sku("BULB"), sku("SHADE")
    await oms.stock(lamp, wh_east=5)
    await oms.stock(bulb, wh_east=10)
    await oms.stock(shade, wh_west=1)
    order = await oms.submit(an_order([(lamp, 1, 4500), (bulb, 2, 300)]))
    view = await oms.wait(order.order_id, {cpb.ORDER_STATUS_ALLOCATED})
    bulbs = line_of(view, bulb)
    total = order.totals.grand_total.amount_minor
    args = (
        "order", "add-items", order.order_id,
        "--new", f"{shade},1,2500,200", "--more", f"{bulbs.order_line_id},3,45",
    )  # fmt: skip
    added = 2500 + 200 + 3 * 300 + 45

    preview = await as_json(oms, *args, "--preview")
    code, said, _ = await cli(oms, *args, "--preview")
    assert code == 0 and f"authorized {format_minor(added, 'USD')}" in said
    assert f"order total {format_minor(total + added, 'USD')}" in said
    assert await oms.reservations_of(shade) == 0  # a preview reserves nothing
    submitted = await as_json(oms, *args, "--reason", "shopper wants a shade", subject="agent:ann")
    code, listed, _ = await cli(oms, "order", "changes", order.order_id)

    assert int(preview["preview"]["authorized_minor"]) == added
    change = submitted["change"]
    assert (
        change["kind"] == "CHANGE_KIND_ADD_ITEMS" and change["status"] == "CHANGE_STATUS_COMPLETED"
    )
    assert int(change["outcome"]["grand_total_minor"]) == total + added
    assert code == 0 and "add_items" in listed and "agent:ann" in listed
    # Reserved at once: the shade at the only place that has one, three more bulbs.
    assert await oms.reservations_of(shade) == 1
    assert await oms.reservations_of(bulb) == 5
    after = await oms.view(order.order_id)
    assert line_of(after, bulb).quantity == 5
    assert line_of(after, shade).quantities.allocated == 1
    assert after.order.totals.grand_total.amount_minor == total + added
    assert "change.add_items" in [e.kind for e in after.timeline]
    # Another unit of the last shade anywhere: refused, and nothing more is held.
    code, _, err = await cli(oms, "order", "add-items", order.order_id, "--new", f"{shade},1,2500")
    assert code == 1 and "FAILED_PRECONDITION" in err and f"no location can ship 1 x {shade}" in err
    assert await oms.reservations_of(shade) == 1

    async with oms.system.simulator():
        settled = await oms.wait(order.order_id, {cpb.ORDER_STATUS_FULFILLED})

    money = settled.payment_summary
    assert money.invoiced.amount_minor == money.captured.amount_minor == total + added
    assert sorted(
        a.amount.amount_minor
        for a in settled.authorizations
        if a.status != ppb.AUTHORIZATION_STATUS_DECLINED
    ) == sorted([total, added])
    assert {fo.location_id for fo in settled.fulfillment_orders} == {"wh-east", "wh-west"}
    assert await oms.reservations_of(shade) == 0 and await oms.reservations_of(bulb) == 0
    books = await oms.payments.GetReconciliation(
        ppb.GetReconciliationRequest(order_id=order.order_id), timeout=10
    )
    assert books.reconciliation.agrees
    changes = await oms.servicing.ListChanges(spb.ListChangesRequest(order_id=order.order_id))
    assert [c.status for c in changes.changes] == [
        spb.CHANGE_STATUS_COMPLETED,
        spb.CHANGE_STATUS_REFUSED,
    ]
