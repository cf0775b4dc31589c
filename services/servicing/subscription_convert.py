"""oms.subscriptions.v1 wire types to and from servicing's subscription records and the
subscription workflow's payloads: pure conversions, enums by explicit tables."""

from __future__ import annotations

from datetime import datetime

from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2
from oms.subscriptions.v1 import subscriptions_pb2 as pb

from oms_platform import wire
from oms_platform.redaction import mask_token
from oms_platform.wire import money_to_pb, timestamp_from_datetime, timestamp_to_datetime
from services.servicing.domain import subscriptions as sd
from workflows import subscription_types as st
from workflows import subscription_wire
from workflows.types import Address, PaymentMethodData

STATUS_TO_PB = subscription_wire.STATUS_TO_PB
STATUS_TO_DOMAIN = {v: k for k, v in STATUS_TO_PB.items()}
CYCLE_STATUS_TO_PB = subscription_wire.CYCLE_STATUS_TO_PB
CYCLE_STATUS_TO_DOMAIN = {v: k for k, v in CYCLE_STATUS_TO_PB.items()}
PAYMENT_TYPE_TO_DOMAIN = wire.PAYMENT_TYPE_TO_DOMAIN
PAYMENT_TYPE_TO_PB = wire.PAYMENT_TYPE_TO_PB
# Cadence's oneof fields and the workflow's kinds.
CADENCE_KINDS = {"monthly_on_day": st.MONTHLY, "weeks": st.WEEKLY, "minutes": st.MINUTES}
CADENCE_FIELDS = {v: k for k, v in CADENCE_KINDS.items()}
# ChangeSubscriptionRequest's oneof fields are the change kinds' names.
CHANGE_FIELDS = {
    "pause": st.PAUSE,
    "resume": st.RESUME,
    "skip": st.SKIP,
    "change_plan": st.CHANGE_PLAN,
    "change_address": st.CHANGE_ADDRESS,
    "change_payment_method": st.CHANGE_PAYMENT_METHOD,
    "change_cycle_day": st.CHANGE_CYCLE_DAY,
    "cancel": st.CANCEL,
}


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at is not None else ""


