"""Return policies, labels and restocking over real gRPC, through the real order workflow
(the shared `system` fixture). Orders here come from the b2b channel and every rule names that
channel, so the rules set here leave other tests' web orders to the default rule."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc
from temporalio.client import Client

from oms_platform import auth
from oms_platform.money import percent_of
from oms_tools.samples import sample_order
from services.servicing.carrier import SimulatedCarrier
from services.servicing.lifecycles import OrderLifecycles
from services.servicing.orders import CaptureOrders
from tests.conftest import System
from tests.integration.test_servicing_changes import (
    MUG,
    TSHIRT,
    Clients,
    a_key,
    line_of,
    oms,
    unit_share,
)
from workflows.types import STATE_QUERY, OrderState, order_workflow_id

CHANNEL = "b2b"


@pytest.fixture
def clients(system: System) -> Clients:
    return Clients(system)


@pytest.fixture
def merchandiser(system: System) -> servicing_pb2_grpc.ServicingServiceStub:
    return servicing_pb2_grpc.ServicingServiceStub(system.channel("servicing", auth.MERCHANDISER))


async def a_delivered_b2b_order(system: System, clients: Clients) -> capture_pb2.GetOrderResponse:
    """An order from the b2b channel, shipped, captured and delivered."""
    response = await clients.capture.SubmitOrder(sample_order(channel=CHANNEL), timeout=10)
    async with system.simulator(step_seconds=0.0):
        return await clients.until(response.order.order_id, {capture_pb2.ORDER_STATUS_FULFILLED})


async def categorize(merchandiser: servicing_pb2_grpc.ServicingServiceStub, **by_sku: str) -> None:
    await merchandiser.SetProductCategories(
        pb.SetProductCategoriesRequest(
            categories=[pb.ProductCategory(sku=s, category=c) for s, c in by_sku.items()]
        )
    )


async def a_final_sale_category(
    merchandiser: servicing_pb2_grpc.ServicingServiceStub,
) -> tuple[str, str]:
    """A new product category whose lines the channel sells as final sale: the category
    and its rule's id."""
    clearance, rule_id = f"clearance-{uuid.uuid4().hex[:8]}", f"final-{uuid.uuid4().hex[:8]}"
    await merchandiser.UpsertReturnPolicyRule(
        pb.UpsertReturnPolicyRuleRequest(
            rule=pb.ReturnPolicyRule(
                rule_id=rule_id, channel=CHANNEL, category=clearance, final_sale=True
            )
        )
    )
    return clearance, rule_id


async def eligibility(
    clients: Clients,
    order_id: str,
    line: capture_pb2.OrderLine,
    condition: pb.ItemCondition.ValueType,
) -> pb.CheckReturnEligibilityResponse:
    """What the policy answers for returning one unit of `line` in `condition`."""
    answer: pb.CheckReturnEligibilityResponse = await clients.servicing.CheckReturnEligibility(
        pb.CheckReturnEligibilityRequest(
            order_id=order_id,
            order_line_id=line.order_line_id,
            quantity=1,
            condition=condition,
        )
    )
    return answer


def return_item(line_id: str, condition: int = pb.ITEM_CONDITION_NEW) -> pb.ReturnItem:
    return pb.ReturnItem(
        order_line_id=line_id, quantity=1, reason="not needed", condition=condition
    )


