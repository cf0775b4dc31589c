"""The order's quantities and money as the lifecycle tracks them: pure and deterministic.

Buckets per line (ordered, canceled, allocated, fulfilled, return-initiated, returned), which
fulfillment order holds which unshipped units, and which units of a line's money have been
invoiced or credited. Units of a line are shares of its money in order: invoices take them
from the front, cancels from the back, so the two never overlap and parts always add up.
"""

from __future__ import annotations

import bisect
import uuid
from dataclasses import dataclass, replace

from oms_platform import limits
from oms_platform.money import share
from workflows.state import LedgerState, LineBuckets
from workflows.types import (
    CreditLineData,
    FulfillmentOrderData,
    ItemQuantity,
    LifecycleLine,
    LineAdditionData,
    LineIncrease,
    LineQuantityChange,
    NewLineData,
    OrderLifecycleInput,
    RoutingLineData,
)


class ChangeRefused(Exception):
    """A change the order's quantities do not allow; `code` is the gRPC status name."""

    def __init__(self, message: str, code: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Ledger:
    """Everything the lifecycle knows about an order's quantities: the rules over its data, a
    `LedgerState`, which they change in place (so the state is always ready to carry over)."""

    def __init__(self, state: LedgerState) -> None:
        self.state = state
        # Indexes over the state's lists, sharing their items: a bucket changed here is changed
        # there.
        self.lines: dict[str, LineBuckets] = {b.line.order_line_id: b for b in state.lines}
        self.fulfillment_orders: dict[str, FulfillmentOrderData] = {
            fo.fulfillment_order_id: fo for fo in state.fulfillment_orders
        }

    @classmethod
    def of(cls, order: OrderLifecycleInput) -> Ledger:
        """The ledger of an order nothing has happened to yet."""
        return cls(LedgerState(lines=[LineBuckets(line) for line in order.lines]))

    @property
    def open_units(self) -> dict[str, dict[str, int]]:
        """Fulfillment order id -> order line id -> unshipped units, oldest first."""
        return self.state.open_units

    def is_open(self, fulfillment_order_id: str) -> bool:
        """Whether the fulfillment order still has units to ship."""
        return any(self.open_units.get(fulfillment_order_id, {}).values())

    @property
    def undelivered(self) -> list[str]:
        """Shipments not delivered yet (sorted)."""
        return self.state.undelivered

    @property
    def shipping_charged(self) -> list[str]:
        """Delivery groups whose shipping an invoice has charged (sorted)."""
        return self.state.shipping_charged

    @property
    def no_charge(self) -> list[str]:
        """Fulfillment orders shipping units already paid for (sorted)."""
        return self.state.no_charge

    def mark_undelivered(self, shipment_id: str) -> None:
        _add_sorted(self.state.undelivered, shipment_id)

    def mark_delivered(self, shipment_id: str) -> None:
        if shipment_id in self.state.undelivered:
            self.state.undelivered.remove(shipment_id)

    def mark_shipping_charged(self, delivery_group_id: str) -> None:
        _add_sorted(self.state.shipping_charged, delivery_group_id)

    # ---- fulfillment ---------------------------------------------------------------------

    def add_fulfillment_order(self, fo: FulfillmentOrderData, *, no_charge: bool = False) -> None:
        """Track a fulfillment order; `no_charge` ones (reships, exchange replacements) ship
        units the order already paid for, so they move no buckets and raise no invoice."""
        if fo.fulfillment_order_id in self.fulfillment_orders:
            self.relocate(fo)
        else:
            self.state.fulfillment_orders.append(fo)
            self.fulfillment_orders[fo.fulfillment_order_id] = fo
        if no_charge:
            _add_sorted(self.state.no_charge, fo.fulfillment_order_id)
        units = self.open_units.setdefault(fo.fulfillment_order_id, {})
        for line in fo.lines:
            units[line.order_line_id] = units.get(line.order_line_id, 0) + line.quantity
            if not no_charge:
                self.lines[line.order_line_id].allocated += line.quantity

    def relocate(self, fo: FulfillmentOrderData) -> None:
        """A tracked fulfillment order's new location or promise date; its units are as
        they were."""
        known = self.fulfillment_orders[fo.fulfillment_order_id]
        self.state.fulfillment_orders[self.state.fulfillment_orders.index(known)] = fo
        self.fulfillment_orders[fo.fulfillment_order_id] = fo

    def reroute(
        self, taken: dict[str, list[ItemQuantity]], replacements: list[FulfillmentOrderData]
    ) -> list[LineQuantityChange]:
        """Fulfillment took units off fulfillment orders unshipped (`taken`: fulfillment order
        id -> units) and placed them on `replacements` (a rejection, a move, a new address).
        Replacements of a no-charge fulfillment order are no-charge too. Returns the
        allocation changes for capture's record: every unit taken off, and the units of the
        replacements that are charged."""
        no_charge = any(fo_id in self.no_charge for fo_id in taken)
        changes: list[LineQuantityChange] = []
        for fo_id, items in taken.items():
            self.remove_open_units(fo_id, items)
            changes += [LineQuantityChange(i.order_line_id, allocated=-i.quantity) for i in items]
        for fo in replacements:
            self.add_fulfillment_order(fo, no_charge=no_charge)
        return changes + [
            LineQuantityChange(line.order_line_id, allocated=line.quantity)
            for fo in replacements
            if fo.fulfillment_order_id not in self.no_charge
            for line in fo.lines
        ]

    def open_items(self, fulfillment_order_id: str) -> list[ItemQuantity]:
        """The units a fulfillment order still has to ship, per line."""
        units = self.open_units.get(fulfillment_order_id, {})
        return [ItemQuantity(line_id, q) for line_id, q in units.items() if q]

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

    # ---- adding items before fulfillment -------------------------------------------------

    def plan_add_items(
        self,
        order_id: str,
        change_id: str,
        new_lines: list[NewLineData],
        increases: list[LineIncrease],
        delivery_group_ids: list[str],
    ) -> AddItemsPlan:
        """Validate adding lines and units before anything shipped; nothing changes.

        An increase re-bases its line: gross grows by the unit price (gross / quantity, which
        must be exact) times the units added, tax by the tax given, discounts stay. That needs
        every unit of the line still open (none canceled, shipped or invoiced): otherwise the
        agent adds a new line. New lines get ids derived from the order and the change."""
        if not new_lines and not increases:
            raise ChangeRefused(
                "new_lines: give at least one new line or increase", "INVALID_ARGUMENT"
            )
        if any(b.fulfilled for b in self.lines.values()):
            raise ChangeRefused(
                "units of this order have shipped; items can be added only before fulfillment"
            )
        added: list[AddedUnits] = []
        seen: set[str] = set()
        for i, increase in enumerate(increases):
            b = self.lines.get(increase.order_line_id)
            if b is None:
                raise ChangeRefused(
                    f"increases[{i}].order_line_id: no line {increase.order_line_id!r} on this "
                    "order",
                    "INVALID_ARGUMENT",
                )
            if increase.order_line_id in seen:
                raise ChangeRefused(
                    f"increases[{i}].order_line_id: appears more than once", "INVALID_ARGUMENT"
                )
            seen.add(increase.order_line_id)
            if increase.quantity <= 0:
                raise ChangeRefused(
                    f"increases[{i}].quantity: must be > 0 (lowering a quantity is a cancel)",
                    "INVALID_ARGUMENT",
                )
            if increase.tax_minor < 0:
                raise ChangeRefused(f"increases[{i}].tax_minor: must be >= 0", "INVALID_ARGUMENT")
            line = b.line
            touched = {"canceled": b.canceled, "shipped": b.fulfilled, "invoiced": b.invoiced}
            for what, units in touched.items():
                if units:
                    raise ChangeRefused(
                        f"increases[{i}]: {units} unit(s) of {line.sku} on line "
                        f"{line.order_line_id} are {what}; add a new line instead"
                    )
            if line.quantity <= 0 or line.gross_minor % line.quantity:
                raise ChangeRefused(
                    f"increases[{i}]: line {line.order_line_id}'s gross of {line.gross_minor} is "
                    f"not a whole unit price times its {line.quantity} unit(s); add a new line "
                    "instead"
                )
            unit_price = line.gross_minor // line.quantity
            if (
                line.quantity + increase.quantity > limits.MAX_QUANTITY
                or limits.line_amount_violations("", line.quantity + increase.quantity, unit_price)
            ):
                raise ChangeRefused(
                    f"increases[{i}].quantity: the line would pass {limits.MAX_QUANTITY:,} units "
                    f"or {limits.MAX_LINE_AMOUNT_MINOR:,} minor units; add a new line instead",
                    "INVALID_ARGUMENT",
                )
            after = replace(
                line,
                quantity=line.quantity + increase.quantity,
                gross_minor=line.gross_minor + unit_price * increase.quantity,
                tax_minor=line.tax_minor + increase.tax_minor,
            )
            added.append(
                AddedUnits(after, increase.quantity, unit_price, increase.tax_minor, False)
            )
        for i, new in enumerate(new_lines):
            if not new.sku.strip():
                raise ChangeRefused(f"new_lines[{i}].sku: is required", "INVALID_ARGUMENT")
            if new.quantity <= 0:
                raise ChangeRefused(f"new_lines[{i}].quantity: must be > 0", "INVALID_ARGUMENT")
            if new.unit_price_minor < 0:
                raise ChangeRefused(
                    f"new_lines[{i}].unit_price_minor: must be >= 0", "INVALID_ARGUMENT"
                )
            if new.tax_minor < 0:
                raise ChangeRefused(f"new_lines[{i}].tax_minor: must be >= 0", "INVALID_ARGUMENT")
            if limits.line_amount_violations("", new.quantity, new.unit_price_minor):
                raise ChangeRefused(
                    f"new_lines[{i}].unit_price_minor: quantity x unit price must be at most "
                    f"{limits.MAX_LINE_AMOUNT_MINOR:,} minor units",
                    "INVALID_ARGUMENT",
                )
            group = new.delivery_group_id or (delivery_group_ids[0] if delivery_group_ids else "")
            if group not in delivery_group_ids:
                raise ChangeRefused(
                    f"new_lines[{i}].delivery_group_id: no delivery group {group!r} on this order",
                    "INVALID_ARGUMENT",
                )
            if self.group_fully_canceled(group):
                raise ChangeRefused(
                    f"new_lines[{i}]: delivery group {group} was canceled; items cannot be "
                    "added to it"
                )
            line = LifecycleLine(
                order_line_id=new_line_id(order_id, change_id, i),
                delivery_group_id=group,
                sku=new.sku,
                quantity=new.quantity,
                gross_minor=new.unit_price_minor * new.quantity,
                discount_minor=0,
                tax_minor=new.tax_minor,
            )
            added.append(
                AddedUnits(line, new.quantity, new.unit_price_minor, new.tax_minor, True, new.name)
            )
        return AddItemsPlan(added)

    def apply_add_items(self, plan: AddItemsPlan) -> None:
        """Take the planned lines and units into the buckets (none allocated yet)."""
        for units in plan.added:
            if units.new_line:
                buckets = LineBuckets(units.line)
                self.lines[units.line.order_line_id] = buckets
                self.state.lines.append(buckets)
            else:
                self.lines[units.line.order_line_id].line = units.line


def _add_sorted(items: list[str], item: str) -> None:
    """Add `item` to a sorted list kept as a set."""
    if item not in items:
        bisect.insort(items, item)


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


# ---- adding items ------------------------------------------------------------------------------

_NEW_LINE_NAMESPACE = uuid.UUID("0d5c2a8e-6b7f-4e61-9c3a-2f1b8d4e7a90")


def new_line_id(order_id: str, change_id: str, index: int) -> str:
    """The id of the index-th new line of a change: derived, never drawn, so a replay and a
    preview compute the same one (and without ':', which routing reads as a suffix)."""
    return str(uuid.uuid5(_NEW_LINE_NAMESPACE, f"{order_id}\x1f{change_id}\x1f{index}"))


@dataclass
class AddedUnits:
    """Units a change adds to one line: the line as it will be, and the added units' money."""

    line: LifecycleLine
    quantity: int
    unit_price_minor: int
    tax_minor: int
    new_line: bool
    name: str = ""

    @property
    def gross_minor(self) -> int:
        return self.unit_price_minor * self.quantity

    @property
    def total_minor(self) -> int:
        return self.gross_minor + self.tax_minor


@dataclass
class AddItemsPlan:
    """What adding items does to the order: increases first, then new lines."""

    added: list[AddedUnits]

    @property
    def total_minor(self) -> int:
        """What the order's grand total grows by (added gross and tax; no discounts)."""
        return sum(units.total_minor for units in self.added)

    @property
    def units(self) -> int:
        return sum(units.quantity for units in self.added)

    def items(self) -> list[ItemQuantity]:
        """Units added per line."""
        return [ItemQuantity(u.line.order_line_id, u.quantity) for u in self.added]

    def routing_lines(self) -> list[RoutingLineData]:
        """The added units, to place at locations."""
        return [RoutingLineData(u.line.order_line_id, u.line.sku, u.quantity) for u in self.added]

    def new_lines(self) -> list[LifecycleLine]:
        return [u.line for u in self.added if u.new_line]

    def additions(self) -> list[LineAdditionData]:
        """The added units as capture records them."""
        return [
            LineAdditionData(
                order_line_id=u.line.order_line_id,
                quantity=u.quantity,
                gross_minor=u.gross_minor,
                tax_minor=u.tax_minor,
                new_line=u.new_line,
                delivery_group_id=u.line.delivery_group_id if u.new_line else "",
                sku=u.line.sku if u.new_line else "",
                name=u.name,
                unit_price_minor=u.unit_price_minor,
            )
            for u in self.added
        ]
