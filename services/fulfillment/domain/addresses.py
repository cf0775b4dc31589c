"""A delivery group's new address: whether its units may still move (nothing of the group
shipped), what is taken off where it ships now, and whether routing for the new address
chose other locations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oms_platform.errors import FailedPrecondition
from services.fulfillment.domain.fulfillment_orders import (
    CANCELED,
    OPEN_STATUSES,
    FulfillmentOrder,
    FulfillmentOrderReduction,
)
from services.fulfillment.domain.routing import RoutingLine, RoutingPlan


@dataclass(frozen=True)
class AddressChangePlan:
    """The group's open fulfillment orders and what taking their unshipped units off means."""

    reductions: tuple[tuple[FulfillmentOrder, FulfillmentOrderReduction], ...]

    @property
    def lines(self) -> tuple[RoutingLine, ...]:
        """The group's unshipped units, to route for the new address."""
        return tuple(line for _, r in self.reductions for line in r.lines)

    @property
    def location_ids(self) -> tuple[str, ...]:
        """Where they ship from now."""
        return tuple(sorted({fo.location_id for fo, _ in self.reductions}))


def plan_address_change(
    delivery_group_id: str, fulfillment_orders: Sequence[FulfillmentOrder]
) -> AddressChangePlan:
    """Check a delivery group may go elsewhere: FailedPrecondition naming the fulfillment
    order and its status when a unit of the group shipped."""
    for fo in fulfillment_orders:
        shipped = sum(line.quantity_shipped for line in fo.lines)
        if shipped:
            raise FailedPrecondition(
                f"delivery group {delivery_group_id} has shipped: fulfillment order "
                f"{fo.fulfillment_order_id} is {fo.status} with {shipped} unit(s) shipped; "
                "its address can no longer change"
            )
    reductions = []
    for fo in fulfillment_orders:
        if fo.status not in OPEN_STATUSES:
            continue
        taking = tuple(
            RoutingLine(line.order_line_id, line.sku, line.remaining)
            for line in fo.lines
            if line.remaining > 0
        )
        if taking:
            reductions.append(
                (fo, FulfillmentOrderReduction(CANCELED, taking, fo.status, CANCELED))
            )
    return AddressChangePlan(tuple(reductions))


def reroutes(plan: AddressChangePlan, routed: RoutingPlan) -> bool:
    """Whether the units move: routing for the new address placed all of them, at locations
    other than those shipping them now."""
    if not plan.reductions or routed.unallocated:
        return False
    chosen = {a.location_id for g in routed.groups for a in g.allocations}
    return chosen != set(plan.location_ids)


def chosen_locations(routed: RoutingPlan) -> tuple[str, ...]:
    """The locations a routing chose."""
    return tuple(sorted({a.location_id for g in routed.groups for a in g.allocations}))
