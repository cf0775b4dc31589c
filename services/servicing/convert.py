"""Servicing's wire <-> domain conversions: protobuf requests into domain values, domain
values into protobuf answers, and the enum tables between them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from oms.servicing.v1 import servicing_pb2 as pb

from oms_platform import auth
from oms_platform.redaction import redact_json, redact_text
from oms_platform.wire import postal_address_from_pb, timestamp_from_datetime
from services.servicing import carrier, domain
from services.servicing.policy_store import ReturnLabel, StoredRule

CATEGORY_TO_DOMAIN: dict[pb.ProcessExceptionCategory.ValueType, str] = {
    pb.PROCESS_EXCEPTION_CATEGORY_UNSPECIFIED: "",
    pb.PROCESS_EXCEPTION_CATEGORY_PAYMENT: domain.PAYMENT,
    pb.PROCESS_EXCEPTION_CATEGORY_FULFILLMENT: domain.FULFILLMENT,
    pb.PROCESS_EXCEPTION_CATEGORY_INVENTORY: domain.INVENTORY,
    pb.PROCESS_EXCEPTION_CATEGORY_FRAUD: domain.FRAUD,
    pb.PROCESS_EXCEPTION_CATEGORY_CARRIER: domain.CARRIER,
    pb.PROCESS_EXCEPTION_CATEGORY_INVOICING: domain.INVOICING,
    pb.PROCESS_EXCEPTION_CATEGORY_DELIVERY_FAILED: domain.DELIVERY_FAILED,
}
CATEGORY_TO_PB: dict[str, pb.ProcessExceptionCategory.ValueType] = {
    v: k for k, v in CATEGORY_TO_DOMAIN.items() if v
}

SEVERITY_TO_DOMAIN: dict[pb.ProcessExceptionSeverity.ValueType, str] = {
    pb.PROCESS_EXCEPTION_SEVERITY_UNSPECIFIED: "",
    pb.PROCESS_EXCEPTION_SEVERITY_LOW: domain.LOW,
    pb.PROCESS_EXCEPTION_SEVERITY_MEDIUM: domain.MEDIUM,
    pb.PROCESS_EXCEPTION_SEVERITY_HIGH: domain.HIGH,
    pb.PROCESS_EXCEPTION_SEVERITY_CRITICAL: domain.CRITICAL,
}
SEVERITY_TO_PB: dict[str, pb.ProcessExceptionSeverity.ValueType] = {
    v: k for k, v in SEVERITY_TO_DOMAIN.items() if v
}

STATUS_TO_DOMAIN: dict[pb.ProcessExceptionStatus.ValueType, str] = {
    pb.PROCESS_EXCEPTION_STATUS_UNSPECIFIED: "",
    pb.PROCESS_EXCEPTION_STATUS_NEW: domain.NEW,
    pb.PROCESS_EXCEPTION_STATUS_TRIAGED: domain.TRIAGED,
    pb.PROCESS_EXCEPTION_STATUS_PAUSED: domain.PAUSED,
    pb.PROCESS_EXCEPTION_STATUS_IGNORED: domain.IGNORED,
    pb.PROCESS_EXCEPTION_STATUS_VOIDED: domain.VOIDED,
    pb.PROCESS_EXCEPTION_STATUS_RESOLVED: domain.RESOLVED,
}
STATUS_TO_PB: dict[str, pb.ProcessExceptionStatus.ValueType] = {
    v: k for k, v in STATUS_TO_DOMAIN.items() if v
}

ACTION_TO_DOMAIN: dict[pb.ResolutionAction.ValueType, str] = {
    pb.RESOLUTION_ACTION_UNSPECIFIED: "",
    pb.RESOLUTION_ACTION_RETRY: domain.RETRY,
    pb.RESOLUTION_ACTION_SKIP: domain.SKIP,
    pb.RESOLUTION_ACTION_CANCEL: domain.CANCEL_ORDER,
}
ACTION_TO_PB: dict[str, pb.ResolutionAction.ValueType] = {v: k for k, v in ACTION_TO_DOMAIN.items()}

CONDITION_TO_DOMAIN: dict[pb.ItemCondition.ValueType, str] = {
    pb.ITEM_CONDITION_UNSPECIFIED: "",
    pb.ITEM_CONDITION_NEW: "new",
    pb.ITEM_CONDITION_OPENED: "opened",
    pb.ITEM_CONDITION_USED: "used",
    pb.ITEM_CONDITION_DAMAGED: "damaged",
    pb.ITEM_CONDITION_DEFECTIVE: "defective",
}
CONDITION_TO_PB: dict[str, pb.ItemCondition.ValueType] = {
    v: k for k, v in CONDITION_TO_DOMAIN.items()
}

RETURN_STATUS_TO_PB: dict[str, pb.ReturnOrderStatus.ValueType] = {
    domain.RETURN_OPEN: pb.RETURN_ORDER_STATUS_OPEN,
    domain.RETURN_PARTIALLY_RECEIVED: pb.RETURN_ORDER_STATUS_PARTIALLY_RECEIVED,
    domain.RETURN_RECEIVED: pb.RETURN_ORDER_STATUS_RECEIVED,
}

CHANGE_KIND_TO_PB: dict[str, pb.ChangeKind.ValueType] = {
    domain.CANCEL: pb.CHANGE_KIND_CANCEL,
    domain.RETURN: pb.CHANGE_KIND_RETURN,
    domain.RECEIVE_RETURN: pb.CHANGE_KIND_RECEIVE_RETURN,
    domain.EXCHANGE: pb.CHANGE_KIND_EXCHANGE,
    domain.RESHIP: pb.CHANGE_KIND_RESHIP,
    domain.APPEASE: pb.CHANGE_KIND_APPEASEMENT,
    domain.ADD_ITEMS: pb.CHANGE_KIND_ADD_ITEMS,
    domain.ADDRESS_CHANGE: pb.CHANGE_KIND_ADDRESS_CHANGE,
}

CHANGE_STATUS_TO_PB: dict[str, pb.ChangeStatus.ValueType] = {
    domain.PENDING: pb.CHANGE_STATUS_PENDING,
    domain.COMPLETED: pb.CHANGE_STATUS_COMPLETED,
    domain.REFUSED: pb.CHANGE_STATUS_REFUSED,
    domain.FAILED: pb.CHANGE_STATUS_FAILED,
}

RESHIP_REASON_TO_DOMAIN: dict[pb.ReshipReason.ValueType, str] = {
    pb.RESHIP_REASON_UNSPECIFIED: "",
    pb.RESHIP_REASON_LOST: domain.LOST,
    pb.RESHIP_REASON_DAMAGED: domain.DAMAGED,
}


def enum_name(table: Mapping[Any, str], value: int) -> str:
    # A number this build does not know (a newer client) stays visible in the violation.
    return table.get(value, f"unknown({value})")


# ---- conversions: process exceptions ---------------------------------------------------------


def record_to_domain(request: pb.RecordProcessExceptionRequest) -> domain.RecordProcessException:
    """The domain request for a RecordProcessException call."""
    return domain.RecordProcessException(
        idempotency_key=request.idempotency_key,
        order_id=request.order_id,
        category=enum_name(CATEGORY_TO_DOMAIN, request.category),
        severity=enum_name(SEVERITY_TO_DOMAIN, request.severity),
        attached_to=request.attached_to,
        # The workflow redacts what it records; redacted again here so no caller can store
        # personal data or a payment token on an exception agents read.
        message=redact_text(request.message),
        step_input=redact_json(request.step_input),
    )


def process_exception_to_pb(exception: domain.ProcessException) -> pb.ProcessException:
    """The wire form of a stored process exception."""
    return pb.ProcessException(
        process_exception_id=exception.id,
        order_id=exception.order_id,
        category=CATEGORY_TO_PB[exception.category],
        severity=SEVERITY_TO_PB[exception.severity],
        status=STATUS_TO_PB[exception.status],
        attached_to=exception.attached_to,
        message=exception.message,
        created_at=timestamp_from_datetime(exception.created_at),
        updated_at=timestamp_from_datetime(exception.updated_at),
        resolution_action=ACTION_TO_PB[exception.resolution_action],
        resolution_note=exception.resolution_note,
        resolved_by=exception.resolved_by,
        resolved_at=timestamp_from_datetime(exception.resolved_at),
        order_status=exception.order_status,
        step_input=exception.step_input,
        escalated_at=timestamp_from_datetime(exception.escalated_at),
        note=exception.note,
        updated_by=exception.updated_by,
    )


# ---- conversions: return orders --------------------------------------------------------------


def items(items: Any) -> tuple[domain.Item, ...]:
    return tuple(domain.Item(i.order_line_id, i.quantity) for i in items)


def _items_to_pb(items: tuple[domain.Item, ...]) -> list[pb.ItemQuantity]:
    return [pb.ItemQuantity(order_line_id=i.order_line_id, quantity=i.quantity) for i in items]


def return_order_to_pb(rma: domain.ReturnOrder) -> pb.ReturnOrder:
    """The wire form of a return order."""
    return pb.ReturnOrder(
        return_order_id=rma.id,
        order_id=rma.order_id,
        reason=rma.reason,
        status=RETURN_STATUS_TO_PB[rma.status],
        lines=[
            pb.ReturnOrderLine(
                order_line_id=line.order_line_id,
                quantity_expected=line.expected,
                quantity_received=line.received,
                quantity_accepted=line.accepted,
                quantity_rejected=line.rejected,
                reason=line.reason,
                condition=CONDITION_TO_PB[line.condition],
                rejection_reason=line.rejection_reason,
            )
            for line in rma.lines
        ],
        created_at=timestamp_from_datetime(rma.created_at),
        updated_at=timestamp_from_datetime(rma.updated_at),
    )


# ---- conversions: changes --------------------------------------------------------------------


def cancel_to_domain(request: pb.SubmitCancelRequest) -> domain.ChangeOrder:
    """A cancel as a domain change."""
    return domain.ChangeOrder(
        kind=domain.CANCEL,
        order_id=request.order_id,
        idempotency_key=request.idempotency_key,
        actor=auth.actor(),
        reason=request.reason,
        lines=items(request.lines),
    )


def cancel_preview_to_domain(request: pb.PreviewCancelRequest) -> domain.ChangeOrder:
    """A cancel to preview as a domain change."""
    return domain.ChangeOrder(
        kind=domain.CANCEL, order_id=request.order_id, lines=items(request.lines)
    )


def _return_notes(lines: Any) -> tuple[domain.LineNote, ...]:
    return tuple(
        domain.LineNote(
            line.order_line_id, line.reason, enum_name(CONDITION_TO_DOMAIN, line.condition)
        )
        for line in lines
    )


def return_to_domain(request: pb.SubmitReturnRequest) -> domain.ChangeOrder:
    """A return as a domain change."""
    return domain.ChangeOrder(
        kind=domain.RETURN,
        order_id=request.order_id,
        idempotency_key=request.idempotency_key,
        actor=auth.actor(),
        reason=request.reason,
        lines=items(request.lines),
        refund_without_return=request.refund_without_return,
        return_fee_minor=request.return_fee_minor,
        line_notes=_return_notes(request.lines),
    )


def return_preview_to_domain(request: pb.PreviewReturnRequest) -> domain.ChangeOrder:
    """A return to preview as a domain change."""
    return domain.ChangeOrder(
        kind=domain.RETURN,
        order_id=request.order_id,
        lines=items(request.lines),
        return_fee_minor=request.return_fee_minor,
        line_notes=_return_notes(request.lines),
    )


def receive_to_domain(request: pb.ReceiveReturnRequest) -> domain.ChangeOrder:
    """A receipt of returned units as a domain change."""
    return domain.ChangeOrder(
        kind=domain.RECEIVE_RETURN,
        order_id=request.order_id,
        idempotency_key=request.idempotency_key,
        actor=auth.actor(),
        note=request.note,
        return_order_id=request.return_order_id,
        lines=items(request.accepted),
        rejected_lines=items(request.rejected),
        line_notes=tuple(
            domain.LineNote(
                line.order_line_id, condition=enum_name(CONDITION_TO_DOMAIN, line.condition)
            )
            for line in request.accepted
        ),
        rejected_notes=tuple(
            domain.LineNote(
                line.order_line_id,
                condition=enum_name(CONDITION_TO_DOMAIN, line.condition),
                rejection_reason=line.reason,
            )
            for line in request.rejected
        ),
    )


def _submitted(
    order: domain.ChangeOrder,
    request: pb.SubmitExchangeRequest
    | pb.SubmitAppeasementRequest
    | pb.SubmitAddItemsRequest
    | pb.SubmitReshipRequest
    | pb.SubmitAddressChangeRequest,
    reason: str,
    note: str = "",
) -> domain.ChangeOrder:
    """`order` with what only a submission carries: its key, who asks, why and the agent's
    `note`."""
    return replace(
        order,
        idempotency_key=request.idempotency_key,
        actor=auth.actor(),
        reason=reason,
        note=note,
    )


def exchange_to_domain(
    request: pb.SubmitExchangeRequest | pb.PreviewExchangeRequest,
) -> domain.ChangeOrder:
    """An exchange (submitted or previewed) as a domain change."""
    order = domain.ChangeOrder(
        kind=domain.EXCHANGE,
        order_id=request.order_id,
        lines=items(request.lines),
        replacement_skus=tuple(line.replacement_sku for line in request.lines),
        replacement_unit_prices_minor=tuple(
            line.replacement_unit_price_minor for line in request.lines
        ),
        line_notes=tuple(
            domain.LineNote(
                line.order_line_id, line.reason, enum_name(CONDITION_TO_DOMAIN, line.condition)
            )
            for line in request.lines
        ),
    )
    if isinstance(request, pb.SubmitExchangeRequest):
        return _submitted(order, request, request.reason)
    return order


def reship_to_domain(
    request: pb.SubmitReshipRequest | pb.PreviewReshipRequest,
) -> domain.ChangeOrder:
    """A reship (submitted or previewed) as a domain change."""
    order = domain.ChangeOrder(
        kind=domain.RESHIP, order_id=request.order_id, lines=items(request.lines)
    )
    if isinstance(request, pb.SubmitReshipRequest):
        reason = enum_name(RESHIP_REASON_TO_DOMAIN, request.reason)
        return _submitted(order, request, reason, request.note)
    return order


def address_change_to_domain(
    request: pb.SubmitAddressChangeRequest | pb.PreviewAddressChangeRequest,
) -> domain.ChangeOrder:
    """An address change (submitted or previewed) as a domain change."""
    order = domain.ChangeOrder(
        kind=domain.ADDRESS_CHANGE,
        order_id=request.order_id,
        delivery_group_id=request.delivery_group_id,
        address=postal_address_from_pb(request.address) if request.HasField("address") else None,
    )
    if isinstance(request, pb.SubmitAddressChangeRequest):
        return _submitted(order, request, request.reason, request.note)
    return order


def appeasement_to_domain(
    request: pb.SubmitAppeasementRequest | pb.PreviewAppeasementRequest,
) -> domain.ChangeOrder:
    """An appeasement (submitted or previewed) as a domain change; the line, if any, is
    carried with quantity 0 (goodwill is money, not units)."""
    order = domain.ChangeOrder(
        kind=domain.APPEASE,
        order_id=request.order_id,
        lines=(domain.Item(request.order_line_id, 0),) if request.order_line_id else (),
        amount_minor=request.amount_minor,
        percent_basis_points=request.percent_basis_points,
    )
    if isinstance(request, pb.SubmitAppeasementRequest):
        return _submitted(order, request, request.reason)
    return order


def add_items_to_domain(
    request: pb.SubmitAddItemsRequest | pb.PreviewAddItemsRequest,
) -> domain.ChangeOrder:
    """Items to add (submitted or previewed) as a domain change."""
    order = domain.ChangeOrder(
        kind=domain.ADD_ITEMS,
        order_id=request.order_id,
        new_lines=tuple(
            domain.NewLine(
                sku=line.sku,
                quantity=line.quantity,
                unit_price_minor=line.unit_price_minor,
                tax_minor=line.tax_minor,
                delivery_group_id=line.delivery_group_id,
                name=line.name,
            )
            for line in request.new_lines
        ),
        increases=tuple(
            domain.LineIncrease(i.order_line_id, i.quantity, i.tax_minor) for i in request.increases
        ),
    )
    if isinstance(request, pb.SubmitAddItemsRequest):
        return _submitted(order, request, request.reason)
    return order


def outcome_to_pb(outcome: domain.ChangeOutcome) -> pb.ChangeOutcome:
    """The wire form of what a change did or would do."""
    return pb.ChangeOutcome(
        summary=outcome.summary,
        lines=_items_to_pb(outcome.lines),
        credit_memo_id=outcome.credit_memo_id,
        credited_minor=outcome.credited_minor,
        refunded_minor=outcome.refunded_minor,
        released_minor=outcome.released_minor,
        charged_minor=outcome.charged_minor,
        fulfillment_order_ids=list(outcome.fulfillment_order_ids),
        return_order_id=outcome.return_order_id,
        order_status=outcome.order_status,
        authorized_minor=outcome.authorized_minor,
        grand_total_minor=outcome.grand_total_minor,
        rerouted=outcome.rerouted,
        location_ids=list(outcome.location_ids),
    )


def change_to_pb(change: domain.Change) -> pb.Change:
    """The wire form of a recorded change."""
    return pb.Change(
        change_id=change.change_id,
        order_id=change.order_id,
        kind=CHANGE_KIND_TO_PB[change.kind],
        status=CHANGE_STATUS_TO_PB[change.status],
        idempotency_key=change.idempotency_key,
        actor=change.actor,
        reason=change.reason,
        requested_lines=_items_to_pb(change.requested_lines),
        outcome=outcome_to_pb(change.outcome) if change.outcome else None,
        refusal_code=change.refusal_code,
        refusal_message=change.refusal_message,
        created_at=timestamp_from_datetime(change.created_at),
        completed_at=timestamp_from_datetime(change.completed_at),
    )


# ---- conversions: return policies and labels ------------------------------------------------

PARCEL_STATUS_TO_PB: dict[str, pb.ReturnParcelStatus.ValueType] = {
    carrier.LABEL_CREATED: pb.RETURN_PARCEL_STATUS_LABEL_CREATED,
    carrier.IN_TRANSIT: pb.RETURN_PARCEL_STATUS_IN_TRANSIT,
    carrier.DELIVERED: pb.RETURN_PARCEL_STATUS_DELIVERED,
}


def rule_to_domain(rule: pb.ReturnPolicyRule) -> domain.PolicyRule:
    """A rule as the domain holds it (use_channel_window: no days of its own)."""
    return domain.PolicyRule(
        id=rule.rule_id,
        channel=rule.channel.strip().lower(),
        category=rule.category.strip(),
        return_days=None if rule.use_channel_window else rule.return_days,
        required_conditions=tuple(
            enum_name(CONDITION_TO_DOMAIN, c) for c in rule.required_conditions
        ),
        final_sale=rule.final_sale,
        restocking_fee_basis_points=rule.restocking_fee_basis_points,
        description=rule.description,
        fee_on_exchange=rule.fee_on_exchange,
    )


def rule_to_pb(stored: StoredRule) -> pb.ReturnPolicyRule:
    """A stored rule on the wire."""
    rule = stored.rule
    return pb.ReturnPolicyRule(
        rule_id=rule.id,
        channel=rule.channel,
        category=rule.category,
        return_days=rule.return_days or 0,
        use_channel_window=rule.return_days is None,
        required_conditions=[CONDITION_TO_PB[c] for c in rule.required_conditions],
        final_sale=rule.final_sale,
        restocking_fee_basis_points=rule.restocking_fee_basis_points,
        description=rule.description,
        fee_on_exchange=rule.fee_on_exchange,
        updated_at=timestamp_from_datetime(stored.updated_at),
        updated_by=stored.updated_by,
    )


def eligibility_request_to_domain(
    request: pb.CheckReturnEligibilityRequest,
) -> domain.EligibilityRequest:
    """The domain question of a CheckReturnEligibility call."""
    return domain.EligibilityRequest(
        order_id=request.order_id,
        order_line_id=request.order_line_id,
        quantity=request.quantity,
        condition=enum_name(CONDITION_TO_DOMAIN, request.condition),
    )


def eligibility_to_pb(answer: domain.Eligibility) -> pb.CheckReturnEligibilityResponse:
    """The policy's answer on the wire."""
    return pb.CheckReturnEligibilityResponse(
        eligible=answer.eligible,
        rule_id=answer.rule_id,
        explanation=answer.explanation,
        credit_minor=answer.credit_minor,
        restocking_fee_minor=answer.restocking_fee_minor,
        refund_minor=answer.refund_minor,
        exchangeable=answer.exchangeable,
    )


def label_to_pb(label: ReturnLabel) -> pb.ReturnLabel:
    """A return label on the wire (without its PDF)."""
    return pb.ReturnLabel(
        return_order_id=label.return_order_id,
        order_id=label.order_id,
        carrier=label.carrier,
        tracking_number=label.tracking_number,
        status=PARCEL_STATUS_TO_PB.get(label.tracking_status, pb.RETURN_PARCEL_STATUS_UNSPECIFIED),
        created_at=timestamp_from_datetime(label.created_at),
    )
