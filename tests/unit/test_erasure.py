"""The pure rules of erasing a shopper: which orders may be erased, what a row becomes, and
free text that spells the shopper out."""

from __future__ import annotations

import pytest
from oms.capture.v1 import capture_pb2
from oms.payments.v1 import payments_pb2

from oms_platform.erasure import PersonalColumns, check_order_ids, erased_row
from oms_platform.errors import FailedPrecondition, InvalidArgument
from oms_platform.redaction import REDACTED, erase, erase_text, identifying_terms
from services.capture.convert import mask_payment_tokens
from services.capture.domain import ErasableOrder, check_erase_request, in_flight_refusal


def test_exactly_one_of_shopper_id_and_email_names_the_shopper() -> None:
    check_erase_request("s-1", "")
    check_erase_request("", "ada@example.com")
    for shopper_id, email in (("", ""), ("s-1", "ada@example.com"), ("  ", " ")):
        with pytest.raises(InvalidArgument):
            check_erase_request(shopper_id, email)


def test_settled_orders_without_open_returns_may_be_erased() -> None:
    orders = [ErasableOrder("o-1", "fulfilled"), ErasableOrder("o-2", "canceled")]
    assert in_flight_refusal(orders, forced=False) is None


def test_the_refusal_names_every_order_in_flight_and_why() -> None:
    orders = [
        ErasableOrder("o-1", "fulfilled"),
        ErasableOrder("o-2", "allocated"),
        ErasableOrder("o-3", "fulfilled", open_return_units=2),
    ]
    refusal = in_flight_refusal(orders, forced=False)
    assert isinstance(refusal, FailedPrecondition)
    assert "o-2 (allocated)" in refusal.message
    assert "o-3 (fulfilled, 2 returned unit(s) not received)" in refusal.message
    assert "o-1" not in refusal.message
    assert "force" in refusal.message


def test_force_cancels_what_has_not_settled_but_not_an_open_return() -> None:
    assert ErasableOrder("o-1", "allocated").cancelable
    assert ErasableOrder("o-1", "on_hold").cancelable
    assert not ErasableOrder("o-1", "fulfilled", open_return_units=1).cancelable
    assert ErasableOrder("o-1", "fulfilled", open_return_units=1).in_flight


def test_identifying_terms_skip_short_ones_and_put_the_longest_first() -> None:
    assert identifying_terms(["Ada", "Ada Lovelace", " ", "PA", "ada lovelace"]) == [
        "Ada Lovelace",
        "Ada",
    ]


def test_erased_text_loses_the_shopper_whatever_the_case() -> None:
    text = "ADA LOVELACE called from ada@example.com: deliver to 1 Market St, PA"
    out = erase_text(text, ["Ada Lovelace", "1 Market St", "ada@example.com"])
    assert out == f"{REDACTED} called from {REDACTED}: deliver to {REDACTED}, PA"


def test_erased_json_keeps_its_shape_ids_and_money() -> None:
    request = {"order_id": "o-1", "reason": "Ada Lovelace changed her mind", "refund_minor": 500}
    assert erase(request, ["Ada Lovelace"]) == {
        "order_id": "o-1",
        "reason": f"{REDACTED} changed her mind",
        "refund_minor": 500,
    }


SPEC = PersonalColumns(
    "delivery_groups",
    blank=("recipient_name", "line1"),
    null=("billing_address",),
    tokens=("payment_token",),
    text=("summary", "reasons"),
    json=("request",),
    json_text=("step_input",),
)


def a_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "recipient_name": "Ada Lovelace",
        "line1": "1 Market St",
        "billing_address": {"line1": "1 Market St"},
        "payment_token": "tok_visa_4242",
        "summary": "Shipped to Ada Lovelace",
        "reasons": ["billing country differs", "Ada Lovelace is new"],
        "request": {"reason": "Ada Lovelace asked", "quantity": 2},
        "step_input": '{"amount_minor": 100, "token": "tok_visa_4242"}',
    }
    row.update(overrides)
    return row


def test_an_erased_row_holds_nothing_of_the_shopper() -> None:
    changes = erased_row(SPEC, a_row(), ["Ada Lovelace"])
    assert changes == {
        "recipient_name": "",
        "line1": "",
        "billing_address": None,
        "payment_token": "…4242",
        "summary": f"Shipped to {REDACTED}",
        "reasons": ["billing country differs", f"{REDACTED} is new"],
        "request": {"reason": f"{REDACTED} asked", "quantity": 2},
        "step_input": '{"amount_minor": 100, "token": "…4242"}',
    }


def test_erasing_a_row_again_changes_nothing() -> None:
    once = a_row(**erased_row(SPEC, a_row(), ["Ada Lovelace"]))
    assert erased_row(SPEC, once, ["Ada Lovelace"]) == {}


def test_the_orders_to_erase_are_named() -> None:
    check_order_ids(["o-1"])
    for bad in ([], ["o-1", ""]):
        with pytest.raises(InvalidArgument):
            check_order_ids(bad)


def test_readers_get_the_orders_tokens_masked() -> None:
    order = capture_pb2.Order(
        payment_method=payments_pb2.PaymentMethod(token="gc_5000"),
        additional_payment_methods=[payments_pb2.PaymentMethod(token="tok_visa_4242")],
    )
    masked = mask_payment_tokens(order)
    assert masked.payment_method.token == "…5000"
    assert [m.token for m in masked.additional_payment_methods] == ["…4242"]
