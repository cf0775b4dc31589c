"""The limits of `oms_platform.limits`, applied to every request message of every RPC by walking
its descriptor: before a servicer sees a request, every string, repeated field, integer,
timestamp and float in it is checked, and a request past any limit is refused with
INVALID_ARGUMENT naming every such field (a google.rpc.BadRequest).

This is the first of two checks: it refuses what is malformed whatever the RPC (control
characters, over-long strings, too many entries, numbers past the ceilings that keep sums in
int64, timestamps Python cannot hold, NaN, unknown countries). The servicers' domains then
check the business rules (required fields, signs, tighter documented lengths, enum values)
and list every violation of those at once.

Fields are classified by name (a field `order_id` is an id wherever it appears), with
per-message exceptions; a unit test fails when a request field has no rule.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from oms_platform import limits
from oms_platform.errors import FieldViolation, InvalidArgument

_ID = limits.ID
_NAME = limits.NAME
_TEXT = limits.TEXT

# String fields by name (or "Message.field" where one message differs).
TEXT_RULES: dict[str, limits.TextRule] = {
    # Ids of records, SKUs, the channel's references, codes.
    **dict.fromkeys(
        (
            "channel_customer_id",
            "channel_order_ref",
            "code",
            "country_code",
            "credit_memo_id",
            "delivery_id",
            "event_id",
            "subscription_id",
            "plan_id",
            "currency",
            "delivery_group_id",
            "delivery_group_ref",
            "fulfillment_order_id",
            "invoice_id",
            "kind",
            "location_group_id",
            "location_group_ids",
            "location_id",
            "location_ids",
            "from_location_ids",
            "order_id",
            "order_ids",
            "order_line_id",
            "pickup_location_id",
            "process_exception_id",
            "ref",
            "replacement_sku",
            "reservation_id",
            "return_order_id",
            "shipment_id",
            "shopper_id",
            "sku",
            "skus",
            "supply_id",
            "to_location_id",
            # A supply's expected day ("YYYY-MM-DD") and its purchase order or notice number.
            "expected_date",
            "RenewAuthorizationsRequest.promise_date",
            # Delivery promises: days ("YYYY-MM-DD") promised, estimated by a carrier, and
            # the day late orders are counted at.
            "promised_delivery_date",
            "estimated_delivery_date",
            "as_of",
            "Supply.reference",
            "CreateSupplyRequest.reference",
            # Event types and channels, statuses and categories named in events.
            "Event.type",
            "Event.channel",
            "types",
            "channels",
            "status",
            "from_status",
            "to_status",
            "category",
            "resolution",
            "cause",
            # A notification locale ("de-AT").
            "locale",
            # Subscriptions: the channel named as text, a plan to come, a plan's timezone
            # ("America/Argentina/Buenos_Aires") and time of day ("07:30").
            "CreateSubscriptionRequest.channel",
            "Subscription.channel",
            "pending_plan_id",
            "timezone",
            "at_local_time",
            # A location's daily order cut-off ("14:00").
            "cutoff_local_time",
            # Return policy rules: their ids and the channel they name.
            "rule_id",
            "ReturnPolicyRule.channel",
        ),
        _ID,
    ),
    # A subscription change's id, made by the workflow from ids and a key.
    "change_id": limits.KEY,
    "shopper_email": _NAME,
    "ReturnPolicyRule.updated_by": _NAME,
    "suspended_reason": _TEXT,
    # Keys, and references built from ids ("fulfillment_order:<id>").
    "idempotency_key": limits.KEY,
    "capture_idempotency_key": limits.KEY,
    "refund_idempotency_key": limits.KEY,
    "void_remaining_idempotency_key": limits.KEY,
    "attached_to": limits.KEY,
    "page_token": limits.PAGE_TOKEN,
    # One line of text each.
    **dict.fromkeys(
        (
            "actor",
            "carrier",
            "city",
            "company",
            "delivery_method",
            "delivery_methods",
            "email",
            "identifying_text",
            "line1",
            "line2",
            "name",
            "phone",
            "postal_code",
            "recipient_name",
            "region",
            "service",
            "tracking_number",
        ),
        _NAME,
    ),
    # Free text a person writes.
    **dict.fromkeys(("description", "message", "note", "reason", "summary"), _TEXT),
    "token": limits.SECRET,
    "preauthorization_ref": limits.SECRET,
    "step_input": limits.DOCUMENT,
    # A webhook endpoint, and its signing secret.
    "url": limits.KEY,
    "secret": limits.SECRET,
    # Why a payment was declined, why an order went to fraud review: one line each.
    "decline_reason": limits.NAME,
    "fraud_reasons": limits.NAME,
}

# Repeated fields by name (or "Message.field").
COUNT_LIMITS: dict[str, int] = {
    **dict.fromkeys(
        (
            "lines",
            "accepted",
            "rejected",
            "added_lines",
            "line_changes",
            "items",
            "increases",
            "new_lines",
        ),
        limits.MAX_LINES,
    ),
    "delivery_groups": limits.MAX_DELIVERY_GROUPS,
    "delivery_group_addresses": limits.MAX_DELIVERY_GROUPS,
    "delivery_promises": limits.MAX_DELIVERY_GROUPS,
    "delivery_methods": limits.MAX_DELIVERY_METHODS,
    "discounts": limits.MAX_DISCOUNTS_PER_LINE,
    "SubmitOrderRequest.discounts": limits.MAX_ORDER_DISCOUNTS,
    "taxes": limits.MAX_TAXES_PER_LINE,
    "additional_payment_methods": limits.MAX_PAYMENT_METHODS,
    "adjustments": limits.MAX_LEVELS,
    "levels": limits.MAX_LEVELS,
    "appeasements": limits.MAX_APPEASEMENTS,
    **dict.fromkeys(("categories", "severities", "statuses"), limits.MAX_FILTER_VALUES),
    **dict.fromkeys(("location_group_ids", "location_ids", "skus"), limits.MAX_IDS),
    "from_location_ids": limits.MAX_IDS,
    "order_ids": limits.MAX_ERASURE_ORDERS,
    "identifying_text": limits.MAX_IDENTIFYING_TERMS,
    "RecordOrderProgressBatchRequest.steps": limits.MAX_PROGRESS_STEPS,
    "RecordOrderProgressRequest.events": limits.MAX_STEP_EVENTS,
    "RecordOrderEventsRequest.events": limits.MAX_RECORDED_EVENTS,
    **dict.fromkeys(("types", "channels", "fraud_reasons"), limits.MAX_FILTER_VALUES),
    # A subscription's progress names the few cycles a step changed; cycles to skip are
    # cycle numbers.
    "RecordSubscriptionProgressRequest.cycles": limits.MAX_PROGRESS_STEPS,
    "skipped_cycles": limits.MAX_IDS,
    # A return rule's accepted conditions: one of a handful each.
    "ReturnPolicyRule.required_conditions": limits.MAX_FILTER_VALUES,
    # SKUs categorized in one call, as many as ids anywhere.
    "SetProductCategoriesRequest.categories": limits.MAX_IDS,
}

# Integer fields by "Message.field": magnitudes only (signs are the domain's rule, which
# names them with the other business violations). None: an int32 the domain bounds (page
# sizes, percentages), which cannot overflow anything.
INT_RULES: dict[str, limits.IntRule | None] = {
    **dict.fromkeys(
        (
            "OrderLine.quantity",
            "LineAddition.quantity",
            "ChargeableLine.quantity_ordered",
            "ChargeableLine.quantity_to_invoice",
            "ChargeableLine.quantity_invoiced_before",
            "CreditableLine.quantity_ordered",
            "CreditableLine.quantity_to_credit",
            "CreditableLine.first_unit",
            "RoutingLine.quantity",
            "LineQuantity.quantity",
            "ShipmentItem.quantity",
            "ItemQuantity.quantity",
            "ReturnItem.quantity",
            "ReceivedItem.quantity",
            "RejectedItem.quantity",
            "ExchangeItem.quantity",
            "NewLineItem.quantity",
            "LineIncrease.quantity",
            "LineQuantities.ordered",
            "LineQuantities.canceled",
            "LineQuantities.allocated",
            "LineQuantities.fulfilled",
            "LineQuantities.return_initiated",
            "LineQuantities.returned",
            "PlanItem.quantity",
            "DeliveryItem.quantity",
            "CheckReturnEligibilityRequest.quantity",
            "CartLine.quantity",
        ),
        limits.QUANTITY_DELTA,
    ),
    # Incoming supply counts stock, like an inventory adjustment.
    **dict.fromkeys(
        (
            "CreateSupplyRequest.quantity",
            "UpdateSupplyRequest.quantity",
            "ReceiveSupplyRequest.quantity",
        ),
        limits.STOCK_DELTA,
    ),
    **dict.fromkeys(
        (
            "InventoryLevel.on_hand",
            "InventoryLevel.reserved",
            "InventoryLevel.safety_stock",
            "InventoryLevel.available_to_fulfill",
            "InventoryAdjustment.quantity",
        ),
        limits.STOCK_DELTA,
    ),
    **dict.fromkeys(
        (
            "Money.amount_minor",
            "ExchangeItem.replacement_unit_price_minor",
            "NewLineItem.unit_price_minor",
            "NewLineItem.tax_minor",
            "LineIncrease.tax_minor",
            "PlanItem.unit_price_minor",
            "CreatePlanRequest.shipping_minor",
            "CreatePlanRequest.tax_minor",
            "PreviewAppeasementRequest.amount_minor",
            "SubmitAppeasementRequest.amount_minor",
            "PreviewReturnRequest.return_fee_minor",
            "SubmitReturnRequest.return_fee_minor",
        ),
        limits.AMOUNT,
    ),
    # Positions in the event log.
    **dict.fromkeys(("Event.sequence", "SubscribeEventsRequest.from_sequence"), limits.SEQUENCE),
    **dict.fromkeys(
        ("Location.priority", "Location.daily_capacity", "Location.fulfillment_orders_today"),
        limits.LOCATION_NUMBER,
    ),
    **dict.fromkeys(
        (
            "ListOrdersRequest.page_size",
            "ListFulfillmentOrdersRequest.page_size",
            "ListSupplyRequest.page_size",
            "ListProcessExceptionsRequest.page_size",
            "ListWebhookDeliveriesRequest.page_size",
            "SubmitOrderRequest.subscription_cycle",
            # Subscriptions: cycle numbers, days, weeks and minutes the domain bounds.
            "ListSubscriptionsRequest.page_size",
            "Cadence.monthly_on_day",
            "Cadence.weeks",
            "Cadence.minutes",
            "Skip.cycle",
            "ChangeCycleDay.day",
            "Subscription.next_cycle",
            "Subscription.skipped_cycles",
            "Subscription.pending_plan_from_cycle",
            "Cycle.number",
            "Cycle.payment_attempts",
            "SubscriptionChangeRecord.effective_cycle",
            "Appeasement.percent_basis_points",
            # A location's processing days (0 to 30, the domain's rule).
            "Location.processing_days",
            # A checkout reservation's time to live (1 to 3600 seconds, the domain's rule).
            "ReserveInventoryRequest.ttl_seconds",
            "PreviewAppeasementRequest.percent_basis_points",
            "SubmitAppeasementRequest.percent_basis_points",
            # A return rule's days and restocking fee (the domain bounds both).
            "ReturnPolicyRule.return_days",
            "ReturnPolicyRule.restocking_fee_basis_points",
            # A transit band's start and business days (the domain bounds both).
            "SetTransitTimeRequest.from_km",
            "SetTransitTimeRequest.transit_days",
            "DeleteTransitTimeRequest.from_km",
        ),
        None,
    ),
}

_TIMESTAMP = "google.protobuf.Timestamp"
_POSTAL_ADDRESS = "oms.common.v1.PostalAddress"
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOATS = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})
# Unclassified fields still get a cap: a new field is never unbounded, only untidy.
_DEFAULT_TEXT = _NAME
_DEFAULT_COUNT = limits.MAX_LINES
_DEFAULT_INT = limits.AMOUNT


def text_rule(message: Any, field: FieldDescriptor) -> limits.TextRule | None:
    """The rule of a string field, None when it has none of its own."""
    return TEXT_RULES.get(f"{message.name}.{field.name}", TEXT_RULES.get(field.name))


def count_limit(message: Any, field: FieldDescriptor) -> int | None:
    """The cap on a repeated field, None when it has none of its own."""
    return COUNT_LIMITS.get(f"{message.name}.{field.name}", COUNT_LIMITS.get(field.name))


def violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Every limit `message` breaks, each with its field's path (e.g. `lines[2].sku`)."""
    out: list[FieldViolation] = []
    _walk(message, prefix, out)
    return out


