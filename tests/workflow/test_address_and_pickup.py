"""A delivery address changed before shipping, and a store pickup never collected, on the
time-skipping server: the address change follows fulfillment's reroute onto the replacement
fulfillment order, which ships and is charged; a pickup whose deadline passed cancels its units,
gives their money back and ends the order canceled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from tests.history import record
from tests.workflow.test_order_lifecycle import (
    Services,
    an_order,
    change,
    delivered,
    shipped,
    start,
    until,
    update,
)
from workflows.types import (
    ADDRESS_CHANGE_UPDATE,
    CANCELED,
    FULFILLED,
    Address,
    ChangeAddressInput,
    ChangeAddressResult,
    FulfillmentEvent,
    FulfillmentOrderData,
    LifecycleDeliveryGroup,
    RoutingLineData,
    ShipmentItemData,
)

NEW_ADDRESS = Address("9 Pine Rd", "Austin", "78701", "US")


@dataclass
class Rerouting(Services):
    """The stand-ins, with fulfillment moving the whole group to wh-west for a new address."""

    addresses: list[ChangeAddressInput] = field(default_factory=list)

    def activities(self) -> list[Any]:
        @activity.defn(name="change_delivery_address")
        async def change_delivery_address(c: ChangeAddressInput) -> ChangeAddressResult:
            self.addresses.append(c)
            return ChangeAddressResult(
                rerouted=True,
                from_location_ids=["wh-east"],
                to_location_ids=["wh-west"],
                canceled_fulfillment_order_ids=["fo-1"],
                replacements=[
                    FulfillmentOrderData(
                        "fo-7",
                        "wh-west",
                        "dg-1",
                        [
                            RoutingLineData("line-1", "SKU-TSHIRT-M", 2),
                            RoutingLineData("line-2", "SKU-MUG", 1),
                        ],
                    )
                ],
            )

        return [*super().activities(), change_delivery_address]


async def test_an_address_change_ships_from_the_replacement_and_charges_in_full(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services, order = Rerouting(), an_order()
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        result = await update(
            handle,
            ADDRESS_CHANGE_UPDATE,
            change("address_change", delivery_group_id="dg-1", address=NEW_ADDRESS),
        )
        # The old fulfillment order gave up its units: they ship from the replacement.
        await handle.signal(
            "fulfillment_event", shipped("fo-7", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-7", "s1"))
        final = await handle.result()
        await record(handle, "address_change")

    [asked] = services.addresses
    assert asked.address == NEW_ADDRESS and asked.delivery_group_id == "dg-1"
    assert result.rerouted and result.fulfillment_order_ids == ["fo-7"]
    assert result.location_ids == ["wh-west"]
    assert sorted((i.order_line_id, i.quantity) for i in result.lines) == [
        ("line-1", 2),
        ("line-2", 1),
    ]
    [report] = [p for p in services.named("progress") if p.kind == "change.address"]
    # Capture is told the units left fo-1 and went to fo-7, and the group's new address.
    assert sorted((c.order_line_id, c.allocated) for c in report.line_changes) == [
        ("line-1", -2),
        ("line-1", 2),
        ("line-2", -1),
        ("line-2", 1),
    ]
    assert [(g.delivery_group_id, g.address) for g in report.delivery_group_addresses] == [
        ("dg-1", NEW_ADDRESS)
    ]
    assert {"order.address_changed", "fulfillment.canceled"} <= {e.type for e in report.events}
    assert final.status == FULFILLED
    assert final.captured_minor == order.grand_total_minor == services.captured


def not_collected(fo: str, items: list[tuple[str, int]]) -> FulfillmentEvent:
    return FulfillmentEvent(
        f"not_collected:{fo}",
        "not_collected",
        fo,
        items=[ShipmentItemData(line, qty) for line, qty in items],
        reason="not collected by its pickup deadline",
    )


async def test_a_pickup_not_collected_gives_the_money_back_and_ends_canceled(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    services = Services()
    order = an_order(
        delivery_groups=[
            LifecycleDeliveryGroup(
                "dg-1",
                Address("1 Main St", "Newark", "07102", "US"),
                0,
                "pickup",
                "store-newark",
            )
        ],
        grand_total_minor=2000 - 100 + 150 + 1500,
    )
    worker, handle = await start(time_skipping_env, services, order)
    async with worker:
        await until(services, "fulfillment.allocated")
        await handle.signal(
            "fulfillment_event", not_collected("fo-1", [("line-1", 2), ("line-2", 1)])
        )
        final = await handle.result()
        await record(handle, "pickup_not_collected")

    assert final.status == CANCELED
    # Fulfillment canceled the units itself: the order does not ask it again.
    assert services.named("cancel_lines") == [] and services.named("cancel_fo") == []
    # Nothing was captured: the whole hold is released, and voided with the memo.
    assert services.released == order.grand_total_minor and services.refunded == 0
    [asked] = services.named("memo_and_refund")
    assert asked.void_idempotency_key
    assert services.kinds()[-1] == "order.canceled"
    assert services.statuses[-1] == CANCELED
