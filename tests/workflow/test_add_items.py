"""Adding items before fulfillment, on the time-skipping server with the stand-in services of
test_order_lifecycle: routed and reserved, authorized for the difference, invoiced and
captured at shipment; refused with nothing left behind after shipping, when stock is missing
or when the payment for the difference is declined."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from tests.history import record
from tests.workflow.test_order_lifecycle import (
    Handle,
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
    ADD_ITEMS_UPDATE,
    FULFILLED,
    PREVIEW_QUERY,
    AuthorizeInput,
    AuthorizeResult,
    ChangeResult,
    EventData,
    FulfillmentOrderData,
    LineIncrease,
    NewLineData,
    PaymentEventData,
    RouteInput,
    RouteResult,
)

CAP = NewLineData("SKU-CAP", 2, 800, tax_minor=96, name="Cap")  # 1600 + 96
ONE_MORE_MUG = LineIncrease("line-2", 1)  # line-2: 1 x 1500, no tax
ADDED = 1600 + 96 + 1500


class Shop(Services):
    """The stand-ins, plus: SKUs no location stocks, and a gateway that declines what is
    authorized for added items."""

    def __init__(self, no_stock: tuple[str, ...] = (), decline_additions: bool = False) -> None:
        super().__init__()
        self.no_stock = no_stock
        self.decline_additions = decline_additions

    def activities(self) -> list[Any]:
        @activity.defn(name="authorize_payment")
        async def authorize_payment(a: AuthorizeInput) -> AuthorizeResult:
            self.calls.append(("authorize", a))
            if self.decline_additions and ":authorize:add:" in a.idempotency_key:
                return AuthorizeResult(
                    f"auth-{len(self.named('authorize'))}", False, "do_not_honor"
                )
            return AuthorizeResult(f"auth-{len(self.named('authorize'))}", True)

        @activity.defn(name="create_fulfillment_orders")
        async def create_fulfillment_orders(r: RouteInput) -> RouteResult:
            self.calls.append(("route", r))
            lines = [line for g in r.delivery_groups for line in g.lines]
            placed = [line for line in lines if line.sku not in self.no_stock]
            fos = []
            if placed:
                self.fo_count += 1
                group = r.delivery_groups[0].delivery_group_id
                fos = [FulfillmentOrderData(f"fo-{self.fo_count}", "wh-east", group, placed)]
            unplaced = [line for line in lines if line.sku in self.no_stock]
            return RouteResult(fos, unplaced, ["wh-east ships it"])

        mine = {
            "authorize_payment": authorize_payment,
            "create_fulfillment_orders": create_fulfillment_orders,
        }
        return [
            mine.get(getattr(a, "__temporal_activity_definition").name, a)
            for a in super().activities()
        ]


def add(*, new: list[NewLineData] | None = None, more: list[LineIncrease] | None = None) -> Any:
    return change(
        "add_items", new_lines=new or [], increases=more or [], reason="shopper wants more"
    )


async def refused(handle: Handle, request: Any) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as error:
        await update(handle, ADD_ITEMS_UPDATE, request)
    cause = error.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def accepted_updates(handle: Handle) -> list[str]:
    """The names of the Updates the workflow's history accepted."""
    history = await handle.fetch_history()
    return [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]


def added_route(shop: Shop) -> RouteInput:
    [route] = [r for r in shop.named("route") if ":route:add:" in r.idempotency_key]
    return route


