"""The contract services and the order workflow exchange: its id, names, search attributes and
every payload type (the workflow's input and result, signals, Updates, queries, activities).

One dataclass in, one dataclass out for the workflow and each activity. Generated protobuf
types never appear here; activities convert at the edge. What only the workflow holds lives in
`workflows/state.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

WORKFLOW_NAME = "OrderLifecycle"
FULFILLMENT_EVENT_SIGNAL = "fulfillment_event"
STATUS_QUERY = "status"
# The lifecycle code's baseline: capture starts every order's lifecycle at it, and the run
# takes every change folded into it without recording a patch (see workflows/versions.py).
LIFECYCLE_BASELINE = 2
STATE_QUERY = "state"


def order_workflow_id(order_id: str) -> str:
    """The lifecycle workflow id of an order."""
    return f"order:{order_id}"


def order_id_of_workflow(workflow_id: str) -> str | None:
    """The order whose lifecycle `workflow_id` is; None for any other workflow."""
    prefix, _, order_id = workflow_id.partition(":")
    return order_id if prefix == "order" and order_id else None


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
# A subscription's cycle order whose payment was declined, waiting for its next retry
# (dunning, README "Subscriptions").
PAST_DUE = "past_due"
ORDER_STATUSES = (
    PENDING, PROCESSING, AUTHORIZED, ALLOCATED, PARTIALLY_SHIPPED, SHIPPED, FULFILLED, ON_HOLD,
    CANCELED, PAST_DUE,
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
    # e.g. "standard", "express", "same_day"; routing rules may depend on it.
    delivery_method: str = ""
    # With delivery method "pickup": the store the shopper collects at.
    pickup_location_id: str = ""


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
    timers: LifecycleTimers = field(default_factory=lambda: LifecycleTimers())
    # Exchanges ship their replacements when the return is received rather than at once
    # (from settings when the lifecycle starts).
    exchange_ships_on_receipt: bool = False
    # Set only when a delivered order's lifecycle continues as new: where it had got to (the
    # workflow's own `workflows.state.LifecycleState`, as JSON: opaque to everyone else).
    carried: dict[str, Any] | None = None
    # The channel's own order reference (e.g. the storefront's order number), for people.
    channel_order_ref: str = ""
    # A subscription's cycle order: the subscription (told how the payment went, see
    # workflows/subscription_types.py) and the cycle; empty and 0 for any other order.
    subscription_id: str = ""
    subscription_cycle: int = 0
    # Dunning: a declined payment is retried this many seconds after the decline (each entry
    # one retry, e.g. 1, 3 and 7 days) while the order waits past due; empty: a decline
    # cancels at once. From settings when a subscription's order starts.
    payment_retry_seconds: list[int] = field(default_factory=list)
    # The lifecycle code's baseline the run started at (`LIFECYCLE_BASELINE` when capture
    # starts it). 0, as in a run started before baselines existed, asks for every patch.
    baseline: int = 0
    # A checkout reservation holding the order's units (fulfillment's ReserveInventory),
    # handed to routing, which consumes it; "" for an order placed without one (and in
    # histories recorded before reservations).
    reservation_id: str = ""


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
      what no other location could take;
    - "backorder_released": a backordered fulfillment order got its units (`items`) from
      arriving supply and went to its location;
    - "backorder_repromised": a backordered fulfillment order is promised for another day:
      `replacements[0]` is itself as it is now (location and promise date).
    - "not_collected": a pickup fulfillment order waited at its store past its deadline;
      fulfillment canceled its `items` (stock restored; reason set).
    - "transfer_repromised": a ship-to-store fulfillment order left its warehouse for the
      store (carrier, tracking_number, reason set) and is promised for another day now
      (`promised_delivery_date`).
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
    # "shipped", "transfer_repromised": the day (YYYY-MM-DD) the fulfillment order is promised
    # to arrive now.
    promised_delivery_date: str = ""


# ---- activity payloads -------------------------------------------------------------------


@dataclass
class LineQuantityChange:
    """Units added to (or, negative, taken from) an order line's buckets."""

    order_line_id: str
    allocated: int = 0
    fulfilled: int = 0
    canceled: int = 0
    return_initiated: int = 0
    returned: int = 0


