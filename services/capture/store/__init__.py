"""Capture's tables: named, parameterised SQL and the functions that run it.

A module each: `shoppers` (matching, creating and linking an order's shopper), `captures`
(SubmitOrder's statement, bulk imports, the idempotency keys of captures), `reads` (orders by
id, ListOrders' pages, timelines, what a watcher has not seen), `progress` (a lifecycle step
on an order's lines and status) and `erasure` (a shopper's personal data), over `common`.
Callers use the package (`store.X`), which re-exports every public name.

Every function takes a connection, so the caller decides the transaction. SubmitOrder's
write is one statement (its own implicit transaction); imports and RecordOrderProgress run
inside the caller's.
"""

from __future__ import annotations

from services.capture.store.captures import (
    CHANNEL_ORDER_REF_CONSTRAINT as CHANNEL_ORDER_REF_CONSTRAINT,
)
from services.capture.store.captures import SHOPPER_EMAIL_CONSTRAINT as SHOPPER_EMAIL_CONSTRAINT
from services.capture.store.captures import SQL_CAPTURE_ORDER as SQL_CAPTURE_ORDER
from services.capture.store.captures import SQL_CLAIM_CAPTURE_KEYS as SQL_CLAIM_CAPTURE_KEYS
from services.capture.store.captures import SQL_IMPORT_ORDERS as SQL_IMPORT_ORDERS
from services.capture.store.captures import SQL_RELEASE_KEYS as SQL_RELEASE_KEYS
from services.capture.store.captures import SQL_STORED_CAPTURE as SQL_STORED_CAPTURE
from services.capture.store.captures import SQL_STORED_CAPTURES as SQL_STORED_CAPTURES
from services.capture.store.captures import (
    SQL_TAKEN_CHANNEL_ORDER_REFS as SQL_TAKEN_CHANNEL_ORDER_REFS,
)
from services.capture.store.captures import SQL_WAKE_OUTBOX as SQL_WAKE_OUTBOX
from services.capture.store.captures import OrderRows as OrderRows
from services.capture.store.captures import ShopperTaken as ShopperTaken
from services.capture.store.captures import capture_order as capture_order
from services.capture.store.captures import channel_ref_taken as channel_ref_taken
from services.capture.store.captures import claim_capture_keys as claim_capture_keys
from services.capture.store.captures import import_orders as import_orders
from services.capture.store.captures import release_keys as release_keys
from services.capture.store.captures import stored_capture as stored_capture
from services.capture.store.captures import stored_captures as stored_captures
from services.capture.store.captures import taken_channel_order_refs as taken_channel_order_refs
from services.capture.store.common import ORDER_CHANGED_CHANNEL as ORDER_CHANGED_CHANNEL
from services.capture.store.common import OUTBOX_CHANNEL as OUTBOX_CHANNEL
from services.capture.store.common import SCHEMA as SCHEMA
from services.capture.store.common import Conn as Conn
from services.capture.store.common import new_id as new_id
from services.capture.store.erasure import ERASED_EVENT_KIND as ERASED_EVENT_KIND
from services.capture.store.erasure import PERSONAL_COLUMNS as PERSONAL_COLUMNS
from services.capture.store.erasure import SQL_COMPLETE_ERASURE as SQL_COMPLETE_ERASURE
from services.capture.store.erasure import SQL_ERASABLE_ORDERS as SQL_ERASABLE_ORDERS
from services.capture.store.erasure import SQL_ERASE_SHOPPER as SQL_ERASE_SHOPPER
from services.capture.store.erasure import SQL_ERASURE_BY_EMAIL as SQL_ERASURE_BY_EMAIL
from services.capture.store.erasure import SQL_ERASURE_OF_SHOPPER as SQL_ERASURE_OF_SHOPPER
from services.capture.store.erasure import SQL_FORGET_CHANNEL_IDS as SQL_FORGET_CHANNEL_IDS
from services.capture.store.erasure import SQL_IDENTIFYING_TEXT as SQL_IDENTIFYING_TEXT
from services.capture.store.erasure import SQL_ORDERS_OF_SHOPPER as SQL_ORDERS_OF_SHOPPER
from services.capture.store.erasure import SQL_RECORD_ERASED as SQL_RECORD_ERASED
from services.capture.store.erasure import SQL_SHOPPER_BY_EMAIL as SQL_SHOPPER_BY_EMAIL
from services.capture.store.erasure import SQL_SHOPPER_BY_ID as SQL_SHOPPER_BY_ID
from services.capture.store.erasure import SQL_START_ERASURE as SQL_START_ERASURE
from services.capture.store.erasure import ErasureRecord as ErasureRecord
from services.capture.store.erasure import complete_erasure as complete_erasure
from services.capture.store.erasure import erasable_orders as erasable_orders
from services.capture.store.erasure import erase_shopper_data as erase_shopper_data
from services.capture.store.erasure import erasure_of as erasure_of
from services.capture.store.erasure import find_shopper_for_erasure as find_shopper_for_erasure
from services.capture.store.erasure import identifying_text as identifying_text
from services.capture.store.erasure import start_erasure as start_erasure
from services.capture.store.progress import SQL_ADD_ITEMS as SQL_ADD_ITEMS
from services.capture.store.progress import SQL_LOCK_ORDER_LINES as SQL_LOCK_ORDER_LINES
from services.capture.store.progress import SQL_RECORD_STEP as SQL_RECORD_STEP
from services.capture.store.progress import Recorded as Recorded
from services.capture.store.progress import record_progress as record_progress
from services.capture.store.reads import PLAN_FOR_PARAMETERS as PLAN_FOR_PARAMETERS
from services.capture.store.reads import SQL_CHANGES_SINCE as SQL_CHANGES_SINCE
from services.capture.store.reads import SQL_CHANNEL_OF_ORDER as SQL_CHANNEL_OF_ORDER
from services.capture.store.reads import SQL_COUNT_ORDERS as SQL_COUNT_ORDERS
from services.capture.store.reads import SQL_GROUPS_OF_ORDERS as SQL_GROUPS_OF_ORDERS
from services.capture.store.reads import SQL_LINES_OF_ORDERS as SQL_LINES_OF_ORDERS
from services.capture.store.reads import SQL_LIST_ORDERS as SQL_LIST_ORDERS
from services.capture.store.reads import SQL_LIST_ORDERS_WITH_SKU as SQL_LIST_ORDERS_WITH_SKU
from services.capture.store.reads import SQL_ORDER_EXISTS as SQL_ORDER_EXISTS
from services.capture.store.reads import SQL_ORDERS_BY_ID as SQL_ORDERS_BY_ID
from services.capture.store.reads import SQL_TIMELINE as SQL_TIMELINE
from services.capture.store.reads import OrderChanges as OrderChanges
from services.capture.store.reads import changes_since as changes_since
from services.capture.store.reads import channel_of as channel_of
from services.capture.store.reads import count_orders as count_orders
from services.capture.store.reads import get_order as get_order
from services.capture.store.reads import line_quantities as line_quantities
from services.capture.store.reads import list_orders as list_orders
from services.capture.store.reads import list_query as list_query
from services.capture.store.reads import load_orders as load_orders
from services.capture.store.reads import timeline as timeline
from services.capture.store.shoppers import SQL_COUNT_ORDERS_SINCE as SQL_COUNT_ORDERS_SINCE
from services.capture.store.shoppers import SQL_CREATE_SHOPPERS as SQL_CREATE_SHOPPERS
from services.capture.store.shoppers import SQL_LINK_CHANNEL_IDS as SQL_LINK_CHANNEL_IDS
from services.capture.store.shoppers import SQL_LOCK_SHOPPER as SQL_LOCK_SHOPPER
from services.capture.store.shoppers import SQL_MATCH_SHOPPER as SQL_MATCH_SHOPPER
from services.capture.store.shoppers import SQL_MATCH_SHOPPERS as SQL_MATCH_SHOPPERS
from services.capture.store.shoppers import ShopperMatch as ShopperMatch
from services.capture.store.shoppers import count_orders_since as count_orders_since
from services.capture.store.shoppers import find_shopper as find_shopper
from services.capture.store.shoppers import lock_shopper as lock_shopper
from services.capture.store.shoppers import match_shoppers as match_shoppers
from services.capture.store.shoppers import owns_order as owns_order
from services.capture.store.shoppers import shopper_from_row as shopper_from_row
