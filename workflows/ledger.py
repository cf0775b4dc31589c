"""The order's quantities and money as the lifecycle tracks them: pure and deterministic.

Buckets per line (ordered, canceled, allocated, fulfilled, return-initiated, returned), which
fulfillment order holds which unshipped units, and which units of a line's money have been
invoiced or credited. Units of a line are shares of its money in order: invoices take them
from the front, cancels from the back, so the two never overlap and parts always add up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oms_platform.money import share
from workflows.types import (
    CreditLineData,
    FulfillmentOrderData,
    ItemQuantity,
    LifecycleLine,
    OrderLifecycleInput,
    RoutingLineData,
)


class ChangeRefused(Exception):
    """A change the order's quantities do not allow; `code` is the gRPC status name."""

    def __init__(self, message: str, code: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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

    @property
    def line_total_minor(self) -> int:
        return self.line.gross_minor - self.line.discount_minor + self.line.tax_minor


@dataclass
class Ledger:
    """Everything the lifecycle knows about an order's quantities."""

    lines: dict[str, LineBuckets]
    # fulfillment order id -> order line id -> unshipped units
    open_units: dict[str, dict[str, int]] = field(default_factory=dict)
    fulfillment_orders: dict[str, FulfillmentOrderData] = field(default_factory=dict)
    undelivered: set[str] = field(default_factory=set)
    shipping_charged: set[str] = field(default_factory=set)
    no_charge: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, order: OrderLifecycleInput) -> Ledger:
        return cls(lines={line.order_line_id: LineBuckets(line) for line in order.lines})

    # ---- fulfillment ---------------------------------------------------------------------

    def add_fulfillment_order(self, fo: FulfillmentOrderData, *, no_charge: bool = False) -> None:
        """Track a fulfillment order; `no_charge` ones (reships, exchange replacements) ship
        units the order already paid for, so they move no buckets and raise no invoice."""
        self.fulfillment_orders[fo.fulfillment_order_id] = fo
        if no_charge:
            self.no_charge.add(fo.fulfillment_order_id)
        units = self.open_units.setdefault(fo.fulfillment_order_id, {})
        for line in fo.lines:
            units[line.order_line_id] = units.get(line.order_line_id, 0) + line.quantity
            if not no_charge:
                self.lines[line.order_line_id].allocated += line.quantity

    def remove_open_units(self, fulfillment_order_id: str, items: list[ItemQuantity]) -> None:
        """Units leave a fulfillment order unshipped (rejected, moved or canceled)."""
        units = self.open_units.get(fulfillment_order_id, {})
        for item in items:
            taken = min(item.quantity, units.get(item.order_line_id, 0))
            units[item.order_line_id] = units.get(item.order_line_id, 0) - taken
            if fulfillment_order_id not in self.no_charge:
                self.lines[item.order_line_id].allocated -= taken

    def ship(self, fulfillment_order_id: str, items: list[ItemQuantity]) -> None:
        units = self.open_units.get(fulfillment_order_id, {})
        for item in items:
            units[item.order_line_id] = max(0, units.get(item.order_line_id, 0) - item.quantity)
            if fulfillment_order_id in self.no_charge:
                continue
            buckets = self.lines[item.order_line_id]
            buckets.allocated = max(0, buckets.allocated - item.quantity)
            buckets.fulfilled += item.quantity

    def unallocated(self) -> list[RoutingLineData]:
        """Units neither canceled, shipped nor on a fulfillment order: they still need a place."""
        out = []
        for buckets in self.lines.values():
            missing = buckets.ordered - buckets.canceled - buckets.fulfilled - buckets.allocated
            if missing > 0:
                out.append(RoutingLineData(buckets.line.order_line_id, buckets.line.sku, missing))
        return out

    def everything_shipped(self) -> bool:
        return not any(q for units in self.open_units.values() for q in units.values())

    def settled(self) -> bool:
        """Every unit shipped and delivered, or canceled."""
        return self.everything_shipped() and not self.undelivered and not self.unallocated()

    def all_canceled(self) -> bool:
        return all(b.canceled == b.ordered for b in self.lines.values())

    def group_fully_canceled(self, delivery_group_id: str) -> bool:
        group = [b for b in self.lines.values() if b.line.delivery_group_id == delivery_group_id]
        return bool(group) and all(b.canceled == b.ordered for b in group)

    # ---- cancels -------------------------------------------------------------------------

    def plan_cancel(self, requested: list[ItemQuantity]) -> list[ItemQuantity]:
        """Validate a cancel; empty request = everything not shipped."""
        if not requested:
            plan = [
                ItemQuantity(line_id, b.available_to_cancel)
                for line_id, b in self.lines.items()
                if b.available_to_cancel > 0
            ]
            if not plan:
                raise ChangeRefused("nothing left to cancel: every unit shipped or was canceled")
            return plan
        for i, item in enumerate(requested):
            buckets = self.lines.get(item.order_line_id)
            if buckets is None:
                raise ChangeRefused(
                    f"lines[{i}].order_line_id: no line {item.order_line_id!r} on this order",
                    "INVALID_ARGUMENT",
                )
            if item.quantity <= 0:
                raise ChangeRefused(f"lines[{i}].quantity: must be > 0", "INVALID_ARGUMENT")
            if item.quantity > buckets.available_to_cancel:
                raise ChangeRefused(
                    f"lines[{i}]: only {buckets.available_to_cancel} unit(s) of "
                    f"{buckets.line.sku} can still be canceled"
                )
        return requested

    def open_units_for_cancel(self, plan: list[ItemQuantity]) -> dict[str, list[ItemQuantity]]:
        """Which fulfillment orders give up which units, newest fulfillment order first."""
        out: dict[str, list[ItemQuantity]] = {}
        for item in plan:
            left = item.quantity
            for fo_id in reversed([f for f in self.open_units if f not in self.no_charge]):
                held = self.open_units[fo_id].get(item.order_line_id, 0)
                take = min(held, left)
                if take:
                    out.setdefault(fo_id, []).append(ItemQuantity(item.order_line_id, take))
                    left -= take
                if not left:
                    break
        return out

    def credit_lines_for_cancel(self, plan: list[ItemQuantity]) -> list[CreditLineData]:
        """The money of canceled units: taken from the back of each line."""
        out = []
        for item in plan:
            b = self.lines[item.order_line_id]
            first = b.ordered - b.canceled - item.quantity
            out.append(_credit(b.line, item.quantity, first))
        return out

    def apply_cancel(self, plan: list[ItemQuantity]) -> None:
        for item in plan:
            self.lines[item.order_line_id].canceled += item.quantity

    # ---- invoices ------------------------------------------------------------------------

    def take_invoiced(self, order_line_id: str, quantity: int) -> int:
        """Mark units invoiced; returns how many of the line were invoiced before."""
        b = self.lines[order_line_id]
        before = b.invoiced
        b.invoiced += quantity
        return before

    # ---- returns -------------------------------------------------------------------------

    def plan_return(self, requested: list[ItemQuantity]) -> list[ItemQuantity]:
        if not requested:
            raise ChangeRefused("lines: at least one line to return", "INVALID_ARGUMENT")
        for i, item in enumerate(requested):
            b = self.lines.get(item.order_line_id)
            if b is None:
                raise ChangeRefused(
                    f"lines[{i}].order_line_id: no line {item.order_line_id!r} on this order",
                    "INVALID_ARGUMENT",
                )
            if item.quantity <= 0:
                raise ChangeRefused(f"lines[{i}].quantity: must be > 0", "INVALID_ARGUMENT")
            if item.quantity > b.available_to_return:
                raise ChangeRefused(
                    f"lines[{i}]: only {b.available_to_return} unit(s) of {b.line.sku} "
                    "can be returned"
                )
        return requested

    def credit_lines_for_return(self, items: list[ItemQuantity]) -> list[CreditLineData]:
        """The money of returned units: taken from the front (they were invoiced)."""
        out = []
        for item in items:
            b = self.lines[item.order_line_id]
            out.append(_credit(b.line, item.quantity, b.credited_for_return))
            b.credited_for_return += item.quantity
        return out


def line_share_minor(line: LifecycleLine, first_unit: int, quantity: int) -> int:
    """The money of units first_unit .. first_unit+quantity-1 of a line, component by
    component (gross - discount + tax), exactly as payments computes invoice lines."""
    parts = (line.gross_minor, line.discount_minor, line.tax_minor)
    gross, discount, tax = (share(p, line.quantity, first_unit, quantity) for p in parts)
    return gross - discount + tax


def _credit(line: LifecycleLine, quantity: int, first_unit: int) -> CreditLineData:
    return CreditLineData(
        order_line_id=line.order_line_id,
        sku=line.sku,
        quantity_ordered=line.quantity,
        gross_minor=line.gross_minor,
        discount_minor=line.discount_minor,
        tax_minor=line.tax_minor,
        quantity_to_credit=quantity,
        first_unit=first_unit,
    )
