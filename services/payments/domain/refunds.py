"""Refunds and releases: giving a credit memo's money back from captures and holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform.errors import FailedPrecondition
from services.payments.domain.authorizations import Authorization
from services.payments.domain.captures import Capture, _made_order
from services.payments.domain.common import (
    CANCEL,
    FAILED,
    LIMITED,
    SETTLED,
    SUCCEEDED,
    VOIDED,
    gateway_outcome,
)
from services.payments.domain.credit_memos import CreditMemo


@dataclass(frozen=True)
class Refund:
    """Money given back (or refused) from one capture for a credit memo."""

    refund_id: str
    order_id: str
    credit_memo_id: str
    capture_id: str
    status: str
    amount_minor: int
    currency: str
    gateway_reference: str
    failure_reason: str
    created_at: datetime


@dataclass(frozen=True)
class Reversal:
    """Money released (or refused) from an authorization's hold for a credit memo."""

    reversal_id: str
    order_id: str
    credit_memo_id: str
    authorization_id: str
    status: str
    amount_minor: int
    currency: str
    voided: bool
    gateway_reference: str
    failure_reason: str
    created_at: datetime


@dataclass(frozen=True)
class CreditMemoBalance:
    """What of a credit memo was given back, and what is still to be."""

    refunded_minor: int
    released_minor: int
    not_refunded_minor: int


def memo_balance(
    memo: CreditMemo, refunds: Sequence[Refund], reversals: Sequence[Reversal]
) -> CreditMemoBalance:
    """Sum the memo's succeeded refunds and releases; the rest is not refunded (nothing, once
    a cancel is settled: its money was never taken)."""
    refunded = sum(
        r.amount_minor
        for r in refunds
        if r.credit_memo_id == memo.credit_memo_id and r.status == SUCCEEDED
    )
    released = sum(
        r.amount_minor
        for r in reversals
        if r.credit_memo_id == memo.credit_memo_id and r.status == SUCCEEDED
    )
    left = 0 if memo.settled else max(0, memo.total_minor - refunded - released)
    return CreditMemoBalance(refunded, released, left)


def refundable_minor(capture: Capture, refunds: Sequence[Refund]) -> int:
    """What can still be refunded from a capture: its amount less succeeded refunds of it."""
    if capture.status != SUCCEEDED:
        return 0
    given = sum(
        r.amount_minor
        for r in refunds
        if r.capture_id == capture.capture_id and r.status == SUCCEEDED
    )
    return capture.amount_minor - given


@dataclass(frozen=True)
class RefundDraw:
    """Part of giving a memo back: an amount refunded from one capture."""

    capture: Capture
    amount_minor: int


@dataclass(frozen=True)
class ReleaseDraw:
    """Part of giving a memo back: an amount released from one authorization's hold; `void`
    when it is all that remains."""

    authorization: Authorization
    amount_minor: int
    void: bool


@dataclass(frozen=True)
class RefundPlan:
    """How a credit memo's money goes back, and what cannot."""

    refunds: tuple[RefundDraw, ...]
    releases: tuple[ReleaseDraw, ...]
    # Beyond what was captured net of refunds (and beyond the open holds when nothing was).
    not_refundable_minor: int
    # True for a cancel: done once the releases are, whatever they came to.
    settles: bool = False


def _newest_first(items: Sequence[Capture]) -> list[Capture]:
    indexed = list(enumerate(items))
    indexed.sort(key=lambda pair: (pair[1].created_at, pair[0]), reverse=True)
    return [item for _, item in indexed]


def _releases(
    amount_minor: int, memo: CreditMemo, authorizations: Sequence[Authorization], now: datetime
) -> tuple[list[ReleaseDraw], int]:
    """Release up to `amount_minor` from open, unexpired holds, newest first; returns the
    draws and what could not be released."""
    draws: list[ReleaseDraw] = []
    left = amount_minor
    for authorization in reversed(_made_order(authorizations)):
        if left == 0:
            break
        open_hold = authorization.remaining_minor
        if authorization.currency != memo.currency or open_hold <= 0:
            continue
        if authorization.is_expired(now):
            continue
        take = min(left, open_hold)
        draws.append(ReleaseDraw(authorization, take, take == open_hold))
        left -= take
    return draws, left


