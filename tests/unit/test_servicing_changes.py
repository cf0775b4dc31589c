"""Changes to orders and return orders: validation, ids, and how refusals read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument, NotFound
from services.servicing import domain
from services.servicing.domain import ChangeOrder, Item, LineNote, Receipt

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def violated_fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def invalid_fields(order: ChangeOrder, *, preview: bool = False) -> list[str]:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_change(order, preview=preview)
    return violated_fields(error)


def a_change(kind: str, **fields: object) -> ChangeOrder:
    base: dict[str, object] = {
        "kind": kind,
        "order_id": "order-1",
        "idempotency_key": "k-1",
        "actor": "agent:ada",
        "reason": "changed her mind",
        "lines": (Item("line-1", 1),),
    }
    base.update(fields)
    return ChangeOrder(**base)  # type: ignore[arg-type]


# ---- validation lists every violation ---------------------------------------------------------


def test_a_valid_change_of_each_kind_passes() -> None:
    domain.validate_change(a_change(domain.CANCEL, lines=()))
    domain.validate_change(a_change(domain.RETURN, return_fee_minor=500))
    domain.validate_change(
        a_change(domain.EXCHANGE, replacement_skus=("SKU-L",), replacement_unit_prices_minor=(0,))
    )
    domain.validate_change(a_change(domain.RESHIP, reason=domain.LOST))
    domain.validate_change(a_change(domain.APPEASE, lines=(), percent_basis_points=10_000))
    domain.validate_change(
        a_change(domain.RECEIVE_RETURN, order_id="", return_order_id="order-1-R1", reason="")
    )


def test_an_empty_cancel_lists_every_missing_field_at_once() -> None:
    order = ChangeOrder(kind=domain.CANCEL, order_id="", actor="a" * 201, reason="r" * 501)

    assert invalid_fields(order) == ["order_id", "idempotency_key", "actor", "reason"]


def test_a_cancel_names_each_bad_line() -> None:
    order = a_change(
        domain.CANCEL,
        reason="",
        lines=(Item("", 1), Item("line-1", 0), Item("line-1", -2)),
    )

    assert invalid_fields(order) == [
        "reason",
        "lines[0].order_line_id",
        "lines[1].quantity",
        "lines[2].order_line_id",  # the same line twice
        "lines[2].quantity",
    ]


def test_a_return_needs_lines_a_valid_condition_and_no_negative_fee() -> None:
    assert invalid_fields(a_change(domain.RETURN, lines=(), return_fee_minor=-1)) == [
        "lines",
        "return_fee_minor",
    ]
    with_bad_condition = a_change(
        domain.RETURN, line_notes=(LineNote("line-1", "too small", "unknown(9)"),)
    )
    assert invalid_fields(with_bad_condition) == ["lines[0].condition"]


def test_an_exchange_needs_a_replacement_sku_and_a_price_that_is_not_negative() -> None:
    order = a_change(
        domain.EXCHANGE,
        lines=(Item("line-1", 1), Item("line-2", 1)),
        replacement_skus=("", "SKU-L"),
        replacement_unit_prices_minor=(100, -1),
    )

    assert invalid_fields(order) == [
        "lines[0].replacement_sku",
        "lines[1].replacement_unit_price_minor",
    ]


def test_a_reship_needs_lost_or_damaged_and_lines() -> None:
    assert invalid_fields(a_change(domain.RESHIP, reason="", lines=())) == ["reason", "lines"]
    assert invalid_fields(a_change(domain.RESHIP, reason="stolen")) == ["reason"]


@pytest.mark.parametrize(
    ("fields", "violated"),
    [
        ({}, ["goodwill"]),
        ({"amount_minor": 100, "percent_basis_points": 100}, ["goodwill"]),
        ({"amount_minor": -5}, ["amount_minor"]),
        ({"percent_basis_points": 10_001}, ["percent_basis_points"]),
        ({"amount_minor": 100, "lines": (Item("a", 0), Item("b", 0))}, ["order_line_id"]),
    ],
)
def test_an_appeasement_is_exactly_one_of_an_amount_or_a_percentage(
    fields: dict[str, object], violated: list[str]
) -> None:
    order = a_change(domain.APPEASE, **{"lines": (), **fields})

    assert invalid_fields(order) == violated


def test_a_receipt_needs_the_return_order_something_received_and_a_reason_for_rejects() -> None:
    assert invalid_fields(
        a_change(domain.RECEIVE_RETURN, order_id="", return_order_id="", lines=())
    ) == ["return_order_id", "accepted"]
    rejected_without_reason = a_change(
        domain.RECEIVE_RETURN,
        return_order_id="order-1-R1",
        lines=(),
        rejected_lines=(Item("line-1", 1),),
        rejected_notes=(LineNote("line-1", condition="damaged"),),
    )
    assert invalid_fields(rejected_without_reason) == ["rejected[0].reason"]


def test_a_preview_needs_no_key_actor_or_reason() -> None:
    domain.validate_change(
        ChangeOrder(kind=domain.CANCEL, order_id="order-1", lines=(Item("line-1", 1),)),
        preview=True,
    )


def test_every_change_but_a_receipt_can_be_previewed() -> None:
    receipt = a_change(domain.RECEIVE_RETURN, return_order_id="o-1-R1")
    assert invalid_fields(receipt, preview=True) == ["kind"]
    # A preview needs no key, actor or reason.
    reship = a_change(domain.RESHIP, reason="", idempotency_key="", actor="")
    domain.validate_change(reship, preview=True)


# ---- ids and reasons ----------------------------------------------------------------------------


def test_the_change_id_is_the_same_for_the_same_order_kind_and_key() -> None:
    one = domain.change_id_for("order-1", domain.CANCEL, "k")

    assert one == domain.change_id_for("order-1", domain.CANCEL, "k")
    assert one.startswith("chg-")
    assert one != domain.change_id_for("order-1", domain.RETURN, "k")
    assert one != domain.change_id_for("order-2", domain.CANCEL, "k")
    assert one != domain.change_id_for("order-1", domain.CANCEL, "k2")


def test_a_reship_tells_the_workflow_the_parcel_was_lost_or_damaged() -> None:
    order = a_change(domain.RESHIP, reason=domain.DAMAGED, note="box crushed")

    assert domain.workflow_reason(order) == "parcel damaged: box crushed"


def test_a_receipt_tells_the_workflow_its_note_and_why_units_were_rejected() -> None:
    order = a_change(
        domain.RECEIVE_RETURN,
        reason="",
        note="dock 3",
        rejected_notes=(LineNote("line-1", rejection_reason="worn"),),
    )

    assert domain.workflow_reason(order) == "dock 3; worn"


def test_a_new_change_is_pending_with_who_asked_and_the_units_asked_for() -> None:
    change = domain.new_change(a_change(domain.CANCEL, actor=""), "chg-1", NOW)

    assert (change.status, change.actor, change.reason) == (
        domain.PENDING,
        "agent",
        "changed her mind",
    )
    assert change.requested_lines == (Item("line-1", 1),)


def test_a_completed_change_keeps_the_outcome_and_a_refused_one_the_reason() -> None:
    change = domain.new_change(a_change(domain.CANCEL), "chg-1", NOW)
    outcome = domain.ChangeOutcome("Canceled 1 unit(s)", released_minor=2419)

    done = domain.completed(change, outcome, NOW)
    refused = domain.refused(change, FailedPrecondition("nothing left to cancel"), NOW)

    assert (done.status, done.outcome) == (domain.COMPLETED, outcome)
    assert (refused.status, refused.refusal_code, refused.refusal_message) == (
        domain.REFUSED,
        "FAILED_PRECONDITION",
        "nothing left to cancel",
    )


# ---- the workflow's refusals --------------------------------------------------------------------


def test_a_workflow_refusal_naming_a_field_becomes_that_field_violation() -> None:
    error = domain.refusal("INVALID_ARGUMENT", "lines[0].order_line_id: no line 'x' on this order")

    assert isinstance(error, InvalidArgument)
    assert [(v.field, v.description) for v in error.violations] == [
        ("lines[0].order_line_id", "no line 'x' on this order")
    ]


def test_workflow_refusals_keep_their_status_and_message() -> None:
    closed = domain.refusal("FAILED_PRECONDITION", "return window closed on 2026-10-03")
    missing = domain.refusal("NOT_FOUND", "return_order_id: no return 'r' on this order")

    assert isinstance(closed, FailedPrecondition)
    assert closed.message == "return window closed on 2026-10-03"
    assert isinstance(missing, NotFound)
    assert domain.refusal("ActivityError", "boom") is None


@pytest.mark.parametrize(
    ("summary", "kind", "field"),
    [
        ("refused: lines[0].order_line_id: no line 'x' on this order", InvalidArgument, "lines[0]"),
        ("refused: lines: at least one line to return", InvalidArgument, "lines"),
        ("refused: give exactly one of amount_minor or percent_basis_points", InvalidArgument, ""),
        ("refused: lines[0]: only 1 unit(s) of X can still be canceled", FailedPrecondition, ""),
        ("refused: return window closed on 2026-10-03", FailedPrecondition, ""),
        ("refused: nothing left to cancel: every unit shipped", FailedPrecondition, ""),
    ],
)  # fmt: skip
def test_a_preview_the_workflow_would_refuse_reads_as_the_right_error(
    summary: str, kind: type[Exception], field: str
) -> None:
    error = domain.preview_refusal(summary)

    assert isinstance(error, kind)
    assert error.message.endswith(summary.removeprefix("refused: ").split(": ")[-1])
    if isinstance(error, InvalidArgument) and field:
        assert error.violations[0].field.startswith(field)


def test_a_preview_that_would_go_through_is_not_a_refusal() -> None:
    assert domain.preview_refusal("would give back 24.19 USD") is None


# ---- return orders ------------------------------------------------------------------------------


def a_return_order() -> domain.ReturnOrder:
    return domain.new_return_order(
        domain.NewReturnOrder(
            "order-1", "k", "order-1-R1", "too small", (Item("line-1", 2), Item("line-2", 1))
        ),
        NOW,
    )


def a_receipt(**fields: object) -> Receipt:
    base: dict[str, object] = {
        "order_id": "order-1",
        "idempotency_key": "r-1",
        "return_order_id": "order-1-R1",
        "accepted": (),
        "rejected": (),
        "reason": "",
    }
    base.update(fields)
    return Receipt(**base)  # type: ignore[arg-type]


def test_a_return_order_is_open_then_partially_received_then_received() -> None:
    rma = a_return_order()
    later = NOW + timedelta(days=3)

    partly = domain.received(rma, a_receipt(accepted=(Item("line-1", 1),)), later)
    whole = domain.received(
        partly,
        a_receipt(accepted=(Item("line-1", 1),), rejected=(Item("line-2", 1),), reason="worn"),
        later,
    )

    assert rma.status == domain.RETURN_OPEN
    assert partly.status == domain.RETURN_PARTIALLY_RECEIVED
    assert whole.status == domain.RETURN_RECEIVED
    line_1, line_2 = whole.lines
    assert (line_1.expected, line_1.accepted, line_1.rejected, line_1.received) == (2, 2, 0, 2)
    assert (line_2.accepted, line_2.rejected, line_2.rejection_reason) == (0, 1, "worn")
    assert whole.updated_at == later


def test_more_units_than_outstanding_cannot_be_received() -> None:
    rma = domain.received(a_return_order(), a_receipt(accepted=(Item("line-1", 1),)), NOW)

    with pytest.raises(FailedPrecondition) as error:
        domain.received(rma, a_receipt(rejected=(Item("line-1", 2),), reason="worn"), NOW)

    assert "expects 1 more unit(s) of line line-1, not 2" in error.value.message


def test_a_line_not_on_the_return_order_cannot_be_received() -> None:
    with pytest.raises(FailedPrecondition):
        domain.received(a_return_order(), a_receipt(accepted=(Item("line-9", 1),)), NOW)


def test_a_new_return_order_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_new_return_order(domain.NewReturnOrder("", "", "", "", ()))

    assert violated_fields(error) == ["order_id", "idempotency_key", "return_order_id", "lines"]


def test_line_notes_fill_in_reasons_and_conditions_and_keep_what_they_leave_empty() -> None:
    rma = a_return_order()

    noted = domain.with_line_notes(
        rma,
        [LineNote("line-1", "too small", "opened"), LineNote("line-2", condition="damaged")],
        NOW,
    )
    again = domain.with_line_notes(noted, [LineNote("line-1", condition="used")], NOW)

    assert [(line.reason, line.condition) for line in noted.lines] == [
        ("too small", "opened"),
        ("", "damaged"),
    ]
    assert again.lines[0] == domain.ReturnOrderLine(
        "line-1", 2, reason="too small", condition="used"
    )
    assert domain.with_line_notes(again, [], NOW) is again


def test_an_address_change_preview_says_where_the_group_s_units_would_ship_from() -> None:
    allowed = domain.ChangeOutcome(summary="address of dg-1 changes", location_ids=("wh-east",))

    moved = domain.rerouted_preview(allowed, True, ("wh-east",), ("wh-west", "wh-north"))
    assert moved.summary == (
        "address of dg-1 changes; its units would move from wh-east to wh-west, wh-north"
    )
    assert moved.rerouted
    assert moved.location_ids == ("wh-west", "wh-north")

    kept = domain.rerouted_preview(allowed, False, ("wh-east",), ("wh-east",))
    assert kept.summary == "address of dg-1 changes; it would still ship from wh-east"
    assert not kept.rerouted
    assert kept.location_ids == ("wh-east",)
