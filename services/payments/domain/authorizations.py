"""Authorizations: holds on a payment method, split over several methods, voided."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from oms_platform import limits, money
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.money import Money
from services.payments.domain.common import APPROVED, DECLINED, INSUFFICIENT_FUNDS, VOIDED


@dataclass(frozen=True)
class PaymentMethod:
    """An instrument as the storefront tokenized it."""

    type: str
    token: str


@dataclass(frozen=True)
class AuthorizationRequest:
    """A request to hold an amount on the order's payment methods, applied in sequence."""

    order_id: str
    idempotency_key: str
    payment_method_type: str
    token: str
    amount: Money
    additional_payment_methods: tuple[PaymentMethod, ...] = ()

    @property
    def payment_methods(self) -> list[PaymentMethod]:
        """Every method, in the order they are asked."""
        return [
            PaymentMethod(self.payment_method_type, self.token),
            *self.additional_payment_methods,
        ]


@dataclass(frozen=True)
class Authorization:
    """Funds held (or refused) on a payment method for an order."""

    authorization_id: str
    order_id: str
    payment_method_type: str
    token: str
    amount_minor: int
    currency: str
    captured_minor: int
    status: str
    gateway_reference: str
    decline_reason: str
    expires_at: datetime
    created_at: datetime
    # Released from the hold before capture (partial reversals for credit memos).
    reversed_minor: int = 0
    # The expired authorization this one holds anew, if it is a re-authorization.
    replaces_authorization_id: str = ""

    @property
    def remaining_minor(self) -> int:
        """What can still be captured: nothing unless approved."""
        if self.status != APPROVED:
            return 0
        return self.amount_minor - self.captured_minor - self.reversed_minor

    @property
    def held_minor(self) -> int:
        """What this authorization holds or took: its amount less reversals, if approved."""
        return self.amount_minor - self.reversed_minor if self.status == APPROVED else 0

    def is_expired(self, now: datetime) -> bool:
        """True once the hold has lapsed."""
        return self.expires_at <= now


def validate_authorization(request: AuthorizationRequest) -> None:
    """Raise InvalidArgument listing every bad field of an authorization request."""
    violations: list[FieldViolation] = []
    if not request.order_id:
        violations.append(FieldViolation("order_id", "order_id is required"))
    if not request.idempotency_key:
        violations.append(FieldViolation("idempotency_key", "idempotency_key is required"))
    if not request.token:
        violations.append(
            FieldViolation("payment_method.token", "payment_method.token is required")
        )
    for i, method in enumerate(request.additional_payment_methods):
        if not method.token:
            path = f"additional_payment_methods[{i}].token"
            violations.append(FieldViolation(path, f"{path} is required"))
    if request.amount.amount_minor <= 0:
        violations.append(FieldViolation("amount.amount_minor", "amount.amount_minor must be > 0"))
    if not money.is_known_currency(request.amount.currency):
        violations.append(
            FieldViolation(
                "amount.currency",
                f"amount.currency must be a known ISO 4217 code, got "
                f"{limits.echo(request.amount.currency)}",
            )
        )
    if violations:
        raise InvalidArgument(violations)


def record_authorization(
    request: AuthorizationRequest,
    *,
    authorization_id: str,
    approved: bool,
    gateway_reference: str,
    decline_reason: str,
    now: datetime,
    hold_hours: int,
) -> Authorization:
    """The authorization to store for the gateway's answer; a decline is a record too."""
    return new_authorization(
        request.order_id,
        PaymentMethod(request.payment_method_type, request.token),
        Money(request.amount.amount_minor, request.amount.currency),
        authorization_id=authorization_id,
        approved=approved,
        gateway_reference=gateway_reference,
        decline_reason=decline_reason,
        now=now,
        hold_hours=hold_hours,
    )


def new_authorization(
    order_id: str,
    method: PaymentMethod,
    amount: Money,
    *,
    authorization_id: str,
    approved: bool,
    gateway_reference: str,
    decline_reason: str,
    now: datetime,
    hold_hours: int,
    replaces_authorization_id: str = "",
    gateway_hold_seconds: int = 0,
) -> Authorization:
    """An authorization of `amount` (held if approved, asked if declined) on one method. It
    lapses when the gateway says its hold does (`gateway_hold_seconds`), else after
    `hold_hours`."""
    hold = (
        timedelta(seconds=gateway_hold_seconds)
        if gateway_hold_seconds > 0
        else timedelta(hours=hold_hours)
    )
    return Authorization(
        authorization_id=authorization_id,
        order_id=order_id,
        payment_method_type=method.type,
        token=method.token,
        amount_minor=amount.amount_minor,
        currency=amount.currency,
        captured_minor=0,
        status=APPROVED if approved else DECLINED,
        gateway_reference=gateway_reference,
        decline_reason="" if approved else (decline_reason or "declined"),
        expires_at=now + hold,
        created_at=now,
        replaces_authorization_id=replaces_authorization_id,
    )


def left_to_hold(amount_minor: int, authorizations: Sequence[Authorization]) -> int:
    """What the next payment method is asked for: the amount less what is approved so far."""
    return amount_minor - sum(a.amount_minor for a in authorizations if a.status == APPROVED)


def held_amount(asked_minor: int, approved_minor: int) -> int:
    """What an approval holds: what the gateway says it held (never more than asked); a
    gateway that says nothing held all of it."""
    return asked_minor if approved_minor <= 0 else min(asked_minor, approved_minor)


@dataclass(frozen=True)
class AuthorizationOutcome:
    """The overall answer to a split authorization."""

    status: str  # APPROVED or DECLINED
    # The first approval when approved; else the decline that decided it.
    primary: Authorization
    decline_reason: str
    held_minor: int
    # Approved holds to release because the whole amount could not be held.
    to_void: tuple[Authorization, ...] = ()


def authorization_outcome(
    amount_minor: int, authorizations: Sequence[Authorization]
) -> AuthorizationOutcome:
    """Approved when the authorizations made for one request hold the whole amount."""
    if not authorizations:
        raise ValueError("an outcome needs at least one authorization")
    approved = [a for a in authorizations if a.status == APPROVED]
    held = sum(a.amount_minor for a in approved)
    if approved and held == amount_minor:
        return AuthorizationOutcome(APPROVED, approved[0], "", held)
    declined = [a for a in authorizations if a.status == DECLINED]
    primary = declined[-1] if declined else authorizations[-1]
    reason = primary.decline_reason if declined else INSUFFICIENT_FUNDS
    return AuthorizationOutcome(DECLINED, primary, reason or INSUFFICIENT_FUNDS, 0, tuple(approved))


def authorizations_to_void(authorizations: Sequence[Authorization]) -> list[Authorization]:
    """The authorizations a void releases: every approved one, oldest first (ties keep the
    given order, which is the order they were made)."""
    return sorted((a for a in authorizations if a.status == APPROVED), key=lambda a: a.created_at)


def voided(authorization: Authorization) -> Authorization:
    """The authorization after its remaining hold is released."""
    if authorization.status != APPROVED:
        raise FailedPrecondition(
            f"authorization {authorization.authorization_id} is {authorization.status}, "
            "only an approved authorization can be voided"
        )
    return replace(authorization, status=VOIDED)
