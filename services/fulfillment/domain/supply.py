"""Fulfillment domain, incoming supply and backorders: units expected at a location on a date
(purchase orders, advance ship notices, a pre-order's release), lines no stock can take
promised from them instead, and who gets arriving units first.

The rules: a line is backordered whole against one supply of its SKU that still has enough
units nobody was promised (the earliest expected first), so a promise is never more than the
supply; a pre-order's supply takes orders only before its release date; arriving units go to
the supply's waiting fulfillment orders oldest first, and a younger one never jumps ahead of
an older one that does not fit yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.fulfillment.domain.inventory import RECEIVED, InventoryAdjustment
from services.fulfillment.domain.routing import GroupPlan, RoutingLine, RoutingPlan

# A fulfillment order promised from incoming supply: nothing reserved, not yet the location's
# work; it becomes `allocated` when the supply's units arrive.
BACKORDERED = "backordered"

PURCHASE_ORDER = "purchase_order"
ADVANCE_SHIP_NOTICE = "advance_ship_notice"
PRE_ORDER = "pre_order"
SUPPLY_KINDS = (PURCHASE_ORDER, ADVANCE_SHIP_NOTICE, PRE_ORDER)

SUPPLY_OPEN = "open"
SUPPLY_RECEIVED = "received"
SUPPLY_CANCELED = "canceled"
SUPPLY_STATUSES = (SUPPLY_OPEN, SUPPLY_RECEIVED, SUPPLY_CANCELED)


@dataclass(frozen=True)
class Supply:
    """Units of one SKU expected at one location on a date."""

    supply_id: str
    kind: str
    reference: str
    location_id: str
    sku: str
    quantity: int
    expected_date: date
    status: str = SUPPLY_OPEN
    quantity_received: int = 0
    # Units of fulfillment orders backordered against it and still waiting.
    promised: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def outstanding(self) -> int:
        """Units still to arrive."""
        return max(self.quantity - self.quantity_received, 0)

    @property
    def unpromised(self) -> int:
        """Units still to arrive that no waiting fulfillment order is promised."""
        return max(self.outstanding - self.promised, 0)


@dataclass(frozen=True)
class SupplyRequest:
    """A supply as a merchandiser or warehouse describes it."""

    kind: str
    reference: str
    location_id: str
    sku: str
    quantity: int
    expected_date: date | None


@dataclass(frozen=True)
class Backorder:
    """Lines of one delivery group promised from one supply."""

    delivery_group_id: str
    supply: Supply
    lines: tuple[RoutingLine, ...]


def validate_supply(request: SupplyRequest, known_locations: Iterable[str], today: date) -> None:
    """A known kind and location, a SKU, positive units and an expected date; a pre-order's
    release date (its expected date) is after today, or it could take no order."""
    violations: list[FieldViolation] = []
    if request.kind not in SUPPLY_KINDS:
        violations.append(
            FieldViolation("kind", "must be purchase order, advance ship notice or pre-order")
        )
    if not request.location_id:
        violations.append(FieldViolation("location_id", "is required"))
    elif request.location_id not in set(known_locations):
        violations.append(
            FieldViolation("location_id", f"unknown location {limits.echo(request.location_id)}")
        )
    if not request.sku:
        violations.append(FieldViolation("sku", "is required"))
    if request.quantity <= 0:
        violations.append(FieldViolation("quantity", "must be positive"))
    if request.expected_date is None:
        violations.append(FieldViolation("expected_date", "is required (YYYY-MM-DD)"))
    elif request.kind == PRE_ORDER and request.expected_date <= today:
        violations.append(
            FieldViolation("expected_date", "a pre-order's release date must be after today")
        )
    if violations:
        raise InvalidArgument(violations)


def check_one_pre_order(request: SupplyRequest, open_pre_order: Supply | None) -> None:
    """A SKU is on pre-order once per location: a second open pre-order is refused, naming
    the first (UpdateSupply changes its cap or release date). `open_pre_order`: the open one
    of the request's SKU at its location, if any."""
    if request.kind == PRE_ORDER and open_pre_order is not None:
        raise FailedPrecondition(
            f"{request.sku} is already on pre-order at {request.location_id} (supply "
            f"{open_pre_order.supply_id}); change its cap or release date with UpdateSupply"
        )


