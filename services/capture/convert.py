"""Pure conversions between capture's wire types, its domain and the workflow's payloads.

Enums are mapped by explicit tables; a value missing from a table is "not set".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from oms.capture.v1 import capture_pb2 as pb
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2

from oms_platform import limits, request_limits, wire
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.redaction import mask_token
from oms_platform.wire import (
    date_from_pb,
    day_to_pb,
    money_from_pb,
    money_to_pb,
    postal_address_from_pb,
    postal_address_to_pb,
    timestamp_from_datetime,
    timestamp_to_datetime,
)
from services.capture import domain, store
from workflows import types as wf

CHANNEL_TO_DOMAIN = wire.CHANNEL_TO_DOMAIN
CHANNEL_TO_PB = wire.CHANNEL_TO_PB

STATUS_TO_DOMAIN: dict[int, str] = {
    pb.ORDER_STATUS_PENDING: wf.PENDING,
    pb.ORDER_STATUS_PROCESSING: wf.PROCESSING,
    pb.ORDER_STATUS_AUTHORIZED: wf.AUTHORIZED,
    pb.ORDER_STATUS_ALLOCATED: wf.ALLOCATED,
    pb.ORDER_STATUS_PARTIALLY_SHIPPED: wf.PARTIALLY_SHIPPED,
    pb.ORDER_STATUS_SHIPPED: wf.SHIPPED,
    pb.ORDER_STATUS_FULFILLED: wf.FULFILLED,
    pb.ORDER_STATUS_ON_HOLD: wf.ON_HOLD,
    pb.ORDER_STATUS_CANCELED: wf.CANCELED,
    pb.ORDER_STATUS_PAST_DUE: wf.PAST_DUE,
}
STATUS_TO_PB: dict[str, int] = {v: k for k, v in STATUS_TO_DOMAIN.items()}

SHOPPER_KIND_TO_DOMAIN: dict[int, str] = {
    pb.SHOPPER_KIND_UNSPECIFIED: "person",
    pb.SHOPPER_KIND_PERSON: "person",
    pb.SHOPPER_KIND_BUSINESS: "business",
}
SHOPPER_KIND_TO_PB: dict[str, int] = {
    "person": pb.SHOPPER_KIND_PERSON,
    "business": pb.SHOPPER_KIND_BUSINESS,
}

PAYMENT_TYPE_TO_DOMAIN = wire.PAYMENT_TYPE_TO_DOMAIN
PAYMENT_TYPE_TO_PB = wire.PAYMENT_TYPE_TO_PB


# ---- wire -> domain ---------------------------------------------------------------------


def _money(message: Any, field: str) -> domain.Money | None:
    if not message.HasField(field):
        return None
    return money_from_pb(getattr(message, field))


def _adjustment_request(a: pb.Adjustment) -> domain.AdjustmentRequest:
    return domain.AdjustmentRequest(
        code=a.code, description=a.description, amount=_money(a, "amount")
    )


def submission_from_pb(request: pb.SubmitOrderRequest) -> domain.OrderSubmission:
    """The domain's view of a SubmitOrderRequest."""
    shopper = None
    if request.HasField("shopper"):
        s = request.shopper
        shopper = domain.ShopperDetails(
            kind=SHOPPER_KIND_TO_DOMAIN.get(s.kind, "person"),
            channel_customer_id=s.channel_customer_id,
            email=s.email,
            name=s.name,
            phone=s.phone,
            company=s.company,
        )
    payment = (
        _payment_method(request.payment_method) if request.HasField("payment_method") else None
    )
    return domain.OrderSubmission(
        idempotency_key=request.idempotency_key,
        channel=_enum_name(CHANNEL_TO_DOMAIN, request.channel),
        channel_order_ref=request.channel_order_ref,
        shopper=shopper,
        currency=request.currency,
        delivery_groups=tuple(
            domain.DeliveryGroupRequest(
                ref=g.ref,
                recipient_name=g.recipient_name,
                address=postal_address_from_pb(g.address) if g.HasField("address") else None,
                delivery_method=g.delivery_method,
                shipping_charge=_money(g, "shipping_charge"),
                pickup_location_id=g.pickup_location_id,
            )
            for g in request.delivery_groups
        ),
        lines=tuple(
            domain.LineRequest(
                delivery_group_ref=line.delivery_group_ref,
                sku=line.sku,
                name=line.name,
                quantity=line.quantity,
                unit_price=_money(line, "unit_price"),
                discounts=tuple(_adjustment_request(d) for d in line.discounts),
                taxes=tuple(
                    domain.TaxRequest(name=t.name, amount=_money(t, "amount")) for t in line.taxes
                ),
            )
            for line in request.lines
        ),
        discounts=tuple(_adjustment_request(d) for d in request.discounts),
        grand_total=_money(request, "grand_total"),
        payment_method=payment,
        additional_payment_methods=tuple(
            _payment_method(m) for m in request.additional_payment_methods
        ),
        billing_address=(
            postal_address_from_pb(request.billing_address)
            if request.HasField("billing_address")
            else None
        ),
        subscription_id=request.subscription_id,
        subscription_cycle=request.subscription_cycle,
        reservation_id=request.reservation_id,
    )


