"""Captures: taking an invoice's money from the order's authorizations, re-authorizing
lapsed holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform.errors import FailedPrecondition
from oms_platform.money import Money
from services.payments.domain.authorizations import Authorization, PaymentMethod, new_authorization
from services.payments.domain.common import (
    APPROVED,
    EXPIRED,
    FAILED,
    INSUFFICIENT_AUTHORIZATION,
    SUCCEEDED,
    gateway_outcome,
)
from services.payments.domain.invoices import Invoice


@dataclass(frozen=True)
class Capture:
    """Money taken (or refused) from an authorization for an invoice."""

    capture_id: str
    invoice_id: str
    authorization_id: str
    status: str
    amount_minor: int
    currency: str
    gateway_reference: str
    failure_reason: str
    created_at: datetime


@dataclass(frozen=True)
class CaptureDraw:
    """Part of a capture: an amount taken from one authorization, held anew first when the
    authorization has expired."""

    authorization: Authorization
    amount_minor: int
    reauthorize: bool = False


@dataclass(frozen=True)
class CapturePlan:
    """What a capture will do: the amount and the authorizations it draws on, in order.

    No draws when there is nothing to ask the gateway: either the capture fails at once
    (`failure_reason` set) or the invoice owes nothing (amount 0, succeeds at once).
    """

    amount_minor: int
    draws: tuple[CaptureDraw, ...] = ()
    failure_reason: str = ""

    @property
    def authorization(self) -> Authorization | None:
        """The first authorization drawn on, if any."""
        return self.draws[0].authorization if self.draws else None


def _made_order(authorizations: Sequence[Authorization]) -> list[Authorization]:
    """Oldest first; authorizations made at the same instant keep the given (made) order."""
    return sorted(authorizations, key=lambda a: a.created_at)


def plan_capture(
    invoice: Invoice,
    captures: Sequence[Capture],
    authorizations: Sequence[Authorization],
    now: datetime,
) -> CapturePlan:
    """Choose how to capture an invoice's outstanding amount.

    Draws on the approved authorizations in the invoice's currency oldest first (so a gift card
    authorized before a card is used first), each for what it still holds, until the
    outstanding amount is covered; an expired one is held anew before it is drawn on. Fails
    at once, asking no gateway, when together they do not hold enough.
    """
    outstanding = invoice.outstanding_minor
    succeeded = [c for c in captures if c.status == SUCCEEDED]
    if outstanding <= 0 and (invoice.total_minor > 0 or succeeded):
        raise FailedPrecondition(f"invoice {invoice.invoice_id} is already captured")
    if outstanding == 0:
        return CapturePlan(amount_minor=0)
    draws: list[CaptureDraw] = []
    left = outstanding
    for authorization in _made_order(authorizations):
        if left == 0:
            break
        if authorization.currency != invoice.currency or authorization.remaining_minor <= 0:
            continue
        take = min(left, authorization.remaining_minor)
        draws.append(CaptureDraw(authorization, take, authorization.is_expired(now)))
        left -= take
    if left > 0:
        return CapturePlan(amount_minor=outstanding, failure_reason=INSUFFICIENT_AUTHORIZATION)
    return CapturePlan(amount_minor=outstanding, draws=tuple(draws))


def reauthorization(
    expired_authorization: Authorization,
    *,
    authorization_id: str,
    approved: bool,
    held_minor: int,
    gateway_reference: str,
    decline_reason: str,
    now: datetime,
    hold_hours: int,
    gateway_hold_seconds: int = 0,
) -> Authorization:
    """The new authorization holding anew what an expired (or renewed) one still held."""
    return new_authorization(
        expired_authorization.order_id,
        PaymentMethod(expired_authorization.payment_method_type, expired_authorization.token),
        Money(held_minor, expired_authorization.currency),
        authorization_id=authorization_id,
        approved=approved,
        gateway_reference=gateway_reference,
        decline_reason=decline_reason,
        now=now,
        hold_hours=hold_hours,
        replaces_authorization_id=expired_authorization.authorization_id,
        gateway_hold_seconds=gateway_hold_seconds,
    )


def expired(authorization: Authorization) -> Authorization:
    """The authorization once a re-authorization replaced its hold (lapsed, or renewed)."""
    if authorization.status != APPROVED:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} is {authorization.status}, "
            "only an approved authorization can expire"
        )
    return replace(authorization, status=EXPIRED)


def record_capture(
    invoice: Invoice,
    *,
    capture_id: str,
    authorization_id: str,
    amount_minor: int,
    succeeded: bool,
    gateway_reference: str,
    failure_reason: str,
    now: datetime,
) -> Capture:
    """The capture to store for one draw (or a failure before any) and the gateway's answer."""
    status, reason = gateway_outcome(succeeded, failure_reason, "capture_failed")
    return Capture(
        capture_id=capture_id,
        invoice_id=invoice.invoice_id,
        authorization_id=authorization_id,
        status=status,
        amount_minor=amount_minor,
        currency=invoice.currency,
        gateway_reference=gateway_reference,
        failure_reason=reason,
        created_at=now,
    )


def captured_from(authorization: Authorization, amount_minor: int) -> Authorization:
    """The authorization after `amount_minor` is captured from it; never beyond its hold."""
    if amount_minor > authorization.remaining_minor:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} has "
            f"{authorization.remaining_minor} left, cannot capture {amount_minor}"
        )
    return replace(authorization, captured_minor=authorization.captured_minor + amount_minor)


@dataclass(frozen=True)
class CaptureOutcome:
    """The overall answer to a capture of several draws."""

    status: str  # SUCCEEDED or FAILED
    # The capture that decides the outcome: the one that failed, else the first.
    deciding: Capture
    failure_reason: str
    captured_minor: int


def capture_outcome(captures: Sequence[Capture]) -> CaptureOutcome:
    """Succeeded when every capture made for one request succeeded."""
    if not captures:
        raise ValueError("an outcome needs at least one capture")
    failed = [c for c in captures if c.status != SUCCEEDED]
    captured = sum(c.amount_minor for c in captures if c.status == SUCCEEDED)
    if failed:
        return CaptureOutcome(FAILED, failed[0], failed[0].failure_reason, captured)
    return CaptureOutcome(SUCCEEDED, captures[0], "", captured)
