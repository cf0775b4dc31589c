"""Who may call what: the one table of RPC → roles, denied by default.

An RPC missing from this table is refused for everyone (and the access tests fail, so a new
RPC cannot ship without a decision here). Checks that depend on the record — a warehouse acts
only for its own locations, a storefront reads only its own channels' orders — are made by the
service that holds the record, with the same principal.

The roles follow the personas that use an OMS:
- storefront: submits orders, reads its channels' orders and availability, asks for cancels
  and returns on a shopper's behalf;
- agent: reads everything, makes every servicing change and preview, resolves exceptions;
- warehouse: moves its own locations' fulfillment orders along (accept … deliver, reject);
- merchandiser: locations, location groups and inventory;
- admin: every external operation, imports and erasure;
- workflow (oms's worker only): the lifecycle's steps;
- service (oms's services only): what one service asks another.
"""

from __future__ import annotations

from oms_platform.auth import (
    ADMIN,
    AGENT,
    MERCHANDISER,
    SERVICE,
    STOREFRONT,
    WAREHOUSE,
    WORKFLOW,
)

CAPTURE = "oms.capture.v1.CaptureService"
FULFILLMENT = "oms.fulfillment.v1.FulfillmentService"
PAYMENTS = "oms.payments.v1.PaymentsService"
SERVICING = "oms.servicing.v1.ServicingService"
# Served by capture, which writes the event log.
EVENTS = "oms.events.v1.EventsService"
# Served by every service with an outbox (capture, fulfillment, servicing), each for its own.
OUTBOX = "oms.outbox.v1.OutboxService"
# Served by servicing: plans, subscriptions and their changes.
SUBSCRIPTIONS = "oms.subscriptions.v1.SubscriptionsService"

# Calls that answer without a token: health probes (load balancers, Kubernetes), and server
# reflection when it is switched on (it describes the API, never data).
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
REFLECTION_PREFIXES = ("/grpc.reflection.",)

_READ_ORDER = frozenset({STOREFRONT, AGENT, ADMIN, SERVICE})
_BACK_OFFICE_READ = frozenset({AGENT, ADMIN, SERVICE})
_CHANGE_ON_SHOPPERS_BEHALF = frozenset({STOREFRONT, AGENT, ADMIN})
_AGENT_CHANGE = frozenset({AGENT, ADMIN})
_WAREHOUSE_STEP = frozenset({WAREHOUSE, ADMIN})
_MERCHANDISING = frozenset({MERCHANDISER, ADMIN})
_LIFECYCLE = frozenset({WORKFLOW})