def _payment_method(p: payments_pb2.PaymentMethod) -> domain.PaymentMethod:
    return domain.PaymentMethod(
        type=_enum_name(PAYMENT_TYPE_TO_DOMAIN, p.type),
        token=p.token,
        preauthorization_ref=p.preauthorization_ref,
    )


def import_options_from_pb(request: pb.ImportOrdersRequest) -> domain.ImportOptions:
    """How one imported order is to be stored; an unknown status is kept so the domain can
    refuse it."""
    status = ""
    if request.historical_status != pb.ORDER_STATUS_UNSPECIFIED:
        status = STATUS_TO_DOMAIN.get(request.historical_status, "unknown")
    return domain.ImportOptions(
        historical=request.historical,
        historical_status=status,
        placed_at=(
            timestamp_to_datetime(request.placed_at, "placed_at")
            if request.HasField("placed_at")
            else None
        ),
    )


def _enum_name(table: dict[int, str], value: int) -> str:
    """The domain's name for an enum number: "" when unspecified, and for a number this build
    does not know (a newer client's) `unknown(<n>)`, which validation refuses by name."""
    if value == 0:
        return ""
    return table.get(value, f"unknown({value})")


def filter_from_pb(request: pb.ListOrdersRequest, today: date) -> domain.OrderFilter:
    """ListOrders' filters (`late` counted at `as_of`, or `today`); an unknown status is
    refused naming its position."""
    statuses: list[str] = []
    for i, status in enumerate(request.statuses):
        if status == pb.ORDER_STATUS_UNSPECIFIED:
            continue
        if status not in STATUS_TO_DOMAIN:
            raise InvalidArgument([FieldViolation(f"statuses[{i}]", "unknown order status")])
        statuses.append(STATUS_TO_DOMAIN[status])
    return domain.OrderFilter(
        statuses=tuple(statuses),
        channel=_known_channel(request.channel),
        shopper_id=request.shopper_id,
        created_from=(
            timestamp_to_datetime(request.created_from, "created_from")
            if request.HasField("created_from")
            else None
        ),
        created_to=(
            timestamp_to_datetime(request.created_to, "created_to")
            if request.HasField("created_to")
            else None
        ),
        sku=request.sku,
        late_before=(
            domain.late_as_of(date_from_pb(request.as_of, "as_of"), today) if request.late else None
        ),
    )


def _known_channel(value: int) -> str:
    # A filter on a channel this build does not know would silently match every channel.
    if value and value not in CHANNEL_TO_DOMAIN:
        raise InvalidArgument([FieldViolation("channel", f"unknown channel number {value}")])
    return CHANNEL_TO_DOMAIN.get(value, "")


