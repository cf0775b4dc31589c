"""Payments domain rules for giving money back: credit memos, refunds, releases, reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument
from services.payments import domain
from services.payments.domain import (
    APPROVED,
    CANCEL,
    FAILED,
    LIMITED,
    RETURN,
    SETTLED,
    SUCCEEDED,
    UNSPECIFIED,
    VOIDED,
    AppeasementRequest,
    Authorization,
    Capture,
    CreditableLine,
    CreditMemo,
    CreditMemoRequest,
    Invoice,
    InvoiceLine,
    Money,
    Refund,
    Reversal,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NONE = Money(0, "")


def fields_of(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.violations}


def creditable(
    order_line_id: str,
    ordered: int,
    quantity: int,
    first_unit: int,
    gross: int,
    discount: int = 0,
    tax: int = 0,
    currency: str = "USD",
) -> CreditableLine:
    return CreditableLine(
        order_line_id=order_line_id,
        sku=f"SKU-{order_line_id}",
        quantity_ordered=ordered,
        gross=Money(gross, currency),
        discount=Money(discount, currency),
        tax=Money(tax, currency),
        quantity_to_credit=quantity,
        first_unit=first_unit,
    )


def memo_request(
    *lines: CreditableLine,
    kind: str = RETURN,
    shipping: Money = NONE,
    fee: Money = NONE,
    appeasements: tuple[AppeasementRequest, ...] = (),
    currency: str = "",
) -> CreditMemoRequest:
    return CreditMemoRequest(
        order_id="o-1",
        idempotency_key="o-1:memo",
        kind=kind,
        reason="test",
        currency=currency,
        lines=list(lines),
        shipping=shipping,
        fee=fee,
        appeasements=list(appeasements),
    )


def invoice(
    invoice_id: str, lines: list[tuple[str, int]], shipping: int = 0, captured: int | None = None
) -> Invoice:
    invoice_lines = [
        InvoiceLine(line_id, f"SKU-{line_id}", 1, total, 0, 0, total) for line_id, total in lines
    ]
    total = sum(t for _, t in lines) + shipping
    return Invoice(
        invoice_id=invoice_id,
        order_id="o-1",
        fulfillment_order_id=f"fo-{invoice_id}",
        currency="USD",
        lines=invoice_lines,
        shipping_minor=shipping,
        total_minor=total,
        captured_minor=total if captured is None else captured,
        created_at=NOW,
    )


def build(request: CreditMemoRequest, invoices: list[Invoice] | None = None) -> CreditMemo:
    return domain.build_credit_memo(
        request, invoices=invoices or [], credit_memo_id="cm-1", now=NOW
    )


def capture(
    capture_id: str, amount: int, minutes_ago: int, authorization_id: str = "a-1"
) -> Capture:
    return Capture(
        capture_id=capture_id,
        invoice_id="inv-1",
        authorization_id=authorization_id,
        status=SUCCEEDED,
        amount_minor=amount,
        currency="USD",
        gateway_reference=f"ref-{capture_id}",
        failure_reason="",
        created_at=NOW - timedelta(minutes=minutes_ago),
    )


def authorization(
    authorization_id: str,
    amount: int,
    *,
    captured: int = 0,
    minutes_ago: int = 0,
    expires_in_hours: int = 24,
) -> Authorization:
    return Authorization(
        authorization_id=authorization_id,
        order_id="o-1",
        payment_method_type=domain.CARD,
        token="tok_visa",
        amount_minor=amount,
        currency="USD",
        captured_minor=captured,
        status=APPROVED,
        gateway_reference=f"ref-{authorization_id}",
        decline_reason="",
        expires_at=NOW + timedelta(hours=expires_in_hours),
        created_at=NOW - timedelta(minutes=minutes_ago),
    )


def refund(capture_id: str, amount: int, memo_id: str = "cm-0", status: str = SUCCEEDED) -> Refund:
    return Refund(
        refund_id=f"r-{capture_id}-{amount}",
        order_id="o-1",
        credit_memo_id=memo_id,
        capture_id=capture_id,
        status=status,
        amount_minor=amount,
        currency="USD",
        gateway_reference="",
        failure_reason="" if status == SUCCEEDED else "refund_rejected",
        created_at=NOW,
    )


def memo_of(total: int, kind: str = RETURN, memo_id: str = "cm-1") -> CreditMemo:
    return CreditMemo(
        credit_memo_id=memo_id,
        order_id="o-1",
        kind=kind,
        reason="",
        currency="USD",
        lines=[],
        shipping_minor=0,
        fee_minor=0,
        appeasements=[],
        total_minor=total,
        created_at=NOW,
    )


def plan(
    memo: CreditMemo,
    *,
    captures: Sequence[Capture] = (),
    refunds: Sequence[Refund] = (),
    authorizations: Sequence[Authorization] = (),
    reversals: Sequence[Reversal] = (),
) -> domain.RefundPlan:
    return domain.plan_refund(
        memo,
        domain.memo_balance(memo, refunds, reversals),
        captures=captures,
        refunds=refunds,
        authorizations=authorizations,
        now=NOW,
    )


# ---- credit memos --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "gross", "discount", "tax"),
    [("USD", 10_001, 333, 827), ("JPY", 1_001, 100, 99), ("BHD", 12_347, 1_001, 1_235)],
)
def test_a_line_credited_in_parts_adds_up_to_the_line_money_in_every_exponent(
    currency: str, gross: int, discount: int, tax: int
) -> None:
    # One unit canceled from the back, then the other two returned from the front.
    canceled = build(
        memo_request(creditable("ol-1", 3, 1, 2, gross, discount, tax, currency), kind=CANCEL)
    )
    returned = build(memo_request(creditable("ol-1", 3, 2, 0, gross, discount, tax, currency)))
    (a,), (b,) = canceled.lines, returned.lines
    assert a.gross_minor + b.gross_minor == gross
    assert a.discount_minor + b.discount_minor == discount
    assert a.tax_minor + b.tax_minor == tax
    assert canceled.total_minor + returned.total_minor == gross - discount + tax
    assert canceled.currency == returned.currency == currency


def test_returned_units_get_the_same_share_their_invoice_charged() -> None:
    line = creditable("ol-1", 3, 1, 0, 1_000, 100, 80)
    (credited,) = build(memo_request(line)).lines
    # The first unit was invoiced at 334 - 34 + 27 (see the invoice tests).
    assert (credited.gross_minor, credited.discount_minor, credited.tax_minor) == (334, 34, 27)
    assert credited.total_minor == 327


def test_a_memo_total_is_lines_plus_shipping_plus_appeasements_less_the_fee() -> None:
    memo = build(
        memo_request(
            creditable("ol-1", 2, 2, 0, 2_000, 200, 144),
            shipping=Money(599, "USD"),
            fee=Money(500, "USD"),
            appeasements=(AppeasementRequest("", Money(250, "USD")),),
        )
    )
    assert memo.total_minor == 1_944 + 599 + 250 - 500
    assert (memo.shipping_minor, memo.fee_minor) == (599, 500)
    assert [a.amount_minor for a in memo.appeasements] == [250]


def test_a_fee_larger_than_the_credit_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        build(memo_request(creditable("ol-1", 1, 1, 0, 300), fee=Money(301, "USD")))
    assert fields_of(raised.value) == {"fee.amount_minor"}


def test_what_was_captured_for_a_line_is_its_exact_share_of_each_invoice_captured() -> None:
    first = invoice("inv-1", [("ol-1", 1_000), ("ol-2", 2_000)], shipping=500)
    half = invoice("inv-2", [("ol-1", 1_001)], captured=500)
    assert domain.captured_for_line("ol-1", [first, half]) == 1_000 + 500
    assert domain.captured_for_line("ol-2", [first, half]) == 2_000
    partly = invoice("inv-3", [("ol-1", 1), ("ol-2", 1), ("ol-3", 1)], captured=2)
    parts = [domain.captured_for_line(f"ol-{i}", [partly]) for i in (1, 2, 3)]
    assert sum(parts) == 2


def test_a_percentage_appeasement_is_taken_of_what_was_captured_for_the_line() -> None:
    invoices = [invoice("inv-1", [("ol-1", 4_995), ("ol-2", 2_000)])]
    memo = build(
        memo_request(
            kind=domain.APPEASEMENT,
            appeasements=(AppeasementRequest("ol-1", NONE, 1_000),),
        ),
        invoices,
    )
    # 10% of 4995 = 499.5, rounded half up.
    assert [
        (a.order_line_id, a.percent_basis_points, a.amount_minor) for a in memo.appeasements
    ] == [("ol-1", 1_000, 500)]
    assert (memo.total_minor, memo.currency) == (500, "USD")


def test_an_order_percentage_is_taken_of_everything_captured() -> None:
    invoices = [
        invoice("inv-1", [("ol-1", 1_000)], shipping=500),
        invoice("inv-2", [("ol-2", 500)]),
    ]
    memo = build(memo_request(appeasements=(AppeasementRequest("", NONE, 2_500),)), invoices)
    assert memo.total_minor == 500


def test_a_percentage_of_nothing_captured_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="nothing was captured for line ol-9"):
        build(
            memo_request(appeasements=(AppeasementRequest("ol-9", NONE, 1_000),)),
            [invoice("inv-1", [("ol-1", 1_000)])],
        )


def test_a_memo_request_names_every_bad_field_at_once() -> None:
    bad = CreditMemoRequest(
        order_id="",
        idempotency_key="",
        kind=RETURN,
        reason="",
        currency="",
        lines=[replace(creditable("", 2, 2, 1, 100), quantity_ordered=2)],
        shipping=Money(-1, "USD"),
        fee=Money(5, "EUR"),
        appeasements=[
            AppeasementRequest("", Money(100, "USD"), 500),
            AppeasementRequest("ol-1", NONE, 10_001),
        ],
    )
    with pytest.raises(InvalidArgument) as raised:
        build(bad)
    assert fields_of(raised.value) == {
        "order_id",
        "idempotency_key",
        "lines[0].order_line_id",
        "lines[0].quantity_to_credit",
        "shipping.amount_minor",
        "fee.currency",
        "appeasements[0]",
        "appeasements[1].percent_basis_points",
    }


def test_an_empty_memo_or_an_unknown_currency_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        build(memo_request())
    assert fields_of(raised.value) == {"lines", "currency"}


# ---- giving money back ---------------------------------------------------------------------


def test_a_refund_takes_from_the_newest_capture_first() -> None:
    older, newer = capture("c-old", 3_000, 10), capture("c-new", 2_000, 1)
    p = plan(memo_of(2_500), captures=[older, newer])
    assert [(d.capture.capture_id, d.amount_minor) for d in p.refunds] == [
        ("c-new", 2_000),
        ("c-old", 500),
    ]
    assert (p.releases, p.not_refundable_minor) == ((), 0)


def test_a_refund_never_takes_more_than_a_capture_has_left_after_earlier_refunds() -> None:
    older, newer = capture("c-old", 3_000, 10), capture("c-new", 2_000, 1)
    earlier = [refund("c-new", 1_500), refund("c-old", 200, status=FAILED)]
    p = plan(memo_of(4_000), captures=[older, newer], refunds=earlier)
    assert [(d.capture.capture_id, d.amount_minor) for d in p.refunds] == [
        ("c-new", 500),
        ("c-old", 3_000),
    ]
    assert p.not_refundable_minor == 500


def test_a_memo_partly_refunded_before_is_asked_only_for_the_rest() -> None:
    memo = memo_of(2_000)
    done = [refund("c-1", 1_200, memo_id="cm-1")]
    p = plan(memo, captures=[capture("c-1", 5_000, 5)], refunds=done)
    assert [d.amount_minor for d in p.refunds] == [800]
    settled = plan(
        memo, captures=[capture("c-1", 5_000, 5)], refunds=[refund("c-1", 2_000, "cm-1")]
    )
    assert (settled.refunds, settled.not_refundable_minor) == ((), 0)


def test_when_nothing_was_captured_a_refund_releases_the_open_authorization_instead() -> None:
    older = authorization("a-old", 2_000, minutes_ago=10)
    newer = authorization("a-new", 5_000, minutes_ago=1)
    p = plan(memo_of(6_000), authorizations=[older, newer])
    assert p.refunds == ()
    assert [(d.authorization.authorization_id, d.amount_minor, d.void) for d in p.releases] == [
        ("a-new", 5_000, True),
        ("a-old", 1_000, False),
    ]
    assert p.not_refundable_minor == 0
    assert domain.released_from(older, 1_000, void=False).remaining_minor == 1_000
    assert domain.released_from(newer, 5_000, void=True).status == VOIDED


def test_a_cancel_releases_the_authorization_even_when_captures_exist() -> None:
    # Units of a second shipment are canceled after the first was captured: the canceled units
    # were never charged, so the first shipment's money stays where it is.
    held = authorization("a-1", 10_000, captured=4_000)
    p = plan(
        memo_of(2_500, kind=CANCEL), captures=[capture("c-1", 4_000, 5)], authorizations=[held]
    )
    assert p.refunds == ()
    assert [(d.amount_minor, d.void) for d in p.releases] == [(2_500, False)]
    assert p.settles


def test_a_cancel_releases_no_more_than_is_still_held_and_is_settled_anyway() -> None:
    lapsed = authorization("a-1", 10_000, expires_in_hours=-1)
    small = authorization("a-2", 1_000)
    p = plan(memo_of(2_500, kind=CANCEL), authorizations=[lapsed, small])
    assert [(d.authorization.authorization_id, d.amount_minor) for d in p.releases] == [
        ("a-2", 1_000)
    ]
    assert (p.not_refundable_minor, p.settles) == (0, True)
    settled = replace(memo_of(2_500, kind=CANCEL), settled=True)
    assert domain.memo_balance(settled, [], []).not_refunded_minor == 0


def test_an_outcome_is_failed_when_a_gateway_refused_limited_when_captures_ran_out() -> None:
    failed_refund = refund("c-1", 100, status=FAILED)
    limited = domain.RefundPlan((), (), 300)
    assert domain.refund_outcome(limited, [failed_refund], []).outcome == FAILED
    assert domain.refund_outcome(limited, [failed_refund], []).failure_reason == "refund_rejected"
    assert domain.refund_outcome(limited, [refund("c-1", 100)], []).outcome == LIMITED
    assert domain.refund_outcome(domain.RefundPlan((), (), 0), [], []).outcome == SETTLED


# ---- reconciliation ------------------------------------------------------------------------


def test_an_order_refunded_exactly_what_it_credited_reconciles() -> None:
    inv = invoice("inv-1", [("ol-1", 6_000)])
    cap = capture("c-1", 6_000, 5)
    memo = memo_of(1_500)
    r = domain.reconcile(
        "o-1",
        [authorization("a-1", 6_000, captured=6_000)],
        [cap],
        [inv],
        credit_memos=[memo],
        refunds=[refund("c-1", 1_500, "cm-1")],
    )
    s = r.summary
    assert (s.captured_minor, s.refunded_minor, s.invoiced_minor, s.credited_minor) == (
        6_000,
        1_500,
        6_000,
        1_500,
    )
    assert (r.agrees, r.difference_minor, r.not_refunded_minor) == (True, 0, 0)


def test_a_memo_not_yet_refunded_shows_as_the_difference() -> None:
    r = domain.reconcile(
        "o-1",
        [],
        [capture("c-1", 6_000, 5)],
        [invoice("inv-1", [("ol-1", 6_000)])],
        credit_memos=[memo_of(1_500)],
    )
    assert (r.agrees, r.difference_minor, r.not_refunded_minor) == (False, 1_500, 1_500)


def test_a_cancel_of_never_invoiced_units_is_no_credit_against_invoices() -> None:
    cancel = replace(memo_of(2_500, kind=CANCEL), settled=True)
    released = Reversal("rv-1", "o-1", "cm-1", "a-1", SUCCEEDED, 2_500, "USD", False, "", "", NOW)
    r = domain.reconcile(
        "o-1",
        [replace(authorization("a-1", 10_000, captured=7_500), reversed_minor=2_500)],
        [capture("c-1", 7_500, 5)],
        [invoice("inv-1", [("ol-1", 7_500)])],
        credit_memos=[cancel],
        reversals=[released],
    )
    assert (r.summary.credited_minor, r.summary.released_minor) == (0, 2_500)
    assert r.summary.authorized_minor == 7_500
    assert r.agrees


def test_a_memo_released_instead_of_refunded_credits_only_what_was_taken() -> None:
    memo = memo_of(1_000, kind=UNSPECIFIED)
    released = Reversal("rv-1", "o-1", "cm-1", "a-1", SUCCEEDED, 1_000, "USD", False, "", "", NOW)
    assert domain.credited_minor([memo], [released]) == 0
    assert domain.memo_balance(memo, [], [released]).not_refunded_minor == 0


def test_a_memo_asked_with_its_refund_and_void_needs_a_key_of_its_own_for_each() -> None:
    domain.check_give_back_keys("m", "", "")
    domain.check_give_back_keys("m", "r", "")
    domain.check_give_back_keys("m", "r", "v")
    with pytest.raises(InvalidArgument) as no_refund:
        domain.check_give_back_keys("m", "", "v")
    assert [v.field for v in no_refund.value.violations] == ["void_remaining_idempotency_key"]
    with pytest.raises(InvalidArgument) as reused:
        domain.check_give_back_keys("m", "m", "m")
    assert [v.field for v in reused.value.violations] == [
        "refund_idempotency_key",
        "void_remaining_idempotency_key",
    ]
