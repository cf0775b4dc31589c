"""Payments' encoders: an invoice's and a credit memo's lines reach the wire whole, in the
record's currency."""

from __future__ import annotations

from datetime import UTC, datetime

from services.payments import convert, domain

AT = datetime(2024, 5, 1, tzinfo=UTC)


def test_an_invoice_line_reaches_the_wire_with_every_amount_in_the_invoice_currency() -> None:
    line = domain.InvoiceLine("ol-1", "SKU-1", 2, 2_000, 300, 170, 1_870)
    invoice = domain.Invoice("inv-1", "o-1", "fo-1", "EUR", [line], 500, 2_370, 0, AT)

    (wire,) = convert.invoice_pb(invoice).lines

    assert (wire.order_line_id, wire.sku, wire.quantity) == ("ol-1", "SKU-1", 2)
    money = [wire.gross, wire.discount, wire.tax, wire.total]
    assert [m.amount_minor for m in money] == [2_000, 300, 170, 1_870]
    assert {m.currency for m in money} == {"EUR"}


def test_a_credit_memo_line_reaches_the_wire_with_every_amount_in_the_memo_currency() -> None:
    line = domain.CreditMemoLine("ol-2", "SKU-2", 1, 1_000, 100, 90, 990)
    memo = domain.CreditMemo(
        "cm-1", "o-1", domain.RETURN, "too small", "GBP", [line], 0, 0, [], 990, AT
    )

    (wire,) = convert.credit_memo_pb(memo, domain.CreditMemoBalance(0, 0, 990)).lines

    assert (wire.order_line_id, wire.sku, wire.quantity) == ("ol-2", "SKU-2", 1)
    money = [wire.gross, wire.discount, wire.tax, wire.total]
    assert [m.amount_minor for m in money] == [1_000, 100, 90, 990]
    assert {m.currency for m in money} == {"GBP"}
