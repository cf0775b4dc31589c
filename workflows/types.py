"""The order workflow's vocabulary: its id, names, search attributes and every payload type.

One dataclass in, one dataclass out for the workflow and each activity. Generated protobuf
types never appear here; activities convert at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.common import SearchAttributeKey

WORKFLOW_NAME = "OrderLifecycle"
FULFILLMENT_EVENT_SIGNAL = "fulfillment_event"
STATUS_QUERY = "status"

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
ORDER_CHANNEL = SearchAttributeKey.for_keyword("OrderChannel")


def order_workflow_id(order_id: str) -> str:
    """The lifecycle workflow id of an order."""
    return f"order:{order_id}"


# Order statuses as stored and searched (lower case); the proto enum maps onto these.
PENDING = "pending"
PROCESSING = "processing"
AUTHORIZED = "authorized"
ALLOCATED = "allocated"
PARTIALLY_SHIPPED = "partially_shipped"
SHIPPED = "shipped"
FULFILLED = "fulfilled"
ON_HOLD = "on_hold"
CANCELED = "canceled"
ORDER_STATUSES = (
    PENDING, PROCESSING, AUTHORIZED, ALLOCATED, PARTIALLY_SHIPPED, SHIPPED, FULFILLED, ON_HOLD,
    CANCELED,
)  # fmt: skip


@dataclass
class Address:
    """A postal address."""

    line1: str
    city: str
    postal_code: str
    country_code: str
    line2: str = ""
    region: str = ""


@dataclass
class PaymentMethodData:
    """How the shopper pays: type is "card", "gift_card" or "invoice_terms"."""

    type: str
    token: str
    preauthorization_ref: str = ""


@dataclass
class LifecycleDeliveryGroup:
    """A recipient's delivery group, with the shipping charged for it."""

    delivery_group_id: str
    address: Address
    shipping_minor: int


@dataclass
class LifecycleLine:
    """An order line with its full money (discounts include its share of order discounts)."""

    order_line_id: str
    delivery_group_id: str
    sku: str
    quantity: int
    gross_minor: int
    discount_minor: int
    tax_minor: int


@dataclass
class OrderLifecycleInput:
    """What the lifecycle needs to know about an order; written by capture at submit."""

    order_id: str
    channel: str
    currency: str
    grand_total_minor: int
    payment_method: PaymentMethodData
    delivery_groups: list[LifecycleDeliveryGroup]
    lines: list[LifecycleLine]
    # Further payment methods applied after `payment_method`, in order (e.g. a card after a
    # gift card). Empty for a single-method order.
    additional_payment_methods: list[PaymentMethodData] = field(default_factory=list)
    # Why fraud screening at capture wants a person to look first; empty means clear.
    fraud_reasons: list[str] = field(default_factory=list)


@dataclass
class OrderLifecycleResult:
    """How the lifecycle ended."""

    order_id: str
    status: str
    captured_minor: int = 0
    invoiced_minor: int = 0
    reason: str = ""


@dataclass
class ShipmentItemData:
    """Units of one order line in a parcel."""

    order_line_id: str
    quantity: int


@dataclass
class FulfillmentEvent:
    """Recorded by fulfillment, delivered through its outbox as a signal.

    kind:
    - "shipped": shipment_id, items, carrier, tracking_number set;
    - "delivered": shipment_id set;
    - "rejected": the location refused `items` of the fulfillment order (reason set); fulfillment
      already routed them again: `replacements` are the new fulfillment orders, `unallocated`
      what no other location could take.
    """

    event_id: str
    kind: str
    fulfillment_order_id: str
    shipment_id: str = ""
    items: list[ShipmentItemData] = field(default_factory=list)
    carrier: str = ""
    tracking_number: str = ""
    reason: str = ""
    replacements: list[FulfillmentOrderData] = field(default_factory=list)
    unallocated: list[RoutingLineData] = field(default_factory=list)


# ---- activity payloads -------------------------------------------------------------------


@dataclass
class LineChange:
    """Units added to (or, negative, taken from) an order line's buckets."""

    order_line_id: str
    allocated: int = 0
    fulfilled: int = 0
    canceled: int = 0


@dataclass
class ProgressInput:
    """A lifecycle step reported to capture (status, buckets, timeline)."""

    order_id: str
    idempotency_key: str
    status: str
    kind: str
    summary: str
    actor: str = "workflow"
    line_changes: list[LineChange] = field(default_factory=list)


@dataclass
class AuthorizeInput:
    """Authorize an amount on the order's payment method."""

    order_id: str
    idempotency_key: str
    payment_method: PaymentMethodData
    amount_minor: int
    currency: str


@dataclass
class AuthorizeResult:
    """Approved or declined, with the gateway's reason."""

    authorization_id: str
    approved: bool
    decline_reason: str = ""


@dataclass
class RoutingLineData:
    """Units of an order line to place at a location."""

    order_line_id: str
    sku: str
    quantity: int


@dataclass
class RoutingGroupData:
    """A delivery group to route."""

    delivery_group_id: str
    address: Address
    lines: list[RoutingLineData]


@dataclass
class RouteInput:
    """Route and reserve an order."""

    order_id: str
    idempotency_key: str
    delivery_groups: list[RoutingGroupData]


@dataclass
class FulfillmentOrderData:
    """A fulfillment order as the workflow tracks it."""

    fulfillment_order_id: str
    location_id: str
    delivery_group_id: str
    lines: list[RoutingLineData]


@dataclass
class RouteResult:
    """Fulfillment orders created, what could not be placed, and why."""

    fulfillment_orders: list[FulfillmentOrderData]
    unallocated: list[RoutingLineData]
    decisions: list[str]


@dataclass
class CancelFulfillmentOrderInput:
    """Cancel an unshipped fulfillment order (compensation)."""

    fulfillment_order_id: str
    idempotency_key: str
    reason: str


@dataclass
class ChargeLineData:
    """Units of an order line to invoice, with the line's full money."""

    order_line_id: str
    sku: str
    quantity_ordered: int
    gross_minor: int
    discount_minor: int
    tax_minor: int
    quantity_to_invoice: int
    quantity_invoiced_before: int


@dataclass
class InvoiceInput:
    """Invoice one shipment."""

    order_id: str
    fulfillment_order_id: str
    idempotency_key: str
    currency: str
    lines: list[ChargeLineData]
    shipping_minor: int


@dataclass
class InvoiceResult:
    """The invoice created."""

    invoice_id: str
    total_minor: int


@dataclass
class CaptureInput:
    """Capture an invoice's outstanding amount."""

    invoice_id: str
    idempotency_key: str


@dataclass
class CaptureResult:
    """Succeeded (amount moved) or failed (reason)."""

    capture_id: str
    succeeded: bool
    amount_minor: int
    failure_reason: str = ""


@dataclass
class VoidInput:
    """Void the order's open authorizations (compensation)."""

    order_id: str
    idempotency_key: str
    reason: str


@dataclass
class ProcessExceptionInput:
    """Raise a process exception. category: payment, fulfillment, inventory, fraud, carrier,
    invoicing; severity: low, medium, high."""

    order_id: str
    idempotency_key: str
    category: str
    severity: str
    attached_to: str
    message: str