def line_changes_from_pb(
    changes: Any,
) -> list[domain.LineQuantityChange]:
    """RecordOrderProgress's bucket deltas."""
    return [
        domain.LineQuantityChange(
            order_line_id=c.order_line_id,
            delta=domain.Quantities(
                ordered=c.delta.ordered,
                canceled=c.delta.canceled,
                allocated=c.delta.allocated,
                fulfilled=c.delta.fulfilled,
                return_initiated=c.delta.return_initiated,
                returned=c.delta.returned,
            ),
        )
        for c in changes
    ]


def delivery_promises_from_pb(
    promises: Sequence[pb.DeliveryPromise],
) -> list[domain.DeliveryPromise]:
    """RecordOrderProgress's delivery groups' new promises; an empty date removes one."""
    out: list[domain.DeliveryPromise] = []
    violations: list[FieldViolation] = []
    for i, promise in enumerate(promises):
        where = f"delivery_promises[{i}]"
        if not promise.delivery_group_id:
            violations.append(FieldViolation(f"{where}.delivery_group_id", "is required"))
        day = None
        try:
            day = date_from_pb(promise.promised_delivery_date, f"{where}.promised_delivery_date")
        except InvalidArgument as invalid:
            violations += invalid.violations
        out.append(domain.DeliveryPromise(promise.delivery_group_id, day))
    if violations:
        raise InvalidArgument(violations)
    return out


def group_addresses_from_pb(
    changed: Sequence[pb.DeliveryGroupAddress],
) -> list[tuple[str, domain.PostalAddress]]:
    """RecordOrderProgress's new delivery addresses, checked as SubmitOrder checks one."""
    return domain.group_address_changes(
        [(group.delivery_group_id, postal_address_from_pb(group.address)) for group in changed]
    )


def line_additions_from_pb(added: Any) -> list[domain.LineAddition]:
    """RecordOrderProgress's items added before fulfillment."""
    return [
        domain.LineAddition(
            order_line_id=a.order_line_id,
            quantity=a.quantity,
            tax_minor=a.tax.amount_minor,
            currency=a.tax.currency or a.unit_price.currency,
            new_line=a.new_line,
            delivery_group_id=a.delivery_group_id,
            sku=a.sku,
            name=a.name,
            unit_price_minor=a.unit_price.amount_minor,
        )
        for a in added
    ]


def event_from_pb(event: common_pb2.TimelineEvent) -> domain.TimelineEvent:
    """A reported timeline event; `at` None (now) when unset."""
    return domain.TimelineEvent(
        kind=event.kind,
        summary=event.summary,
        actor=event.actor,
        at=timestamp_to_datetime(event.at, "event.at") if event.HasField("at") else None,
    )


# ---- domain -> wire ---------------------------------------------------------------------


def _payment_method_pb(m: domain.PaymentMethod) -> payments_pb2.PaymentMethod:
    return payments_pb2.PaymentMethod(
        type=PAYMENT_TYPE_TO_PB.get(m.type, payments_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED),
        token=m.token,
        preauthorization_ref=m.preauthorization_ref,
    )


def _adjustment_pb(a: domain.Adjustment, currency: str) -> pb.Adjustment:
    return pb.Adjustment(
        code=a.code, description=a.description, amount=money_to_pb(a.amount_minor, currency)
    )


