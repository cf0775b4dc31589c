"""An order's payment summary and its reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.payments.domain.authorizations import Authorization
from services.payments.domain.captures import Capture
from services.payments.domain.common import CANCEL, SUCCEEDED
from services.payments.domain.credit_memos import CreditMemo
from services.payments.domain.invoices import Invoice
from services.payments.domain.refunds import Refund, Reversal, memo_balance


@dataclass(frozen=True)
class PaymentSummary:
    """An order's money at a glance, in its currency ("" when nothing is known)."""

    order_id: str
    currency: str
    authorized_minor: int
    captured_minor: int
    refunded_minor: int
    invoiced_minor: int
    credited_minor: int = 0
    released_minor: int = 0

    @property
    def balance_due_minor(self) -> int:
        """What is still owed on invoices."""
        return self.invoiced_minor - self.captured_minor


def credited_minor(credit_memos: Sequence[CreditMemo], reversals: Sequence[Reversal]) -> int:
    """Credit memo money given against invoices: every memo but cancels (whose units were
    never invoiced), less what memos released from authorizations (money never taken)."""
    total = 0
    for memo in credit_memos:
        if memo.kind == CANCEL:
            continue
        total += memo.total_minor - memo_balance(memo, (), reversals).released_minor
    return total


def summarize(
    order_id: str,
    authorizations: Sequence[Authorization],
    captures: Sequence[Capture],
    invoices: Sequence[Invoice],
    *,
    credit_memos: Sequence[CreditMemo] = (),
    refunds: Sequence[Refund] = (),
    reversals: Sequence[Reversal] = (),
) -> PaymentSummary:
    """Totals of an order's records: held, captured, refunded, invoiced, credited, released."""
    currencies = [a.currency for a in authorizations] + [i.currency for i in invoices]
    currencies += [m.currency for m in credit_memos]
    return PaymentSummary(
        order_id=order_id,
        currency=currencies[0] if currencies else "",
        authorized_minor=sum(a.held_minor for a in authorizations),
        captured_minor=sum(c.amount_minor for c in captures if c.status == SUCCEEDED),
        refunded_minor=sum(r.amount_minor for r in refunds if r.status == SUCCEEDED),
        invoiced_minor=sum(i.total_minor for i in invoices),
        credited_minor=credited_minor(credit_memos, reversals),
        released_minor=sum(r.amount_minor for r in reversals if r.status == SUCCEEDED),
    )


@dataclass(frozen=True)
class Reconciliation:
    """Money taken net of refunds against money owed net of credits."""

    summary: PaymentSummary
    not_refunded_minor: int

    @property
    def difference_minor(self) -> int:
        """(captured - refunded) - (invoiced - credited): positive when more was taken."""
        s = self.summary
        return (s.captured_minor - s.refunded_minor) - (s.invoiced_minor - s.credited_minor)

    @property
    def agrees(self) -> bool:
        """True when captured - refunded == invoiced - credited."""
        return self.difference_minor == 0


def reconcile(
    order_id: str,
    authorizations: Sequence[Authorization],
    captures: Sequence[Capture],
    invoices: Sequence[Invoice],
    *,
    credit_memos: Sequence[CreditMemo] = (),
    refunds: Sequence[Refund] = (),
    reversals: Sequence[Reversal] = (),
) -> Reconciliation:
    """Reconcile an order's records."""
    summary = summarize(
        order_id,
        authorizations,
        captures,
        invoices,
        credit_memos=credit_memos,
        refunds=refunds,
        reversals=reversals,
    )
    not_refunded = sum(
        memo_balance(memo, refunds, reversals).not_refunded_minor for memo in credit_memos
    )
    return Reconciliation(summary, not_refunded)
