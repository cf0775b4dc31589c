"""Servicing's validation of items to add: every violation at once, field names as in the API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from oms_platform.errors import InvalidArgument
from services.servicing import domain
from services.servicing.domain import ChangeOrder, Item, LineIncrease, NewLine


def an_addition(**fields: object) -> ChangeOrder:
    base: dict[str, object] = {
        "kind": domain.ADD_ITEMS,
        "order_id": "order-1",
        "idempotency_key": "k-1",
        "actor": "agent:ada",
        "reason": "wants more",
        "new_lines": (NewLine("SKU-CAP", 2, 800, 96),),
        "increases": (LineIncrease("line-1", 1, 90),),
    }
    base.update(fields)
    return ChangeOrder(**base)  # type: ignore[arg-type]


def violations(order: ChangeOrder, *, preview: bool = False) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_change(order, preview=preview)
    return {v.field: v.description for v in error.value.violations}


def test_a_valid_addition_passes_and_records_its_increases_as_requested_lines() -> None:
    order = an_addition()
    domain.validate_change(order)
    domain.validate_change(an_addition(idempotency_key="", reason=""), preview=True)

    change = domain.new_change(order, "chg-1", datetime(2026, 3, 1, 9, 0, tzinfo=UTC))

    assert change.kind == "add_items"
    assert change.requested_lines == (Item("line-1", 1),)


def test_every_bad_field_is_named_at_once() -> None:
    found = violations(
        an_addition(
            new_lines=(NewLine("", 0, -1, -1),),
            increases=(LineIncrease("line-1", -2), LineIncrease("line-1", 1, -5)),
        )
    )

    assert sorted(found) == [
        "increases[0].quantity",
        "increases[1].order_line_id",
        "increases[1].tax_minor",
        "new_lines[0].quantity",
        "new_lines[0].sku",
        "new_lines[0].tax_minor",
        "new_lines[0].unit_price_minor",
    ]
    assert "lowering a quantity is a cancel" in found["increases[0].quantity"]


def test_nothing_to_add_is_refused_even_in_a_preview() -> None:
    found = violations(an_addition(new_lines=(), increases=()), preview=True)

    assert found == {"new_lines": "give at least one new line or increase"}


def test_a_line_costing_more_than_one_amount_is_refused() -> None:
    found = violations(an_addition(new_lines=(NewLine("SKU-CAP", 1_000_000, 10**7, 0),)))

    assert list(found) == ["new_lines[0].unit_price_minor"]