async def test_added_lines_are_routed_authorized_for_the_difference_and_charged_at_shipment(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    shop, order = Shop(), an_order()
    worker, handle = await start(time_skipping_env, shop, order)
    async with worker:
        await until(shop, "fulfillment.allocated")
        request = add(new=[CAP], more=[ONE_MORE_MUG])
        result = await update(handle, ADD_ITEMS_UPDATE, request)
        [cap_id] = [i.order_line_id for i in result.lines if i.order_line_id != "line-2"]
        [added_fo] = result.fulfillment_order_ids
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal(
            "fulfillment_event", shipped(added_fo, "s2", [("line-2", 1), (cap_id, 2)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.signal("fulfillment_event", delivered(added_fo, "s2"))
        final = await handle.result()
        await record(handle, "add_items")
        assert await accepted_updates(handle) == [ADD_ITEMS_UPDATE]

    new_total = order.grand_total_minor + ADDED
    assert (result.authorized_minor, result.grand_total_minor) == (ADDED, new_total)
    assert sorted((i.order_line_id, i.quantity) for i in result.lines) == sorted(
        [("line-2", 1), (cap_id, 2)]
    )
    first, difference = shop.named("authorize")
    assert first.amount_minor == order.grand_total_minor
    assert difference.amount_minor == ADDED
    assert difference.idempotency_key == f"{order.order_id}:authorize:add:{request.change_id}"
    assert sorted((li.sku, li.quantity) for li in added_route(shop).delivery_groups[0].lines) == [
        ("SKU-CAP", 2),
        ("SKU-MUG", 1),
    ]
    # Capture is told the new lines and units, and that they are allocated.
    [progress] = [p for p in shop.named("progress") if p.kind == "change.add_items"]
    assert sorted(
        (a.order_line_id, a.new_line, a.gross_minor, a.tax_minor) for a in progress.added_lines
    ) == sorted([("line-2", False, 1500, 0), (cap_id, True, 1600, 96)])
    assert sorted((c.order_line_id, c.allocated) for c in progress.line_changes) == sorted(
        [("line-2", 1), (cap_id, 2)]
    )
    # The log is told the lines added and their money, the authorization for them, and the
    # fulfillment order that ships them.
    [added, authorized, allocated] = progress.events
    assert added.type == "lines.added" and added.lines is not None
    assert sorted((x.order_line_id, x.sku, x.quantity) for x in added.lines.lines) == sorted(
        [("line-2", "SKU-MUG", 1), (cap_id, "SKU-CAP", 2)]
    )
    assert added.lines.amount_minor == ADDED
    assert authorized == EventData("payment.authorized", payment=PaymentEventData(ADDED))
    assert allocated.type == "fulfillment.allocated" and allocated.fulfillment_order is not None
    assert allocated.fulfillment_order.fulfillment_order_id == added_fo
    assert sorted(
        (x.order_line_id, x.sku, x.quantity) for x in allocated.fulfillment_order.lines
    ) == sorted([("line-2", "SKU-MUG", 1), (cap_id, "SKU-CAP", 2)])
    # Both parcels are invoiced for exactly the new total and captured in full.
    assert final.status == FULFILLED
    assert sum(shop.invoices.values()) == final.invoiced_minor == new_total
    assert final.captured_minor == shop.captured == new_total
    assert shop.named("cancel_fo") == [] and shop.named("void") == []


async def test_a_preview_says_what_would_be_added_and_authorized_and_changes_nothing(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    shop, order = Shop(), an_order()
    worker, handle = await start(time_skipping_env, shop, order)
    async with worker:
        await until(shop, "fulfillment.allocated")
        calls = len(shop.calls)
        preview = await handle.query(
            PREVIEW_QUERY, add(new=[CAP], more=[ONE_MORE_MUG]), result_type=ChangeResult
        )
        bad = await handle.query(
            PREVIEW_QUERY, add(more=[LineIncrease("line-2", -1)]), result_type=ChangeResult
        )
        assert len(shop.calls) == calls  # nothing routed, authorized or recorded
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        final = await handle.result()

    assert preview.preview and preview.authorized_minor == ADDED
    assert preview.grand_total_minor == order.grand_total_minor + ADDED
    assert sum(i.quantity for i in preview.lines) == 3
    assert bad.summary.startswith("refused: increases[0].quantity: must be > 0")
    assert final.captured_minor == order.grand_total_minor


async def test_adding_items_once_a_unit_has_shipped_is_refused_before_it_enters_history(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    shop, order = Shop(), an_order()
    worker, handle = await start(time_skipping_env, shop, order)
    async with worker:
        await handle.signal("fulfillment_event", shipped("fo-1", "s1", [("line-1", 1)]))
        await until(shop, "shipment.shipped")
        cause = await refused(handle, add(new=[CAP]))
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s2", [("line-1", 1), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.signal("fulfillment_event", delivered("fo-1", "s2"))
        final = await handle.result()

    assert cause.type == "FAILED_PRECONDITION"
    assert "items can be added only before fulfillment" in cause.message
    assert len(shop.named("authorize")) == 1 and len(shop.named("route")) == 1
    assert final.captured_minor == order.grand_total_minor
    assert await accepted_updates(handle) == []


async def test_a_lower_quantity_is_refused_as_an_invalid_argument_pointing_at_cancel(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    shop, order = Shop(), an_order()
    worker, handle = await start(time_skipping_env, shop, order)
    async with worker:
        await until(shop, "fulfillment.allocated")
        cause = await refused(handle, add(more=[LineIncrease("line-1", -1)]))
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        await handle.result()

    assert cause.type == "INVALID_ARGUMENT"
    assert cause.message.startswith("increases[0].quantity: must be > 0")
    assert "cancel" in cause.message


async def test_items_no_location_can_ship_are_refused_and_nothing_stays_reserved(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    shop, order = Shop(no_stock=("SKU-CAP",)), an_order()
    worker, handle = await start(time_skipping_env, shop, order)
    async with worker:
        await until(shop, "fulfillment.allocated")
        cause = await refused(handle, add(new=[CAP], more=[ONE_MORE_MUG]))
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        final = await handle.result()

    assert cause.type == "FAILED_PRECONDITION"
    assert "no location can ship 2 x SKU-CAP" in cause.message
    # The mug was placed on fo-2 before the cap came up short: that fulfillment order is
    # canceled, so its reservation is released; nothing was authorized or recorded.
    assert [c.fulfillment_order_id for c in shop.named("cancel_fo")] == ["fo-2"]
    assert len(shop.named("authorize")) == 1
    assert "change.add_items" not in shop.kinds()
    assert final.status == FULFILLED
    assert final.invoiced_minor == final.captured_minor == order.grand_total_minor


async def test_a_declined_payment_for_the_difference_is_refused_and_releases_the_reservation(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    shop, order = Shop(decline_additions=True), an_order()
    worker, handle = await start(time_skipping_env, shop, order)
    async with worker:
        await until(shop, "fulfillment.allocated")
        cause = await refused(handle, add(new=[CAP]))
        await handle.signal(
            "fulfillment_event", shipped("fo-1", "s1", [("line-1", 2), ("line-2", 1)])
        )
        await handle.signal("fulfillment_event", delivered("fo-1", "s1"))
        final = await handle.result()

    assert cause.type == "FAILED_PRECONDITION"
    assert "declined (do_not_honor)" in cause.message
    _, difference = shop.named("authorize")
    assert difference.amount_minor == 1600 + 96
    assert [c.fulfillment_order_id for c in shop.named("cancel_fo")] == ["fo-2"]
    assert "change.add_items" not in shop.kinds()
    assert final.invoiced_minor == final.captured_minor == order.grand_total_minor
