"""What every servicing subdomain shares: the units of an order line, who acted, and the
field checks each validation is built from (each returns violations, so a request's are all
reported at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oms_platform.errors import FieldViolation

DEFAULT_ACTOR = "agent"
# Limits on free text that more than one subdomain checks.
MAX_NOTE_LENGTH = 2000
MAX_ACTOR_LENGTH = 200
MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class Item:
    """Units of one order line."""

    order_line_id: str
    quantity: int


def actor_of(actor: str) -> str:
    """Who did it: the given actor, or "agent" when none was given."""
    return actor.strip() or DEFAULT_ACTOR


def required(name: str, value: str) -> list[FieldViolation]:
    """`name` is required: a violation when `value` is blank."""
    return [] if value.strip() else [FieldViolation(name, "is required")]


def too_long(name: str, value: str, limit: int) -> list[FieldViolation]:
    """A violation when `value` is longer than `limit` characters."""
    return (
        [FieldViolation(name, f"must be at most {limit} characters")] if len(value) > limit else []
    )


def enum_violations(name: str, value: str, allowed: tuple[str, ...]) -> list[FieldViolation]:
    """A violation when `value` is unset or not one of `allowed`."""
    if not value:
        return [FieldViolation(name, "must be set")]
    if value not in allowed:
        return [FieldViolation(name, f"must be one of {', '.join(allowed)}")]
    return []


def item_violations(name: str, items: Sequence[Item]) -> list[FieldViolation]:
    """Every blank or repeated order line id and every quantity that is not > 0 in `items`."""
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not item.order_line_id.strip():
            violations.append(FieldViolation(f"{name}[{i}].order_line_id", "is required"))
        elif item.order_line_id in seen:
            violations.append(
                FieldViolation(f"{name}[{i}].order_line_id", "appears more than once")
            )
        seen.add(item.order_line_id)
        if item.quantity <= 0:
            violations.append(FieldViolation(f"{name}[{i}].quantity", "must be > 0"))
    return violations