def order_to_pb(order: domain.Order) -> pb.Order:
    """An order on the wire."""
    c = order.currency
    s = order.shopper
    t = order.totals
    return pb.Order(
        order_id=order.order_id,
        channel=CHANNEL_TO_PB.get(order.channel, pb.CHANNEL_UNSPECIFIED),
        channel_order_ref=order.channel_order_ref,
        status=STATUS_TO_PB.get(order.status, pb.ORDER_STATUS_UNSPECIFIED),  # type: ignore[arg-type]
        shopper=pb.Shopper(
            shopper_id=s.shopper_id,
            kind=SHOPPER_KIND_TO_PB.get(s.kind, pb.SHOPPER_KIND_UNSPECIFIED),  # type: ignore[arg-type]
            channel_customer_id=s.channel_customer_id,
            email=s.email,
            name=s.name,
            phone=s.phone,
            company=s.company,
        ),
        currency=c,
        delivery_groups=[
            pb.DeliveryGroup(
                ref=g.ref,
                delivery_group_id=g.delivery_group_id,
                recipient_name=g.recipient_name,
                address=postal_address_to_pb(g.address),
                delivery_method=g.delivery_method,
                shipping_charge=money_to_pb(g.shipping_minor, c),
                pickup_location_id=g.pickup_location_id,
                promised_delivery_date=day_to_pb(g.promised_delivery_date),
            )
            for g in order.delivery_groups
        ],
        lines=[
            pb.OrderLine(
                order_line_id=line.order_line_id,
                delivery_group_ref=line.delivery_group_id,
                sku=line.sku,
                name=line.name,
                quantity=line.quantity,
                unit_price=money_to_pb(line.unit_price_minor, c),
                discounts=[_adjustment_pb(d, c) for d in line.discounts],
                taxes=[
                    pb.TaxLine(name=tax.name, amount=money_to_pb(tax.amount_minor, c))
                    for tax in line.taxes
                ],
                quantities=pb.LineQuantities(**line.quantities.as_dict()),
                total=money_to_pb(line.total_minor, c),
                allocated_order_discount=money_to_pb(line.allocated_order_discount_minor, c),
            )
            for line in order.lines
        ],
        discounts=[_adjustment_pb(d, c) for d in order.discounts],
        totals=pb.OrderTotals(
            subtotal=money_to_pb(t.subtotal_minor, c),
            discounts=money_to_pb(t.discount_minor, c),
            tax=money_to_pb(t.tax_minor, c),
            shipping=money_to_pb(t.shipping_minor, c),
            grand_total=money_to_pb(t.grand_total_minor, c),
        ),
        payment_method=_payment_method_pb(order.payment_method),
        created_at=timestamp_from_datetime(order.created_at),
        updated_at=timestamp_from_datetime(order.updated_at),
        additional_payment_methods=[
            _payment_method_pb(m) for m in order.additional_payment_methods
        ],
        billing_address=postal_address_to_pb(order.billing_address)
        if order.billing_address
        else None,
        fraud_reasons=list(order.fraud_reasons),
        subscription_id=order.subscription_id,
        subscription_cycle=order.subscription_cycle,
        promised_delivery_date=day_to_pb(order.promised_delivery_date),
    )


def event_to_pb(event: domain.TimelineEvent) -> common_pb2.TimelineEvent:
    """A timeline event on the wire."""
    return common_pb2.TimelineEvent(
        at=timestamp_from_datetime(event.at),
        kind=event.kind,
        summary=event.summary,
        actor=event.actor,
    )


def violations_to_pb(violations: list[FieldViolation]) -> list[pb.FieldViolation]:
    """Field violations as an import result carries them."""
    return [pb.FieldViolation(field=v.field, description=v.description) for v in violations]


def watch_update_to_pb(
    snapshot: bool, status: str, updated_at: datetime, events: list[domain.TimelineEvent]
) -> pb.WatchOrderResponse:
    """One message of WatchOrder."""
    return pb.WatchOrderResponse(
        snapshot=snapshot,
        status=STATUS_TO_PB.get(status, pb.ORDER_STATUS_UNSPECIFIED),  # type: ignore[arg-type]
        events=[event_to_pb(e) for e in events],
        updated_at=timestamp_from_datetime(updated_at),
    )


# ---- domain -> workflow -----------------------------------------------------------------


def _payment_method_data(m: domain.PaymentMethod) -> wf.PaymentMethodData:
    return wf.PaymentMethodData(
        type=m.type, token=m.token, preauthorization_ref=m.preauthorization_ref
    )


