"""gRPC edge of the servicing service: converts wire <-> domain and delegates."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import grpc
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform import auth, erasure, limits
from oms_platform.db import idempotent, request_fingerprint
from oms_platform.errors import AlreadyExists, PermissionDenied
from oms_platform.redaction import redact_json, redact_text
from oms_platform.wire import timestamp_from_datetime, timestamp_to_datetime
from services.servicing import domain, handlers
from services.servicing.lifecycles import LifecycleUnavailable, OrderLifecycles, Orders
from services.servicing.store import (
    PERSONAL_COLUMNS,
    ChangeStore,
    ProcessExceptionStore,
    ReturnOrderStore,
)
from workflows.types import order_workflow_id

T = TypeVar("T")

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


def _enum_name(table: Mapping[Any, str], value: int) -> str:
    # A number this build does not know (a newer client) stays visible in the violation.
    return table.get(value, f"unknown({value})")


# ---- conversions: process exceptions ---------------------------------------------------------


def record_to_domain(request: pb.RecordProcessExceptionRequest) -> domain.RecordProcessException:
    """The domain request for a RecordProcessException call."""
    return domain.RecordProcessException(
        idempotency_key=request.idempotency_key,
        order_id=request.order_id,
        category=_enum_name(CATEGORY_TO_DOMAIN, request.category),
        severity=_enum_name(SEVERITY_TO_DOMAIN, request.severity),
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


def _items(items: Any) -> tuple[domain.Item, ...]:
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
        lines=_items(request.lines),
    )


def cancel_preview_to_domain(request: pb.PreviewCancelRequest) -> domain.ChangeOrder:
    """A cancel to preview as a domain change."""
    return domain.ChangeOrder(
        kind=domain.CANCEL, order_id=request.order_id, lines=_items(request.lines)
    )


def _return_notes(lines: Any) -> tuple[domain.LineNote, ...]:
    return tuple(
        domain.LineNote(
            line.order_line_id, line.reason, _enum_name(CONDITION_TO_DOMAIN, line.condition)
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
        lines=_items(request.lines),
        refund_without_return=request.refund_without_return,
        return_fee_minor=request.return_fee_minor,
        line_notes=_return_notes(request.lines),
    )


def return_preview_to_domain(request: pb.PreviewReturnRequest) -> domain.ChangeOrder:
    """A return to preview as a domain change."""
    return domain.ChangeOrder(
        kind=domain.RETURN,
        order_id=request.order_id,
        lines=_items(request.lines),
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
        lines=_items(request.accepted),
        rejected_lines=_items(request.rejected),
        line_notes=tuple(
            domain.LineNote(
                line.order_line_id, condition=_enum_name(CONDITION_TO_DOMAIN, line.condition)
            )
            for line in request.accepted
        ),
        rejected_notes=tuple(
            domain.LineNote(
                line.order_line_id,
                condition=_enum_name(CONDITION_TO_DOMAIN, line.condition),
                rejection_reason=line.reason,
            )
            for line in request.rejected
        ),
    )


def _submitted(
    order: domain.ChangeOrder,
    request: pb.SubmitExchangeRequest | pb.SubmitAppeasementRequest | pb.SubmitAddItemsRequest,
) -> domain.ChangeOrder:
    """`order` with what only a submission carries: its key, who asks and why."""
    return replace(
        order, idempotency_key=request.idempotency_key, actor=auth.actor(), reason=request.reason
    )


def exchange_to_domain(
    request: pb.SubmitExchangeRequest | pb.PreviewExchangeRequest,
) -> domain.ChangeOrder:
    """An exchange (submitted or previewed) as a domain change."""
    order = domain.ChangeOrder(
        kind=domain.EXCHANGE,
        order_id=request.order_id,
        lines=_items(request.lines),
        replacement_skus=tuple(line.replacement_sku for line in request.lines),
        replacement_unit_prices_minor=tuple(
            line.replacement_unit_price_minor for line in request.lines
        ),
        line_notes=tuple(
            domain.LineNote(
                line.order_line_id, line.reason, _enum_name(CONDITION_TO_DOMAIN, line.condition)
            )
            for line in request.lines
        ),
    )
    return _submitted(order, request) if isinstance(request, pb.SubmitExchangeRequest) else order


def reship_to_domain(
    request: pb.SubmitReshipRequest | pb.PreviewReshipRequest,
) -> domain.ChangeOrder:
    """A reship (submitted or previewed) as a domain change."""
    order = domain.ChangeOrder(
        kind=domain.RESHIP, order_id=request.order_id, lines=_items(request.lines)
    )
    if isinstance(request, pb.SubmitReshipRequest):
        order = replace(
            order,
            idempotency_key=request.idempotency_key,
            actor=auth.actor(),
            reason=_enum_name(RESHIP_REASON_TO_DOMAIN, request.reason),
            note=request.note,
        )
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
    return _submitted(order, request) if isinstance(request, pb.SubmitAppeasementRequest) else order


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
    return _submitted(order, request) if isinstance(request, pb.SubmitAddItemsRequest) else order


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


async def _reachable(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    """Await a use case that talks to Temporal; UNAVAILABLE (retry) when it cannot."""
    try:
        return await call
    except LifecycleUnavailable as error:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        raise  # abort raises; this keeps type checkers content


class ServicingServicer(servicing_pb2_grpc.ServicingServiceServicer):
    """ServicingService over servicing's stores and the order workflows."""

    def __init__(
        self,
        store: ProcessExceptionStore,
        returns: ReturnOrderStore,
        changes: ChangeStore,
        lifecycles: OrderLifecycles,
        resolution_grace: timedelta,
        orders: Orders,
        dead_letters: handlers.DeadLetters,
    ) -> None:
        self._orders = orders
        self._dead_letters = dead_letters
        self._store = store
        self._resolution_grace = resolution_grace
        self._returns = returns
        self._changes = changes
        self._lifecycles = lifecycles

    # ---- process exceptions -----------------------------------------------------------------

    async def RecordProcessException(
        self, request: pb.RecordProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordProcessExceptionResponse:
        command = record_to_domain(request)
        domain.validate_record(command)
        principal = auth.current_principal()
        if not principal.has_any({auth.WORKFLOW}) and command.category != domain.DELIVERY_FAILED:
            # A service records only its outbox's delivery failures; the rest are the
            # workflow's to raise (and to wait on).
            raise PermissionDenied(
                f"{principal.subject} may record only delivery_failed process exceptions"
            )

        async def record(conn: asyncpg.Connection) -> domain.ProcessException:
            raised = domain.new_process_exception(command, str(uuid.uuid4()), datetime.now(UTC))
            return await self._store.insert(conn, raised)

        def encode(stored: domain.ProcessException) -> pb.RecordProcessExceptionResponse:
            return pb.RecordProcessExceptionResponse(
                process_exception=process_exception_to_pb(stored)
            )

        response, _ = await idempotent(
            self._store.pool,
            domain.idempotency_key_for(command.order_id, command.idempotency_key),
            request,
            pb.RecordProcessExceptionResponse,
            record,
            encode,
        )
        return response

    async def GetProcessException(
        self, request: pb.GetProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProcessExceptionResponse:
        exception = await self._store.get(request.process_exception_id)
        return pb.GetProcessExceptionResponse(process_exception=process_exception_to_pb(exception))

    async def ListProcessExceptions(
        self, request: pb.ListProcessExceptionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProcessExceptionsResponse:
        query = domain.list_query(
            order_id=request.order_id,
            statuses=[_enum_name(STATUS_TO_DOMAIN, s) for s in request.statuses],
            categories=[_enum_name(CATEGORY_TO_DOMAIN, c) for c in request.categories],
            page_size=request.page_size,
            page_token=request.page_token,
            severities=[_enum_name(SEVERITY_TO_DOMAIN, s) for s in request.severities],
            created_before=(
                timestamp_to_datetime(request.created_before, "created_before")
                if request.HasField("created_before")
                else None
            ),
        )
        page = domain.page_of(query, await self._store.list(query))
        return pb.ListProcessExceptionsResponse(
            process_exceptions=[process_exception_to_pb(e) for e in page.process_exceptions],
            next_page_token=domain.next_page_token(query, page),
        )

    async def ResolveProcessException(
        self, request: pb.ResolveProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveProcessExceptionResponse:
        resolve = domain.Resolve(
            process_exception_id=request.process_exception_id,
            action=_enum_name(ACTION_TO_DOMAIN, request.action),
            note=request.note,
            actor=auth.actor(),
        )
        exception = await _reachable(
            context,
            handlers.resolve_process_exception(
                self._store, self._lifecycles, resolve, self._resolution_grace, self._dead_letters
            ),
        )
        return pb.ResolveProcessExceptionResponse(
            process_exception=process_exception_to_pb(exception)
        )

    async def UpdateProcessExceptionStatus(
        self, request: pb.UpdateProcessExceptionStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateProcessExceptionStatusResponse:
        update = domain.StatusUpdate(
            process_exception_id=request.process_exception_id,
            status=_enum_name(STATUS_TO_DOMAIN, request.status),
            note=request.note,
            actor=auth.actor(),
        )
        exception = await handlers.update_process_exception_status(self._store, update)
        return pb.UpdateProcessExceptionStatusResponse(
            process_exception=process_exception_to_pb(exception)
        )

    async def EscalateProcessException(
        self, request: pb.EscalateProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.EscalateProcessExceptionResponse:
        escalate = domain.Escalate(
            request.process_exception_id, request.idempotency_key, request.message
        )
        domain.validate_escalation(escalate)

        async def escalate_it(conn: asyncpg.Connection) -> domain.ProcessException:
            exception = await self._store.get(escalate.process_exception_id, conn, for_update=True)
            changed = domain.escalated(exception, escalate, datetime.now(UTC))
            if changed is not exception:
                exception = await self._store.update(conn, changed)
            return exception

        def encode(exception: domain.ProcessException) -> pb.EscalateProcessExceptionResponse:
            return pb.EscalateProcessExceptionResponse(
                process_exception=process_exception_to_pb(exception)
            )

        response, _ = await idempotent(
            self._store.pool,
            domain.escalation_key_for(escalate.process_exception_id, escalate.idempotency_key),
            request,
            pb.EscalateProcessExceptionResponse,
            escalate_it,
            encode,
        )
        return response

    # ---- return orders ----------------------------------------------------------------------

    async def CreateReturnOrder(
        self, request: pb.CreateReturnOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateReturnOrderResponse:
        command = domain.NewReturnOrder(
            order_id=request.order_id,
            idempotency_key=request.idempotency_key,
            return_order_id=request.return_order_id,
            reason=request.reason,
            lines=_items(request.lines),
        )
        domain.validate_new_return_order(command)

        async def create(conn: asyncpg.Connection) -> domain.ReturnOrder:
            rma = domain.new_return_order(command, datetime.now(UTC))
            if not await self._returns.insert(conn, rma):
                raise AlreadyExists(
                    "return_order_id", f"return order {limits.echo(rma.id)} exists already"
                )
            return rma

        def encode_created(rma: domain.ReturnOrder) -> pb.CreateReturnOrderResponse:
            return pb.CreateReturnOrderResponse(return_order=return_order_to_pb(rma))

        response, _ = await idempotent(
            self._returns.pool,
            domain.return_order_key_for(command.order_id, command.idempotency_key),
            request,
            pb.CreateReturnOrderResponse,
            create,
            encode_created,
        )
        return response

    async def RecordReturnReceipt(
        self, request: pb.RecordReturnReceiptRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordReturnReceiptResponse:
        receipt = domain.Receipt(
            order_id=request.order_id,
            idempotency_key=request.idempotency_key,
            return_order_id=request.return_order_id,
            accepted=_items(request.accepted),
            rejected=_items(request.rejected),
            reason=request.reason,
        )
        domain.validate_receipt(receipt)

        async def record(conn: asyncpg.Connection) -> domain.ReturnOrder:
            rma = await self._returns.get(receipt.return_order_id, conn, for_update=True)
            after = domain.received(rma, receipt, datetime.now(UTC))
            await self._returns.save(conn, after)
            return after

        def encode_received(rma: domain.ReturnOrder) -> pb.RecordReturnReceiptResponse:
            return pb.RecordReturnReceiptResponse(return_order=return_order_to_pb(rma))

        response, _ = await idempotent(
            self._returns.pool,
            domain.receipt_key_for(receipt.order_id, receipt.idempotency_key),
            request,
            pb.RecordReturnReceiptResponse,
            record,
            encode_received,
        )
        return response

    async def ListReturnOrders(
        self, request: pb.ListReturnOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReturnOrdersResponse:
        rmas = await self._returns.list(request.order_id)
        return pb.ListReturnOrdersResponse(return_orders=[return_order_to_pb(r) for r in rmas])

    # ---- changes ----------------------------------------------------------------------------

    async def _confine(self, context: grpc.aio.ServicerContext, order_id: str) -> None:
        """A storefront asks for changes only to its own channels' orders."""
        if auth.current_principal().sees_every_channel() or not order_id:
            return
        channel = await _reachable(context, self._orders.channel_of(order_id))
        auth.require_channel(channel, f"order {order_id}")

    async def _submit(
        self, context: grpc.aio.ServicerContext, order: domain.ChangeOrder, request: Any
    ) -> pb.Change:
        await self._confine(context, order.order_id)
        change = await _reachable(
            context,
            handlers.submit_change(
                self._changes,
                self._returns,
                self._lifecycles,
                order,
                request_fingerprint(request),
            ),
        )
        return change_to_pb(change)

    async def _preview(
        self, context: grpc.aio.ServicerContext, order: domain.ChangeOrder
    ) -> pb.ChangeOutcome:
        await self._confine(context, order.order_id)
        outcome = await _reachable(context, handlers.preview_change(self._lifecycles, order))
        return outcome_to_pb(outcome)

    async def PreviewCancel(
        self, request: pb.PreviewCancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewCancelResponse:
        return pb.PreviewCancelResponse(
            preview=await self._preview(context, cancel_preview_to_domain(request))
        )

    async def SubmitCancel(
        self, request: pb.SubmitCancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitCancelResponse:
        return pb.SubmitCancelResponse(
            change=await self._submit(context, cancel_to_domain(request), request)
        )

    async def PreviewReturn(
        self, request: pb.PreviewReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewReturnResponse:
        return pb.PreviewReturnResponse(
            preview=await self._preview(context, return_preview_to_domain(request))
        )

    async def SubmitReturn(
        self, request: pb.SubmitReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitReturnResponse:
        return pb.SubmitReturnResponse(
            change=await self._submit(context, return_to_domain(request), request)
        )

    async def ReceiveReturn(
        self, request: pb.ReceiveReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveReturnResponse:
        change, rma = await _reachable(
            context,
            handlers.receive_return(
                self._changes,
                self._returns,
                self._lifecycles,
                receive_to_domain(request),
                request_fingerprint(request),
            ),
        )
        return pb.ReceiveReturnResponse(
            change=change_to_pb(change), return_order=return_order_to_pb(rma)
        )

    async def SubmitExchange(
        self, request: pb.SubmitExchangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitExchangeResponse:
        return pb.SubmitExchangeResponse(
            change=await self._submit(context, exchange_to_domain(request), request)
        )

    async def PreviewExchange(
        self, request: pb.PreviewExchangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewExchangeResponse:
        return pb.PreviewExchangeResponse(
            preview=await self._preview(context, exchange_to_domain(request))
        )

    async def PreviewReship(
        self, request: pb.PreviewReshipRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewReshipResponse:
        return pb.PreviewReshipResponse(
            preview=await self._preview(context, reship_to_domain(request))
        )

    async def SubmitReship(
        self, request: pb.SubmitReshipRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitReshipResponse:
        return pb.SubmitReshipResponse(
            change=await self._submit(context, reship_to_domain(request), request)
        )

    async def PreviewAppeasement(
        self, request: pb.PreviewAppeasementRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewAppeasementResponse:
        return pb.PreviewAppeasementResponse(
            preview=await self._preview(context, appeasement_to_domain(request))
        )

    async def SubmitAppeasement(
        self, request: pb.SubmitAppeasementRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitAppeasementResponse:
        return pb.SubmitAppeasementResponse(
            change=await self._submit(context, appeasement_to_domain(request), request)
        )

    async def PreviewAddItems(
        self, request: pb.PreviewAddItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewAddItemsResponse:
        return pb.PreviewAddItemsResponse(
            preview=await self._preview(context, add_items_to_domain(request))
        )

    async def SubmitAddItems(
        self, request: pb.SubmitAddItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitAddItemsResponse:
        return pb.SubmitAddItemsResponse(
            change=await self._submit(context, add_items_to_domain(request), request)
        )

    # ---- personal data ----------------------------------------------------------------------

    async def ErasePersonalData(
        self, request: pb.ErasePersonalDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ErasePersonalDataResponse:
        changed = await erasure.erase_orders(
            self._store.pool,
            PERSONAL_COLUMNS,
            request.order_ids,
            [order_workflow_id(o) for o in request.order_ids],
            request.identifying_text,
        )
        return pb.ErasePersonalDataResponse(records_erased=changed)

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChangesResponse:
        changes = await self._changes.list(request.order_id)
        return pb.ListChangesResponse(changes=[change_to_pb(c) for c in changes])