def check_open(supply: Supply, verb: str) -> None:
    """Only open supply can be changed, canceled or received."""
    if supply.status != SUPPLY_OPEN:
        raise FailedPrecondition(f"supply {supply.supply_id} is {supply.status}; cannot {verb}")


def changed_supply(supply: Supply, quantity: int | None, expected_date: date | None) -> Supply:
    """An open supply with a new quantity and/or expected date. The quantity may not fall
    below what has arrived plus what waiting fulfillment orders are promised."""
    check_open(supply, "change it")
    violations: list[FieldViolation] = []
    if quantity is not None:
        floor = supply.quantity_received + supply.promised
        if quantity <= 0:
            violations.append(FieldViolation("quantity", "must be positive"))
        elif quantity < floor:
            violations.append(
                FieldViolation(
                    "quantity",
                    f"must be at least {floor}: {supply.quantity_received} received and "
                    f"{supply.promised} promised to backordered fulfillment orders",
                )
            )
    if quantity is None and expected_date is None:
        violations.append(FieldViolation("quantity", "quantity or expected_date is required"))
    if violations:
        raise InvalidArgument(violations)
    return replace(
        supply,
        quantity=supply.quantity if quantity is None else quantity,
        expected_date=expected_date or supply.expected_date,
    )


def check_receipt(supply: Supply, quantity: int) -> None:
    """Units received must be positive and no more than are still expected."""
    check_open(supply, "receive it")
    if quantity <= 0:
        raise InvalidArgument([FieldViolation("quantity", "must be positive")])
    if quantity > supply.outstanding:
        raise InvalidArgument(
            [
                FieldViolation(
                    "quantity",
                    f"exceeds the {supply.outstanding} units of supply {supply.supply_id} "
                    "still expected",
                )
            ]
        )


def date_moved_reason(before: Supply, after: Supply) -> str:
    """Why a changed supply's waiting fulfillment orders are promised again: its expected
    date moved. Empty when the date did not move (their promise stands)."""
    if after.expected_date == before.expected_date:
        return ""
    return (
        f"supply {after.supply_id} now expected {after.expected_date.isoformat()} "
        f"(was {before.expected_date.isoformat()})"
    )


def canceled_reason(supply: Supply, reason: str) -> str:
    """Why a canceled supply's waiting fulfillment orders are promised again or rejected."""
    return f"supply {supply.supply_id} canceled" + (f": {reason}" if reason else "")


def repromised_reason(why: str, other: Supply) -> str:
    """`why` a waiting fulfillment order is promised again, and the supply it is promised
    from now."""
    return f"{why}; promised from supply {other.supply_id}"


def receipt_adjustment(supply: Supply, quantity: int) -> InventoryAdjustment:
    """The stock a receipt adds at the supply's location, saying which supply it was."""
    reference = f" ({supply.reference})" if supply.reference else ""
    return InventoryAdjustment(
        supply.location_id,
        supply.sku,
        RECEIVED,
        quantity,
        f"supply {supply.supply_id} received{reference}",
    )


def receipt_status(supply: Supply, quantity: int) -> str:
    """The supply's status after `quantity` units arrived."""
    return SUPPLY_RECEIVED if quantity >= supply.outstanding else SUPPLY_OPEN


def usable(supply: Supply, today: date) -> bool:
    """Whether a new line may be promised from it: open with units unpromised, and for a
    pre-order only before its release date."""
    if supply.status != SUPPLY_OPEN or supply.unpromised <= 0:
        return False
    return supply.kind != PRE_ORDER or today < supply.expected_date


