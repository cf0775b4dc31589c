"""Renewals: keeping an order's holds alive until the day its goods are promised for.

An order waiting on a backorder or a pre-order is charged only when its goods ship, which can
be weeks after it was authorized; a hold lapses long before. Each hold that would lapse before
the promised day (its end, plus a margin for the shipment to leave) is held anew shortly
before it lapses, and the new hold replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from services.payments.domain.authorizations import Authorization
from services.payments.domain.common import APPROVED, GIFT_CARD


@dataclass(frozen=True)
class RenewalRule:
    """How long past the promised day holds must last, and how long before a hold lapses it
    is renewed (settings `authorization_renewal_margin_hours`, `..._lead_seconds`)."""

    margin_hours: int
    lead_seconds: int

    @property
    def lead(self) -> timedelta:
        return timedelta(seconds=self.lead_seconds)


def held_until(promised: date, rule: RenewalRule) -> datetime:
    """When the holds must last until: the end of the promised day (UTC) plus the margin."""
    end_of_day = datetime.combine(promised + timedelta(days=1), time(), tzinfo=UTC)
    return end_of_day + timedelta(hours=rule.margin_hours)


def _renewable(authorizations: Sequence[Authorization], until: datetime) -> list[Authorization]:
    """The holds that still hold something and would lapse before `until`, oldest first."""
    return sorted(
        (
            a
            for a in authorizations
            if a.status == APPROVED and a.remaining_minor > 0 and a.expires_at < until
        ),
        key=lambda a: a.created_at,
    )


def due_at(authorization: Authorization, rule: RenewalRule) -> datetime:
    """When a hold falls due for renewal: the lead before it lapses; a renewed hold no sooner
    than half its own life. A processor whose holds are shorter than the lead would otherwise
    make every renewed hold due the moment it is made, and the order would be renewed again and
    again at once; held for half its life, a hold is renewed at most twice per life of a hold
    and still before it lapses."""
    due = authorization.expires_at - rule.lead
    if authorization.replaces_authorization_id:
        half_life = (authorization.expires_at - authorization.created_at) / 2
        due = max(due, authorization.created_at + half_life)
    return due


def renewals_due(
    authorizations: Sequence[Authorization], until: datetime, now: datetime, rule: RenewalRule
) -> list[Authorization]:
    """The holds to renew now: they would lapse before `until` and are due (`due_at`), oldest
    first."""
    return [a for a in _renewable(authorizations, until) if due_at(a, rule) <= now]


def next_renewal(
    authorizations: Sequence[Authorization], until: datetime, rule: RenewalRule
) -> datetime | None:
    """When the next hold falls due for renewal; None when every hold lasts until `until`."""
    due = [due_at(a, rule) for a in _renewable(authorizations, until)]
    return min(due) if due else None


def seconds_until(at: datetime | None, now: datetime) -> int:
    """Whole seconds from `now` to `at`, rounded up (so a caller that waits them finds it
    due); 0 when `at` is None or past."""
    if at is None or at <= now:
        return 0
    return int(-(-(at - now) // timedelta(seconds=1)))


def releases_first(authorization: Authorization, now: datetime) -> bool:
    """Whether renewing releases the old hold before holding anew: a gift card (its balance
    must be free to be held again) or a hold that has lapsed already. A card is held anew
    first, so a decline leaves its current hold standing."""
    return authorization.payment_method_type == GIFT_CARD or authorization.is_expired(now)
