"""Capture's domain: what a valid order is, what it costs, and how its lines' buckets move.

A module each: `order` (the order as captured: statuses, lines and their buckets, totals,
timeline events, line changes), `submission` (what a channel submits, its validation, the
order it becomes), `added_items` (items added before fulfillment), `screening` (fraud
screening at capture), `bulk_import` (historical imports), `reads` (paging, ListOrders'
filter), `erasure` (a shopper's orders as erasure sees them) and `events` (the event log's
types, and the event a progress step stands for; used as `domain.events`).

Pure: standard library, oms_platform.money and oms_platform.errors only. The servicer converts
wire types into these dataclasses; the store persists what these functions return. Callers
use the package (`domain.X`), which re-exports every public name; the modules are how it reads.
"""

from __future__ import annotations

from oms_platform.money import Money as Money  # re-exported: part of this domain's vocabulary
from oms_platform.postal import PostalAddress as PostalAddress  # re-exported: domain vocabulary
from services.capture.domain.added_items import AddedItems as AddedItems
from services.capture.domain.added_items import LineAddition as LineAddition
from services.capture.domain.added_items import add_items as add_items
from services.capture.domain.bulk_import import ImportOptions as ImportOptions
from services.capture.domain.bulk_import import historical_order as historical_order
from services.capture.domain.bulk_import import import_violations as import_violations
from services.capture.domain.bulk_import import imported_event as imported_event
from services.capture.domain.erasure import ErasableOrder as ErasableOrder
from services.capture.domain.erasure import check_erase_request as check_erase_request
from services.capture.domain.erasure import in_flight_refusal as in_flight_refusal
from services.capture.domain.order import CANCELED as CANCELED
from services.capture.domain.order import FULFILLED as FULFILLED
from services.capture.domain.order import HISTORICAL_STATUSES as HISTORICAL_STATUSES
from services.capture.domain.order import PENDING as PENDING
from services.capture.domain.order import SETTLED as SETTLED
from services.capture.domain.order import Adjustment as Adjustment
from services.capture.domain.order import DeliveryGroup as DeliveryGroup
from services.capture.domain.order import LineQuantityChange as LineQuantityChange
from services.capture.domain.order import Order as Order
from services.capture.domain.order import OrderLine as OrderLine
from services.capture.domain.order import PaymentMethod as PaymentMethod
from services.capture.domain.order import Quantities as Quantities
from services.capture.domain.order import Shopper as Shopper
from services.capture.domain.order import TaxLine as TaxLine
from services.capture.domain.order import TimelineEvent as TimelineEvent
from services.capture.domain.order import Totals as Totals
from services.capture.domain.order import apply_line_changes as apply_line_changes
from services.capture.domain.order import captured_actor as captured_actor
from services.capture.domain.order import is_settled as is_settled
from services.capture.domain.order import normalize_email as normalize_email
from services.capture.domain.promises import DeliveryPromise as DeliveryPromise
from services.capture.domain.promises import late_as_of as late_as_of
from services.capture.domain.reads import DEFAULT_PAGE_SIZE as DEFAULT_PAGE_SIZE
from services.capture.domain.reads import MAX_PAGE_SIZE as MAX_PAGE_SIZE
from services.capture.domain.reads import OrderFilter as OrderFilter
from services.capture.domain.reads import check_filter as check_filter
from services.capture.domain.reads import page_size as page_size
from services.capture.domain.screening import SCREENING_WINDOW as SCREENING_WINDOW
from services.capture.domain.screening import FraudPolicy as FraudPolicy
from services.capture.domain.screening import capture_events as capture_events
from services.capture.domain.screening import fraud_flagged_event as fraud_flagged_event
from services.capture.domain.screening import fraud_reasons as fraud_reasons
from services.capture.domain.screening import screened as screened
from services.capture.domain.submission import CHANNELS as CHANNELS
from services.capture.domain.submission import (
    MAX_ADDITIONAL_PAYMENT_METHODS as MAX_ADDITIONAL_PAYMENT_METHODS,
)
from services.capture.domain.submission import MAX_KEY_LENGTH as MAX_KEY_LENGTH
from services.capture.domain.submission import MAX_LINES as MAX_LINES
from services.capture.domain.submission import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from services.capture.domain.submission import MAX_PHONE_LENGTH as MAX_PHONE_LENGTH
from services.capture.domain.submission import MAX_REF_LENGTH as MAX_REF_LENGTH
from services.capture.domain.submission import MAX_TEXT_LENGTH as MAX_TEXT_LENGTH
from services.capture.domain.submission import PAYMENT_METHOD_TYPES as PAYMENT_METHOD_TYPES
from services.capture.domain.submission import SHOPPER_KINDS as SHOPPER_KINDS
from services.capture.domain.submission import AdjustmentRequest as AdjustmentRequest
from services.capture.domain.submission import DeliveryGroupRequest as DeliveryGroupRequest
from services.capture.domain.submission import LineRequest as LineRequest
from services.capture.domain.submission import OrderSubmission as OrderSubmission
from services.capture.domain.submission import ShopperDetails as ShopperDetails
from services.capture.domain.submission import TaxRequest as TaxRequest
from services.capture.domain.submission import allocate_order_discount as allocate_order_discount
from services.capture.domain.submission import capture_order as capture_order
from services.capture.domain.submission import captured_event as captured_event
from services.capture.domain.submission import check_submission as check_submission
from services.capture.domain.submission import group_address_changes as group_address_changes
from services.capture.domain.submission import validation_errors as validation_errors