@dataclass
class ProgressInput:
    """A lifecycle step reported to capture (status, buckets, timeline)."""

    order_id: str
    idempotency_key: str
    status: str
    kind: str
    summary: str
    actor: str = "workflow"
    line_changes: list[LineQuantityChange] = field(default_factory=list)
    # Units added to the order (applied before line_changes, which may allocate them), with
    # money in the order's currency.
    added_lines: list[LineAdditionData] = field(default_factory=list)
    currency: str = ""
    # What the step changed, for the order's event log (money in `currency`).
    events: list[EventData] = field(default_factory=list)
    # Delivery groups sent to a new address (address changes).
    delivery_group_addresses: list[DeliveryGroupAddressData] = field(default_factory=list)
    # Delivery groups whose promised delivery date changed with the step.
    delivery_promises: list[DeliveryPromiseData] = field(default_factory=list)


@dataclass
class DeliveryPromiseData:
    """The day (YYYY-MM-DD; "" for none) a delivery group is promised to arrive, for
    capture's record of the order."""

    delivery_group_id: str
    promised_delivery_date: str


@dataclass
class DeliveryGroupAddressData:
    """A delivery group's new ship-to address, for capture's record of the order."""

    delivery_group_id: str
    address: Address


@dataclass
class ProgressBatchInput:
    """Steps of one order reported to capture together, in the order they were taken."""

    order_id: str
    steps: list[ProgressInput] = field(default_factory=list)


# ---- the events a progress report carries (oms.events.v1.Event: type and payload) ---------
# The workflow sets the type and what changed; capture adds the event id, order, channel, time
# and actor. One payload per event, the one its type names (README "Events"); the rest stay
# None. Money is in minor units of the report's currency. No personal data: ids, SKUs,
# quantities, money, statuses, and reasons people typed.


@dataclass
class EventLineData:
    """Units of one order line (or of an exchange's replacement) an event is about."""

    order_line_id: str
    sku: str
    quantity: int


@dataclass
class OrderStatusEventData:
    """order.processing, order.fulfilled, order.closed, order.canceled."""

    from_status: str
    to_status: str
    reason: str = ""


@dataclass
class PaymentEventData:
    """payment.authorized, payment.captured (invoice_id), payment.declined (decline_reason)."""

    amount_minor: int
    invoice_id: str = ""
    decline_reason: str = ""


@dataclass
class FulfillmentOrderEventData:
    """fulfillment.allocated (one per fulfillment order created), .rejected, .rerouted,
    .canceled; status is the fulfillment order's after the change, lower case ("" when some of
    its units are still to ship, so its status is what it was)."""

    fulfillment_order_id: str
    location_id: str
    status: str
    lines: list[EventLineData] = field(default_factory=list)
    reason: str = ""


@dataclass
class ShipmentEventData:
    """shipment.shipped (carrier, tracking number, lines), shipment.delivered."""

    shipment_id: str
    fulfillment_order_id: str
    location_id: str
    carrier: str = ""
    tracking_number: str = ""
    lines: list[EventLineData] = field(default_factory=list)


@dataclass
class LinesEventData:
    """lines.canceled, lines.added (amount), order.appeased (amount), order.reshipped,
    order.exchanged."""

    lines: list[EventLineData] = field(default_factory=list)
    reason: str = ""
    amount_minor: int = 0


@dataclass
class ReturnOrderEventData:
    """return.requested, return.received (lines: the units received); status lower case."""

    return_order_id: str
    status: str
    lines: list[EventLineData] = field(default_factory=list)
    reason: str = ""


