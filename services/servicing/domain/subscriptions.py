"""Subscriptions as servicing keeps them: plans, subscriptions (the projection of each
subscription's workflow), their cycles and changes, and the rules a request keeps before it
is stored or sent to the workflow (README "Subscriptions").

Pure: the payloads are the workflow's contract (workflows/subscription_types.py), plain
dataclasses; every violation of a request is reported at once. No I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from oms_platform import limits, money
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.postal import MAX_POSTAL_CODE_LENGTH
from services.servicing.domain.common import MAX_REASON_LENGTH, required, too_long
from services.servicing.domain.listing import Cursor, decode_page_token, encode_page_token
from workflows import cadence
from workflows.subscription_types import (
    ACTIVE,
    CHANGE_ADDRESS,
    CHANGE_CYCLE_DAY,
    CHANGE_PAYMENT_METHOD,
    CHANGE_PLAN,
    MINUTES,
    MONTHLY,
    PAUSED,
    PAYMENT_METHOD_TYPES,
    SKIP,
    SUBSCRIPTION_CANCELED,
    SUBSCRIPTION_PAST_DUE,
    WEEKLY,
    CadenceData,
    PlanData,
    PlanItemData,
    SubscriberData,
    SubscriptionChangeRequest,
    SubscriptionInput,
)
from workflows.types import Address, PaymentMethodData

# The channels a cycle's order can be captured under, and how it can be paid (capture's).
CHANNELS = ("web", "marketplace", "store", "b2b", "agent")
STATUSES = (ACTIVE, PAUSED, SUBSCRIPTION_PAST_DUE, SUBSCRIPTION_CANCELED)
# The change record every subscription's history starts with.
CREATED = "created"

# Cadence bounds (Cadence in subscriptions.proto).
MAX_WEEKS = 52
MAX_MINUTES = 1440
DEFAULT_AT_LOCAL_TIME = "00:00"
MAX_NAME_LENGTH = 256
MAX_TOKEN_LENGTH = 2048

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_LOCAL_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


# ---- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A stored plan: the workflow's snapshot of it, and when it was made."""

    data: PlanData
    created_at: datetime


@dataclass(frozen=True)
class Subscription:
    """One shopper on one plan: what the subscription was created with, and where its
    workflow last said it stands."""

    subscription_id: str
    plan_id: str
    channel: str
    subscriber: SubscriberData
    delivery_address: Address
    delivery_method: str
    payment_method: PaymentMethodData
    status: str
    start_at: datetime
    created_at: datetime
    updated_at: datetime
    next_cycle: int = 1
    next_cycle_at: datetime | None = None
    paused_until: datetime | None = None
    skipped_cycles: tuple[int, ...] = ()
    pending_plan_id: str = ""
    pending_plan_from_cycle: int = 0
    cancel_at_period_end: bool = False
    suspended_reason: str = ""


@dataclass(frozen=True)
class Cycle:
    """One period of a subscription as its workflow recorded it."""

    number: int
    status: str
    due_at: datetime | None
    updated_at: datetime
    order_id: str = ""
    plan_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    payment_attempts: int = 0
    next_payment_retry_at: datetime | None = None
    decline_reason: str = ""


@dataclass(frozen=True)
class ChangeRecord:
    """One change in a subscription's history."""

    change_id: str
    kind: str
    actor: str
    summary: str
    effective_cycle: int
    at: datetime
    reason: str = ""


@dataclass(frozen=True)
class Progress:
    """What the workflow reports after a step: the subscription now, the cycles whose record
    changed, the change it just made (if any)."""

    subscription: Subscription
    cycles: tuple[Cycle, ...] = ()
    change: ChangeRecord | None = None


# ---- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPlan:
    """A CreatePlan request; `cadence` is None when no cadence was given."""

    idempotency_key: str
    name: str
    items: tuple[PlanItemData, ...]
    currency: str
    shipping_minor: int
    tax_minor: int
    cadence: CadenceData | None
    timezone: str


@dataclass(frozen=True)
class NewSubscription:
    """A CreateSubscription request; None where the caller left a message out."""

    idempotency_key: str
    plan_id: str
    channel: str
    subscriber: SubscriberData | None
    delivery_address: Address | None
    delivery_method: str
    payment_method: PaymentMethodData | None
    start_at: datetime