def _from_iso(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _ts(message: object, name: str, path: str) -> datetime | None:
    """An optional Timestamp field as a datetime (None when unset)."""
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    return timestamp_to_datetime(getattr(message, name), path)


# ---- plans ------------------------------------------------------------------------------------


def cadence_to_domain(cadence: pb.Cadence, given: bool) -> st.CadenceData | None:
    """The workflow's cadence; None when none was given."""
    which = cadence.WhichOneof("every") if given else None
    if which is None:
        return None
    return st.CadenceData(
        CADENCE_KINDS[which],
        getattr(cadence, which),
        cadence.at_local_time or sd.DEFAULT_AT_LOCAL_TIME,
    )


def new_plan_to_domain(request: pb.CreatePlanRequest) -> sd.NewPlan:
    """A CreatePlan request as the domain checks it."""
    return sd.NewPlan(
        idempotency_key=request.idempotency_key,
        name=request.name,
        items=tuple(
            st.PlanItemData(i.sku, i.name, i.quantity, i.unit_price_minor) for i in request.items
        ),
        currency=request.currency,
        shipping_minor=request.shipping_minor,
        tax_minor=request.tax_minor,
        cadence=cadence_to_domain(request.cadence, request.HasField("cadence")),
        timezone=request.timezone,
    )


def plan_to_pb(plan: st.PlanData, created_at: datetime | None = None) -> pb.Plan:
    """The wire Plan."""
    cadence = pb.Cadence(at_local_time=plan.cadence.at_local_time)
    setattr(cadence, CADENCE_FIELDS[plan.cadence.kind], plan.cadence.value)
    return pb.Plan(
        plan_id=plan.plan_id,
        name=plan.name,
        items=[
            pb.PlanItem(
                sku=i.sku, name=i.name, quantity=i.quantity, unit_price_minor=i.unit_price_minor
            )
            for i in plan.items
        ],
        currency=plan.currency,
        price_per_cycle=money_to_pb(plan.price_minor(), plan.currency),
        shipping_minor=plan.shipping_minor,
        tax_minor=plan.tax_minor,
        cadence=cadence,
        timezone=plan.timezone,
        created_at=timestamp_from_datetime(created_at),
    )


# ---- subscriptions ----------------------------------------------------------------------------


def address_to_domain(address: common_pb2.PostalAddress) -> Address:
    """The workflow payload's address."""
    return Address(
        line1=address.line1,
        city=address.city,
        postal_code=address.postal_code,
        country_code=address.country_code,
        line2=address.line2,
        region=address.region,
    )


def payment_method_to_domain(method: payments_pb2.PaymentMethod) -> PaymentMethodData:
    """The workflow payload's payment method ("" type when unset)."""
    return PaymentMethodData(
        type=PAYMENT_TYPE_TO_DOMAIN.get(method.type, ""),
        token=method.token,
        preauthorization_ref=method.preauthorization_ref,
    )


def payment_method_to_pb(method: PaymentMethodData, *, mask: bool) -> payments_pb2.PaymentMethod:
    """The wire payment method, its token masked to its last four when `mask`."""
    return payments_pb2.PaymentMethod(
        type=PAYMENT_TYPE_TO_PB.get(method.type, payments_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED),
        token=mask_token(method.token) if mask else method.token,
        preauthorization_ref=method.preauthorization_ref,
    )


def new_subscription_to_domain(
    request: pb.CreateSubscriptionRequest, now: datetime
) -> sd.NewSubscription:
    """A CreateSubscription request as the domain checks it (start_at unset: now)."""
    s = request.subscriber
    return sd.NewSubscription(
        idempotency_key=request.idempotency_key,
        plan_id=request.plan_id,
        channel=request.channel,
        subscriber=(
            st.SubscriberData(s.email, s.name, s.phone, s.channel_customer_id)
            if request.HasField("subscriber")
            else None
        ),
        delivery_address=(
            address_to_domain(request.delivery_address)
            if request.HasField("delivery_address")
            else None
        ),
        delivery_method=request.delivery_method,
        payment_method=(
            payment_method_to_domain(request.payment_method)
            if request.HasField("payment_method")
            else None
        ),
        start_at=_ts(request, "start_at", "start_at") or now,
    )


def subscription_to_pb(s: sd.Subscription, *, mask: bool) -> pb.Subscription:
    """The wire Subscription (its payment token masked when `mask`)."""
    return pb.Subscription(
        subscription_id=s.subscription_id,
        plan_id=s.plan_id,
        channel=s.channel,
        subscriber=pb.Subscriber(
            email=s.subscriber.email,
            name=s.subscriber.name,
            phone=s.subscriber.phone,
            channel_customer_id=s.subscriber.channel_customer_id,
        ),
        delivery_address=wire.postal_address_to_pb(s.delivery_address),
        delivery_method=s.delivery_method,
        payment_method=payment_method_to_pb(s.payment_method, mask=mask),
        status=STATUS_TO_PB.get(s.status, pb.SUBSCRIPTION_STATUS_UNSPECIFIED),
        start_at=timestamp_from_datetime(s.start_at),
        next_cycle=s.next_cycle,
        next_cycle_at=timestamp_from_datetime(s.next_cycle_at),
        paused_until=timestamp_from_datetime(s.paused_until),
        skipped_cycles=list(s.skipped_cycles),
        pending_plan_id=s.pending_plan_id,
        pending_plan_from_cycle=s.pending_plan_from_cycle,
        cancel_at_period_end=s.cancel_at_period_end,
        suspended_reason=s.suspended_reason,
        created_at=timestamp_from_datetime(s.created_at),
        updated_at=timestamp_from_datetime(s.updated_at),
    )


def with_view(s: sd.Subscription, view: st.SubscriptionView) -> sd.Subscription:
    """The stored subscription as the workflow's view says it is (or would be)."""
    return sd.Subscription(
        subscription_id=s.subscription_id,
        plan_id=view.plan.plan_id,
        channel=s.channel,
        subscriber=s.subscriber,
        delivery_address=view.delivery_address or s.delivery_address,
        delivery_method=view.delivery_method if view.delivery_address else s.delivery_method,
        payment_method=view.payment_method or s.payment_method,
        status=view.status,
        start_at=s.start_at,
        created_at=s.created_at,
        updated_at=s.updated_at,
        next_cycle=view.next_cycle,
        next_cycle_at=_from_iso(view.next_cycle_at),
        paused_until=_from_iso(view.paused_until),
        skipped_cycles=tuple(view.skipped_cycles),
        pending_plan_id=view.pending_plan.plan_id if view.pending_plan else "",
        pending_plan_from_cycle=view.pending_plan_from_cycle,
        cancel_at_period_end=view.cancel_at_period_end,
        suspended_reason=view.suspended_reason,
    )


def cycle_to_pb(c: sd.Cycle) -> pb.Cycle:
    """The wire Cycle."""
    return pb.Cycle(
        number=c.number,
        due_at=timestamp_from_datetime(c.due_at),
        status=CYCLE_STATUS_TO_PB.get(c.status, pb.CYCLE_STATUS_UNSPECIFIED),
        order_id=c.order_id,
        plan_id=c.plan_id,
        amount=money_to_pb(c.amount_minor, c.currency),
        payment_attempts=c.payment_attempts,
        next_payment_retry_at=timestamp_from_datetime(c.next_payment_retry_at),
        decline_reason=c.decline_reason,
        updated_at=timestamp_from_datetime(c.updated_at),
    )


def change_record_to_pb(c: sd.ChangeRecord) -> pb.SubscriptionChangeRecord:
    """The wire change record."""
    return pb.SubscriptionChangeRecord(
        change_id=c.change_id,
        kind=c.kind,
        actor=c.actor,
        reason=c.reason,
        summary=c.summary,
        effective_cycle=c.effective_cycle,
        at=timestamp_from_datetime(c.at),
    )


# ---- changes ----------------------------------------------------------------------------------


def change_to_domain(
    request: pb.ChangeSubscriptionRequest, actor: str
) -> st.SubscriptionChangeRequest | None:
    """The workflow's change request (CHANGE_PLAN's plan still to fill in from the table);
    None when the request names no change."""
    which = request.WhichOneof("change")
    if which is None:
        return None
    change = st.SubscriptionChangeRequest(
        kind=CHANGE_FIELDS[which],
        actor=actor,
        idempotency_key=request.idempotency_key,
        reason=request.reason,
    )
    if which == "pause":
        change.until = _iso(_ts(request.pause, "until", "pause.until"))
    elif which == "skip":
        change.cycle = request.skip.cycle
    elif which == "change_address":
        if request.change_address.HasField("delivery_address"):
            change.delivery_address = address_to_domain(request.change_address.delivery_address)
        change.delivery_method = request.change_address.delivery_method
    elif which == "change_payment_method":
        if request.change_payment_method.HasField("payment_method"):
            change.payment_method = payment_method_to_domain(
                request.change_payment_method.payment_method
            )
    elif which == "change_cycle_day":
        change.day = request.change_cycle_day.day
    elif which == "cancel":
        change.at_period_end = request.cancel.at_period_end
    return change


def change_result_to_pb(
    result: st.SubscriptionChangeResult, stored: sd.Subscription, currency: str, *, mask: bool
) -> pb.ChangeSubscriptionResponse:
    """The answer to ChangeSubscription: the subscription as the workflow holds it after the
    change (or would), what the change does and the next cycle's amount."""
    return pb.ChangeSubscriptionResponse(
        subscription=subscription_to_pb(with_view(stored, result.subscription), mask=mask),
        summary=result.summary,
        effective_cycle=result.effective_cycle,
        next_cycle_amount=money_to_pb(result.next_cycle_amount_minor, currency),
    )


# ---- progress ---------------------------------------------------------------------------------


def progress_to_domain(request: pb.RecordSubscriptionProgressRequest, now: datetime) -> sd.Progress:
    """What the workflow reported, as servicing records it (unset times stay unset)."""
    s = request.subscription
    subscription = sd.Subscription(
        subscription_id=s.subscription_id,
        plan_id=s.plan_id,
        channel=s.channel,
        subscriber=st.SubscriberData(s.subscriber.email),
        delivery_address=address_to_domain(s.delivery_address),
        delivery_method=s.delivery_method,
        payment_method=payment_method_to_domain(s.payment_method),
        status=STATUS_TO_DOMAIN.get(s.status, ""),
        start_at=now,
        created_at=now,
        updated_at=now,
        next_cycle=s.next_cycle,
        next_cycle_at=_ts(s, "next_cycle_at", "subscription.next_cycle_at"),
        paused_until=_ts(s, "paused_until", "subscription.paused_until"),
        skipped_cycles=tuple(s.skipped_cycles),
        pending_plan_id=s.pending_plan_id,
        pending_plan_from_cycle=s.pending_plan_from_cycle,
        cancel_at_period_end=s.cancel_at_period_end,
        suspended_reason=s.suspended_reason,
    )
    cycles = tuple(
        sd.Cycle(
            number=c.number,
            status=CYCLE_STATUS_TO_DOMAIN.get(c.status, ""),
            due_at=_ts(c, "due_at", f"cycles[{i}].due_at"),
            updated_at=_ts(c, "updated_at", f"cycles[{i}].updated_at") or now,
            order_id=c.order_id,
            plan_id=c.plan_id,
            amount_minor=c.amount.amount_minor,
            currency=c.amount.currency,
            payment_attempts=c.payment_attempts,
            next_payment_retry_at=_ts(
                c, "next_payment_retry_at", f"cycles[{i}].next_payment_retry_at"
            ),
            decline_reason=c.decline_reason,
        )
        for i, c in enumerate(request.cycles)
    )
    change = None
    if request.HasField("change"):
        r = request.change
        change = sd.ChangeRecord(
            change_id=r.change_id,
            kind=r.kind,
            actor=r.actor,
            summary=r.summary,
            effective_cycle=r.effective_cycle,
            at=_ts(r, "at", "change.at") or now,
            reason=r.reason,
        )
    return sd.Progress(subscription, cycles, change)