@dataclass
class RefundEventData:
    """refund.issued: money given back for a credit memo; cause "cancel", "return",
    "appeasement", "exchange"."""

    credit_memo_id: str
    amount_minor: int
    cause: str


@dataclass
class ProcessExceptionEventData:
    """exception.raised, exception.escalated, exception.resolved (resolution)."""

    process_exception_id: str
    category: str
    resolution: str = ""


@dataclass
class EventData:
    """One event of a progress report: its type and the payload that type carries."""

    type: str
    order_status: OrderStatusEventData | None = None
    payment: PaymentEventData | None = None
    fulfillment_order: FulfillmentOrderEventData | None = None
    shipment: ShipmentEventData | None = None
    lines: LinesEventData | None = None
    return_order: ReturnOrderEventData | None = None
    refund: RefundEventData | None = None
    process_exception: ProcessExceptionEventData | None = None


@dataclass
class AuthorizeInput:
    """Authorize an amount on the order's payment methods, in order."""

    order_id: str
    idempotency_key: str
    payment_method: PaymentMethodData
    amount_minor: int
    currency: str
    additional_payment_methods: list[PaymentMethodData] = field(default_factory=list)


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
    delivery_method: str = ""
    # With delivery method "pickup": the store the shopper collects at.
    pickup_location_id: str = ""


@dataclass
class RouteInput:
    """Route and reserve an order."""

    order_id: str
    idempotency_key: str
    delivery_groups: list[RoutingGroupData]
    # A checkout reservation for routing to consume (its held units placed where they are
    # held); "" routes on current availability only.
    reservation_id: str = ""


@dataclass
class FulfillmentOrderData:
    """A fulfillment order as the workflow tracks it."""

    fulfillment_order_id: str
    location_id: str
    delivery_group_id: str
    lines: list[RoutingLineData]
    # Set on a backordered one: the day (YYYY-MM-DD) its incoming supply is expected.
    promise_date: str = ""
    # The day (YYYY-MM-DD) its units are promised to arrive; "" when none was made.
    promised_delivery_date: str = ""


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
class CancelOrderFulfillmentInput:
    """Cancel whatever an order's fulfillment orders have not shipped (compensation for an
    order canceled before its lifecycle recorded a routing)."""

    order_id: str
    idempotency_key: str
    reason: str


@dataclass
class CanceledFulfillmentOrders:
    """The fulfillment orders a cancel by order canceled (none when it had none open)."""

    fulfillment_orders: list[FulfillmentOrderData]


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
    # Goodwill given before anything was charged, taken off this invoice.
    goodwill_minor: int = 0


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
class RenewInput:
    """Keep the order's holds until the end of a promised day (payments renews what is due)."""

    order_id: str
    idempotency_key: str
    # The last day ("YYYY-MM-DD") the order's waiting goods are promised for.
    promise_date: str


@dataclass
class RenewResult:
    """Whether every hold due was renewed, what they hold now, and when to ask again
    (`renew_again` False: no hold falls due before the promised day)."""

    approved: bool
    decline_reason: str = ""
    renewed_minor: int = 0
    renew_again: bool = False
    renew_again_in_seconds: int = 0


@dataclass
class CaptureResult:
    """Succeeded (amount moved) or failed (reason)."""

    capture_id: str
    succeeded: bool
    amount_minor: int
    failure_reason: str = ""


@dataclass
class InvoiceAndCaptureInput:
    """Invoice one shipment and capture the invoice, in one payments call."""

    invoice: InvoiceInput
    # The capture's own key (a retry replays the invoice, then the capture).
    capture_idempotency_key: str


@dataclass
class InvoiceAndCaptureResult:
    """The invoice, and its capture's outcome; `capture` is None when payments refused the
    capture (`capture_refused` says why) and the invoice stands uncaptured."""

    invoice: InvoiceResult
    capture: CaptureResult | None = None
    capture_refused: str = ""


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
    # The failed step's input as JSON ("" when the exception is not about one step).
    step_input: str = ""


