"""The lifecycle's money rules: what an invoice charges, what goodwill may give, what is still
to be charged, what a cancel or return gives back. Pure and deterministic, beside the ledger's
quantity rules (`workflows/ledger.py`).

The money state is the money fields of `LifecycleState` (captured, invoiced, per line invoiced
and appeased, goodwill pending); functions here read it, and the `record_*` ones move it once
payments has done the work. Units of a line are shares of its money in order (invoices take
them from the front, cancels from the back), so parts always add up to the line's total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oms_platform.money import format_minor
from workflows.ledger import ChangeRefused, Ledger, line_share_minor
from workflows.state import LifecycleState, Replacement
from workflows.types import ChargeLineData, ItemQuantity, LifecycleDeliveryGroup


@dataclass
class InvoicePlan:
    """What one shipment's invoice charges, and what it takes from the money state."""

    lines: list[ChargeLineData]
    shipping_minor: int
    # Units invoiced per line, and their money (before goodwill).
    units: dict[str, int]
    shares: dict[str, int]
    # Goodwill given before charging that comes off this invoice: per line and the order's.
    line_goodwill: dict[str, int]
    order_goodwill: int

    @property
    def goodwill_minor(self) -> int:
        return sum(self.line_goodwill.values()) + self.order_goodwill


def plan_invoice(
    state: LifecycleState,
    ledger: Ledger,
    group: LifecycleDeliveryGroup | None,
    items: Sequence[ItemQuantity],
) -> InvoicePlan:
    """Invoice shipped units of one delivery group: each line's next units in order, the
    group's shipping on its first invoice, less goodwill given before anything was charged
    (on the first invoices it fits)."""
    lines: list[ChargeLineData] = []
    units: dict[str, int] = {}
    shares: dict[str, int] = {}
    for item in items:
        line = ledger.lines[item.order_line_id].line
        before = ledger.lines[item.order_line_id].invoiced + units.get(line.order_line_id, 0)
        units[line.order_line_id] = units.get(line.order_line_id, 0) + item.quantity
        shares[line.order_line_id] = shares.get(line.order_line_id, 0) + line_share_minor(
            line, before, item.quantity
        )
        lines.append(
            ChargeLineData(
                order_line_id=line.order_line_id,
                sku=line.sku,
                quantity_ordered=line.quantity,
                gross_minor=line.gross_minor,
                discount_minor=line.discount_minor,
                tax_minor=line.tax_minor,
                quantity_to_invoice=item.quantity,
                quantity_invoiced_before=before,
            )
        )
    shipping_minor = 0
    if group is not None and group.delivery_group_id not in ledger.shipping_charged:
        shipping_minor = group.shipping_minor
    line_goodwill = {
        line_id: min(share, state.goodwill_pending_by_line.get(line_id, 0))
        for line_id, share in shares.items()
    }
    charged = sum(shares.values()) + shipping_minor - sum(line_goodwill.values())
    order_goodwill = min(charged, state.goodwill_pending_order)
    return InvoicePlan(lines, shipping_minor, units, shares, line_goodwill, order_goodwill)


def record_invoice(
    state: LifecycleState,
    ledger: Ledger,
    plan: InvoicePlan,
    delivery_group_id: str,
    total_minor: int,
) -> None:
    """Payments has the invoice: its units are invoiced, its goodwill used, its shipping
    charged."""
    for line_id, quantity in plan.units.items():
        ledger.take_invoiced(line_id, quantity)
        state.line_invoiced_minor[line_id] = (
            state.line_invoiced_minor.get(line_id, 0)
            + plan.shares[line_id]
            - plan.line_goodwill[line_id]
        )
        if plan.line_goodwill[line_id]:
            state.goodwill_pending_by_line[line_id] -= plan.line_goodwill[line_id]
    state.goodwill_pending_order -= plan.order_goodwill
    ledger.mark_shipping_charged(delivery_group_id)
    state.invoiced_minor += total_minor


def goodwill_pending_minor(state: LifecycleState) -> int:
    """Goodwill given before charging, still to come off invoices."""
    return state.goodwill_pending_order + sum(state.goodwill_pending_by_line.values())


def uncharged_minor(ledger: Ledger, delivery_groups: Sequence[LifecycleDeliveryGroup]) -> int:
    """What the order will still charge: units neither invoiced nor canceled (invoices take
    units from the front, cancels from the back) and shipping not yet charged for groups not
    wholly canceled."""
    units = sum(
        line_share_minor(b.line, b.invoiced, b.ordered - b.canceled - b.invoiced)
        for b in ledger.lines.values()
        if b.ordered - b.canceled - b.invoiced > 0
    )
    shipping = sum(
        g.shipping_minor
        for g in delivery_groups
        if g.delivery_group_id not in ledger.shipping_charged
        and not ledger.group_fully_canceled(g.delivery_group_id)
    )
    return units + shipping


