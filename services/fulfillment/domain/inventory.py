"""Fulfillment domain, inventory: locations and their groups, stock levels and adjustments
to them, reservation statuses, and what enabled locations can fulfill."""

from __future__ import annotations

import re
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import time

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.postal import PostalAddress
from services.fulfillment.domain.common import Coordinates, ProcessingSchedule, ShipToStore

LOCATION_TYPES = ("warehouse", "store", "drop_ship")

# Reservation statuses.
RESERVED = "reserved"
RELEASED = "released"
FULFILLED = "fulfilled"


# ---- locations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A place inventory ships from."""

    location_id: str
    name: str
    type: str
    address: PostalAddress
    latitude: float
    longitude: float
    priority: int
    enabled: bool
    # Fulfillment orders it takes per UTC day; None means no limit.
    daily_capacity: int | None = None
    # Read only: the groups it belongs to, and fulfillment orders it took today.
    group_ids: tuple[str, ...] = ()
    fulfillment_orders_today: int = 0
    # When it works an order, for delivery promises.
    schedule: ProcessingSchedule = field(default_factory=ProcessingSchedule)
    # A store's: whether pickup orders it has not got the units for are shipped to it.
    ship_to_store: ShipToStore = field(default_factory=ShipToStore)

    @property
    def coordinates(self) -> Coordinates:
        """Where it is."""
        return Coordinates(self.latitude, self.longitude)


# Processing days a location may take: a promise counts them one business day at a time.
MAX_PROCESSING_DAYS = 30
_LOCAL_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class ScheduleChange:
    """The processing schedule fields an upsert names; None keeps what is stored (the default
    for a new location), so a caller that does not know them changes nothing."""

    timezone: str | None = None
    cutoff_local_time: str | None = None
    processing_days: int | None = None


def parse_local_time(text: str) -> time | None:
    """A time of day written "HH:MM" (24-hour); None when it is not one."""
    found = _LOCAL_TIME.fullmatch(text)
    return None if found is None else time(int(found[1]), int(found[2]))