def plan_refund(
    memo: CreditMemo,
    balance: CreditMemoBalance,
    *,
    captures: Sequence[Capture],
    refunds: Sequence[Refund],
    authorizations: Sequence[Authorization],
    now: datetime,
) -> RefundPlan:
    """Choose how to give back what a credit memo still owes ("ensure refunds").

    A cancel gives back money never taken: it is released from the open authorizations,
    newest first, and never refunded from captures. Any other memo is refunded from the
    order's captures, newest first, never more than each captured net of earlier refunds;
    only when nothing was captured yet is it released from the open authorizations instead.
    What neither covers is not refundable.
    """
    owed = balance.not_refunded_minor
    if memo.kind == CANCEL:
        if memo.settled:
            return RefundPlan((), (), 0, settles=True)
        releases, _ = _releases(owed, memo, authorizations, now)
        return RefundPlan((), tuple(releases), 0, settles=True)
    if owed == 0:
        return RefundPlan((), (), 0)
    taken = [c for c in captures if c.status == SUCCEEDED and c.currency == memo.currency]
    if not any(c.amount_minor > 0 for c in taken):
        releases, left = _releases(owed, memo, authorizations, now)
        return RefundPlan((), tuple(releases), left)
    draws: list[RefundDraw] = []
    left = owed
    for capture in _newest_first(taken):
        if left == 0:
            break
        can = refundable_minor(capture, refunds)
        if can <= 0:
            continue
        take = min(left, can)
        draws.append(RefundDraw(capture, take))
        left -= take
    return RefundPlan(tuple(draws), (), left)


def record_refund(
    memo: CreditMemo,
    draw: RefundDraw,
    *,
    refund_id: str,
    succeeded: bool,
    gateway_reference: str,
    failure_reason: str,
    now: datetime,
) -> Refund:
    """The refund to store for one draw and the gateway's answer."""
    status, reason = gateway_outcome(succeeded, failure_reason, "refund_failed")
    return Refund(
        refund_id=refund_id,
        order_id=memo.order_id,
        credit_memo_id=memo.credit_memo_id,
        capture_id=draw.capture.capture_id,
        status=status,
        amount_minor=draw.amount_minor,
        currency=memo.currency,
        gateway_reference=gateway_reference,
        failure_reason=reason,
        created_at=now,
    )


def record_reversal(
    memo: CreditMemo,
    draw: ReleaseDraw,
    *,
    reversal_id: str,
    succeeded: bool,
    gateway_reference: str,
    failure_reason: str,
    now: datetime,
) -> Reversal:
    """The release to store for one draw and the gateway's answer."""
    status, reason = gateway_outcome(succeeded, failure_reason, "reversal_failed")
    return Reversal(
        reversal_id=reversal_id,
        order_id=memo.order_id,
        credit_memo_id=memo.credit_memo_id,
        authorization_id=draw.authorization.authorization_id,
        status=status,
        amount_minor=draw.amount_minor,
        currency=memo.currency,
        voided=draw.void,
        gateway_reference=gateway_reference,
        failure_reason=reason,
        created_at=now,
    )


def released_from(authorization: Authorization, amount_minor: int, *, void: bool) -> Authorization:
    """The authorization after `amount_minor` of its hold is released (VOIDED when `void`)."""
    if amount_minor > authorization.remaining_minor:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} has "
            f"{authorization.remaining_minor} left, cannot release {amount_minor}"
        )
    return replace(
        authorization,
        reversed_minor=authorization.reversed_minor + amount_minor,
        status=VOIDED if void else authorization.status,
    )


@dataclass(frozen=True)
class RefundOutcome:
    """The answer to one RefundCreditMemo call."""

    outcome: str  # SETTLED, LIMITED or FAILED
    failure_reason: str
    refunded_minor: int
    released_minor: int


def refund_outcome(
    plan: RefundPlan, refunds: Sequence[Refund], reversals: Sequence[Reversal]
) -> RefundOutcome:
    """Failed when a gateway refused; else limited when part was not refundable; else settled."""
    failed = [r.failure_reason for r in refunds if r.status != SUCCEEDED]
    failed += [r.failure_reason for r in reversals if r.status != SUCCEEDED]
    refunded = sum(r.amount_minor for r in refunds if r.status == SUCCEEDED)
    released = sum(r.amount_minor for r in reversals if r.status == SUCCEEDED)
    if failed:
        return RefundOutcome(FAILED, failed[0], refunded, released)
    if plan.not_refundable_minor > 0:
        return RefundOutcome(LIMITED, "", refunded, released)
    return RefundOutcome(SETTLED, "", refunded, released)
