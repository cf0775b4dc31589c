"""Activities: thin gRPC calls from the workflow into the services.

One class per service, holding its stub. Each method converts the workflow's dataclass to the
request, calls with a deadline, and converts the answer back. Business refusals
(INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS) become non-retryable
errors; transport failures propagate and Temporal retries them with the same idempotency key.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
import structlog
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc
from oms.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from temporalio import activity
from temporalio.exceptions import ApplicationError

from oms_platform.wire import (
    CHANNEL_TO_PB,
    PAYMENT_TYPE_TO_PB,
    money_to_pb,
    postal_address_to_pb,
    timestamp_from_datetime,
)
from workflows import activity_names as names
from workflows import cadence, subscription_wire
from workflows.subscription_types import (
    ChangeRecordData,
    CycleOrderInput,
    CycleOrderResult,
    CycleView,
    PlanData,
    SubscriptionProgressInput,
    SubscriptionView,
    cycle_order_key,
)
from workflows.types import (
    ALLOCATED,
    AUTHORIZED,
    CANCELED,
    FULFILLED,
    ON_HOLD,
    PARTIALLY_SHIPPED,
    PAST_DUE,
    PENDING,
    PROCESSING,
    SHIPPED,
    AuthorizeInput,
    AuthorizeResult,
    CanceledFulfillmentOrders,
    CancelFulfillmentOrderInput,
    CancelLinesInput,
    CancelOrderFulfillmentInput,
    CaptureInput,
    CaptureResult,
    ChangeAddressInput,
    ChangeAddressResult,
    ChargeLineData,
    CreditLineData,
    CreditMemoAndRefundInput,
    CreditMemoAndRefundResult,
    CreditMemoInput,
    CreditMemoResult,
    EscalateInput,
    EventData,
    EventLineData,
    FulfillmentOrderData,
    InvoiceAndCaptureInput,
    InvoiceAndCaptureResult,
    InvoiceInput,
    InvoiceResult,
    ItemQuantity,
    LineAdditionData,
    PaymentMethodData,
    ProcessExceptionInput,
    ProgressBatchInput,
    ProgressInput,
    ReceiptInput,
    RefundInput,
    RefundResult,
    RenewInput,
    RenewResult,
    ReturnOrderInput,
    RouteInput,
    RouteResult,
    RoutingLineData,
    VoidInput,
)

DEADLINE_SECONDS = 10.0
T = TypeVar("T")

_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}

ORDER_STATUS_TO_PROTO = {
    "": capture_pb2.ORDER_STATUS_UNSPECIFIED,
    PENDING: capture_pb2.ORDER_STATUS_PENDING,
    PROCESSING: capture_pb2.ORDER_STATUS_PROCESSING,
    AUTHORIZED: capture_pb2.ORDER_STATUS_AUTHORIZED,
    ALLOCATED: capture_pb2.ORDER_STATUS_ALLOCATED,
    PARTIALLY_SHIPPED: capture_pb2.ORDER_STATUS_PARTIALLY_SHIPPED,
    SHIPPED: capture_pb2.ORDER_STATUS_SHIPPED,
    FULFILLED: capture_pb2.ORDER_STATUS_FULFILLED,
    ON_HOLD: capture_pb2.ORDER_STATUS_ON_HOLD,
    CANCELED: capture_pb2.ORDER_STATUS_CANCELED,
    PAST_DUE: capture_pb2.ORDER_STATUS_PAST_DUE,
}
CATEGORY_TO_PROTO = {
    "payment": servicing_pb2.PROCESS_EXCEPTION_CATEGORY_PAYMENT,
    "fulfillment": servicing_pb2.PROCESS_EXCEPTION_CATEGORY_FULFILLMENT,
    "inventory": servicing_pb2.PROCESS_EXCEPTION_CATEGORY_INVENTORY,
    "fraud": servicing_pb2.PROCESS_EXCEPTION_CATEGORY_FRAUD,
    "carrier": servicing_pb2.PROCESS_EXCEPTION_CATEGORY_CARRIER,
    "invoicing": servicing_pb2.PROCESS_EXCEPTION_CATEGORY_INVOICING,
}
CREDIT_MEMO_KIND_TO_PROTO = {
    "": payments_pb2.CREDIT_MEMO_KIND_UNSPECIFIED,
    "cancel": payments_pb2.CREDIT_MEMO_KIND_CANCEL,
    "return": payments_pb2.CREDIT_MEMO_KIND_RETURN,
    "appeasement": payments_pb2.CREDIT_MEMO_KIND_APPEASEMENT,
}
SEVERITY_TO_PROTO = {
    "low": servicing_pb2.PROCESS_EXCEPTION_SEVERITY_LOW,
    "medium": servicing_pb2.PROCESS_EXCEPTION_SEVERITY_MEDIUM,
    "high": servicing_pb2.PROCESS_EXCEPTION_SEVERITY_HIGH,
}


async def _call(rpc: Awaitable[T]) -> T:
    """Await a gRPC call, turning business refusals into non-retryable activity errors."""
    info = activity.info()
    structlog.contextvars.bind_contextvars(
        workflow_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt
    )
    try:
        return await rpc
    except grpc.aio.AioRpcError as error:
        if error.code() in _REFUSALS:
            raise ApplicationError(
                error.details() or error.code().name, type=error.code().name, non_retryable=True
            ) from None
        structlog.get_logger("oms.activity").warning(
            "service call failed; will retry", code=error.code().name, detail=error.details()
        )
        raise


def _line_money(line: ChargeLineData | CreditLineData, currency: str) -> dict[str, Any]:
    """The fields an invoice line and a credit memo line share: the line and all its money."""
    return {
        "order_line_id": line.order_line_id,
        "sku": line.sku,
        "quantity_ordered": line.quantity_ordered,
        "gross": money_to_pb(line.gross_minor, currency),
        "discount": money_to_pb(line.discount_minor, currency),
        "tax": money_to_pb(line.tax_minor, currency),
    }


def _payment_method(method: PaymentMethodData) -> payments_pb2.PaymentMethod:
    return payments_pb2.PaymentMethod(
        type=PAYMENT_TYPE_TO_PB.get(method.type, payments_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED),
        token=method.token,
        preauthorization_ref=method.preauthorization_ref,
    )


def _line_addition(added: LineAdditionData, currency: str) -> capture_pb2.LineAddition:
    return capture_pb2.LineAddition(
        order_line_id=added.order_line_id,
        new_line=added.new_line,
        delivery_group_id=added.delivery_group_id,
        sku=added.sku,
        name=added.name,
        unit_price=money_to_pb(added.unit_price_minor, currency),
        quantity=added.quantity,
        tax=money_to_pb(added.tax_minor, currency),
    )


def _items(items: list[ItemQuantity]) -> list[servicing_pb2.ItemQuantity]:
    return [
        servicing_pb2.ItemQuantity(order_line_id=i.order_line_id, quantity=i.quantity)
        for i in items
    ]


class CaptureActivities:
    """Reports lifecycle progress to the order's record in capture."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = capture_pb2_grpc.CaptureServiceStub(channel)

    @activity.defn(name=names.RECORD_ORDER_PROGRESS)
    async def record_order_progress(self, progress: ProgressInput) -> None:
        structlog.contextvars.bind_contextvars(order_id=progress.order_id)
        await _call(self._stub.RecordOrderProgress(_progress(progress), timeout=DEADLINE_SECONDS))

    @activity.defn(name=names.RECORD_ORDER_PROGRESS_BATCH)
    async def record_order_progress_batch(self, batch: ProgressBatchInput) -> None:
        structlog.contextvars.bind_contextvars(order_id=batch.order_id)
        await _call(
            self._stub.RecordOrderProgressBatch(
                capture_pb2.RecordOrderProgressBatchRequest(
                    order_id=batch.order_id, steps=[_progress(step) for step in batch.steps]
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name=names.SUBMIT_CYCLE_ORDER)
    async def submit_cycle_order(self, order: CycleOrderInput) -> CycleOrderResult:
        """A subscription cycle's order through capture's normal path (its pacing included),
        keyed by the cycle: a retried or repeated cycle answers the order it already made."""
        structlog.contextvars.bind_contextvars(subscription_id=order.subscription_id)
        response = await _call(
            self._stub.SubmitOrder(_cycle_order(order), timeout=DEADLINE_SECONDS)
        )
        return CycleOrderResult(order_id=response.order.order_id, duplicate=response.duplicate)


def _cycle_order(order: CycleOrderInput) -> capture_pb2.SubmitOrderRequest:
    """SubmitOrder for a cycle: the plan's items at their unit prices in one delivery group,
    the plan's shipping on the group and its tax over the lines (PlanData.line_taxes), so the
    grand total is the plan's price."""
    plan, currency = order.plan, order.plan.currency
    key = cycle_order_key(order.subscription_id, order.cycle)
    taxes = plan.line_taxes()
    shopper = order.subscriber
    return capture_pb2.SubmitOrderRequest(
        idempotency_key=key,
        channel=CHANNEL_TO_PB.get(order.channel, capture_pb2.CHANNEL_UNSPECIFIED),
        channel_order_ref=f"subscription:{key}",
        shopper=capture_pb2.Shopper(
            kind=capture_pb2.SHOPPER_KIND_PERSON,
            channel_customer_id=shopper.channel_customer_id,
            email=shopper.email,
            name=shopper.name,
            phone=shopper.phone,
        ),
        currency=currency,
        delivery_groups=[
            capture_pb2.DeliveryGroup(
                ref="subscription",
                recipient_name=shopper.name,
                address=postal_address_to_pb(order.delivery_address),
                delivery_method=order.delivery_method,
                shipping_charge=money_to_pb(plan.shipping_minor, currency),
            )
        ],
        lines=[
            capture_pb2.OrderLine(
                delivery_group_ref="subscription",
                sku=item.sku,
                name=item.name,
                quantity=item.quantity,
                unit_price=money_to_pb(item.unit_price_minor, currency),
                taxes=[capture_pb2.TaxLine(name="tax", amount=money_to_pb(tax, currency))]
                if tax
                else [],
            )
            for item, tax in zip(plan.items, taxes, strict=True)
        ],
        grand_total=money_to_pb(plan.price_minor(), currency),
        payment_method=_payment_method(order.payment_method),
        subscription_id=order.subscription_id,
        subscription_cycle=order.cycle,
    )


def _progress(progress: ProgressInput) -> capture_pb2.RecordOrderProgressRequest:
    return capture_pb2.RecordOrderProgressRequest(
        order_id=progress.order_id,
        idempotency_key=progress.idempotency_key,
        status=ORDER_STATUS_TO_PROTO[progress.status],
        line_changes=[
            capture_pb2.LineQuantityChange(
                order_line_id=change.order_line_id,
                delta=capture_pb2.LineQuantities(
                    allocated=change.allocated,
                    fulfilled=change.fulfilled,
                    canceled=change.canceled,
                    return_initiated=change.return_initiated,
                    returned=change.returned,
                ),
            )
            for change in progress.line_changes
        ],
        event=common_pb2.TimelineEvent(
            kind=progress.kind, summary=progress.summary, actor=progress.actor
        ),
        added_lines=[_line_addition(added, progress.currency) for added in progress.added_lines],
        # The lifecycle reads nothing back: spare capture reading the order.
        omit_order=True,
        events=[_event(event, progress.currency) for event in progress.events],
        delivery_group_addresses=[
            capture_pb2.DeliveryGroupAddress(
                delivery_group_id=g.delivery_group_id, address=postal_address_to_pb(g.address)
            )
            for g in progress.delivery_group_addresses
        ],
        delivery_promises=[
            capture_pb2.DeliveryPromise(
                delivery_group_id=p.delivery_group_id,
                promised_delivery_date=p.promised_delivery_date,
            )
            for p in progress.delivery_promises
        ],
    )


def _event_lines(lines: list[EventLineData]) -> list[events_pb2.LineQuantity]:
    return [
        events_pb2.LineQuantity(
            order_line_id=line.order_line_id, sku=line.sku, quantity=line.quantity
        )
        for line in lines
    ]


def _event(event: EventData, currency: str) -> events_pb2.Event:
    """A progress report's event as the log takes it: the type and its payload (capture fills
    in the id, order, channel, time and actor)."""
    out = events_pb2.Event(type=event.type)
    if (status := event.order_status) is not None:
        out.order_status_changed.CopyFrom(
            events_pb2.OrderStatusChanged(
                from_status=status.from_status, to_status=status.to_status, reason=status.reason
            )
        )
    elif (payment := event.payment) is not None:
        out.payment_changed.CopyFrom(
            events_pb2.PaymentChanged(
                amount=money_to_pb(payment.amount_minor, currency),
                invoice_id=payment.invoice_id,
                decline_reason=payment.decline_reason,
            )
        )
    elif (fo := event.fulfillment_order) is not None:
        out.fulfillment_order_changed.CopyFrom(
            events_pb2.FulfillmentOrderChanged(
                fulfillment_order_id=fo.fulfillment_order_id,
                location_id=fo.location_id,
                status=fo.status,
                lines=_event_lines(fo.lines),
                reason=fo.reason,
            )
        )
    elif (shipment := event.shipment) is not None:
        out.shipment_changed.CopyFrom(
            events_pb2.ShipmentChanged(
                shipment_id=shipment.shipment_id,
                fulfillment_order_id=shipment.fulfillment_order_id,
                location_id=shipment.location_id,
                carrier=shipment.carrier,
                tracking_number=shipment.tracking_number,
                lines=_event_lines(shipment.lines),
            )
        )
    elif (lines := event.lines) is not None:
        out.lines_changed.CopyFrom(
            events_pb2.LinesChanged(
                lines=_event_lines(lines.lines),
                reason=lines.reason,
                # Unset when the change moved no money (a cancel's money is its refund).
                amount=money_to_pb(lines.amount_minor, currency) if lines.amount_minor else None,
            )
        )
    elif (rma := event.return_order) is not None:
        out.return_order_changed.CopyFrom(
            events_pb2.ReturnOrderChanged(
                return_order_id=rma.return_order_id,
                status=rma.status,
                lines=_event_lines(rma.lines),
                reason=rma.reason,
            )
        )
    elif (refund := event.refund) is not None:
        out.refund_issued.CopyFrom(
            events_pb2.RefundIssued(
                credit_memo_id=refund.credit_memo_id,
                amount=money_to_pb(refund.amount_minor, currency),
                cause=refund.cause,
            )
        )
    elif (exception := event.process_exception) is not None:
        out.process_exception_changed.CopyFrom(
            events_pb2.ProcessExceptionChanged(
                process_exception_id=exception.process_exception_id,
                category=exception.category,
                resolution=exception.resolution,
            )
        )
    return out


def _invoice_request(request: InvoiceInput) -> payments_pb2.CreateInvoiceRequest:
    currency = request.currency
    return payments_pb2.CreateInvoiceRequest(
        order_id=request.order_id,
        fulfillment_order_id=request.fulfillment_order_id,
        idempotency_key=request.idempotency_key,
        lines=[
            payments_pb2.ChargeableLine(
                **_line_money(line, currency),
                quantity_to_invoice=line.quantity_to_invoice,
                quantity_invoiced_before=line.quantity_invoiced_before,
            )
            for line in request.lines
        ],
        shipping=money_to_pb(request.shipping_minor, currency),
        goodwill=money_to_pb(request.goodwill_minor, currency),
    )


def _invoice_result(response: payments_pb2.CreateInvoiceResponse) -> InvoiceResult:
    return InvoiceResult(
        invoice_id=response.invoice.invoice_id,
        total_minor=response.invoice.total.amount_minor,
    )


def _capture_result(response: payments_pb2.CaptureInvoiceResponse) -> CaptureResult:
    capture = response.capture
    return CaptureResult(
        capture_id=capture.capture_id,
        succeeded=capture.status == payments_pb2.CAPTURE_STATUS_SUCCEEDED,
        amount_minor=capture.amount.amount_minor,
        failure_reason=capture.failure_reason,
    )


def _credit_memo_request(request: CreditMemoInput) -> payments_pb2.CreateCreditMemoRequest:
    currency = request.currency
    return payments_pb2.CreateCreditMemoRequest(
        order_id=request.order_id,
        idempotency_key=request.idempotency_key,
        kind=CREDIT_MEMO_KIND_TO_PROTO[request.kind],
        reason=request.reason,
        currency=currency,
        lines=[
            payments_pb2.CreditableLine(
                **_line_money(line, currency),
                quantity_to_credit=line.quantity_to_credit,
                first_unit=line.first_unit,
            )
            for line in request.lines
        ],
        shipping=money_to_pb(request.shipping_minor, currency),
        fee=money_to_pb(request.fee_minor, currency),
        appeasements=[
            payments_pb2.Appeasement(amount=money_to_pb(request.appeasement_minor, currency))
        ]
        if request.appeasement_minor
        else [],
    )


def _credit_memo_result(response: payments_pb2.CreateCreditMemoResponse) -> CreditMemoResult:
    memo = response.credit_memo
    return CreditMemoResult(memo.credit_memo_id, memo.total.amount_minor)


def _refund_result(response: payments_pb2.RefundCreditMemoResponse) -> RefundResult:
    return RefundResult(
        refunded_minor=response.refunded.amount_minor,
        released_minor=response.released.amount_minor,
        not_refunded_minor=response.not_refunded.amount_minor,
        failed=response.outcome == payments_pb2.REFUND_OUTCOME_FAILED,
        failure_reason=response.failure_reason,
    )


class PaymentsActivities:
    """Authorize, invoice, capture and void through the payments service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = payments_pb2_grpc.PaymentsServiceStub(channel)

    @activity.defn(name=names.AUTHORIZE_PAYMENT)
    async def authorize_payment(self, request: AuthorizeInput) -> AuthorizeResult:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.AuthorizePayment(
                payments_pb2.AuthorizePaymentRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    payment_method=_payment_method(request.payment_method),
                    amount=money_to_pb(request.amount_minor, request.currency),
                    additional_payment_methods=[
                        _payment_method(m) for m in request.additional_payment_methods
                    ],
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        auth = response.authorization
        return AuthorizeResult(
            authorization_id=auth.authorization_id,
            approved=auth.status == payments_pb2.AUTHORIZATION_STATUS_APPROVED,
            decline_reason=auth.decline_reason,
        )

    @activity.defn(name=names.CREATE_INVOICE)
    async def create_invoice(self, request: InvoiceInput) -> InvoiceResult:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.CreateInvoice(_invoice_request(request), timeout=DEADLINE_SECONDS)
        )
        return _invoice_result(response)

    @activity.defn(name=names.CAPTURE_INVOICE)
    async def capture_invoice(self, request: CaptureInput) -> CaptureResult:
        response = await _call(
            self._stub.CaptureInvoice(
                payments_pb2.CaptureInvoiceRequest(
                    invoice_id=request.invoice_id, idempotency_key=request.idempotency_key
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        return _capture_result(response)

    @activity.defn(name=names.INVOICE_AND_CAPTURE)
    async def invoice_and_capture(self, request: InvoiceAndCaptureInput) -> InvoiceAndCaptureResult:
        structlog.contextvars.bind_contextvars(order_id=request.invoice.order_id)
        wire = _invoice_request(request.invoice)
        wire.capture_idempotency_key = request.capture_idempotency_key
        response = await _call(self._stub.CreateInvoice(wire, timeout=DEADLINE_SECONDS))
        invoice = _invoice_result(response)
        if response.capture_refused:
            return InvoiceAndCaptureResult(invoice, capture_refused=response.capture_refused)
        return InvoiceAndCaptureResult(invoice, _capture_result(response.capture))

    @activity.defn(name=names.CREATE_CREDIT_MEMO)
    async def create_credit_memo(self, request: CreditMemoInput) -> CreditMemoResult:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.CreateCreditMemo(_credit_memo_request(request), timeout=DEADLINE_SECONDS)
        )
        return _credit_memo_result(response)

    @activity.defn(name=names.REFUND_CREDIT_MEMO)
    async def refund_credit_memo(self, request: RefundInput) -> RefundResult:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.RefundCreditMemo(
                payments_pb2.RefundCreditMemoRequest(
                    credit_memo_id=request.credit_memo_id, idempotency_key=request.idempotency_key
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        return _refund_result(response)

    @activity.defn(name=names.CREDIT_MEMO_AND_REFUND)
    async def credit_memo_and_refund(
        self, request: CreditMemoAndRefundInput
    ) -> CreditMemoAndRefundResult:
        structlog.contextvars.bind_contextvars(order_id=request.memo.order_id)
        wire = _credit_memo_request(request.memo)
        wire.refund_idempotency_key = request.refund_idempotency_key
        wire.void_remaining_idempotency_key = request.void_idempotency_key
        response = await _call(self._stub.CreateCreditMemo(wire, timeout=DEADLINE_SECONDS))
        memo = _credit_memo_result(response)
        if response.refund_refused:
            return CreditMemoAndRefundResult(memo, refund_refused=response.refund_refused)
        return CreditMemoAndRefundResult(
            memo,
            _refund_result(response.refund),
            voided=response.HasField("void_remaining"),
            void_refused=response.void_refused,
        )

    @activity.defn(name=names.VOID_AUTHORIZATION)
    async def void_authorization(self, request: VoidInput) -> None:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        await _call(
            self._stub.VoidAuthorization(
                payments_pb2.VoidAuthorizationRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    reason=request.reason,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name=names.RENEW_AUTHORIZATIONS)
    async def renew_authorizations(self, request: RenewInput) -> RenewResult:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.RenewAuthorizations(
                payments_pb2.RenewAuthorizationsRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    promise_date=request.promise_date,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        return RenewResult(
            approved=response.status == payments_pb2.AUTHORIZATION_STATUS_APPROVED,
            decline_reason=response.decline_reason,
            renewed_minor=sum(
                a.amount.amount_minor
                for a in response.renewals
                if a.status == payments_pb2.AUTHORIZATION_STATUS_APPROVED
            ),
            renew_again=response.renew_again,
            renew_again_in_seconds=response.renew_again_in_seconds,
        )


class FulfillmentActivities:
    """Route and reserve, and cancel fulfillment orders, through the fulfillment service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = fulfillment_pb2_grpc.FulfillmentServiceStub(channel)

    @activity.defn(name=names.CREATE_FULFILLMENT_ORDERS)
    async def create_fulfillment_orders(self, request: RouteInput) -> RouteResult:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.CreateFulfillmentOrders(
                fulfillment_pb2.CreateFulfillmentOrdersRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    delivery_groups=[
                        fulfillment_pb2.RoutingDeliveryGroup(
                            delivery_group_id=group.delivery_group_id,
                            address=postal_address_to_pb(group.address),
                            delivery_method=group.delivery_method,
                            pickup_location_id=group.pickup_location_id,
                            lines=[
                                fulfillment_pb2.RoutingLine(
                                    order_line_id=line.order_line_id,
                                    sku=line.sku,
                                    quantity=line.quantity,
                                )
                                for line in group.lines
                            ],
                        )
                        for group in request.delivery_groups
                    ],
                    reservation_id=request.reservation_id,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        return RouteResult(
            fulfillment_orders=[_fulfillment_order(fo) for fo in response.fulfillment_orders],
            unallocated=[
                RoutingLineData(line.order_line_id, line.sku, line.quantity)
                for line in response.unallocated_lines
            ],
            decisions=list(response.decisions),
        )

    @activity.defn(name=names.CANCEL_FULFILLMENT_ORDER)
    async def cancel_fulfillment_order(self, request: CancelFulfillmentOrderInput) -> None:
        await _call(
            self._stub.CancelFulfillmentOrder(
                fulfillment_pb2.CancelFulfillmentOrderRequest(
                    fulfillment_order_id=request.fulfillment_order_id,
                    idempotency_key=request.idempotency_key,
                    reason=request.reason,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name=names.CANCEL_ORDER_FULFILLMENT_ORDERS)
    async def cancel_order_fulfillment_orders(
        self, request: CancelOrderFulfillmentInput
    ) -> CanceledFulfillmentOrders:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.CancelOrderFulfillmentOrders(
                fulfillment_pb2.CancelOrderFulfillmentOrdersRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    reason=request.reason,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        return CanceledFulfillmentOrders(
            [_fulfillment_order(fo) for fo in response.fulfillment_orders]
        )

    @activity.defn(name=names.CANCEL_FULFILLMENT_ORDER_LINES)
    async def cancel_fulfillment_order_lines(self, request: CancelLinesInput) -> None:
        await _call(
            self._stub.CancelFulfillmentOrderLines(
                fulfillment_pb2.CancelFulfillmentOrderLinesRequest(
                    fulfillment_order_id=request.fulfillment_order_id,
                    idempotency_key=request.idempotency_key,
                    lines=[
                        fulfillment_pb2.LineQuantity(
                            order_line_id=line.order_line_id, quantity=line.quantity
                        )
                        for line in request.lines
                    ],
                    reason=request.reason,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name=names.CHANGE_DELIVERY_ADDRESS)
    async def change_delivery_address(self, request: ChangeAddressInput) -> ChangeAddressResult:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.ChangeDeliveryAddress(
                fulfillment_pb2.ChangeDeliveryAddressRequest(
                    order_id=request.order_id,
                    delivery_group_id=request.delivery_group_id,
                    idempotency_key=request.idempotency_key,
                    address=postal_address_to_pb(request.address),
                    reason=request.reason,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        return ChangeAddressResult(
            rerouted=response.rerouted,
            from_location_ids=list(response.from_location_ids),
            to_location_ids=list(response.to_location_ids),
            canceled_fulfillment_order_ids=list(response.canceled_fulfillment_order_ids),
            replacements=[_fulfillment_order(fo) for fo in response.replacements],
        )


def _fulfillment_order(fo: fulfillment_pb2.FulfillmentOrder) -> FulfillmentOrderData:
    return FulfillmentOrderData(
        fulfillment_order_id=fo.fulfillment_order_id,
        location_id=fo.location_id,
        delivery_group_id=fo.delivery_group_id,
        lines=[RoutingLineData(line.order_line_id, line.sku, line.quantity) for line in fo.lines],
        promise_date=fo.promise_date,
        promised_delivery_date=fo.promised_delivery_date,
    )


class ServicingActivities:
    """Process exceptions and return orders in the servicing service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = servicing_pb2_grpc.ServicingServiceStub(channel)

    @activity.defn(name=names.RECORD_PROCESS_EXCEPTION)
    async def record_process_exception(self, request: ProcessExceptionInput) -> str:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        response = await _call(
            self._stub.RecordProcessException(
                servicing_pb2.RecordProcessExceptionRequest(
                    idempotency_key=request.idempotency_key,
                    order_id=request.order_id,
                    category=CATEGORY_TO_PROTO[request.category],
                    severity=SEVERITY_TO_PROTO[request.severity],
                    attached_to=request.attached_to,
                    step_input=request.step_input,
                    message=request.message,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )
        return str(response.process_exception.process_exception_id)

    @activity.defn(name=names.ESCALATE_PROCESS_EXCEPTION)
    async def escalate_process_exception(self, request: EscalateInput) -> None:
        await _call(
            self._stub.EscalateProcessException(
                servicing_pb2.EscalateProcessExceptionRequest(
                    process_exception_id=request.process_exception_id,
                    idempotency_key=request.idempotency_key,
                    message=request.message,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name=names.CREATE_RETURN_ORDER)
    async def create_return_order(self, request: ReturnOrderInput) -> None:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        await _call(
            self._stub.CreateReturnOrder(
                servicing_pb2.CreateReturnOrderRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    return_order_id=request.return_order_id,
                    reason=request.reason,
                    lines=_items(request.lines),
                ),
                timeout=DEADLINE_SECONDS,
            )
        )

    @activity.defn(name=names.RECORD_RETURN_RECEIPT)
    async def record_return_receipt(self, request: ReceiptInput) -> None:
        structlog.contextvars.bind_contextvars(order_id=request.order_id)
        await _call(
            self._stub.RecordReturnReceipt(
                servicing_pb2.RecordReturnReceiptRequest(
                    order_id=request.order_id,
                    idempotency_key=request.idempotency_key,
                    return_order_id=request.return_order_id,
                    accepted=_items(request.accepted),
                    rejected=_items(request.rejected),
                    reason=request.reason,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )


class SubscriptionsActivities:
    """A subscription's progress, recorded by servicing's SubscriptionsService (the projection
    agents and shoppers read)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = subscriptions_pb2_grpc.SubscriptionsServiceStub(channel)

    @activity.defn(name=names.RECORD_SUBSCRIPTION_PROGRESS)
    async def record_subscription_progress(self, progress: SubscriptionProgressInput) -> None:
        view = progress.subscription
        structlog.contextvars.bind_contextvars(subscription_id=view.subscription_id)
        await _call(
            self._stub.RecordSubscriptionProgress(
                subscriptions_pb2.RecordSubscriptionProgressRequest(
                    idempotency_key=progress.idempotency_key,
                    subscription=_subscription(view),
                    cycles=[_cycle(c, view.plan) for c in progress.cycles],
                    change=_change_record(progress.change) if progress.change else None,
                ),
                timeout=DEADLINE_SECONDS,
            )
        )


def _instant(text: str) -> Any:
    """An ISO 8601 instant as a Timestamp (None, leaving the field unset, when empty)."""
    return timestamp_from_datetime(cadence.parse_instant(text)) if text else None


def _subscription(view: SubscriptionView) -> subscriptions_pb2.Subscription:
    """The subscription as the workflow holds it; what only servicing knows (channel,
    subscriber, start, created) it keeps from its own record."""
    return subscriptions_pb2.Subscription(
        subscription_id=view.subscription_id,
        plan_id=view.plan.plan_id,
        delivery_address=postal_address_to_pb(view.delivery_address)
        if view.delivery_address
        else None,
        delivery_method=view.delivery_method,
        payment_method=_payment_method(view.payment_method) if view.payment_method else None,
        status=subscription_wire.STATUS_TO_PB[view.status],
        next_cycle=view.next_cycle,
        next_cycle_at=_instant(view.next_cycle_at),
        paused_until=_instant(view.paused_until),
        skipped_cycles=view.skipped_cycles,
        pending_plan_id=view.pending_plan.plan_id if view.pending_plan else "",
        pending_plan_from_cycle=view.pending_plan_from_cycle,
        cancel_at_period_end=view.cancel_at_period_end,
        suspended_reason=view.suspended_reason,
    )


def _cycle(cycle: CycleView, plan: PlanData) -> subscriptions_pb2.Cycle:
    return subscriptions_pb2.Cycle(
        number=cycle.number,
        due_at=_instant(cycle.due_at),
        status=subscription_wire.CYCLE_STATUS_TO_PB[cycle.status],
        order_id=cycle.order_id,
        plan_id=cycle.plan_id,
        amount=money_to_pb(cycle.amount_minor, plan.currency),
        payment_attempts=cycle.payment_attempts,
        next_payment_retry_at=_instant(cycle.next_payment_retry_at),
        decline_reason=cycle.decline_reason,
    )


def _change_record(change: ChangeRecordData) -> subscriptions_pb2.SubscriptionChangeRecord:
    return subscriptions_pb2.SubscriptionChangeRecord(
        change_id=change.change_id,
        kind=change.kind,
        actor=change.actor,
        reason=change.reason,
        summary=change.summary,
        effective_cycle=change.effective_cycle,
        at=_instant(change.at),
    )
