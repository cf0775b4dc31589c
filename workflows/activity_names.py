"""The workflows' activity names, defined once: the workflow schedules them by these names and
the worker registers them under the same ones.

They are recorded in every order's history, so a name never changes: a renamed activity would
leave running orders waiting on one no worker serves.
"""

from __future__ import annotations

# capture: the order's record
RECORD_ORDER_PROGRESS = "record_order_progress"
# the steps taken between two waits, in one call (since the batched-progress patch)
RECORD_ORDER_PROGRESS_BATCH = "record_order_progress_batch"
# payments
AUTHORIZE_PAYMENT = "authorize_payment"
CREATE_INVOICE = "create_invoice"
CAPTURE_INVOICE = "capture_invoice"
# invoice and capture in one payments call (the shipped path since the invoice-and-capture patch)
INVOICE_AND_CAPTURE = "invoice_and_capture"
VOID_AUTHORIZATION = "void_authorization"
# holds renewed ahead of a backorder's or pre-order's promised day
RENEW_AUTHORIZATIONS = "renew_authorizations"
CREATE_CREDIT_MEMO = "create_credit_memo"
REFUND_CREDIT_MEMO = "refund_credit_memo"
# a credit memo, its refund and (for a cancel of everything) the void, in one payments call
CREDIT_MEMO_AND_REFUND = "credit_memo_and_refund"
# fulfillment
CREATE_FULFILLMENT_ORDERS = "create_fulfillment_orders"
CANCEL_FULFILLMENT_ORDER = "cancel_fulfillment_order"
CANCEL_FULFILLMENT_ORDER_LINES = "cancel_fulfillment_order_lines"
# every open fulfillment order of an order, canceled in one call (a cancel before the lifecycle
# recorded any routing)
CANCEL_ORDER_FULFILLMENT_ORDERS = "cancel_order_fulfillment_orders"
# a delivery group's new address, its units rerouted when routing chooses elsewhere
CHANGE_DELIVERY_ADDRESS = "change_delivery_address"
# servicing
RECORD_PROCESS_EXCEPTION = "record_process_exception"
ESCALATE_PROCESS_EXCEPTION = "escalate_process_exception"
CREATE_RETURN_ORDER = "create_return_order"
RECORD_RETURN_RECEIPT = "record_return_receipt"
# the subscription workflow: a cycle's order (capture), its progress (servicing's
# SubscriptionsService)
SUBMIT_CYCLE_ORDER = "submit_cycle_order"
RECORD_SUBSCRIPTION_PROGRESS = "record_subscription_progress"
