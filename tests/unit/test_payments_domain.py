"""Payments domain rules: validation, invoice lines, capture choice, void, summary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument
from services.payments import domain
from services.payments.domain import (
    APPROVED,
    DECLINED,
    FAILED,
    SUCCEEDED,
    VOIDED,
    Authorization,
    AuthorizationRequest,
    Capture,
    ChargeableLine,
    InvoiceRequest,
    Money,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fields_of(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.violations}


def auth_request(**changes: object) -> AuthorizationRequest:
    request = AuthorizationRequest(
        order_id="o-1",
        idempotency_key="o-1:authorize",
        payment_method_type=domain.CARD,
        token="tok_visa",
        amount=Money(10_000, "USD"),
    )
    return replace(request, **changes)  # type: ignore[arg-type]


def authorization(
    authorization_id: str,
    amount_minor: int,
    *,
    captured_minor: int = 0,
    status: str = APPROVED,
    currency: str = "USD",
    age_minutes: int = 0,
    expires_in_hours: int = 168,
) -> Authorization:
    created = NOW - timedelta(minutes=age_minutes)
    return Authorization(
        authorization_id=authorization_id,
        order_id="o-1",
        payment_method_type=domain.CARD,
        token="tok_visa",
        amount_minor=amount_minor,
        currency=currency,
        captured_minor=captured_minor,
        status=status,
        gateway_reference=f"ref-{authorization_id}",
        decline_reason="",
        expires_at=NOW + timedelta(hours=expires_in_hours),
        created_at=created,
    )


def line(
    quantity_ordered: int,
    to_invoice: int,
    before: int,
    *,
    gross: int,
    discount: int = 0,
    tax: int = 0,
    currency: str = "USD",
) -> ChargeableLine:
    return ChargeableLine(
        order_line_id="ol-1",
        sku="SKU-1",
        quantity_ordered=quantity_ordered,
        gross=Money(gross, currency),
        discount=Money(discount, currency),
        tax=Money(tax, currency),
        quantity_to_invoice=to_invoice,
        quantity_invoiced_before=before,
    )


def invoice_request(*lines: ChargeableLine, shipping: Money | None = None) -> InvoiceRequest:
    return InvoiceRequest(
        order_id="o-1",
        fulfillment_order_id="fo-1",
        idempotency_key="o-1:invoice:fo-1",
        lines=list(lines),
        shipping=shipping or Money(0, ""),
    )


def invoice_of(
    total_minor: int, *, captured_minor: int = 0, currency: str = "USD"
) -> domain.Invoice:
    return domain.Invoice(
        invoice_id="inv-1",
        order_id="o-1",
        fulfillment_order_id="fo-1",
        currency=currency,
        lines=[],
        shipping_minor=0,
        total_minor=total_minor,
        captured_minor=captured_minor,
        created_at=NOW,
    )


def capture(amount_minor: int, status: str = SUCCEEDED, invoice_id: str = "inv-1") -> Capture:
    return Capture(
        capture_id=f"cap-{amount_minor}-{status}",
        invoice_id=invoice_id,
        authorization_id="a-1",
        status=status,
        amount_minor=amount_minor,
        currency="USD",
        gateway_reference="",
        failure_reason="" if status == SUCCEEDED else "processor_unavailable",
        created_at=NOW,
    )


# ---- authorization -------------------------------------------------------------------------


def test_a_valid_authorization_request_passes() -> None:
    domain.validate_authorization(auth_request())


def test_an_authorization_request_names_every_bad_field_at_once() -> None:
    bad = auth_request(order_id="", idempotency_key="", token="", amount=Money(0, "XXX"))
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_authorization(bad)
    assert fields_of(raised.value) == {
        "order_id",
        "idempotency_key",
        "payment_method.token",
        "amount.amount_minor",
        "amount.currency",
    }
    messages = {v.field: v.description for v in raised.value.violations}
    assert messages["amount.amount_minor"] == "amount.amount_minor must be > 0"
    assert "ISO 4217" in messages["amount.currency"]


def test_a_negative_amount_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_authorization(auth_request(amount=Money(-1, "USD")))
    assert fields_of(raised.value) == {"amount.amount_minor"}


def test_an_approved_authorization_holds_until_the_hold_expires() -> None:
    a = domain.record_authorization(
        auth_request(),
        authorization_id="a-1",
        approved=True,
        gateway_reference="ref",
        decline_reason="ignored",
        now=NOW,
        hold_hours=168,
    )
    assert (a.status, a.amount_minor, a.currency, a.captured_minor) == (APPROVED, 10_000, "USD", 0)
    assert a.decline_reason == ""
    assert a.expires_at == NOW + timedelta(days=7)
    assert a.remaining_minor == 10_000


def test_a_declined_authorization_keeps_the_reason_and_holds_nothing() -> None:
    a = domain.record_authorization(
        auth_request(),
        authorization_id="a-1",
        approved=False,
        gateway_reference="ref",
        decline_reason="card_declined",
        now=NOW,
        hold_hours=1,
    )
    assert (a.status, a.decline_reason, a.remaining_minor) == (DECLINED, "card_declined", 0)


# ---- invoice lines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "gross", "discount", "tax"),
    [("USD", 10_001, 333, 827), ("JPY", 1_001, 100, 99), ("BHD", 12_347, 1_001, 1_235)],
)
def test_a_line_invoiced_over_two_shipments_sums_exactly_to_the_line_money(
    currency: str, gross: int, discount: int, tax: int
) -> None:
    first = domain.build_invoice(
        invoice_request(line(3, 1, 0, gross=gross, discount=discount, tax=tax, currency=currency)),
        invoice_id="inv-1",
        now=NOW,
    )
    second = domain.build_invoice(
        invoice_request(line(3, 2, 1, gross=gross, discount=discount, tax=tax, currency=currency)),
        invoice_id="inv-2",
        now=NOW,
    )
    (a,), (b,) = first.lines, second.lines
    assert (a.quantity, b.quantity) == (1, 2)
    assert a.gross_minor + b.gross_minor == gross
    assert a.discount_minor + b.discount_minor == discount
    assert a.tax_minor + b.tax_minor == tax
    assert a.total_minor + b.total_minor == gross - discount + tax
    assert first.currency == second.currency == currency
    assert first.total_minor + second.total_minor == gross - discount + tax


def test_the_first_units_of_a_line_take_the_odd_minor_units() -> None:
    invoice = domain.build_invoice(
        invoice_request(line(3, 1, 0, gross=1000, discount=100, tax=80)), invoice_id="i", now=NOW
    )
    (only,) = invoice.lines
    assert (only.gross_minor, only.discount_minor, only.tax_minor) == (334, 34, 27)
    assert only.total_minor == 334 - 34 + 27


def test_an_invoice_total_is_its_line_totals_plus_shipping() -> None:
    invoice = domain.build_invoice(
        invoice_request(
            line(2, 2, 0, gross=2000, discount=200, tax=144),
            replace(line(1, 1, 0, gross=500, tax=40), order_line_id="ol-2"),
            shipping=Money(599, "USD"),
        ),
        invoice_id="inv-1",
        now=NOW,
    )
    assert [ln.total_minor for ln in invoice.lines] == [1944, 540]
    assert invoice.shipping_minor == 599
    assert invoice.total_minor == 1944 + 540 + 599
    assert invoice.outstanding_minor == invoice.total_minor


def test_goodwill_given_before_charging_comes_off_the_invoice_total() -> None:
    request = replace(
        invoice_request(line(2, 2, 0, gross=2000, tax=160), shipping=Money(500, "USD")),
        goodwill=Money(216, "USD"),
    )
    invoice = domain.build_invoice(request, invoice_id="inv-1", now=NOW)
    assert invoice.goodwill_minor == 216
    assert invoice.total_minor == 2160 + 500 - 216
    assert invoice.outstanding_minor == invoice.total_minor


def test_goodwill_larger_than_the_invoice_or_negative_is_refused() -> None:
    too_much = replace(
        invoice_request(line(1, 1, 0, gross=1000), shipping=Money(100, "USD")),
        goodwill=Money(1101, "USD"),
    )
    with pytest.raises(InvalidArgument) as raised:
        domain.build_invoice(too_much, invoice_id="i", now=NOW)
    assert fields_of(raised.value) == {"goodwill.amount_minor"}
    assert "exceeds the lines plus shipping (1100)" in str(raised.value.violations)
    negative = replace(invoice_request(line(1, 1, 0, gross=1000)), goodwill=Money(-1, "USD"))
    with pytest.raises(InvalidArgument) as raised:
        domain.build_invoice(negative, invoice_id="i", now=NOW)
    assert fields_of(raised.value) == {"goodwill.amount_minor"}


def test_an_invoice_refuses_more_units_than_remain_to_invoice() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.build_invoice(invoice_request(line(3, 2, 2, gross=300)), invoice_id="i", now=NOW)
    assert fields_of(raised.value) == {"lines[0].quantity_to_invoice"}


def test_an_invoice_refuses_zero_or_negative_quantities() -> None:
    bad = replace(line(3, 1, 0, gross=300), quantity_ordered=0, quantity_to_invoice=0)
    with pytest.raises(InvalidArgument) as raised:
        domain.build_invoice(
            invoice_request(bad, replace(line(2, 1, 0, gross=1), quantity_invoiced_before=-1)),
            invoice_id="i",
            now=NOW,
        )
    assert fields_of(raised.value) == {
        "lines[0].quantity_ordered",
        "lines[0].quantity_to_invoice",
        "lines[1].quantity_invoiced_before",
    }


def test_an_invoice_refuses_mixed_currencies() -> None:
    mixed = replace(line(1, 1, 0, gross=100, currency="USD"), tax=Money(8, "EUR"))
    with pytest.raises(InvalidArgument) as raised:
        domain.build_invoice(
            invoice_request(mixed, shipping=Money(50, "GBP")), invoice_id="i", now=NOW
        )
    assert fields_of(raised.value) == {"lines[0].tax.currency", "shipping.currency"}


def test_an_invoice_refuses_an_unknown_currency_and_missing_ids() -> None:
    request = replace(
        invoice_request(line(1, 1, 0, gross=100, currency="ABC")),
        order_id="",
        fulfillment_order_id="",
        idempotency_key="",
    )
    with pytest.raises(InvalidArgument) as raised:
        domain.build_invoice(request, invoice_id="i", now=NOW)
    assert fields_of(raised.value) == {
        "order_id",
        "fulfillment_order_id",
        "idempotency_key",
        "lines[0].gross.currency",
    }


def test_an_invoice_needs_a_line() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.build_invoice(invoice_request(shipping=Money(500, "USD")), invoice_id="i", now=NOW)
    assert fields_of(raised.value) == {"lines"}


def test_an_unset_zero_amount_needs_no_currency() -> None:
    invoice = domain.build_invoice(
        invoice_request(replace(line(1, 1, 0, gross=100), discount=Money(0, ""), tax=Money(0, ""))),
        invoice_id="i",
        now=NOW,
    )
    assert invoice.total_minor == 100


# ---- capture -------------------------------------------------------------------------------


def test_a_capture_takes_the_outstanding_amount_from_the_oldest_authorization_that_covers_it() -> (
    None
):
    older = authorization("a-old", 5_000, age_minutes=10)
    newer = authorization("a-new", 5_000, age_minutes=1)
    plan = domain.plan_capture(invoice_of(4_000), [], [newer, older], NOW)
    assert plan.authorization == older
    assert plan.amount_minor == 4_000
    assert plan.failure_reason == ""


def test_a_capture_draws_on_every_usable_authorization_oldest_first() -> None:
    mostly_used = authorization("a-old", 5_000, captured_minor=4_500, age_minutes=10)
    declined = authorization("a-declined", 9_000, status=DECLINED, age_minutes=9)
    voided = authorization("a-voided", 9_000, status=VOIDED, age_minutes=8)
    in_euros = authorization("a-eur", 9_000, currency="EUR", age_minutes=6)
    fresh = authorization("a-fresh", 3_000, age_minutes=1)
    plan = domain.plan_capture(
        invoice_of(3_000), [], [fresh, mostly_used, declined, voided, in_euros], NOW
    )
    assert [(d.authorization.authorization_id, d.amount_minor) for d in plan.draws] == [
        ("a-old", 500),
        ("a-fresh", 2_500),
    ]
    assert not any(d.reauthorize for d in plan.draws)
    assert plan.authorization == mostly_used


def test_authorizations_made_at_one_instant_are_drawn_in_the_order_they_were_made() -> None:
    gift_card = replace(authorization("a-gift", 2_000), payment_method_type=domain.GIFT_CARD)
    card = authorization("a-card", 8_000)
    plan = domain.plan_capture(invoice_of(5_000), [], [gift_card, card], NOW)
    assert [(d.authorization.authorization_id, d.amount_minor) for d in plan.draws] == [
        ("a-gift", 2_000),
        ("a-card", 3_000),
    ]


def test_an_expired_authorization_is_drawn_on_after_it_is_held_anew() -> None:
    lapsed = authorization("a-lapsed", 9_000, captured_minor=1_000, expires_in_hours=-1)
    plan = domain.plan_capture(invoice_of(3_000), [], [lapsed], NOW)
    (draw,) = plan.draws
    assert (draw.authorization, draw.amount_minor, draw.reauthorize) == (lapsed, 3_000, True)

    renewed = domain.reauthorization(
        lapsed,
        authorization_id="a-renewed",
        approved=True,
        held_minor=lapsed.remaining_minor,
        gateway_reference="ref-2",
        decline_reason="",
        now=NOW,
        hold_hours=24,
    )
    assert (renewed.amount_minor, renewed.status, renewed.token) == (8_000, APPROVED, "tok_visa")
    assert renewed.replaces_authorization_id == "a-lapsed"
    assert renewed.expires_at == NOW + timedelta(hours=24)
    assert domain.expired(lapsed).status == domain.EXPIRED
    assert domain.expired(lapsed).remaining_minor == 0


def test_a_declined_reauthorization_keeps_the_gateway_reason_and_holds_nothing() -> None:
    lapsed = authorization("a-lapsed", 9_000, expires_in_hours=-1)
    renewed = domain.reauthorization(
        lapsed,
        authorization_id="a-2",
        approved=False,
        held_minor=9_000,
        gateway_reference="ref-2",
        decline_reason="card_expired",
        now=NOW,
        hold_hours=24,
    )
    assert (renewed.status, renewed.decline_reason, renewed.remaining_minor) == (
        DECLINED,
        "card_expired",
        0,
    )


def test_a_capture_never_exceeds_what_the_invoice_still_owes() -> None:
    invoice = invoice_of(3_000, captured_minor=1_000)
    plan = domain.plan_capture(invoice, [capture(1_000)], [authorization("a", 10_000)], NOW)
    assert plan.amount_minor == 2_000
    assert [d.amount_minor for d in plan.draws] == [2_000]


def test_a_capture_without_enough_authorization_fails_as_insufficient() -> None:
    plan = domain.plan_capture(
        invoice_of(10_001), [], [authorization("a", 5_000), authorization("b", 5_000)], NOW
    )
    assert plan.authorization is None
    assert plan.draws == ()
    assert plan.failure_reason == "insufficient_authorization"
    failed = domain.record_capture(
        invoice_of(10_001),
        capture_id="c",
        authorization_id="",
        amount_minor=plan.amount_minor,
        succeeded=False,
        gateway_reference="",
        failure_reason=plan.failure_reason,
        now=NOW,
    )
    assert (failed.status, failed.authorization_id, failed.amount_minor) == (FAILED, "", 10_001)
    assert failed.failure_reason == "insufficient_authorization"


def test_a_capture_of_several_draws_fails_when_one_failed_and_names_that_one() -> None:
    ok = capture(2_000)
    refused = replace(capture(3_000, FAILED), capture_id="cap-refused")
    outcome = domain.capture_outcome([ok, refused])
    assert (outcome.status, outcome.deciding, outcome.failure_reason) == (
        FAILED,
        refused,
        "processor_unavailable",
    )
    assert outcome.captured_minor == 2_000
    settled = domain.capture_outcome([ok, replace(ok, capture_id="cap-2")])
    assert (settled.status, settled.deciding, settled.captured_minor) == (SUCCEEDED, ok, 4_000)


def test_capturing_a_fully_captured_invoice_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="invoice inv-1 is already captured"):
        domain.plan_capture(
            invoice_of(2_000, captured_minor=2_000),
            [capture(2_000)],
            [authorization("a", 5_000)],
            NOW,
        )


def test_a_failed_capture_leaves_the_invoice_owing() -> None:
    plan = domain.plan_capture(
        invoice_of(2_000), [capture(2_000, FAILED)], [authorization("a", 5_000)], NOW
    )
    assert plan.amount_minor == 2_000


def test_a_zero_invoice_is_captured_once_without_a_gateway() -> None:
    plan = domain.plan_capture(invoice_of(0), [], [], NOW)
    assert (plan.amount_minor, plan.draws, plan.failure_reason) == (0, (), "")
    with pytest.raises(FailedPrecondition, match="already captured"):
        domain.plan_capture(invoice_of(0), [capture(0)], [], NOW)


def test_capturing_from_an_authorization_counts_against_its_hold() -> None:
    a = domain.captured_from(authorization("a", 5_000, captured_minor=1_000), 4_000)
    assert (a.captured_minor, a.remaining_minor) == (5_000, 0)
    with pytest.raises(FailedPrecondition, match="has 0 left"):
        domain.captured_from(a, 1)


# ---- void ----------------------------------------------------------------------------------


def test_a_void_releases_every_approved_authorization_oldest_first() -> None:
    approved_new = authorization("a-new", 100, age_minutes=1)
    approved_old = authorization("a-old", 100, age_minutes=5)
    declined = authorization("a-declined", 100, status=DECLINED)
    already = authorization("a-voided", 100, status=VOIDED)
    chosen = domain.authorizations_to_void([approved_new, declined, already, approved_old])
    assert [a.authorization_id for a in chosen] == ["a-old", "a-new"]
    assert domain.voided(approved_old).status == VOIDED
    with pytest.raises(FailedPrecondition):
        domain.voided(declined)


# ---- summary -------------------------------------------------------------------------------


def test_a_summary_adds_held_captured_and_invoiced_money() -> None:
    summary = domain.summarize(
        "o-1",
        [
            authorization("a", 10_000, captured_minor=6_000),
            authorization("b", 7_000, status=DECLINED),
            authorization("c", 3_000, status=VOIDED),
        ],
        [capture(4_000), capture(2_000, invoice_id="inv-2"), capture(1_500, FAILED)],
        [invoice_of(4_000), replace(invoice_of(3_500), invoice_id="inv-2")],
    )
    assert summary.currency == "USD"
    assert summary.authorized_minor == 10_000
    assert summary.captured_minor == 6_000
    assert summary.refunded_minor == 0
    assert summary.invoiced_minor == 7_500
    assert summary.balance_due_minor == 1_500


def test_a_summary_of_an_unknown_order_is_empty_with_no_currency() -> None:
    summary = domain.summarize("nobody", [], [], [])
    assert (summary.currency, summary.authorized_minor, summary.balance_due_minor) == ("", 0, 0)


def test_required_fields_are_named_when_empty() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.require(invoice_id="", idempotency_key="k")
    assert fields_of(raised.value) == {"invoice_id"}


# ---- several payment methods ---------------------------------------------------------------


def test_each_further_payment_method_is_asked_for_what_the_ones_before_could_not_hold() -> None:
    gift = replace(authorization("a-gift", 2_500), payment_method_type=domain.GIFT_CARD)
    assert domain.left_to_hold(10_000, []) == 10_000
    assert domain.left_to_hold(10_000, [gift]) == 7_500
    assert domain.left_to_hold(10_000, [gift, authorization("x", 1, status=DECLINED)]) == 7_500


def test_an_approval_holds_what_the_gateway_says_never_more_than_asked() -> None:
    assert domain.held_amount(7_500, 2_500) == 2_500
    assert domain.held_amount(7_500, 0) == 7_500
    assert domain.held_amount(7_500, 9_000) == 7_500


def test_a_split_authorization_holding_the_whole_amount_is_approved_with_the_first_as_primary() -> (
    None
):
    gift = replace(authorization("a-gift", 2_500), payment_method_type=domain.GIFT_CARD)
    card = authorization("a-card", 7_500)
    outcome = domain.authorization_outcome(10_000, [gift, card])
    assert (outcome.status, outcome.primary, outcome.decline_reason) == (APPROVED, gift, "")
    assert (outcome.held_minor, outcome.to_void) == (10_000, ())


def test_a_split_authorization_short_of_the_amount_is_declined_and_releases_what_it_held() -> None:
    gift = replace(authorization("a-gift", 2_500), payment_method_type=domain.GIFT_CARD)
    card = replace(authorization("a-card", 7_500, status=DECLINED), decline_reason="card_declined")
    outcome = domain.authorization_outcome(10_000, [gift, card])
    assert (outcome.status, outcome.primary, outcome.decline_reason) == (
        DECLINED,
        card,
        "card_declined",
    )
    assert (outcome.held_minor, outcome.to_void) == (0, (gift,))


def test_a_further_payment_method_with_a_blank_token_is_named() -> None:
    bad = auth_request(additional_payment_methods=(domain.PaymentMethod(domain.CARD, ""),))
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_authorization(bad)
    assert fields_of(raised.value) == {"additional_payment_methods[0].token"}
    assert [m.token for m in auth_request().payment_methods] == ["tok_visa"]


def test_gateway_keys_carry_the_order_the_step_and_the_amount() -> None:
    key = domain.gateway_key("o-1", "o-1:capture:inv-1:0", "capture:a-1", 4_500)
    assert key == "o-1:o-1:capture:inv-1:0:capture:a-1:4500"
    assert key != domain.gateway_key("o-1", "o-1:capture:inv-1:0", "capture:a-1", 4_501)
