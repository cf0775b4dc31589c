"""Return policies as data: which rule decides a return of some units of an order line, and
what it decides (eligible or not, why, the restocking fee and the refund).

A rule names a channel and a product category, either of which may be "" (any). The most
specific matching rule decides: channel and category, then category alone, then channel
alone, then the default rule (neither). The channel is always the ORDER's channel, whoever
takes the return back.

An exchange is a return of the old item: the same rule decides it, and its restocking fee is
charged only when the rule says so (`fee_on_exchange`).

The window after delivery: a rule with days of its own closes that many days after delivery;
one without uses the order's own return window. The order's window also caps a rule's days,
since the lifecycle takes no return after it. No window runs before the order was delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from oms_platform import limits
from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from oms_platform.money import percent_of
from services.servicing.domain.common import Item, required, too_long
from services.servicing.domain.return_orders import CONDITIONS, LineNote

DEFAULT_RULE_ID = "default"
MAX_RULE_ID_LENGTH = 100
MAX_CATEGORY_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 500
MAX_RETURN_DAYS = 3650
MAX_BASIS_POINTS = 10_000
# SKUs categorized in one call: the platform's cap on ids per request.
MAX_CATEGORIES_PER_CALL = limits.MAX_IDS
# Conditions in which a unit received back can be sold again (restocked).
RESELLABLE = ("new", "opened")
# How conditions read in sentences ("new" is "unopened, as sold").
_CONDITION_WORDS = {"new": "new (unopened)"}


@dataclass(frozen=True)
class PolicyRule:
    """One return rule. `return_days` None means the order's return window (the deployment's
    for the order's channel); `required_conditions` empty means any condition;
    `fee_on_exchange` charges the restocking fee on exchanges too (otherwise only returns)."""

    id: str
    channel: str = ""
    category: str = ""
    return_days: int | None = None
    required_conditions: tuple[str, ...] = ()
    final_sale: bool = False
    restocking_fee_basis_points: int = 0
    description: str = ""
    fee_on_exchange: bool = False

    @property
    def specificity(self) -> int:
        """Higher decides first: a category is more specific than a channel."""
        return (2 if self.category else 0) + (1 if self.channel else 0)


@dataclass(frozen=True)
class LineFacts:
    """What the policy looks at for one order line: the order's channel, the line's SKU and
    category, when the order was delivered and when its return window closes (both None until
    it was delivered), and how many units may still be returned."""

    order_line_id: str
    channel: str
    sku: str
    category: str
    delivered_at: datetime | None
    available_to_return: int
    return_window_closes_at: datetime | None = None


@dataclass(frozen=True)
class ReturnableLine:
    """An order line as its lifecycle holds it: its SKU and units that may still come back."""

    order_line_id: str
    sku: str
    available_to_return: int


@dataclass(frozen=True)
class OrderView:
    """What the return policy needs of an order: its channel, when it was delivered (None
    until every unit was), its lines, and when its return window closes (None until it was
    delivered)."""

    order_id: str
    channel: str
    delivered_at: datetime | None
    lines: tuple[ReturnableLine, ...]
    return_window_closes_at: datetime | None = None

    def line(self, order_line_id: str, field: str = "order_line_id") -> ReturnableLine:
        """The line; InvalidArgument naming `field` when the order has no such line."""
        for line in self.lines:
            if line.order_line_id == order_line_id:
                return line
        raise InvalidArgument(
            [FieldViolation(field, f"order {self.order_id} has no line {order_line_id!r}")]
        )


@dataclass(frozen=True)
class EligibilityRequest:
    """Units of one line a shopper wants to return (or exchange: `exchange`), in the
    condition they report."""

    order_id: str
    order_line_id: str
    quantity: int
    condition: str = ""
    exchange: bool = False


@dataclass(frozen=True)
class Eligibility:
    """The policy's answer: whether the return is allowed, the rule that decided and why, and
    the money (credit for the units, the restocking fee, and what is refunded after it);
    `exchangeable`: whether the units may be exchanged instead (set by CheckReturnEligibility,
    which asks that too)."""

    eligible: bool
    rule_id: str
    explanation: str
    credit_minor: int = 0
    restocking_fee_minor: int = 0
    exchangeable: bool = False

    @property
    def refund_minor(self) -> int:
        return self.credit_minor - self.restocking_fee_minor


def line_facts(
    order: OrderView,
    order_line_id: str,
    categories: dict[str, str],
    field: str = "order_line_id",
) -> LineFacts:
    """The facts the policy weighs for one line of `order` (`categories` by SKU)."""
    line = order.line(order_line_id, field)
    return LineFacts(
        order_line_id=line.order_line_id,
        channel=order.channel,
        sku=line.sku,
        category=categories.get(line.sku, ""),
        delivered_at=order.delivered_at,
        available_to_return=line.available_to_return,
        return_window_closes_at=order.return_window_closes_at,
    )


def refusal_of(eligibility: Eligibility, field: str, kind: str = "return") -> FailedPrecondition:
    """The error a return (or an exchange: `kind`) the policy refuses is answered with,
    naming the rule."""
    if eligibility.rule_id:
        return FailedPrecondition(
            f"{field}: {kind} refused by rule {eligibility.rule_id!r}: {eligibility.explanation}"
        )
    return FailedPrecondition(f"{field}: {eligibility.explanation}")


def validate_rule(rule: PolicyRule) -> None:
    """Raise InvalidArgument listing every rule `rule` breaks."""
    violations = required("rule_id", rule.id)
    violations += too_long("rule_id", rule.id, MAX_RULE_ID_LENGTH)
    violations += too_long("channel", rule.channel, MAX_CATEGORY_LENGTH)
    violations += too_long("category", rule.category, MAX_CATEGORY_LENGTH)
    violations += too_long("description", rule.description, MAX_DESCRIPTION_LENGTH)
    if rule.id == DEFAULT_RULE_ID and (rule.channel or rule.category):
        violations.append(
            FieldViolation("rule_id", "the default rule matches every channel and category")
        )
    if rule.id != DEFAULT_RULE_ID and not (rule.channel or rule.category):
        violations.append(
            FieldViolation("category", f"only rule {DEFAULT_RULE_ID!r} may match everything")
        )
    if rule.return_days is not None and not 0 <= rule.return_days <= MAX_RETURN_DAYS:
        violations.append(FieldViolation("return_days", f"must be 0 to {MAX_RETURN_DAYS}"))
    for i, condition in enumerate(rule.required_conditions):
        if condition not in CONDITIONS:
            violations.append(
                FieldViolation(
                    f"required_conditions[{i}]", f"must be one of {', '.join(CONDITIONS)}"
                )
            )
    if not 0 <= rule.restocking_fee_basis_points <= MAX_BASIS_POINTS:
        violations.append(
            FieldViolation("restocking_fee_basis_points", f"must be 0 to {MAX_BASIS_POINTS}")
        )
    if violations:
        raise InvalidArgument(violations)


def validate_categories(categories: Sequence[tuple[str, str]]) -> None:
    """Raise InvalidArgument listing every rule SKU → category pairs break (an empty category
    removes the SKU's)."""
    violations: list[FieldViolation] = []
    if not categories:
        violations.append(FieldViolation("categories", "at least one SKU is required"))
    if len(categories) > MAX_CATEGORIES_PER_CALL:
        violations.append(
            FieldViolation("categories", f"at most {MAX_CATEGORIES_PER_CALL} SKUs per call")
        )
    seen: set[str] = set()
    for i, (sku, category) in enumerate(categories):
        violations += required(f"categories[{i}].sku", sku)
        violations += too_long(f"categories[{i}].sku", sku, MAX_CATEGORY_LENGTH)
        violations += too_long(f"categories[{i}].category", category, MAX_CATEGORY_LENGTH)
        if sku in seen:
            violations.append(FieldViolation(f"categories[{i}].sku", "appears more than once"))
        seen.add(sku)
    if violations:
        raise InvalidArgument(violations)


def validate_eligibility_request(request: EligibilityRequest) -> None:
    """Raise InvalidArgument listing every rule `request` breaks."""
    violations = required("order_id", request.order_id)
    violations += required("order_line_id", request.order_line_id)
    if request.quantity <= 0:
        violations.append(FieldViolation("quantity", "must be > 0"))
    if violations:
        raise InvalidArgument(violations)


def precedence(rule: PolicyRule) -> tuple[int, str]:
    """Where a rule stands in a listing: the most specific first, then by id (the default
    rule last)."""
    return (-rule.specificity, rule.id)


def check_deletable(rule_id: str) -> None:
    """The default rule decides when no other matches: it can be changed, never deleted."""
    if rule_id == DEFAULT_RULE_ID:
        raise FailedPrecondition(
            f"rule_id: rule {DEFAULT_RULE_ID!r} decides when no other rule matches; "
            "change it instead"
        )


def deciding_rule(rules: Sequence[PolicyRule], channel: str, category: str) -> PolicyRule:
    """The most specific rule matching `channel` and `category`; the default rule when no
    other matches (FailedPrecondition if even that is missing)."""
    matching = [
        r for r in rules if r.channel in ("", channel) and r.category in ("", category) and r.id
    ]
    if not matching:
        raise FailedPrecondition(f"no return rule matches (rule {DEFAULT_RULE_ID!r} is missing)")
    return max(matching, key=lambda r: (r.specificity, r.id))


def fee_basis_points(rule: PolicyRule, request: EligibilityRequest) -> int:
    """The restocking fee `rule` charges on `request`: on every return, on an exchange only
    when the rule says so."""
    if request.exchange and not rule.fee_on_exchange:
        return 0
    return rule.restocking_fee_basis_points


def decide(
    rules: Sequence[PolicyRule],
    facts: LineFacts,
    request: EligibilityRequest,
    credit_minor: int,
    now: datetime,
    *,
    check_quantity: bool = True,
) -> Eligibility:
    """Whether `request` may be returned under `rules`, given what the order says (`facts`)
    and what the units would credit back (`credit_minor`, before any fee). Without
    `check_quantity` only the policy decides: the units left to return are the workflow's to
    check when the return is made (after any shipment events it has yet to apply, which the
    state query `facts` came from may not show)."""
    if check_quantity and request.quantity > facts.available_to_return:
        return Eligibility(
            False,
            "",
            f"only {facts.available_to_return} unit(s) of line {facts.order_line_id} "
            f"({facts.sku}) can be returned, not {request.quantity}",
        )
    rule = deciding_rule(rules, facts.channel, facts.category)
    refused = _refusal(rule, facts, request, now)
    if refused:
        return Eligibility(False, rule.id, refused)
    basis_points = fee_basis_points(rule, request)
    fee = percent_of(credit_minor, basis_points)
    why = f"{_matched(rule, facts)}: {'exchangeable' if request.exchange else 'returnable'}"
    if fee:
        why += f" with a restocking fee of {basis_points / 100:g}%"
    return Eligibility(True, rule.id, why, credit_minor, fee)


def _refusal(rule: PolicyRule, facts: LineFacts, request: EligibilityRequest, now: datetime) -> str:
    """Why `rule` refuses the return, or "" when it allows it."""
    if rule.final_sale:
        return f"final sale: {_matched(rule, facts)}"
    window = _window_closes(rule, facts)
    if window is not None and now > window[0]:
        closes, words = window
        return (
            f"return window closed on {closes:%Y-%m-%d %H:%M} UTC ({words}): "
            f"{_matched(rule, facts)}"
        )
    if rule.required_conditions and request.condition not in rule.required_conditions:
        wanted = " or ".join(_CONDITION_WORDS.get(c, c) for c in rule.required_conditions)
        reported = request.condition or "not reported"
        return (
            f"{facts.sku} must come back {wanted}, its condition is {reported}: "
            f"{_matched(rule, facts)}"
        )
    return ""


def _matched(rule: PolicyRule, facts: LineFacts) -> str:
    """How the rule came to apply, e.g. "SKU-X is in category clearance"."""
    if rule.category and rule.channel:
        return f"{facts.sku} is in category {rule.category} on an order from channel {rule.channel}"
    if rule.category:
        return f"{facts.sku} is in category {rule.category}"
    if rule.channel:
        return f"{facts.sku} was ordered on channel {rule.channel}"
    return f"the default rule applies to {facts.sku}"


def _window_closes(rule: PolicyRule, facts: LineFacts) -> tuple[datetime, str] | None:
    """When `rule` stops taking returns of the line, and how that reads ("14 day(s) after
    delivery"); None until the order was delivered. The order's own window caps a rule's days
    (its lifecycle takes no return after it) and is the window of a rule without days."""
    delivered_at, order_closes = facts.delivered_at, facts.return_window_closes_at
    if delivered_at is None or order_closes is None:
        return None
    if rule.return_days is None:
        days = _days(order_closes - delivered_at)
        return order_closes, f"the order's return window of {days} day(s) after delivery"
    closes = delivered_at + timedelta(days=rule.return_days)
    if order_closes < closes:
        days = _days(order_closes - delivered_at)
        return order_closes, (
            f"the order's return window of {days} day(s) after delivery, "
            f"shorter than the rule's {rule.return_days}"
        )
    return closes, f"{rule.return_days} day(s) after delivery"


def _days(window: timedelta) -> str:
    return f"{window.total_seconds() / 86400:g}"


def is_resellable(condition: str) -> bool:
    """Whether a unit received back in `condition` goes back into stock."""
    return condition in RESELLABLE


def restockable(accepted: Sequence[Item], notes: Sequence[LineNote]) -> tuple[Item, ...]:
    """The accepted units that go back into stock: those inspected in a resellable condition
    (`notes` are index-aligned with `accepted`; a unit without a condition is not restocked)."""
    return tuple(
        item for item, note in zip(accepted, notes, strict=False) if is_resellable(note.condition)
    )