def check(message: Message, prefix: str = "") -> None:
    """Raise InvalidArgument listing every limit `message` breaks."""
    found = violations(message, prefix)
    if found:
        raise InvalidArgument(found)


def _walk(message: Message, prefix: str, out: list[FieldViolation]) -> None:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == _TIMESTAMP:
        out += limits.timestamp_violations(prefix, message.seconds, message.nanos)  # type: ignore[attr-defined]
        return
    for field, value in message.ListFields():
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.is_repeated:
            cap = count_limit(descriptor, field)
            out += limits.count_violations(path, len(value), cap or _DEFAULT_COUNT)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                # Maps: none in requests today; check keys and values like any field.
                entries = [(str(k), k, value[k]) for k in value]
                value_field = field.message_type.fields_by_name["value"]
                for label, key, item in entries:
                    if isinstance(key, str):
                        out += limits.text_violations(f"{path}.key", key, _ID)
                    _value(descriptor, value_field, item, f"{path}[{limits.echo(label)}]", out)
                continue
            for i, item in enumerate(value[: cap or _DEFAULT_COUNT]):
                _value(descriptor, field, item, f"{path}[{i}]", out)
        else:
            _value(descriptor, field, value, path, out)
    if descriptor.full_name == _POSTAL_ADDRESS:
        code = message.country_code  # type: ignore[attr-defined]
        if not limits.text_violations("", code, _ID):
            out += limits.country_code_violations(_join(prefix, "country_code"), code)