POLICY: dict[str, frozenset[str]] = {
    # capture
    # The worker submits subscription cycles' orders (and alone may name a subscription).
    f"/{CAPTURE}/SubmitOrder": frozenset({STOREFRONT, ADMIN, WORKFLOW}),
    f"/{CAPTURE}/GetOrder": _READ_ORDER,
    f"/{CAPTURE}/ListOrders": frozenset({STOREFRONT, AGENT, ADMIN}),
    f"/{CAPTURE}/GetOrderTimeline": frozenset({STOREFRONT, AGENT, ADMIN}),
    f"/{CAPTURE}/WatchOrder": frozenset({STOREFRONT, AGENT, ADMIN}),
    # A shopper's own view, for the storefront they shop on (admins check what it shows).
    f"/{CAPTURE}/GetOrderForShopper": frozenset({STOREFRONT, ADMIN}),
    f"/{CAPTURE}/RecordOrderProgress": _LIFECYCLE,
    f"/{CAPTURE}/RecordOrderProgressBatch": _LIFECYCLE,
    f"/{CAPTURE}/ImportOrders": frozenset({ADMIN}),
    # Erasing a shopper's personal data everywhere is an admin's decision alone.
    f"/{CAPTURE}/EraseShopper": frozenset({ADMIN}),
    # Events another service recorded with its change (fulfillment's warehouse steps), from
    # its outbox; nobody outside oms writes to the log.
    f"/{CAPTURE}/RecordOrderEvents": frozenset({SERVICE}),
    # fulfillment
    f"/{FULFILLMENT}/CreateFulfillmentOrders": _LIFECYCLE,
    f"/{FULFILLMENT}/GetFulfillmentOrder": frozenset({AGENT, WAREHOUSE, ADMIN}),
    f"/{FULFILLMENT}/ListFulfillmentOrders": frozenset({AGENT, WAREHOUSE, ADMIN, SERVICE}),
    f"/{FULFILLMENT}/AcceptFulfillmentOrder": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/MarkFulfillmentOrderPicked": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/MarkFulfillmentOrderPacked": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/ConfirmShipment": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/ConfirmDelivery": _WAREHOUSE_STEP,
    # Store pickup: the store's own warehouse role (scoped to its location) hands the order over.
    f"/{FULFILLMENT}/MarkReadyForPickup": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/ConfirmPickup": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/ShipToStore": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/RejectFulfillmentOrder": _WAREHOUSE_STEP,
    f"/{FULFILLMENT}/CancelFulfillmentOrder": frozenset({WORKFLOW, ADMIN}),
    f"/{FULFILLMENT}/CancelOrderFulfillmentOrders": frozenset({WORKFLOW, ADMIN}),
    f"/{FULFILLMENT}/CancelFulfillmentOrderLines": _LIFECYCLE,
    # The workflow changes a delivery group's address; servicing previews it (preview only).
    f"/{FULFILLMENT}/ChangeDeliveryAddress": frozenset({WORKFLOW, SERVICE}),
    f"/{FULFILLMENT}/MoveFulfillmentOrderLines": _AGENT_CHANGE,
    f"/{FULFILLMENT}/GetRoutingDecisions": frozenset({AGENT, MERCHANDISER, ADMIN}),
    f"/{FULFILLMENT}/ListLocations": frozenset({AGENT, WAREHOUSE, MERCHANDISER, ADMIN}),
    f"/{FULFILLMENT}/UpsertLocation": _MERCHANDISING,
    f"/{FULFILLMENT}/ListLocationGroups": frozenset({AGENT, MERCHANDISER, ADMIN}),
    f"/{FULFILLMENT}/UpsertLocationGroup": _MERCHANDISING,
    f"/{FULFILLMENT}/SetInventoryLevels": _MERCHANDISING,
    # Servicing too: units received back in a resellable condition are restocked.
    f"/{FULFILLMENT}/AdjustInventory": frozenset({MERCHANDISER, WAREHOUSE, ADMIN, SERVICE}),
    f"/{FULFILLMENT}/GetAvailability": frozenset(
        {STOREFRONT, AGENT, WAREHOUSE, MERCHANDISER, ADMIN}
    ),
    # Checkout asks when an order would arrive; the back office asks what a shopper was told.
    f"/{FULFILLMENT}/EstimateDelivery": frozenset({STOREFRONT, AGENT, MERCHANDISER, ADMIN}),
    # Only capture's EraseShopper erases an order's data in the other services.
    f"/{FULFILLMENT}/ErasePersonalData": frozenset({SERVICE}),
    # Checkout holds a cart's units while the shopper pays, and gives them back when they
    # leave; agents place and abandon orders on a shopper's behalf too.
    f"/{FULFILLMENT}/ReserveInventory": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{FULFILLMENT}/GetReservation": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{FULFILLMENT}/ReleaseReservation": _CHANGE_ON_SHOPPERS_BEHALF,
    # Buyers record incoming supply and pre-orders; warehouses announce and receive it at
    # their own locations; agents see what a backorder waits for.
    f"/{FULFILLMENT}/CreateSupply": frozenset({MERCHANDISER, WAREHOUSE, ADMIN}),
    f"/{FULFILLMENT}/UpdateSupply": frozenset({MERCHANDISER, WAREHOUSE, ADMIN}),
    f"/{FULFILLMENT}/CancelSupply": frozenset({MERCHANDISER, WAREHOUSE, ADMIN}),
    f"/{FULFILLMENT}/ListSupply": frozenset({AGENT, WAREHOUSE, MERCHANDISER, ADMIN}),
    f"/{FULFILLMENT}/ReceiveSupply": frozenset({WAREHOUSE, MERCHANDISER, ADMIN}),
    # The carriers' transit times delivery promises count: merchandisers keep them, agents see
    # what a promise was made of.
    f"/{FULFILLMENT}/ListTransitTimes": frozenset({AGENT, MERCHANDISER, ADMIN}),
    f"/{FULFILLMENT}/SetTransitTime": _MERCHANDISING,
    f"/{FULFILLMENT}/DeleteTransitTime": _MERCHANDISING,
    # payments
    f"/{PAYMENTS}/AuthorizePayment": _LIFECYCLE,
    f"/{PAYMENTS}/CreateInvoice": _LIFECYCLE,
    f"/{PAYMENTS}/CaptureInvoice": _LIFECYCLE,
    f"/{PAYMENTS}/VoidAuthorization": _LIFECYCLE,
    f"/{PAYMENTS}/RenewAuthorizations": _LIFECYCLE,
    f"/{PAYMENTS}/CreateCreditMemo": _LIFECYCLE,
    f"/{PAYMENTS}/RefundCreditMemo": _LIFECYCLE,
    f"/{PAYMENTS}/GetPaymentSummary": _BACK_OFFICE_READ,
    f"/{PAYMENTS}/GetReconciliation": frozenset({AGENT, ADMIN}),
    f"/{PAYMENTS}/ErasePersonalData": frozenset({SERVICE}),
    # servicing
    # Services too: the owner of an outbox records its dead letters as DELIVERY_FAILED
    # exceptions (servicing refuses every other category from a service).
    f"/{SERVICING}/RecordProcessException": _LIFECYCLE | {SERVICE},
    f"/{SERVICING}/EscalateProcessException": _LIFECYCLE,
    f"/{SERVICING}/CreateReturnOrder": _LIFECYCLE,
    f"/{SERVICING}/RecordReturnReceipt": _LIFECYCLE,
    f"/{SERVICING}/GetProcessException": _AGENT_CHANGE,
    f"/{SERVICING}/ListProcessExceptions": _BACK_OFFICE_READ,
    f"/{SERVICING}/ResolveProcessException": _AGENT_CHANGE,
    f"/{SERVICING}/UpdateProcessExceptionStatus": _AGENT_CHANGE,
    f"/{SERVICING}/ListReturnOrders": _AGENT_CHANGE,
    # The label a shopper prints: their storefront fetches it; agents and the receiving
    # warehouse look at it.
    f"/{SERVICING}/GetReturnLabel": frozenset({STOREFRONT, AGENT, WAREHOUSE, ADMIN}),
    # Return policies are merchandising's to set; agents and storefronts read them and ask
    # whether a return would be accepted.
    f"/{SERVICING}/UpsertReturnPolicyRule": _MERCHANDISING,
    f"/{SERVICING}/DeleteReturnPolicyRule": _MERCHANDISING,
    f"/{SERVICING}/SetProductCategories": _MERCHANDISING,
    f"/{SERVICING}/ListReturnPolicyRules": frozenset({MERCHANDISER, AGENT, ADMIN}),
    f"/{SERVICING}/ListProductCategories": frozenset({MERCHANDISER, AGENT, ADMIN}),
    f"/{SERVICING}/CheckReturnEligibility": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SERVICING}/ListChanges": _AGENT_CHANGE,
    f"/{SERVICING}/PreviewCancel": _CHANGE_ON_SHOPPERS_BEHALF,
    # Capture too: a forced erasure cancels what has not shipped first.
    f"/{SERVICING}/SubmitCancel": _CHANGE_ON_SHOPPERS_BEHALF | {SERVICE},
    f"/{SERVICING}/PreviewReturn": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SERVICING}/SubmitReturn": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SERVICING}/ReceiveReturn": frozenset({AGENT, WAREHOUSE, ADMIN}),
    f"/{SERVICING}/SubmitExchange": _AGENT_CHANGE,
    f"/{SERVICING}/PreviewExchange": _AGENT_CHANGE,
    f"/{SERVICING}/SubmitReship": _AGENT_CHANGE,
    f"/{SERVICING}/PreviewReship": _AGENT_CHANGE,
    f"/{SERVICING}/SubmitAddressChange": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SERVICING}/PreviewAddressChange": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SERVICING}/PreviewAppeasement": _AGENT_CHANGE,
    f"/{SERVICING}/SubmitAppeasement": _AGENT_CHANGE,
    f"/{SERVICING}/PreviewAddItems": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SERVICING}/SubmitAddItems": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SERVICING}/ErasePersonalData": frozenset({SERVICE}),
    # subscriptions: merchandisers define plans; shoppers subscribe and change through their
    # storefront (held to its own channels), agents on their behalf; the subscription's
    # workflow alone records what it did.
    f"/{SUBSCRIPTIONS}/CreatePlan": _MERCHANDISING,
    f"/{SUBSCRIPTIONS}/ListPlans": frozenset({MERCHANDISER, ADMIN, STOREFRONT, AGENT}),
    f"/{SUBSCRIPTIONS}/CreateSubscription": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SUBSCRIPTIONS}/ChangeSubscription": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{SUBSCRIPTIONS}/GetSubscription": frozenset({STOREFRONT, AGENT, ADMIN}),
    f"/{SUBSCRIPTIONS}/ListSubscriptions": frozenset({STOREFRONT, AGENT, ADMIN}),
    f"/{SUBSCRIPTIONS}/RecordSubscriptionProgress": _LIFECYCLE,
    # events: following the log is for integrations (a storefront held to its own channels);
    # webhooks are an admin's to set up; a shopper's opt-out is set on their behalf.
    f"/{EVENTS}/SubscribeEvents": frozenset({STOREFRONT, AGENT, ADMIN, SERVICE}),
    f"/{EVENTS}/CreateWebhookSubscription": frozenset({ADMIN}),
    f"/{EVENTS}/ListWebhookSubscriptions": frozenset({ADMIN}),
    f"/{EVENTS}/UpdateWebhookSubscription": frozenset({ADMIN}),
    f"/{EVENTS}/DeleteWebhookSubscription": frozenset({ADMIN}),
    f"/{EVENTS}/ListWebhookDeliveries": frozenset({ADMIN}),
    f"/{EVENTS}/RedeliverWebhook": frozenset({ADMIN}),
    f"/{EVENTS}/SetNotificationPreference": _CHANGE_ON_SHOPPERS_BEHALF,
    f"/{EVENTS}/ListNotifications": _AGENT_CHANGE,
    # outbox: an admin's tools; servicing redelivers or discards when an agent resolves the
    # DELIVERY_FAILED exception a dead letter raised.
    f"/{OUTBOX}/ListDeadLetters": frozenset({ADMIN}),
    f"/{OUTBOX}/RedeliverDeadLetter": frozenset({ADMIN, SERVICE}),
    f"/{OUTBOX}/DiscardDeadLetter": frozenset({ADMIN, SERVICE}),
}


def allowed_roles(method: str) -> frozenset[str]:
    """The roles that may call `method` (`/package.Service/Method`); empty when unlisted."""
    return POLICY.get(method, frozenset())


def refusal(method: str, roles: frozenset[str]) -> str | None:
    """Why a caller in `roles` may not call `method`, or None when it may."""
    allowed = allowed_roles(method)
    if not allowed:
        return f"{method.lstrip('/')} is not open to any role"
    if roles.isdisjoint(allowed):
        held = ", ".join(sorted(roles)) or "no role"
        return f"role {held} may not call {method.lstrip('/')}"
    return None
