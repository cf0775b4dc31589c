"""The state only the order workflow holds: what it knows about its order between events.

`workflows/types.py` is the contract services and the workflow exchange; nothing here crosses
to a service. `LifecycleState` is the whole of it, handed as it is to the next run when a long
history continues as new, so its JSON form is part of recorded histories: field names, their
order and their types stay as they are (a new field goes last, with a default, so older
histories still decode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workflows.types import (
    PENDING,
    ChangeResult,
    ExceptionRecord,
    FulfillmentEvent,
    FulfillmentOrderData,
    LifecycleLine,
)


@dataclass
class LineBuckets:
    """One order line's quantity buckets."""

    line: LifecycleLine
    canceled: int = 0
    allocated: int = 0
    fulfilled: int = 0
    return_initiated: int = 0
    returned: int = 0
    invoiced: int = 0
    credited_for_return: int = 0

    @property
    def ordered(self) -> int:
        return self.line.quantity

    @property
    def available_to_cancel(self) -> int:
        return self.ordered - self.canceled - self.fulfilled

    @property
    def available_to_return(self) -> int:
        return self.fulfilled - self.return_initiated


@dataclass
class LedgerState:
    """The order's quantities as data (the ledger's rules in `workflows/ledger.py` change it in
    place). Sets are kept as sorted lists, so the same ledger is always the same JSON."""

    lines: list[LineBuckets]
    # fulfillment order id -> order line id -> unshipped units, oldest fulfillment order first
    open_units: dict[str, dict[str, int]] = field(default_factory=dict)
    fulfillment_orders: list[FulfillmentOrderData] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    shipping_charged: list[str] = field(default_factory=list)
    no_charge: list[str] = field(default_factory=list)


@dataclass
class Replacement:
    """What an exchanged unit is replaced with."""

    sku: str
    unit_price_minor: int


@dataclass
class ReturnOrder:
    """A return (RMA) the workflow is waiting to receive."""

    return_order_id: str
    expected: dict[str, int]
    received: dict[str, int] = field(default_factory=dict)
    fee_minor: int = 0
    fee_charged: bool = False
    refunded_up_front: bool = False
    exchange: bool = False
    # An exchange whose replacements ship once the return is received: per order line.
    replacements: dict[str, Replacement] = field(default_factory=dict)

    def outstanding(self, order_line_id: str) -> int:
        return self.expected.get(order_line_id, 0) - self.received.get(order_line_id, 0)

    def open(self) -> bool:
        return any(self.outstanding(line) > 0 for line in self.expected)

    def fee_due(self) -> int:
        """The restocking fee still to withhold or charge: none once it was."""
        return 0 if self.fee_charged else self.fee_minor


@dataclass
class PromiseState:
    """What the delivery promises reported to capture rest on (rules in
    `workflows/promises.py`)."""

    # Fulfillment order id -> the day it is promised for since its last parcel shipped ("":
    # the shipment brought no new promise); only fulfillment orders that shipped something.
    shipped: dict[str, str] = field(default_factory=dict)
    # Delivery group id -> the promise last reported to capture.
    reported: dict[str, str] = field(default_factory=dict)


@dataclass
class LifecycleState:
    """Everything the lifecycle knows about its order, handed whole to the next run when a
    delivered order's long history continues as new (the input's `carried`).

    Only what a run cannot rebuild lives elsewhere, on the workflow itself: the lock, pending
    resolutions and the like exist while an Update or a hold is in flight, and a run continues
    as new only when none is."""

    status: str = PENDING
    ledger: LedgerState = field(default_factory=lambda: LedgerState(lines=[]))
    # When the last unit was delivered (None until then); the return window runs from it.
    delivered_at: datetime | None = None
    # Fulfillment event ids already taken (sorted), and events taken but not yet handled.
    seen_events: list[str] = field(default_factory=list)
    events: list[FulfillmentEvent] = field(default_factory=list)
    # Every change made, by change id: a repeated Update gets the same answer.
    changes: dict[str, ChangeResult] = field(default_factory=dict)
    returns: dict[str, ReturnOrder] = field(default_factory=dict)
    # ---- money: see workflows/billing.py for the rules that move these
    captured_minor: int = 0
    invoiced_minor: int = 0
    # Per line, what its invoices charged (less goodwill taken off them), and goodwill given.
    line_invoiced_minor: dict[str, int] = field(default_factory=dict)
    line_appeased_minor: dict[str, int] = field(default_factory=dict)
    order_appeased_minor: int = 0
    # Goodwill given before anything was charged, still to come off invoices.
    goodwill_pending_by_line: dict[str, int] = field(default_factory=dict)
    goodwill_pending_order: int = 0
    # Part of the authorization will never be captured (goodwill before charging, a skipped
    # invoice or capture): release it once everything is delivered.
    release_at_settlement: bool = False
    # Process exceptions the order was held on so far (each hold's keys count from it).
    holds: int = 0
    # How many runs this order's lifecycle has had (continue-as-new starts another).
    runs: int = 1
    # Money given back: credit memos, what of them was refunded from captures and released
    # from holds (runs carried over before these were kept start again from nothing).
    credited_minor: int = 0
    refunded_minor: int = 0
    released_minor: int = 0
    # The process exceptions raised, oldest first.
    exceptions: list[ExceptionRecord] = field(default_factory=list)
    # Holds kept alive ahead of a promised day (workflows/changes/renewals.py): the day payments
    # was last asked about, when to ask again (None: no need), and how many times it was asked.
    renewal_promise_date: str = ""
    renew_at: datetime | None = None
    renewal_requests: int = 0
    # Delivery promises: per fulfillment order after shipping, and as reported per group.
    promises: PromiseState = field(default_factory=PromiseState)

    def exception(self, exception_id: str) -> ExceptionRecord | None:
        """The process exception `exception_id` raised by this lifecycle, if any."""
        return next((e for e in self.exceptions if e.process_exception_id == exception_id), None)
