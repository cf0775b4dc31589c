"""Capture's domain, items added before fulfillment: new lines, or more units of a line, with
the order's totals after them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from oms_platform import limits
from oms_platform.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from services.capture.domain.order import Order, OrderLine, Quantities, TaxLine, Totals


@dataclass(frozen=True)
class LineAddition:
    """Units the order's workflow added before fulfillment: a new line (new_line, with its
    group, SKU, name and unit price) or more units of an existing line at its unit price.
    Money in minor units of `currency`."""

    order_line_id: str
    quantity: int
    tax_minor: int
    currency: str
    new_line: bool = False
    delivery_group_id: str = ""
    sku: str = ""
    name: str = ""
    unit_price_minor: int = 0


@dataclass(frozen=True)
class AddedItems:
    """An order's lines and totals after additions: existing lines with more units, new
    lines (in the order given), and the new totals."""

    changed: tuple[OrderLine, ...]
    new: tuple[OrderLine, ...]
    totals: Totals


def add_items(order: Order, additions: Sequence[LineAddition]) -> AddedItems:
    """The order with `additions` taken in: ordered units, the line's tax lines and total,
    and the order's subtotal, tax and grand total grow by the added gross and tax.

    Raises InvalidArgument for a bad addition, NotFound for more units of a line the order
    does not have, AlreadyExists for a new line whose id is taken."""
    lines = {line.order_line_id: line for line in order.lines}
    groups = {g.delivery_group_id for g in order.delivery_groups}
    changed: dict[str, OrderLine] = {}
    new: dict[str, OrderLine] = {}
    gross = tax = 0
    for i, added in enumerate(additions):
        path = f"added_lines[{i}]"
        violations = []
        if added.quantity <= 0:
            violations.append(FieldViolation(f"{path}.quantity", "must be > 0"))
        if added.tax_minor < 0:
            violations.append(FieldViolation(f"{path}.tax", "must not be negative"))
        if added.currency and added.currency != order.currency:
            violations.append(FieldViolation(path, f"money must be in {order.currency}"))
        if added.new_line:
            if not added.sku:
                violations.append(FieldViolation(f"{path}.sku", "is required"))
            if added.unit_price_minor < 0:
                violations.append(FieldViolation(f"{path}.unit_price", "must not be negative"))
            violations += limits.line_amount_violations(
                f"{path}.unit_price", added.quantity, added.unit_price_minor
            )
            if added.delivery_group_id not in groups:
                violations.append(
                    FieldViolation(f"{path}.delivery_group_id", "is not a group of this order")
                )
        if violations:
            raise InvalidArgument(violations)
        if added.new_line:
            if added.order_line_id in lines or added.order_line_id in new:
                raise AlreadyExists(
                    f"{path}.order_line_id",
                    f"order line {limits.echo(added.order_line_id)} exists already",
                )
            line_gross = added.unit_price_minor * added.quantity
            new[added.order_line_id] = OrderLine(
                order_line_id=added.order_line_id,
                delivery_group_id=added.delivery_group_id,
                sku=added.sku,
                name=added.name,
                unit_price_minor=added.unit_price_minor,
                discounts=(),
                taxes=(TaxLine("tax", added.tax_minor),) if added.tax_minor else (),
                allocated_order_discount_minor=0,
                total_minor=line_gross + added.tax_minor,
                quantities=Quantities(ordered=added.quantity),
            )
        else:
            line = changed.get(added.order_line_id) or lines.get(added.order_line_id)
            if line is None:
                raise NotFound(
                    f"order line {limits.echo(added.order_line_id)} is not on order "
                    f"{limits.echo(order.order_id)}"
                )
            line_gross = line.unit_price_minor * added.quantity
            taxes = line.taxes
            if added.tax_minor:
                taxes += (TaxLine(f"tax on {added.quantity} added unit(s)", added.tax_minor),)
            changed[added.order_line_id] = replace(
                line,
                taxes=taxes,
                total_minor=line.total_minor + line_gross + added.tax_minor,
                quantities=replace(line.quantities, ordered=line.quantity + added.quantity),
            )
        gross += line_gross
        tax += added.tax_minor
    totals = order.totals
    return AddedItems(
        changed=tuple(changed.values()),
        new=tuple(new.values()),
        totals=replace(
            totals,
            subtotal_minor=totals.subtotal_minor + gross,
            tax_minor=totals.tax_minor + tax,
            grand_total_minor=totals.grand_total_minor + gross + tax,
        ),
    )