# ---- process exceptions and their resolution --------------------------------------------

RESOLVE_EXCEPTION_UPDATE = "resolve_process_exception"
RESOLUTION_ACTIONS = ("retry", "skip", "cancel")


@dataclass
class Resolution:
    """An agent's decision on a process exception the workflow is waiting on.

    retry: run the failed step again; skip: carry on without it (an override); cancel: cancel
    the order (what can still be canceled)."""

    process_exception_id: str
    action: str
    note: str = ""
    actor: str = "agent"


@dataclass
class ResolutionResult:
    """What the workflow did with a resolution."""

    process_exception_id: str
    action: str
    order_status: str


@dataclass
class EscalateInput:
    """Raise an unresolved exception's severity (it waited too long)."""

    process_exception_id: str
    idempotency_key: str
    message: str


@dataclass
class LifecycleTimers:
    """Durations the lifecycle waits, from settings at capture (so tests can shrink them)."""

    # An order whose payment cannot be authorized within this time is canceled.
    authorization_timeout_seconds: int = 3600
    # An unresolved process exception escalates after this long.
    escalate_after_seconds: int = 4 * 3600
    # Returns are accepted this long after delivery; then the lifecycle ends.
    return_window_seconds: int = 30 * 24 * 3600
    # While servicing a delivered order, a run whose history has this many events continues
    # as new (its state carried over); 0 leaves it to the server's suggestion alone.
    continue_as_new_after_events: int = 10_000


# ---- changes to an order (Temporal Updates) ------------------------------------------------

CANCEL_UPDATE = "cancel_items"
APPEASE_UPDATE = "appease"
RESHIP_UPDATE = "reship_items"
RETURN_UPDATE = "return_items"
RECEIVE_RETURN_UPDATE = "receive_return"
EXCHANGE_UPDATE = "exchange_items"
PREVIEW_QUERY = "preview_change"


@dataclass
class ItemQuantity:
    """Units of one order line."""

    order_line_id: str
    quantity: int


@dataclass
class ChangeRequest:
    """A change an agent or shopper asks for, sent by servicing as a Temporal Update.

    kind: "cancel" (lines; empty = everything not shipped), "appease" (amount_minor or
    percent_basis_points, on lines or the whole order), "reship" (lines, lost or damaged),
    "return" (lines with reason, refund_without_return), "exchange" (lines returned and
    replacement_sku/replacement_unit_price_minor per line), "receive_return" (return_order_id,
    lines accepted and rejected), "add_items" (new_lines and increases, before fulfillment).
    """

    change_id: str
    kind: str
    reason: str
    actor: str = "agent"
    lines: list[ItemQuantity] = field(default_factory=list)
    amount_minor: int = 0
    percent_basis_points: int = 0
    refund_without_return: bool = False
    return_fee_minor: int = 0
    return_order_id: str = ""
    rejected_lines: list[ItemQuantity] = field(default_factory=list)
    replacement_skus: list[str] = field(default_factory=list)
    replacement_unit_prices_minor: list[int] = field(default_factory=list)
    preview: bool = False
    # "add_items": new lines and more units of existing lines, before anything shipped.
    new_lines: list[NewLineData] = field(default_factory=list)
    increases: list[LineIncrease] = field(default_factory=list)
    # "address_change": the delivery group and its new ship-to address.
    delivery_group_id: str = ""
    address: Address | None = None


@dataclass
class ChangeResult:
    """The outcome of a change, as the reply to its Update (or the preview of it)."""

    change_id: str
    kind: str
    summary: str
    lines: list[ItemQuantity] = field(default_factory=list)
    credit_memo_id: str = ""
    credited_minor: int = 0
    refunded_minor: int = 0
    released_minor: int = 0
    charged_minor: int = 0
    fulfillment_order_ids: list[str] = field(default_factory=list)
    return_order_id: str = ""
    order_status: str = ""
    preview: bool = False
    # "add_items": newly authorized for the added units, and the order's grand total after.
    authorized_minor: int = 0
    grand_total_minor: int = 0
    # A preview the workflow would refuse: the gRPC status name (the summary says why).
    refusal_code: str = ""
    # "address_change": whether the group's units moved to other locations, and where they
    # ship from afterwards.
    rerouted: bool = False
    location_ids: list[str] = field(default_factory=list)