def appeasement_amount(
    state: LifecycleState,
    ledger: Ledger,
    delivery_groups: Sequence[LifecycleDeliveryGroup],
    currency: str,
    lines: Sequence[ItemQuantity],
    amount_minor: int,
    percent_basis_points: int,
) -> tuple[int, bool]:
    """The goodwill asked for (an amount, or basis points of what it applies to), and whether
    it comes off what will be charged (nothing has been charged for its line, or for the order,
    yet) rather than refunded from what was. ChangeRefused when it is not allowed."""
    if len(lines) > 1:
        raise ChangeRefused("lines: appease one line or the whole order", "INVALID_ARGUMENT")
    if (amount_minor > 0) == (percent_basis_points > 0):
        raise ChangeRefused(
            "give exactly one of amount_minor or percent_basis_points (> 0)", "INVALID_ARGUMENT"
        )
    if percent_basis_points > 10_000:
        raise ChangeRefused("percent_basis_points: at most 10000 (100%)", "INVALID_ARGUMENT")
    order_room = uncharged_minor(ledger, delivery_groups) - goodwill_pending_minor(state)
    if lines:
        line_id = lines[0].order_line_id
        if line_id not in ledger.lines:
            raise ChangeRefused(f"lines[0].order_line_id: no line {line_id!r}", "INVALID_ARGUMENT")
        what = f"line {line_id}"
        buckets = ledger.lines[line_id]
        before_charging = buckets.invoiced == 0
        if before_charging:
            base = line_share_minor(buckets.line, 0, buckets.ordered - buckets.canceled)
            room = min(base - state.goodwill_pending_by_line.get(line_id, 0), order_room)
        else:
            base = state.line_invoiced_minor.get(line_id, 0)
            room = base - state.line_appeased_minor.get(line_id, 0)
    else:
        what = "the order"
        before_charging = state.invoiced_minor == 0
        if before_charging:
            base, room = uncharged_minor(ledger, delivery_groups), order_room
        else:
            base = state.captured_minor
            room = base - state.order_appeased_minor - sum(state.line_appeased_minor.values())
    amount = amount_minor or base * percent_basis_points // 10_000
    if amount <= 0:
        raise ChangeRefused(f"nothing is charged or left to charge for {what}")
    if amount > room:
        still = "to be charged" if before_charging else "refundable"
        raise ChangeRefused(
            f"goodwill of {format_minor(amount, currency)} exceeds the "
            f"{format_minor(max(room, 0), currency)} still {still} for {what}"
        )
    return amount, before_charging


def record_goodwill_before_charging(
    state: LifecycleState, lines: Sequence[ItemQuantity], amount_minor: int
) -> None:
    """Goodwill nothing was charged for yet: it comes off the invoices to come, and what the
    authorization held beyond them is released at settlement."""
    if lines:
        line_id = lines[0].order_line_id
        state.goodwill_pending_by_line[line_id] = (
            state.goodwill_pending_by_line.get(line_id, 0) + amount_minor
        )
    else:
        state.goodwill_pending_order += amount_minor
    state.release_at_settlement = True


def record_appeasement(
    state: LifecycleState, lines: Sequence[ItemQuantity], amount_minor: int
) -> None:
    """Goodwill refunded from what was charged, on its line or the whole order."""
    for line in lines:
        state.line_appeased_minor[line.order_line_id] = (
            state.line_appeased_minor.get(line.order_line_id, 0) + amount_minor
        )
    if not lines:
        state.order_appeased_minor += amount_minor


def shipping_freed_by_cancel(
    ledger: Ledger,
    delivery_groups: Sequence[LifecycleDeliveryGroup],
    canceled: Sequence[ItemQuantity],
) -> int:
    """Shipping given back with a cancel: that of each group the cancel leaves wholly canceled
    (and that was not wholly canceled before), unless an invoice already charged it."""
    after: dict[str, int] = {}
    for item in canceled:
        after[item.order_line_id] = after.get(item.order_line_id, 0) + item.quantity

    def wholly_canceled(group_id: str, extra: dict[str, int]) -> bool:
        lines = [b for b in ledger.lines.values() if b.line.delivery_group_id == group_id]
        return bool(lines) and all(
            b.canceled + extra.get(b.line.order_line_id, 0) == b.ordered for b in lines
        )

    return sum(
        g.shipping_minor
        for g in delivery_groups
        if not wholly_canceled(g.delivery_group_id, {})
        and wholly_canceled(g.delivery_group_id, after)
        and g.delivery_group_id not in ledger.shipping_charged
    )


def cancel_credit_minor(ledger: Ledger, canceled: Sequence[ItemQuantity]) -> int:
    """The units' money a cancel gives back (from the back of each line), without shipping."""
    return sum(
        line_share_minor(ledger.lines[c.order_line_id].line, c.first_unit, c.quantity_to_credit)
        for c in ledger.credit_lines_for_cancel(list(canceled))
    )


def return_credit_minor(ledger: Ledger, returned: Sequence[ItemQuantity]) -> int:
    """The money of returned units not yet credited (from the front of each line)."""
    return sum(
        line_share_minor(
            ledger.lines[i.order_line_id].line,
            ledger.lines[i.order_line_id].credited_for_return,
            i.quantity,
        )
        for i in returned
    )


def exchange_difference(
    ledger: Ledger,
    items: Sequence[ItemQuantity],
    replacements: dict[str, Replacement],
    fee_minor: int = 0,
) -> int:
    """Replacements' price less the returned units' exact share, plus the restocking fee the
    return policy charges on the exchange (positive: the shopper owes it)."""
    dearer = sum(replacements[i.order_line_id].unit_price_minor * i.quantity for i in items)
    return dearer - return_credit_minor(ledger, items) + fee_minor