def _value(
    message: Any, field: FieldDescriptor, value: Any, path: str, out: list[FieldViolation]
) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        _walk(value, path, out)
    elif kind == FieldDescriptor.TYPE_STRING:
        out += limits.text_violations(path, value, text_rule(message, field) or _DEFAULT_TEXT)
    elif kind == FieldDescriptor.TYPE_BYTES:
        out += limits.count_violations(path, len(value), limits.MAX_DOCUMENT_LENGTH)
    elif kind in _INTEGERS:
        rule = INT_RULES.get(f"{message.name}.{field.name}", _DEFAULT_INT)
        if rule is not None:
            out += limits.int_violations(path, value, rule)
    elif kind in _FLOATS:
        out += limits.finite_violations(path, value)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ---- the guard around a servicer --------------------------------------------------------------


class _Guarded:
    """Stands in for a servicer at registration: the same RPC methods, each checking its
    request against the limits first. Client-streaming RPCs get their requests unchecked: the
    servicer checks each message itself (ImportOrders reports a bad order and carries on)."""


def guard(servicer: Any, service: ServiceDescriptor) -> Any:
    """`servicer` with every unary-request RPC of `service` checking its request first."""
    guarded = _Guarded()
    for method in service.methods:
        inner = getattr(servicer, method.name)
        if method.client_streaming:
            wrapped: Callable[..., Any] = inner
        elif method.server_streaming:
            wrapped = _streaming(inner)
        else:
            wrapped = _unary(inner)
        setattr(guarded, method.name, wrapped)
    return guarded


def _unary(inner: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(request: Message, context: Any) -> Any:
        check(request)
        return await inner(request, context)

    return checked


def _streaming(inner: Callable[..., Any]) -> Callable[..., Any]:
    assert inspect.isasyncgenfunction(inner), "server-streaming RPCs are async generators"

    async def checked(request: Message, context: Any) -> AsyncIterator[Any]:
        check(request)
        async for response in inner(request, context):
            yield response

    return checked