# ---- activity payloads for changes -----------------------------------------------------------


@dataclass
class CancelLinesInput:
    """Cancel unshipped units on one fulfillment order."""

    fulfillment_order_id: str
    idempotency_key: str
    lines: list[ItemQuantity]
    reason: str


@dataclass
class CreditLineData:
    """Units of an order line to credit, with the line's full money (exact shares)."""

    order_line_id: str
    sku: str
    quantity_ordered: int
    gross_minor: int
    discount_minor: int
    tax_minor: int
    quantity_to_credit: int
    # Index of the first unit credited (units are shares of the line's money in order).
    first_unit: int


@dataclass
class CreditMemoInput:
    """What to give back: units, shipping, a goodwill amount, less a fee."""

    order_id: str
    idempotency_key: str
    currency: str
    reason: str
    # "cancel" (never invoiced: released from the authorization), "return", "appeasement".
    kind: str = ""
    lines: list[CreditLineData] = field(default_factory=list)
    shipping_minor: int = 0
    appeasement_minor: int = 0
    fee_minor: int = 0


@dataclass
class CreditMemoResult:
    """The credit memo created."""

    credit_memo_id: str
    total_minor: int


@dataclass
class RefundInput:
    """Give a credit memo's money back: refund captures, or release what is only authorized."""

    order_id: str
    credit_memo_id: str
    idempotency_key: str


@dataclass
class RefundResult:
    """Refunded from captures, released from authorizations, and what could not be given."""

    refunded_minor: int
    released_minor: int
    not_refunded_minor: int
    # The gateway refused (failure_reason); a new attempt needs a new idempotency key.
    failed: bool = False
    failure_reason: str = ""
    # What the order's authorizations still held was voided too, in the same payments call
    # (asked for with the memo when a cancel leaves nothing to charge).
    voided: bool = False


@dataclass
class CreditMemoAndRefundInput:
    """Create a credit memo and give its money back in one payments call; with a void key,
    then void what the order's authorizations still hold."""

    memo: CreditMemoInput
    # The refund's own key (a retry replays the memo, then the refund, then the void).
    refund_idempotency_key: str
    # The void's own key ("": no void); the void is asked with the memo's reason.
    void_idempotency_key: str = ""


@dataclass
class CreditMemoAndRefundResult:
    """The memo, and its refund's outcome; `refund` is None when payments refused the refund
    (`refund_refused` says why) and the memo stands. `voided` when the void asked for was
    made; `void_refused` when payments refused it. Neither when the refund failed or was
    refused: the void was not tried."""

    memo: CreditMemoResult
    refund: RefundResult | None = None
    refund_refused: str = ""
    voided: bool = False
    void_refused: str = ""


@dataclass
class ReturnOrderInput:
    """Record a return order (RMA) in servicing."""

    order_id: str
    idempotency_key: str
    return_order_id: str
    reason: str
    lines: list[ItemQuantity]


@dataclass
class ReceiptInput:
    """Record what came back for a return order and what inspection accepted."""

    order_id: str
    idempotency_key: str
    return_order_id: str
    accepted: list[ItemQuantity]
    rejected: list[ItemQuantity]
    reason: str


# ---- adding items before fulfillment ---------------------------------------------------------

ADD_ITEMS_UPDATE = "add_items"


@dataclass
class NewLineData:
    """A line added to an order before fulfillment; money in minor units of the order's
    currency. delivery_group_id "" means the order's first delivery group."""

    sku: str
    quantity: int
    unit_price_minor: int
    tax_minor: int = 0
    delivery_group_id: str = ""
    name: str = ""