def lifecycle_input(order: domain.Order) -> wf.OrderLifecycleInput:
    """What the order's lifecycle workflow starts with."""
    return wf.OrderLifecycleInput(
        order_id=order.order_id,
        channel_order_ref=order.channel_order_ref,
        channel=order.channel,
        currency=order.currency,
        grand_total_minor=order.totals.grand_total_minor,
        payment_method=_payment_method_data(order.payment_method),
        additional_payment_methods=[
            _payment_method_data(m) for m in order.additional_payment_methods
        ],
        fraud_reasons=list(order.fraud_reasons),
        subscription_id=order.subscription_id,
        subscription_cycle=order.subscription_cycle,
        baseline=wf.LIFECYCLE_BASELINE,
        reservation_id=order.reservation_id,
        delivery_groups=[
            wf.LifecycleDeliveryGroup(
                delivery_group_id=g.delivery_group_id,
                address=wf.Address(
                    line1=g.address.line1,
                    city=g.address.city,
                    postal_code=g.address.postal_code,
                    country_code=g.address.country_code,
                    line2=g.address.line2,
                    region=g.address.region,
                ),
                shipping_minor=g.shipping_minor,
                delivery_method=g.delivery_method,
                pickup_location_id=g.pickup_location_id,
            )
            for g in order.delivery_groups
        ],
        lines=[
            wf.LifecycleLine(
                order_line_id=line.order_line_id,
                delivery_group_id=line.delivery_group_id,
                sku=line.sku,
                quantity=line.quantity,
                gross_minor=line.gross_minor,
                discount_minor=line.discount_minor,
                tax_minor=line.tax_minor,
            )
            for line in order.lines
        ],
    )


def lifecycle_payload(order: domain.Order) -> dict[str, Any]:
    """The lifecycle input as the JSON the outbox stores."""
    payload = _plain(lifecycle_input(order))
    assert isinstance(payload, dict)
    return payload


def _plain(value: Any) -> Any:
    """dataclasses.asdict without its deep copies and field lookups (the values are fresh):
    a fraction of the cost, on SubmitOrder's hot path."""
    names = getattr(value, "__dataclass_fields__", None)
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---- page tokens ------------------------------------------------------------------------


def encode_page_token(created_at: datetime, order_id: str) -> str:
    """An opaque cursor pointing after this order."""
    return limits.encode_page_token({"t": created_at.isoformat(), "id": order_id})


def decode_page_token(token: str) -> tuple[datetime, str] | None:
    """The (created_at, order_id) a cursor points after; None for the first page. Anything
    but a token ListOrders issued (strictly: an aware time and a plausible id) is refused."""
    if not token:
        return None
    body = limits.decode_page_token(token)
    return limits.token_time(body, "t"), limits.token_id(body, "id")


def import_limit_violations(request: pb.ImportOrdersRequest) -> list[FieldViolation]:
    """The limits one imported order breaks, with paths as SubmitOrder names them (the order's
    fields without an `order.` prefix; placed_at and historical_status as they are)."""
    return [
        FieldViolation(v.field.removeprefix("order."), v.description)
        for v in request_limits.violations(request)
    ]


def mask_payment_tokens(order: pb.Order) -> pb.Order:
    """The order with every payment token masked to its last four (in place; returned)."""
    order.payment_method.token = mask_token(order.payment_method.token)
    for method in order.additional_payment_methods:
        method.token = mask_token(method.token)
    return order


def erasure_to_pb(record: store.ErasureRecord) -> pb.Erasure:
    """An erasure's record as the API shows it."""
    return pb.Erasure(
        erasure_id=record.erasure_id,
        shopper_id=record.shopper_id,
        requested_by=record.requested_by,
        requested_at=timestamp_from_datetime(record.requested_at),
        completed_at=timestamp_from_datetime(record.completed_at),
        order_count=len(record.order_ids),
        canceled_count=record.canceled_count,
    )