def timezone_violations(path: str, name: str) -> list[FieldViolation]:
    """An IANA time zone this machine knows."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [
            FieldViolation(
                path, f'{limits.echo(name)} is not an IANA time zone (e.g. "America/New_York")'
            )
        ]
    return []


def schedule_violations(change: ScheduleChange) -> list[FieldViolation]:
    """Why the schedule fields an upsert names are not a schedule."""
    out: list[FieldViolation] = []
    if change.timezone is not None:
        out += timezone_violations("location.timezone", change.timezone)
    if change.cutoff_local_time is not None and parse_local_time(change.cutoff_local_time) is None:
        out.append(
            FieldViolation("location.cutoff_local_time", 'must be a time of day "HH:MM" (24-hour)')
        )
    if change.processing_days is not None and not (
        0 <= change.processing_days <= MAX_PROCESSING_DAYS
    ):
        out.append(
            FieldViolation("location.processing_days", f"must be 0 to {MAX_PROCESSING_DAYS}")
        )
    return out


def with_schedule(location: Location, change: ScheduleChange, stored: Location | None) -> Location:
    """`location` with the schedule `change` names over the stored one (a new location's
    default); `change` is valid (see `schedule_violations`)."""
    current = stored.schedule if stored is not None else ProcessingSchedule()
    cutoff = (
        parse_local_time(change.cutoff_local_time) if change.cutoff_local_time is not None else None
    )
    schedule = ProcessingSchedule(
        timezone=current.timezone if change.timezone is None else change.timezone,
        cutoff=current.cutoff if cutoff is None else cutoff,
        processing_days=(
            current.processing_days if change.processing_days is None else change.processing_days
        ),
    )
    return replace(location, schedule=schedule)


# ---- stock -------------------------------------------------------------------------------


def available_to_fulfill(on_hand: int, reserved: int, safety_stock: int) -> int:
    """Units that can still be promised: on hand less reserved less safety stock, never < 0."""
    return max(0, on_hand - reserved - safety_stock)


@dataclass(frozen=True)
class InventoryLevel:
    """Stock of one SKU at one location."""

    location_id: str
    sku: str
    on_hand: int
    reserved: int = 0
    safety_stock: int = 0

    @property
    def available(self) -> int:
        """Available to fulfill."""
        return available_to_fulfill(self.on_hand, self.reserved, self.safety_stock)


RECEIVED = "received"
COUNTED = "counted"
DAMAGED = "damaged"
ADJUSTMENT_KINDS = (RECEIVED, COUNTED, DAMAGED)


@dataclass(frozen=True)
class InventoryAdjustment:
    """What happened to on hand at one location: units received, counted or damaged."""

    location_id: str
    sku: str
    kind: str
    quantity: int
    reason: str


def _location_and_sku_violations(
    where: str, location_id: str, sku: str, known: set[str]
) -> list[FieldViolation]:
    """A stock entry at `where` must name a known location and a SKU."""
    violations: list[FieldViolation] = []
    if not location_id:
        violations.append(FieldViolation(f"{where}.location_id", "is required"))
    elif location_id not in known:
        violations.append(
            FieldViolation(f"{where}.location_id", f"unknown location {limits.echo(location_id)}")
        )
    if not sku:
        violations.append(FieldViolation(f"{where}.sku", "is required"))
    return violations


def validate_adjustments(
    adjustments: Sequence[InventoryAdjustment], known_locations: Iterable[str]
) -> None:
    """Known locations, SKUs, kinds and reasons; positive units (zero or more when counted)."""
    known = set(known_locations)
    violations: list[FieldViolation] = []
    if not adjustments:
        violations.append(FieldViolation("adjustments", "at least one adjustment is required"))
    for i, a in enumerate(adjustments):
        where = f"adjustments[{i}]"
        violations += _location_and_sku_violations(where, a.location_id, a.sku, known)
        if a.kind not in ADJUSTMENT_KINDS:
            violations.append(
                FieldViolation(f"{where}.kind", "must be received, counted or damaged")
            )
        elif a.kind == COUNTED and a.quantity < 0:
            violations.append(FieldViolation(f"{where}.quantity", "must not be negative"))
        elif a.kind != COUNTED and a.quantity <= 0:
            violations.append(FieldViolation(f"{where}.quantity", "must be positive"))
        if not a.reason.strip():
            violations.append(FieldViolation(f"{where}.reason", "is required"))
    if violations:
        raise InvalidArgument(violations)


def adjust(level: InventoryLevel, adjustment: InventoryAdjustment) -> InventoryLevel:
    """The level after an adjustment. Damage never takes on hand below what is reserved:
    those units are promised, so the location must reject their orders first."""
    if adjustment.kind == RECEIVED:
        return replace(level, on_hand=level.on_hand + adjustment.quantity)
    if adjustment.kind == COUNTED:
        return replace(level, on_hand=adjustment.quantity)
    after = level.on_hand - adjustment.quantity
    if after < level.reserved:
        raise FailedPrecondition(
            f"level of {level.sku} at {level.location_id} has {level.on_hand} on hand and "
            f"{level.reserved} reserved; writing off {adjustment.quantity} damaged would leave "
            f"{after} on hand, below what is reserved"
        )
    return replace(level, on_hand=after)


def apply_adjustments(
    levels: Mapping[tuple[str, str], InventoryLevel], adjustments: Sequence[InventoryAdjustment]
) -> list[tuple[InventoryLevel, InventoryLevel]]:
    """Each adjustment in order, as (level before, level after); one that cannot apply
    refuses the whole batch. `levels` holds every (location_id, sku) adjusted."""
    current = dict(levels)
    out: list[tuple[InventoryLevel, InventoryLevel]] = []
    for a in adjustments:
        before = current[(a.location_id, a.sku)]
        after = adjust(before, a)
        current[(a.location_id, a.sku)] = after
        out.append((before, after))
    return out


def stock_added(
    steps: Sequence[tuple[InventoryLevel, InventoryLevel]],
) -> list[tuple[str, str]]:
    """The (location_id, sku) whose on hand a batch of adjustments (`apply_adjustments`'
    before and after of each) left higher than it found it, in the order first adjusted."""
    first: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], int] = {}
    for before, after in steps:
        where = (before.location_id, before.sku)
        first.setdefault(where, before.on_hand)
        last[where] = after.on_hand
    return [where for where, on_hand in first.items() if last[where] > on_hand]


@dataclass(frozen=True)
class LocationGroup:
    """A named set of locations, e.g. "EU warehouses"."""

    location_group_id: str
    name: str
    location_ids: tuple[str, ...]


@dataclass(frozen=True)
class Availability:
    """Available to fulfill per SKU: in total and per location group (enabled locations)."""

    total: dict[str, int]
    by_group: dict[str, dict[str, int]]


def availability_skus(requested: Sequence[str]) -> list[str]:
    """The distinct SKUs an availability request asks for, in its order; InvalidArgument
    naming each empty one, or that none was asked for."""
    violations = [
        FieldViolation(f"skus[{i}]", "is required") for i, sku in enumerate(requested) if not sku
    ]
    skus = list(dict.fromkeys(requested))
    if not skus:
        violations.append(FieldViolation("skus", "at least one SKU is required"))
    if violations:
        raise InvalidArgument(violations)
    return skus


def availability(
    levels: Iterable[tuple[InventoryLevel, bool]],
    skus: Sequence[str],
    groups: Sequence[LocationGroup],
) -> Availability:
    """Sum what enabled locations can fulfill, overall and per group (each SKU reported)."""
    total = dict.fromkeys(skus, 0)
    by_group = {g.location_group_id: dict.fromkeys(skus, 0) for g in groups}
    memberships: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        for location_id in g.location_ids:
            memberships[location_id].append(g.location_group_id)
    for level, enabled in levels:
        if not enabled or level.sku not in total:
            continue
        total[level.sku] += level.available
        for group_id in memberships[level.location_id]:
            by_group[group_id][level.sku] += level.available
    return Availability(total, by_group)


def validate_location(location: Location, change: ScheduleChange = ScheduleChange()) -> None:
    """What a location needs to be routed to and promised from."""
    violations: list[FieldViolation] = []
    if not location.location_id:
        violations.append(FieldViolation("location.location_id", "is required"))
    if not location.name:
        violations.append(FieldViolation("location.name", "is required"))
    if location.type not in LOCATION_TYPES:
        violations.append(FieldViolation("location.type", "must be warehouse, store or drop_ship"))
    if not -90 <= location.latitude <= 90:
        violations.append(FieldViolation("location.latitude", "must be within -90 and 90"))
    if not -180 <= location.longitude <= 180:
        violations.append(FieldViolation("location.longitude", "must be within -180 and 180"))
    if location.daily_capacity is not None and location.daily_capacity < 0:
        violations.append(FieldViolation("location.daily_capacity", "must not be negative"))
    violations += schedule_violations(change)
    if violations:
        raise InvalidArgument(violations)


def validate_location_group(group: LocationGroup, known_locations: Iterable[str]) -> None:
    """An id, a name, and members that exist."""
    known = set(known_locations)
    violations: list[FieldViolation] = []
    if not group.location_group_id:
        violations.append(FieldViolation("location_group.location_group_id", "is required"))
    if not group.name:
        violations.append(FieldViolation("location_group.name", "is required"))
    for i, location_id in enumerate(group.location_ids):
        if location_id not in known:
            violations.append(
                FieldViolation(
                    f"location_group.location_ids[{i}]",
                    f"unknown location {limits.echo(location_id)}",
                )
            )
    if violations:
        raise InvalidArgument(violations)


def validate_inventory_levels(
    levels: Sequence[InventoryLevel], known_locations: Iterable[str]
) -> None:
    """A stock feed must name known locations, non-empty SKUs and non-negative quantities."""
    known = set(known_locations)
    violations: list[FieldViolation] = []
    if not levels:
        violations.append(FieldViolation("levels", "at least one level is required"))
    seen: dict[tuple[str, str], int] = {}
    for i, level in enumerate(levels):
        where = f"levels[{i}]"
        violations += _location_and_sku_violations(where, level.location_id, level.sku, known)
        if level.on_hand < 0:
            violations.append(FieldViolation(f"{where}.on_hand", "must not be negative"))
        if level.safety_stock < 0:
            violations.append(FieldViolation(f"{where}.safety_stock", "must not be negative"))
        key = (level.location_id, level.sku)
        if key in seen:
            violations.append(
                FieldViolation(f"{where}.sku", f"repeats levels[{seen[key]}] for this location")
            )
        seen.setdefault(key, i)
    if violations:
        raise InvalidArgument(violations)