@dataclass
class LineIncrease:
    """More units of an existing line, with the tax on the added units."""

    order_line_id: str
    quantity: int
    tax_minor: int = 0


@dataclass
class LineAdditionData:
    """Units added to an order, as capture records them: a new line (new_line, with its
    group, SKU, name and unit price) or more units of an existing one. gross_minor and
    tax_minor are the money of the added units."""

    order_line_id: str
    quantity: int
    gross_minor: int
    tax_minor: int
    new_line: bool = False
    delivery_group_id: str = ""
    sku: str = ""
    name: str = ""
    unit_price_minor: int = 0


# ---- the `state` query: the order's ledger as the workflow holds it -------------------------


@dataclass
class ExceptionRecord:
    """A process exception the lifecycle raised.

    status: "waiting" (the order is on hold for it), "escalated" (still waiting, escalated),
    "resolved" (action says how), "recorded" (raised while undoing or canceling the order:
    nothing waits on it here; agents see it in servicing)."""

    process_exception_id: str
    category: str
    attached_to: str
    status: str
    raised_at: datetime | None = None
    action: str = ""


@dataclass
class LineState:
    """One order line's quantity buckets and what they allow."""

    order_line_id: str
    sku: str
    ordered: int
    canceled: int
    allocated: int
    fulfilled: int
    return_initiated: int
    returned: int
    invoiced: int
    available_to_cancel: int
    available_to_return: int


@dataclass
class FulfillmentOrderState:
    """A fulfillment order of the order: where, and how many units it has still to ship."""

    fulfillment_order_id: str
    location_id: str
    delivery_group_id: str
    open_units: int
    # Reships and exchange replacements: units already paid for.
    no_charge: bool


@dataclass
class ReturnState:
    """A return order still expecting units."""

    return_order_id: str
    expected: dict[str, int]
    received: dict[str, int]
    exchange: bool
    refunded_up_front: bool


@dataclass
class OrderState:
    """The order's ledger as its lifecycle holds it (the `state` query): quantities by bucket
    per line, money charged and given back, open returns and process exceptions."""

    order_id: str
    channel_order_ref: str
    channel: str
    status: str
    currency: str
    grand_total_minor: int
    authorized: bool
    invoiced_minor: int
    captured_minor: int
    # Credit memos' total, what of it was refunded from captures and released from holds.
    credited_minor: int
    refunded_minor: int
    released_minor: int
    # Goodwill given before charging, still to come off invoices.
    goodwill_pending_minor: int
    lines: list[LineState]
    fulfillment_orders: list[FulfillmentOrderState]
    undelivered_shipments: list[str]
    open_returns: list[ReturnState]
    open_exceptions: list[ExceptionRecord]
    exceptions: list[ExceptionRecord]
    # The process exception the order waits on ("" when none).
    waiting_on: str
    delivered_at: datetime | None
    return_window_closes_at: datetime | None
    changes: int
    runs: int


# ---- address changes ------------------------------------------------------------------------

ADDRESS_CHANGE_UPDATE = "change_address"


@dataclass
class ChangeAddressInput:
    """Send a delivery group to a new address; fulfillment reroutes its unshipped units when
    routing for the address chooses other locations."""

    order_id: str
    delivery_group_id: str
    idempotency_key: str
    address: Address
    reason: str = ""


@dataclass
class ChangeAddressResult:
    """Whether the units moved, from and to which locations, the old fulfillment orders (each
    gave up every unit it had not shipped) and the replacements."""

    rerouted: bool
    from_location_ids: list[str] = field(default_factory=list)
    to_location_ids: list[str] = field(default_factory=list)
    canceled_fulfillment_order_ids: list[str] = field(default_factory=list)
    replacements: list[FulfillmentOrderData] = field(default_factory=list)