async def test_a_final_sale_return_is_refused_naming_the_rule_and_nothing_is_opened(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    clearance, rule_id = await a_final_sale_category(merchandiser)
    await categorize(merchandiser, **{MUG: clearance, TSHIRT: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)

    answer = await eligibility(clients, order_id, mug, pb.ITEM_CONDITION_NEW)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.servicing.SubmitReturn(
            pb.SubmitReturnRequest(
                order_id=order_id,
                idempotency_key=a_key(),
                reason="changed mind",
                lines=[return_item(mug.order_line_id)],
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as previewed:
        await clients.servicing.PreviewReturn(
            pb.PreviewReturnRequest(order_id=order_id, lines=[return_item(mug.order_line_id)])
        )

    assert (answer.eligible, answer.rule_id) == (False, rule_id)
    assert not answer.exchangeable  # a final sale is not taken back for an exchange either
    assert answer.explanation == (
        f"final sale: {MUG} is in category {clearance} on an order from channel {CHANNEL}"
    )
    for error in (refused.value, previewed.value):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"rule '{rule_id}'" in (error.details() or "")
        assert f"final sale: {MUG} is in category {clearance}" in (error.details() or "")
    changes = await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    assert [c.kind for c in changes.changes] == []
    assert line_of(await clients.order(order_id), MUG).quantities.return_initiated == 0
    listed = await clients.servicing.ListReturnPolicyRules(pb.ListReturnPolicyRulesRequest())
    assert rule_id in [r.rule_id for r in listed.rules]
    assert listed.rules[-1].rule_id == "default" and listed.rules[-1].use_channel_window


async def test_an_eligible_return_withholds_the_restocking_fee_and_gets_a_label(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    apparel = f"apparel-{uuid.uuid4().hex[:8]}"
    await merchandiser.UpsertReturnPolicyRule(
        pb.UpsertReturnPolicyRuleRequest(
            rule=pb.ReturnPolicyRule(
                rule_id=f"fee-{apparel}",
                channel=CHANNEL,
                category=apparel,
                return_days=30,
                required_conditions=[pb.ITEM_CONDITION_NEW, pb.ITEM_CONDITION_OPENED],
                restocking_fee_basis_points=1000,
            )
        )
    )
    await categorize(merchandiser, **{TSHIRT: apparel, MUG: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    its_share = unit_share(tshirt, first_unit=0)
    fee = percent_of(its_share, 1000)

    answer = await eligibility(clients, order_id, tshirt, pb.ITEM_CONDITION_OPENED)
    used = await eligibility(clients, order_id, tshirt, pb.ITEM_CONDITION_USED)
    opened = await clients.servicing.SubmitReturn(
        pb.SubmitReturnRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason="too small",
            lines=[return_item(tshirt.order_line_id, pb.ITEM_CONDITION_OPENED)],
        )
    )
    return_order_id = opened.change.outcome.return_order_id
    label = await clients.servicing.GetReturnLabel(
        pb.GetReturnLabelRequest(return_order_id=return_order_id)
    )
    carrier = SimulatedCarrier(system.settings.dsn)
    try:
        await carrier.report(opened.label.tracking_number, "in_transit")
        moving = await clients.servicing.GetReturnLabel(
            pb.GetReturnLabelRequest(return_order_id=return_order_id)
        )
        await carrier.report(opened.label.tracking_number, "delivered")
        arrived = await clients.servicing.GetReturnLabel(
            pb.GetReturnLabelRequest(return_order_id=return_order_id)
        )
    finally:
        await carrier.close()
    received = await clients.servicing.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_order_id=return_order_id,
            idempotency_key=a_key(),
            accepted=[
                pb.ReceivedItem(
                    order_line_id=tshirt.order_line_id,
                    quantity=1,
                    condition=pb.ITEM_CONDITION_OPENED,
                )
            ],
        )
    )

    assert (answer.eligible, answer.rule_id, answer.exchangeable) == (True, f"fee-{apparel}", True)
    assert (answer.credit_minor, answer.restocking_fee_minor, answer.refund_minor) == (
        its_share,
        fee,
        its_share - fee,
    )
    assert not used.eligible and "its condition is used" in used.explanation
    assert not used.exchangeable
    assert opened.label.return_order_id == return_order_id
    assert opened.label.tracking_number.startswith("SP")
    assert label.pdf.startswith(b"%PDF")
    assert label.label.tracking_number == opened.label.tracking_number
    assert label.label.status == pb.RETURN_PARCEL_STATUS_LABEL_CREATED
    assert moving.label.status == pb.RETURN_PARCEL_STATUS_IN_TRANSIT
    assert arrived.label.status == pb.RETURN_PARCEL_STATUS_DELIVERED
    assert received.change.outcome.refunded_minor == its_share - fee
    money = (await clients.summary(order_id)).summary
    assert money.refunded.amount_minor == its_share - fee


async def on_hand(clients: Clients, location_id: str, sku: str) -> int:
    levels = await clients.fulfillment.GetAvailability(
        fulfillment_pb2.GetAvailabilityRequest(skus=[sku]), timeout=10
    )
    return next(lv.on_hand for lv in levels.levels if lv.location_id == location_id)


async def test_a_resellable_unit_is_restocked_once_and_a_damaged_one_is_not(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    await categorize(merchandiser, **{TSHIRT: "", MUG: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id = view.order.order_id
    tshirt, mug = line_of(view, TSHIRT), line_of(view, MUG)
    location_id = (await clients.fulfillment_orders(order_id))[0].location_id
    opened = await clients.servicing.SubmitReturn(
        pb.SubmitReturnRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason="not needed",
            lines=[return_item(tshirt.order_line_id), return_item(mug.order_line_id)],
        )
    )
    before = {sku: await on_hand(clients, location_id, sku) for sku in (TSHIRT, MUG)}
    receipt = pb.ReceiveReturnRequest(
        return_order_id=opened.change.outcome.return_order_id,
        idempotency_key=a_key(),
        location_id=location_id,
        accepted=[
            pb.ReceivedItem(
                order_line_id=tshirt.order_line_id, quantity=1, condition=pb.ITEM_CONDITION_NEW
            ),
            pb.ReceivedItem(
                order_line_id=mug.order_line_id, quantity=1, condition=pb.ITEM_CONDITION_DAMAGED
            ),
        ],
    )

    received = await clients.servicing.ReceiveReturn(receipt)
    again = await clients.servicing.ReceiveReturn(receipt)  # a retried receipt
    after = {sku: await on_hand(clients, location_id, sku) for sku in (TSHIRT, MUG)}

    assert [(i.order_line_id, i.quantity) for i in received.restocked] == [
        (tshirt.order_line_id, 1)
    ]
    assert again.change.change_id == received.change.change_id
    assert after[TSHIRT] == before[TSHIRT] + 1
    assert after[MUG] == before[MUG]


async def test_more_units_than_were_delivered_are_the_workflows_to_refuse_and_recorded(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    # The policy is asked first, but how many units are left to return is the workflow's to
    # say when the return is made (after shipment events it may not have applied when a query
    # answered): so a return of too many reaches it, and is refused and recorded there.
    await categorize(merchandiser, **{MUG: "", TSHIRT: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, mug = view.order.order_id, line_of(view, MUG)
    too_many = mug.quantities.ordered + 1

    answer = await clients.servicing.CheckReturnEligibility(
        pb.CheckReturnEligibilityRequest(
            order_id=order_id, order_line_id=mug.order_line_id, quantity=too_many
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.servicing.SubmitReturn(
            pb.SubmitReturnRequest(
                order_id=order_id,
                idempotency_key=a_key(),
                reason="changed mind",
                lines=[
                    pb.ReturnItem(
                        order_line_id=mug.order_line_id,
                        quantity=too_many,
                        condition=pb.ITEM_CONDITION_NEW,
                    )
                ],
            )
        )

    assert not answer.eligible and not answer.exchangeable
    assert f"can be returned, not {too_many}" in answer.explanation
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    changes = (
        await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    ).changes
    assert [(c.kind, c.status) for c in changes] == [
        (pb.CHANGE_KIND_RETURN, pb.CHANGE_STATUS_REFUSED)
    ]
    assert line_of(await clients.order(order_id), MUG).quantities.return_initiated == 0


async def test_the_policy_sees_the_return_window_the_order_workflow_keeps(
    system: System, clients: Clients
) -> None:
    view = await a_delivered_b2b_order(system, clients)
    order_id = view.order.order_id

    async def temporal() -> Client:
        return system.client

    # Servicing's view of the order, as its return use cases ask for it.
    lifecycles = OrderLifecycles(
        temporal,
        timedelta(seconds=10),
        CaptureOrders(capture_pb2_grpc.CaptureServiceStub(system.channel("capture")), 5.0),
    )
    seen = await lifecycles.order_view(order_id)
    state = await system.client.get_workflow_handle(order_workflow_id(order_id)).query(
        STATE_QUERY, result_type=OrderState
    )

    assert state.delivered_at is not None and state.return_window_closes_at is not None
    assert state.return_window_closes_at - state.delivered_at == timedelta(days=30)
    assert (seen.delivered_at, seen.return_window_closes_at) == (
        state.delivered_at,
        state.return_window_closes_at,
    )


# ---- exchanges: a return of the old item, under the same rules --------------------------------


def exchange_item(line_id: str, price: int) -> pb.ExchangeItem:
    return pb.ExchangeItem(
        order_line_id=line_id,
        quantity=1,
        replacement_sku=MUG,
        replacement_unit_price_minor=price,
        condition=pb.ITEM_CONDITION_NEW,
    )


async def test_an_exchange_of_a_final_sale_line_is_refused_naming_the_rule_and_nothing_moves(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    clearance, rule_id = await a_final_sale_category(merchandiser)
    await categorize(merchandiser, **{TSHIRT: clearance, MUG: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    line = exchange_item(tshirt.order_line_id, 1000)
    asked = await eligibility(clients, order_id, tshirt, pb.ITEM_CONDITION_NEW)
    assert (asked.eligible, asked.exchangeable, asked.rule_id) == (False, False, rule_id)

    with pytest.raises(grpc.aio.AioRpcError) as previewed:
        await clients.servicing.PreviewExchange(
            pb.PreviewExchangeRequest(order_id=order_id, lines=[line])
        )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.servicing.SubmitExchange(
            pb.SubmitExchangeRequest(
                order_id=order_id, idempotency_key=a_key(), reason="wants a mug", lines=[line]
            )
        )

    for error in (previewed.value, refused.value):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (error.details() or "").startswith(
            f"lines[0]: exchange refused by rule '{rule_id}': final sale: {TSHIRT} is in "
            f"category {clearance}"
        )
    changes = await clients.servicing.ListChanges(pb.ListChangesRequest(order_id=order_id))
    assert list(changes.changes) == []
    assert line_of(await clients.order(order_id), TSHIRT).quantities.return_initiated == 0
    assert len(await clients.fulfillment_orders(order_id)) == len(view.fulfillment_orders)


async def test_an_exchange_inside_the_window_pays_the_restocking_fee_only_when_the_rule_says_so(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    apparel = f"apparel-{uuid.uuid4().hex[:8]}"
    rule = pb.ReturnPolicyRule(
        rule_id=f"fee-{apparel}",
        channel=CHANNEL,
        category=apparel,
        return_days=30,
        restocking_fee_basis_points=1000,
    )
    await merchandiser.UpsertReturnPolicyRule(pb.UpsertReturnPolicyRuleRequest(rule=rule))
    await categorize(merchandiser, **{TSHIRT: apparel, MUG: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    first, second = unit_share(tshirt, first_unit=0), unit_share(tshirt, first_unit=1)

    asked = await eligibility(clients, order_id, tshirt, pb.ITEM_CONDITION_NEW)
    assert (asked.eligible, asked.exchangeable) == (True, True)
    # The rule charges returns a fee, not exchanges: the exchange refunds as it always did.
    exchanged = await clients.servicing.SubmitExchange(
        pb.SubmitExchangeRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason="wants a mug",
            lines=[exchange_item(tshirt.order_line_id, 1000)],
        )
    )
    rule.fee_on_exchange = True
    stored = await merchandiser.UpsertReturnPolicyRule(pb.UpsertReturnPolicyRuleRequest(rule=rule))
    # Now it does: a replacement at the unit's own price costs the shopper the fee.
    same_price = [exchange_item(tshirt.order_line_id, second)]
    previewed = await clients.servicing.PreviewExchange(
        pb.PreviewExchangeRequest(order_id=order_id, lines=same_price)
    )
    charged = await clients.servicing.SubmitExchange(
        pb.SubmitExchangeRequest(
            order_id=order_id, idempotency_key=a_key(), reason="another mug", lines=same_price
        )
    )

    outcome = exchanged.change.outcome
    assert exchanged.change.status == pb.CHANGE_STATUS_COMPLETED
    assert (outcome.refunded_minor, outcome.charged_minor) == (first - 1000, 0)
    assert stored.rule.fee_on_exchange
    listed = await clients.servicing.ListReturnPolicyRules(pb.ListReturnPolicyRulesRequest())
    assert next(r for r in listed.rules if r.rule_id == rule.rule_id).fee_on_exchange
    fee = percent_of(second, 1000)
    assert (previewed.preview.charged_minor, previewed.preview.credited_minor) == (fee, 0)
    assert "restocking fee" in previewed.preview.summary
    assert charged.change.outcome.charged_minor == fee
    assert line_of(await clients.order(order_id), TSHIRT).quantities.return_initiated == 2


async def test_an_exchange_s_return_order_gets_a_label_as_a_return_s_does(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    await categorize(merchandiser, **{TSHIRT: "", MUG: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, tshirt, mug = view.order.order_id, line_of(view, TSHIRT), line_of(view, MUG)
    request = pb.SubmitExchangeRequest(
        order_id=order_id,
        idempotency_key=a_key(),
        reason="wants a mug",
        lines=[exchange_item(tshirt.order_line_id, 1000)],
    )

    exchanged = await clients.servicing.SubmitExchange(request)
    again = await clients.servicing.SubmitExchange(request)
    returned = await clients.servicing.SubmitReturn(
        pb.SubmitReturnRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason="not needed",
            lines=[return_item(mug.order_line_id)],
        )
    )

    return_order_id = exchanged.change.outcome.return_order_id
    assert return_order_id
    kept = await clients.servicing.GetReturnLabel(
        pb.GetReturnLabelRequest(return_order_id=return_order_id)
    )
    label = kept.label
    assert (label.return_order_id, label.order_id) == (return_order_id, order_id)
    assert label.status == pb.RETURN_PARCEL_STATUS_LABEL_CREATED
    assert kept.pdf.startswith(b"%PDF")
    # The same carrier and kind of parcel as the plain return's, a parcel of its own.
    assert label.carrier == returned.label.carrier != ""
    assert label.tracking_number.startswith("SP")
    assert label.tracking_number != returned.label.tracking_number
    # The answer carries it; the retried exchange answers the same label, not a second one.
    assert exchanged.label == again.label == label


async def test_an_agent_exchanges_and_returns_with_the_cli_reporting_the_units_condition(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    boxed = f"boxed-{uuid.uuid4().hex[:8]}"
    rule_id = f"sealed-{boxed}"
    await merchandiser.UpsertReturnPolicyRule(
        pb.UpsertReturnPolicyRuleRequest(
            rule=pb.ReturnPolicyRule(
                rule_id=rule_id,
                channel=CHANNEL,
                category=boxed,
                return_days=30,
                required_conditions=[pb.ITEM_CONDITION_NEW],
            )
        )
    )
    await categorize(merchandiser, **{TSHIRT: boxed, MUG: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    exchange = ("order", "exchange", order_id, "--line", tshirt.order_line_id,
                "--sku", MUG, "--price", "1000", "--reason", "wants a mug")  # fmt: skip

    unsaid = await oms(system, *exchange, "--preview")
    opened = await oms(system, *exchange, "--condition", "opened")
    previewed = await oms(system, *exchange, "--condition", "new", "--preview")
    code, out, err = await oms(system, *exchange, "--condition", "new", subject="agent:ada")
    returned = await oms(
        system, "order", "return", order_id, "--line", tshirt.order_line_id,
        "--condition", "new", "--reason", "too small",
    )  # fmt: skip

    refused = f"lines[0]: exchange refused by rule '{rule_id}': {TSHIRT} must come back new"
    assert unsaid[0] == 1 and refused in unsaid[2]
    assert "its condition is not reported" in unsaid[2]
    assert opened[0] == 1 and "its condition is opened" in opened[2]
    assert (previewed[0], previewed[2]) == (0, "")
    assert "the replacement would ship" in previewed[1]
    assert (code, err) == (0, "")
    assert out.startswith("exchange chg-") and "[completed] by agent:ada: wants a mug" in out
    assert (returned[0], returned[2]) == (0, "")
    assert returned[1].startswith("return chg-") and "[completed]" in returned[1]
    assert line_of(await clients.order(order_id), TSHIRT).quantities.return_initiated == 2


# ---- the merchandiser's CLI -------------------------------------------------------------------


async def test_a_merchandiser_sets_lists_and_deletes_a_rule_with_the_cli(system: System) -> None:
    rule_id, gifts = f"gifts-{uuid.uuid4().hex[:8]}", f"gifts-{uuid.uuid4().hex[:8]}"

    set_code, set_out, set_err = await oms(
        system, "return", "policies", "set", rule_id, "--channel", CHANNEL,
        "--category", gifts, "--days", "14", "--condition", "new", "--condition", "opened",
        "--restocking-fee", "12.5", "--fee-on-exchange", "--description", "gift items",
        subject="merch:mia",
    )  # fmt: skip
    list_code, listed, _ = await oms(system, "return", "policies", "list", "--json")
    text_code, text, _ = await oms(system, "return", "policies", "list")
    delete_code, deleted, _ = await oms(system, "return", "policies", "delete", rule_id)
    again_code, again, _ = await oms(system, "return", "policies", "delete", rule_id)
    default_code, _, default_err = await oms(system, "return", "policies", "delete", "default")
    after = await oms(system, "return", "policies", "list", "--json")

    assert (set_code, set_err) == (0, "")
    assert set_out.startswith(f"{rule_id}  channel {CHANNEL}  category {gifts}: ")
    assert "returns within 14 day(s), only new or opened" in set_out
    assert "restocking fee 12.5% on returns and exchanges" in set_out
    assert "set by merch:mia" in set_out
    assert list_code == 0
    [rule] = [r for r in json.loads(listed)["rules"] if r["rule_id"] == rule_id]
    assert rule["return_days"] == 14 and rule["restocking_fee_basis_points"] == 1250
    assert rule["fee_on_exchange"] is True
    assert rule["required_conditions"] == ["ITEM_CONDITION_NEW", "ITEM_CONDITION_OPENED"]
    assert text_code == 0 and f"{rule_id}  channel {CHANNEL}" in text
    headings = [line for line in text.splitlines() if not line.startswith(" ")]
    assert headings[-1].startswith("default  channel any  category any")
    assert (delete_code, deleted.strip()) == (0, f"rule {rule_id} deleted")
    assert (again_code, again.strip()) == (1, f"rule {rule_id} not found")
    assert default_code == 1 and "FAILED_PRECONDITION" in default_err
    assert rule_id not in [r["rule_id"] for r in json.loads(after[1])["rules"]]


async def test_a_store_accepting_another_channel_s_return_applies_that_order_s_policy(
    system: System, clients: Clients, merchandiser: servicing_pb2_grpc.ServicingServiceStub
) -> None:
    # The order came from b2b; it is handed in at the Chicago store. Whoever asks (the b2b
    # storefront, an agent at the store) the b2b rule decides, and the store's own staff
    # receive it onto the store's shelf.
    gadgets, store = f"gadgets-{uuid.uuid4().hex[:8]}", "store-chicago"
    await merchandiser.UpsertReturnPolicyRule(
        pb.UpsertReturnPolicyRuleRequest(
            rule=pb.ReturnPolicyRule(
                rule_id=f"b2b-{gadgets}",
                channel=CHANNEL,
                category=gadgets,
                return_days=30,
                restocking_fee_basis_points=500,
            )
        )
    )
    await categorize(merchandiser, **{TSHIRT: gadgets, MUG: ""})
    view = await a_delivered_b2b_order(system, clients)
    order_id, tshirt = view.order.order_id, line_of(view, TSHIRT)
    fee = percent_of(unit_share(tshirt, first_unit=0), 500)
    asked = pb.CheckReturnEligibilityRequest(
        order_id=order_id, order_line_id=tshirt.order_line_id, quantity=1
    )
    storefront = servicing_pb2_grpc.ServicingServiceStub(
        system.channel("servicing", auth.STOREFRONT, channels=(CHANNEL,))
    )
    agent = servicing_pb2_grpc.ServicingServiceStub(system.channel("servicing", auth.AGENT))
    store_staff = servicing_pb2_grpc.ServicingServiceStub(
        system.channel("servicing", auth.WAREHOUSE, locations=(store,))
    )
    other_staff = servicing_pb2_grpc.ServicingServiceStub(
        system.channel("servicing", auth.WAREHOUSE, locations=("wh-east",))
    )
    before = await on_hand(clients, store, TSHIRT)

    online, at_the_store = (
        await storefront.CheckReturnEligibility(asked),
        await agent.CheckReturnEligibility(asked),
    )
    opened = await agent.SubmitReturn(
        pb.SubmitReturnRequest(
            order_id=order_id,
            idempotency_key=a_key(),
            reason="handed in at the Chicago store",
            lines=[return_item(tshirt.order_line_id)],
        )
    )
    receipt = pb.ReceiveReturnRequest(
        return_order_id=opened.change.outcome.return_order_id,
        idempotency_key=a_key(),
        location_id=store,
        accepted=[
            pb.ReceivedItem(
                order_line_id=tshirt.order_line_id, quantity=1, condition=pb.ITEM_CONDITION_NEW
            )
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as not_theirs:
        await other_staff.ReceiveReturn(receipt)
    received = await store_staff.ReceiveReturn(receipt)

    assert (online.eligible, online.rule_id) == (True, f"b2b-{gadgets}")
    assert (at_the_store.rule_id, at_the_store.refund_minor) == (
        online.rule_id,
        online.refund_minor,
    )
    assert online.restocking_fee_minor == fee
    assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert received.change.outcome.refunded_minor == online.refund_minor
    # Resellable, so it goes back on the shelf where it was handed in.
    assert await on_hand(clients, store, TSHIRT) == before + 1