def _promise_order(supply: Supply) -> tuple[date, str]:
    return (supply.expected_date, supply.supply_id)


def backorder(
    plan: RoutingPlan, supplies: Sequence[Supply], today: date
) -> tuple[RoutingPlan, list[Backorder]]:
    """Promise what routing could not place from incoming supply: each unplaced line whole
    from the earliest usable supply of its SKU with enough unpromised units. Returns the plan
    with only what is left unplaced (and a decision sentence per backorder) and the
    backorders, one per delivery group and supply."""
    left: dict[str, int] = {s.supply_id: s.unpromised for s in supplies if usable(s, today)}
    by_sku: dict[str, list[Supply]] = defaultdict(list)
    for s in sorted(supplies, key=_promise_order):
        if s.supply_id in left:
            by_sku[s.sku].append(s)
    groups: list[GroupPlan] = []
    backorders: list[Backorder] = []
    for group in plan.groups:
        promised: dict[str, list[RoutingLine]] = defaultdict(list)
        unplaced: list[RoutingLine] = []
        for line in group.unallocated:
            chosen = next((s for s in by_sku[line.sku] if left[s.supply_id] >= line.quantity), None)
            if chosen is None:
                unplaced.append(line)
                continue
            left[chosen.supply_id] -= line.quantity
            promised[chosen.supply_id].append(line)
        supply_of = {s.supply_id: s for s in supplies}
        sentences = []
        for supply_id, lines in promised.items():
            supply = supply_of[supply_id]
            backorders.append(Backorder(group.delivery_group_id, supply, tuple(lines)))
            sentences.append(backorder_sentence(supply, lines))
        groups.append(
            replace(
                group,
                unallocated=tuple(unplaced),
                decisions=(*group.decisions, *sentences),
            )
        )
    return RoutingPlan(tuple(groups)), backorders


def backorder_sentence(supply: Supply, lines: Iterable[RoutingLine]) -> str:
    """What a backorder promises, for the order's timeline and routing decisions."""
    units = ", ".join(f"{line.quantity} x {line.sku}" for line in lines)
    what = "pre-order release" if supply.kind == PRE_ORDER else "incoming supply"
    return (
        f"backordered {units} at {supply.location_id} against {what} {supply.supply_id}, "
        f"promised for {supply.expected_date.isoformat()}"
    )


@dataclass(frozen=True)
class Waiting:
    """A backordered fulfillment order as release and re-promising see it: oldest first."""

    fulfillment_order_id: str
    order_id: str
    supply_id: str
    units: int


def to_release(waiting: Sequence[Waiting], available: int) -> list[Waiting]:
    """The waiting fulfillment orders that `available` units release, oldest first; release
    stops at the first that does not fit, so a younger order never takes units an older one
    is still waiting for."""
    released: list[Waiting] = []
    for fo in waiting:
        if fo.units > available:
            break
        released.append(fo)
        available -= fo.units
    return released


def repromise(
    waiting: Sequence[Waiting], gone: Supply, others: Sequence[Supply], today: date
) -> list[tuple[Waiting, Supply | None]]:
    """Where each fulfillment order waiting on supply that will not come (canceled) is
    promised from now: oldest first, the earliest other usable supply of the SKU with enough
    unpromised units, or None when there is none."""
    left: dict[str, int] = {
        s.supply_id: s.unpromised
        for s in others
        if s.supply_id != gone.supply_id and s.sku == gone.sku and usable(s, today)
    }
    candidates = sorted((s for s in others if s.supply_id in left), key=_promise_order)
    out: list[tuple[Waiting, Supply | None]] = []
    for fo in waiting:
        chosen = next((s for s in candidates if left[s.supply_id] >= fo.units), None)
        if chosen is not None:
            left[chosen.supply_id] -= fo.units
        out.append((fo, chosen))
    return out