def _violations_or_raise(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def cadence_violations(
    path: str, cadence: CadenceData | None, *, minutes_allowed: bool
) -> list[FieldViolation]:
    """The rules of a cadence: one kind, its value in range, a time of day "HH:MM"."""
    if cadence is None:
        return [FieldViolation(path, "is required: monthly_on_day, weeks or minutes")]
    out: list[FieldViolation] = []
    if cadence.kind == MONTHLY:
        out += day_violations(f"{path}.monthly_on_day", cadence.value)
    elif cadence.kind == WEEKLY and not 1 <= cadence.value <= MAX_WEEKS:
        out.append(FieldViolation(f"{path}.weeks", f"must be 1 to {MAX_WEEKS}"))
    elif cadence.kind == MINUTES:
        if not minutes_allowed:
            out.append(
                FieldViolation(
                    f"{path}.minutes",
                    "minute cadences are off in this deployment (OMS_SUBSCRIPTION_MINUTE_CADENCE)",
                )
            )
        elif not 1 <= cadence.value <= MAX_MINUTES:
            out.append(FieldViolation(f"{path}.minutes", f"must be 1 to {MAX_MINUTES}"))
    if not _LOCAL_TIME.match(cadence.at_local_time):
        out.append(FieldViolation(f"{path}.at_local_time", 'must be a time of day "HH:MM"'))
    return out


def day_violations(path: str, day: int) -> list[FieldViolation]:
    """A monthly cycle day: 1 to 28, or 31 for the last day of each month (29 and 30 are not
    in every month)."""
    if cadence.valid_cycle_day(day):
        return []
    return [
        FieldViolation(
            path,
            f"must be 1 to {cadence.MAX_DAY_IN_EVERY_MONTH}, or {cadence.LAST_DAY} (the last day)",
        )
    ]


def timezone_violations(path: str, name: str) -> list[FieldViolation]:
    """An IANA timezone this machine knows."""
    if not name.strip():
        return [FieldViolation(path, 'is required, e.g. "Europe/Berlin"')]
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [FieldViolation(path, f"{limits.echo(name)} is not an IANA timezone")]
    return []


def validate_plan(plan: NewPlan, *, minutes_allowed: bool) -> None:
    """Raise InvalidArgument naming every rule the plan breaks."""
    out = required("idempotency_key", plan.idempotency_key)
    out += required("name", plan.name) + too_long("name", plan.name, MAX_NAME_LENGTH)
    if not plan.items:
        out.append(FieldViolation("items", "at least one item"))
    skus: set[str] = set()
    for i, item in enumerate(plan.items):
        out += required(f"items[{i}].sku", item.sku)
        if item.sku in skus:
            out.append(FieldViolation(f"items[{i}].sku", "appears more than once"))
        skus.add(item.sku)
        if item.quantity <= 0:
            out.append(FieldViolation(f"items[{i}].quantity", "must be > 0"))
        if item.unit_price_minor < 0:
            out.append(FieldViolation(f"items[{i}].unit_price_minor", "must not be negative"))
    if not money.is_known_currency(plan.currency):
        out.append(
            FieldViolation("currency", f"{limits.echo(plan.currency)} is not an ISO 4217 code")
        )
    for name, value in (("shipping_minor", plan.shipping_minor), ("tax_minor", plan.tax_minor)):
        if value < 0:
            out.append(FieldViolation(name, "must not be negative"))
    out += cadence_violations("cadence", plan.cadence, minutes_allowed=minutes_allowed)
    out += timezone_violations("timezone", plan.timezone)
    _violations_or_raise(out)


def new_plan(plan: NewPlan, plan_id: str, now: datetime) -> Plan:
    """The plan a valid request makes."""
    assert plan.cadence is not None
    return Plan(
        PlanData(
            plan_id=plan_id,
            name=plan.name.strip(),
            items=list(plan.items),
            currency=plan.currency,
            cadence=plan.cadence,
            timezone=plan.timezone,
            shipping_minor=plan.shipping_minor,
            tax_minor=plan.tax_minor,
        ),
        now,
    )


def address_violations(path: str, address: Address | None) -> list[FieldViolation]:
    """SubmitOrder's rules for a delivery address."""
    if address is None:
        return [FieldViolation(path, "is required")]
    out = required(f"{path}.line1", address.line1)
    out += required(f"{path}.city", address.city)
    out += required(f"{path}.postal_code", address.postal_code)
    out += too_long(f"{path}.postal_code", address.postal_code, MAX_POSTAL_CODE_LENGTH)
    if not address.country_code:
        out.append(FieldViolation(f"{path}.country_code", "is required"))
    else:
        out += limits.country_code_violations(f"{path}.country_code", address.country_code)
    return out


def payment_method_violations(path: str, method: PaymentMethodData | None) -> list[FieldViolation]:
    """SubmitOrder's rules for a payment method: a known type and a token (or an
    authorization the storefront already holds)."""
    if method is None:
        return [FieldViolation(path, "is required")]
    out: list[FieldViolation] = []
    if method.type not in PAYMENT_METHOD_TYPES:
        kinds = ", ".join(PAYMENT_METHOD_TYPES)
        out.append(FieldViolation(f"{path}.type", f"must be one of {kinds}"))
    if not method.token.strip() and not method.preauthorization_ref.strip():
        out.append(FieldViolation(f"{path}.token", "token or preauthorization_ref is required"))
    out += too_long(f"{path}.token", method.token, MAX_TOKEN_LENGTH)
    return out


def validate_subscription(request: NewSubscription) -> None:
    """Raise InvalidArgument naming every rule the request breaks (the plan's existence is
    the store's to say)."""
    out = required("idempotency_key", request.idempotency_key)
    out += required("plan_id", request.plan_id)
    if request.channel not in CHANNELS:
        out.append(FieldViolation("channel", f"must be one of {', '.join(CHANNELS)}"))
    subscriber = request.subscriber
    if subscriber is None or not subscriber.email.strip():
        out.append(FieldViolation("subscriber.email", "is required"))
    elif not _EMAIL.match(subscriber.email.strip()):
        out.append(FieldViolation("subscriber.email", "must be an email address"))
    out += address_violations("delivery_address", request.delivery_address)
    out += payment_method_violations("payment_method", request.payment_method)
    _violations_or_raise(out)


def new_subscription(request: NewSubscription, subscription_id: str, now: datetime) -> Subscription:
    """The subscription a valid request makes: active, its first cycle still to schedule."""
    assert request.subscriber is not None
    assert request.delivery_address is not None
    assert request.payment_method is not None
    return Subscription(
        subscription_id=subscription_id,
        plan_id=request.plan_id,
        channel=request.channel,
        subscriber=replace(request.subscriber, email=request.subscriber.email.strip()),
        delivery_address=request.delivery_address,
        delivery_method=request.delivery_method,
        payment_method=request.payment_method,
        status=ACTIVE,
        start_at=max(request.start_at, now),
        created_at=now,
        updated_at=now,
    )


def created_record(subscription: Subscription, plan: PlanData, actor: str) -> ChangeRecord:
    """The first entry of a subscription's history."""
    return ChangeRecord(
        change_id=f"{subscription.subscription_id}:created",
        kind=CREATED,
        actor=actor,
        summary=f"Subscribed to {plan.name} from {subscription.start_at.date().isoformat()}",
        effective_cycle=1,
        at=subscription.created_at,
    )


def workflow_input(
    subscription: Subscription, plan: PlanData, spread_seconds: int
) -> SubscriptionInput:
    """What the subscription's workflow starts with."""
    return SubscriptionInput(
        subscription_id=subscription.subscription_id,
        plan=plan,
        channel=subscription.channel,
        subscriber=subscription.subscriber,
        delivery_address=subscription.delivery_address,
        delivery_method=subscription.delivery_method,
        payment_method=subscription.payment_method,
        start_at=subscription.start_at.isoformat(),
        spread_seconds=max(0, spread_seconds),
    )


# ---- changes ----------------------------------------------------------------------------------


def validate_change(
    change: SubscriptionChangeRequest | None, *, preview: bool, current_plan: PlanData
) -> None:
    """Raise InvalidArgument naming every rule a change breaks (`change` None: none given).
    CHANGE_PLAN's plan is read by the caller; it must be in the subscription's currency."""
    out: list[FieldViolation] = []
    if not preview:
        out += required("idempotency_key", change.idempotency_key if change else "")
    if change is None:
        out.append(
            FieldViolation(
                "change",
                "is required: pause, resume, skip, change_plan, change_address, "
                "change_payment_method, change_cycle_day or cancel",
            )
        )
        _violations_or_raise(out)
        return
    out += too_long("reason", change.reason, MAX_REASON_LENGTH)
    if change.kind == SKIP and change.cycle < 0:
        out.append(FieldViolation("skip.cycle", "must be 0 (the next cycle) or a cycle number"))
    plan = change.plan if change.kind == CHANGE_PLAN else None
    if plan is not None and plan.currency != current_plan.currency:
        out.append(
            FieldViolation(
                "change_plan.plan_id",
                f"must be a plan in {current_plan.currency} (the subscription's currency), "
                f"not {plan.currency}",
            )
        )
    if change.kind == CHANGE_ADDRESS:
        out += address_violations("change_address.delivery_address", change.delivery_address)
    if change.kind == CHANGE_PAYMENT_METHOD:
        out += payment_method_violations(
            "change_payment_method.payment_method", change.payment_method
        )
    if change.kind == CHANGE_CYCLE_DAY:
        out += day_violations("change_cycle_day.day", change.day)
        if current_plan.cadence.kind != MONTHLY:
            out.append(
                FieldViolation("change_cycle_day.day", "only a monthly plan has a cycle day")
            )
    _violations_or_raise(out)


def change_key_for(subscription_id: str, idempotency_key: str) -> str:
    """The stored idempotency key of a change, and its Update id: a retry reaches the same
    Update, and the same key on another subscription is another change."""
    return f"subscription_change:{subscription_id}:{idempotency_key}"


# ---- listing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    """A validated ListSubscriptions: filters (empty matches all), page size, cursor, and the
    channels the caller may see (None: every channel)."""

    shopper_email: str
    plan_id: str
    status: str
    page_size: int
    after: Cursor | None
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Page:
    """One page, newest first, and where the next starts (None: this is the last)."""

    subscriptions: tuple[Subscription, ...]
    next_cursor: Cursor | None = None


def _filters_digest(shopper_email: str, plan_id: str, status: str) -> str:
    text = json.dumps([shopper_email, plan_id, status])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def list_query(
    shopper_email: str,
    plan_id: str,
    status: str,
    page_size: int,
    page_token: str,
    channels: Sequence[str] | None,
) -> ListQuery:
    """Validate a listing request; a page token is good only with the filters it came with.
    page_size 0 means the default; above the maximum it is lowered to it."""
    out: list[FieldViolation] = []
    if status and status not in STATUSES:
        out.append(FieldViolation("status", f"must be one of {', '.join(STATUSES)}"))
    if page_size < 0:
        out.append(FieldViolation("page_size", "must not be negative"))
    email = shopper_email.strip().lower()
    after = None
    if page_token:
        after = _cursor_of(page_token, _filters_digest(email, plan_id, status), out)
    _violations_or_raise(out)
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return ListQuery(
        email, plan_id, status, size, after, None if channels is None else tuple(channels)
    )


def _cursor_of(token: str, digest: str, out: list[FieldViolation]) -> Cursor | None:
    """The cursor in a token this listing issued for these same filters (the token form every
    servicing listing shares, domain/listing.py)."""
    try:
        return decode_page_token(token, digest)
    except ValueError:
        out.append(
            FieldViolation("page_token", "is not a token from a previous page of this same listing")
        )
        return None


def page_of(query: ListQuery, rows: Sequence[Subscription]) -> Page:
    """A page from up to page_size + 1 rows (the extra one says another page follows)."""
    shown = tuple(rows[: query.page_size])
    if len(rows) <= query.page_size or not shown:
        return Page(shown)
    last = shown[-1]
    return Page(shown, Cursor(last.created_at, last.subscription_id))


def next_page_token(query: ListQuery, page: Page) -> str:
    """The opaque token of the page after `page` ("" when it is the last)."""
    if page.next_cursor is None:
        return ""
    digest = _filters_digest(query.shopper_email, query.plan_id, query.status)
    return encode_page_token(page.next_cursor, digest)


# ---- the workflow's progress ------------------------------------------------------------------


def validate_progress(idempotency_key: str, progress: Progress) -> None:
    """Raise InvalidArgument naming every rule a progress report breaks."""
    s = progress.subscription
    out = required("idempotency_key", idempotency_key)
    out += required("subscription.subscription_id", s.subscription_id)
    out += required("subscription.plan_id", s.plan_id)
    if s.status not in STATUSES:
        out.append(FieldViolation("subscription.status", f"must be one of {', '.join(STATUSES)}"))
    if s.next_cycle < 1:
        out.append(FieldViolation("subscription.next_cycle", "must be >= 1"))
    for i, cycle in enumerate(progress.cycles):
        if cycle.number < 1:
            out.append(FieldViolation(f"cycles[{i}].number", "must be >= 1"))
        if not cycle.status:
            out.append(FieldViolation(f"cycles[{i}].status", "must be set"))
        if cycle.amount_minor and not money.is_known_currency(cycle.currency):
            out.append(FieldViolation(f"cycles[{i}].amount.currency", "is not an ISO 4217 code"))
    if progress.change is not None:
        out += required("change.change_id", progress.change.change_id)
        out += required("change.kind", progress.change.kind)
        out += required("change.actor", progress.change.actor)
    _violations_or_raise(out)
