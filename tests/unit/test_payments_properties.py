"""Property-based tests of the payments domain over random orders.

Currencies of exponent 0, 2 and 3; line and order discounts; taxes; shipping; a gift card
before the card; then any sequence of partial shipments (invoices), captures, cancels,
returns and appeasements (credit memos), with refunds now or later. The order is then
finished (everything left ships and is captured, every memo is given back, what remains held
is voided) and we check: allocations sum exactly, refunds never exceed captures, and the
reconciliation identity holds.

`orders()` and `OrderLedger` are shared with the gRPC property test in tests/integration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms_platform import money
from oms_platform.errors import FailedPrecondition
from services.payments import domain
from services.payments.domain import (
    APPROVED,
    CANCEL,
    RETURN,
    SUCCEEDED,
    AppeasementRequest,
    Authorization,
    Capture,
    ChargeableLine,
    CreditableLine,
    CreditMemo,
    CreditMemoRequest,
    Invoice,
    InvoiceRequest,
    Money,
    Refund,
    Reversal,
)

CURRENCIES = {0: "JPY", 2: "USD", 3: "BHD"}
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ---- random orders -------------------------------------------------------------------------


@dataclass(frozen=True)
class LineCase:
    """One order line: units and their money (discount includes its order-discount share)."""

    order_line_id: str
    quantity: int
    gross: int
    discount: int
    tax: int

    @property
    def total(self) -> int:
        return self.gross - self.discount + self.tax


@dataclass(frozen=True)
class OrderCase:
    """A random order, how it is paid, and what happens to it."""

    currency: str
    lines: tuple[LineCase, ...]
    shipping: int
    # 0: card only; else a gift card with this balance is asked first.
    gift_card_balance: int
    ops: tuple[tuple[str, int, int, bool], ...]
    # What the line money was allocated from, to check the allocation.
    line_discounts: tuple[int, ...]
    order_discount: int
    order_tax: int

    @property
    def total(self) -> int:
        return sum(line.total for line in self.lines) + self.shipping


# (kind, line index or -1 for the order, quantity or basis points, now): "now" captures a
# shipment at once, or gives a credit memo's money back at once (else a later "settle" does).
# Weighted towards shipping and returns, which most orders see.
OPS = ("ship", "ship", "capture", "cancel", "return", "return", "appease", "settle")


@st.composite
def orders(draw: st.DrawFn, max_lines: int = 4, max_ops: int = 20) -> OrderCase:
    """A random order in a currency of exponent 0, 2 or 3, and a sequence of operations."""
    exp = draw(st.sampled_from(sorted(CURRENCIES)))
    currency = CURRENCIES[exp]
    assert money.exponent(currency) == exp
    scale = 10**exp
    count = draw(st.integers(1, max_lines))
    quantities = [draw(st.integers(1, 5)) for _ in range(count)]
    grosses = [q * draw(st.integers(1, 300 * scale)) for q in quantities]
    line_discounts = [draw(st.integers(0, g // 2)) for g in grosses]
    nets = [g - d for g, d in zip(grosses, line_discounts, strict=True)]
    order_discount = draw(st.integers(0, sum(nets) // 3))
    shares = money.allocate(order_discount, nets)
    taxable = [n - s for n, s in zip(nets, shares, strict=True)]
    order_tax = domain.percent_of(sum(taxable), draw(st.integers(0, 2_500)))
    taxes = money.allocate(order_tax, taxable)
    lines = tuple(
        LineCase(f"ol-{i}", quantities[i], grosses[i], line_discounts[i] + shares[i], taxes[i])
        for i in range(count)
    )
    shipping = draw(st.integers(0, 20 * scale))
    total = sum(line.total for line in lines) + shipping
    gift = draw(st.one_of(st.just(0), st.integers(1, max(1, total + scale))))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(OPS),
                st.integers(-1, count - 1),
                st.integers(1, 10_000),
                st.booleans(),
            ),
            min_size=4,
            max_size=max_ops,
        )
    )
    return OrderCase(
        currency=currency,
        lines=lines,
        shipping=shipping,
        gift_card_balance=gift,
        ops=tuple(ops),
        line_discounts=tuple(line_discounts),
        order_discount=order_discount,
        order_tax=order_tax,
    )


@dataclass
class LineUnits:
    """Where one line's units are: invoices take them from the front, cancels from the back,
    returns from the front of what was captured."""

    case: LineCase
    invoiced: int = 0
    canceled: int = 0
    returned: int = 0
    captured_units: int = 0

    @property
    def open(self) -> int:
        return self.case.quantity - self.invoiced - self.canceled


@dataclass
class OrderLedger:
    """The caller's side of an order (what a workflow tracks): units, shipping, invoices."""

    case: OrderCase
    units: list[LineUnits] = field(default_factory=list)
    shipping_done: bool = False
    # invoice index -> {line index: units}
    invoice_units: list[dict[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.units = [LineUnits(line) for line in self.case.lines]

    def line_index(self, raw: int) -> int:
        return raw % len(self.units)

    def chargeable(self, index: int, quantity: int) -> ChargeableLine:
        u = self.units[index]
        line = u.case
        c = self.case.currency
        return ChargeableLine(
            line.order_line_id,
            f"SKU-{index}",
            line.quantity,
            Money(line.gross, c),
            Money(line.discount, c),
            Money(line.tax, c),
            quantity,
            u.invoiced,
        )

    def creditable(self, index: int, quantity: int, first_unit: int) -> CreditableLine:
        line = self.units[index].case
        c = self.case.currency
        return CreditableLine(
            line.order_line_id,
            f"SKU-{index}",
            line.quantity,
            Money(line.gross, c),
            Money(line.discount, c),
            Money(line.tax, c),
            quantity,
            first_unit,
        )

    def ship(self, raw_line: int, quantity: int) -> tuple[list[ChargeableLine], int] | None:
        """Invoice lines and shipping for shipping up to `quantity` units of one line."""
        index = self.line_index(raw_line)
        u = self.units[index]
        take = min(quantity, u.open)
        if take <= 0:
            return None
        lines = [self.chargeable(index, take)]
        u.invoiced += take
        shipping = 0 if self.shipping_done else self.case.shipping
        self.shipping_done = True
        self.invoice_units.append({index: take})
        return lines, shipping

    def ship_everything(self) -> tuple[list[ChargeableLine], int] | None:
        lines = []
        shipped: dict[int, int] = {}
        for index, u in enumerate(self.units):
            if u.open > 0:
                lines.append(self.chargeable(index, u.open))
                shipped[index] = u.open
                u.invoiced += u.open
        if not lines:
            return None
        shipping = 0 if self.shipping_done else self.case.shipping
        self.shipping_done = True
        self.invoice_units.append(shipped)
        return lines, shipping

    def captured(self, invoice_index: int) -> None:
        """An invoice was captured in full: its units can now be returned."""
        for index, quantity in self.invoice_units[invoice_index].items():
            self.units[index].captured_units += quantity

    def cancel(self, raw_line: int, quantity: int) -> tuple[list[CreditableLine], int] | None:
        """Credit lines (and shipping, when nothing will ever ship) for a cancel."""
        index = self.line_index(raw_line)
        u = self.units[index]
        take = min(quantity, u.open)
        if take <= 0:
            return None
        first = u.case.quantity - u.canceled - take
        u.canceled += take
        everything_canceled = all(x.canceled == x.case.quantity for x in self.units)
        shipping = 0
        if everything_canceled and not self.shipping_done:
            shipping = self.case.shipping
            self.shipping_done = True
        return [self.creditable(index, take, first)], shipping

    def return_units(self, raw_line: int, quantity: int) -> list[CreditableLine] | None:
        index = self.line_index(raw_line)
        u = self.units[index]
        take = min(quantity, u.captured_units - u.returned)
        if take <= 0:
            return None
        first = u.returned
        u.returned += take
        return [self.creditable(index, take, first)]


# ---- the pure model: the domain driven the way the servicer drives it ----------------------


@dataclass
class PureBooks:
    """An order's payments records, changed only through domain functions; gateways agree."""

    case: OrderCase
    authorizations: list[Authorization] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    memos: list[CreditMemo] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    reversals: list[Reversal] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    ticks: int = 0
    ids: int = 0

    def now(self) -> datetime:
        self.ticks += 1
        return START + timedelta(seconds=self.ticks)

    def new_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}-{self.ids}"

    def money(self, amount: int) -> Money:
        return Money(amount, self.case.currency)

    def _replace_authorization(self, changed: Authorization) -> None:
        self.authorizations = [
            changed if a.authorization_id == changed.authorization_id else a
            for a in self.authorizations
        ]

    def authorize(self) -> None:
        """Gift card first (up to its balance), then the card for the rest."""
        total, now = self.case.total, self.now()
        methods = [domain.PaymentMethod(domain.CARD, "tok_visa")]
        if self.case.gift_card_balance:
            methods.insert(0, domain.PaymentMethod(domain.GIFT_CARD, "gc"))
        for method in methods:
            need = domain.left_to_hold(total, self.authorizations)
            if need <= 0:
                break
            held = need
            if method.type == domain.GIFT_CARD:
                held = min(need, self.case.gift_card_balance)
            self.authorizations.append(
                domain.new_authorization(
                    "o-1",
                    method,
                    self.money(held),
                    authorization_id=self.new_id("a"),
                    approved=True,
                    gateway_reference="",
                    decline_reason="",
                    now=now,
                    hold_hours=24,
                )
            )
        outcome = domain.authorization_outcome(total, self.authorizations)
        assert outcome.status == APPROVED
        assert sum(a.amount_minor for a in self.authorizations) == total

    def invoice(self, lines: list[ChargeableLine], shipping: int) -> int:
        request = InvoiceRequest("o-1", "fo", "k", lines, self.money(shipping))
        self.invoices.append(
            domain.build_invoice(request, invoice_id=self.new_id("inv"), now=self.now())
        )
        return len(self.invoices) - 1

    def capture(self, index: int) -> bool:
        """Capture an invoice's outstanding amount; True when it is now fully captured."""
        invoice = self.invoices[index]
        mine = [c for c in self.captures if c.invoice_id == invoice.invoice_id]
        if invoice.outstanding_minor <= 0 and (invoice.total_minor > 0 or mine):
            return False
        now = self.now()
        plan = domain.plan_capture(invoice, mine, self.authorizations, now)
        assert plan.failure_reason == "", "the authorizations always hold what invoices owe"
        assert sum(d.amount_minor for d in plan.draws) == plan.amount_minor
        for draw in plan.draws:
            current = next(
                a
                for a in self.authorizations
                if a.authorization_id == draw.authorization.authorization_id
            )
            self._replace_authorization(domain.captured_from(current, draw.amount_minor))
            self.captures.append(
                domain.record_capture(
                    invoice,
                    capture_id=self.new_id("c"),
                    authorization_id=current.authorization_id,
                    amount_minor=draw.amount_minor,
                    succeeded=True,
                    gateway_reference="",
                    failure_reason="",
                    now=now,
                )
            )
        if not plan.draws:
            self.captures.append(
                domain.record_capture(
                    invoice,
                    capture_id=self.new_id("c"),
                    authorization_id="",
                    amount_minor=0,
                    succeeded=True,
                    gateway_reference="",
                    failure_reason="",
                    now=now,
                )
            )
        captured = sum(
            c.amount_minor
            for c in self.captures
            if c.invoice_id == invoice.invoice_id and c.status == SUCCEEDED
        )
        self.invoices[index] = replace(invoice, captured_minor=captured)
        return captured == invoice.total_minor

    def credit_memo(
        self,
        kind: str,
        lines: list[CreditableLine],
        *,
        shipping: int = 0,
        appeasements: list[AppeasementRequest] | None = None,
    ) -> CreditMemo:
        request = CreditMemoRequest(
            "o-1",
            "k",
            kind,
            "",
            self.case.currency,
            lines,
            self.money(shipping),
            self.money(0),
            appeasements or [],
        )
        memo = domain.build_credit_memo(
            request, invoices=self.invoices, credit_memo_id=self.new_id("cm"), now=self.now()
        )
        self.memos.append(memo)
        self.pending.append(memo.credit_memo_id)
        return memo

    def give_back(self, credit_memo_id: str) -> domain.RefundOutcome:
        """RefundCreditMemo with gateways that always agree."""
        memo = next(m for m in self.memos if m.credit_memo_id == credit_memo_id)
        now = self.now()
        plan = domain.plan_refund(
            memo,
            domain.memo_balance(memo, self.refunds, self.reversals),
            captures=self.captures,
            refunds=self.refunds,
            authorizations=self.authorizations,
            now=now,
        )
        made_refunds = [
            domain.record_refund(
                memo,
                draw,
                refund_id=self.new_id("r"),
                succeeded=True,
                gateway_reference="",
                failure_reason="",
                now=now,
            )
            for draw in plan.refunds
        ]
        made_reversals = []
        for draw in plan.releases:
            current = next(
                a
                for a in self.authorizations
                if a.authorization_id == draw.authorization.authorization_id
            )
            self._replace_authorization(
                domain.released_from(current, draw.amount_minor, void=draw.void)
            )
            made_reversals.append(
                domain.record_reversal(
                    memo,
                    draw,
                    reversal_id=self.new_id("rv"),
                    succeeded=True,
                    gateway_reference="",
                    failure_reason="",
                    now=now,
                )
            )
        self.refunds += made_refunds
        self.reversals += made_reversals
        if plan.settles:
            self.memos = [
                replace(m, settled=True) if m.credit_memo_id == credit_memo_id else m
                for m in self.memos
            ]
        if credit_memo_id in self.pending:
            self.pending.remove(credit_memo_id)
        return domain.refund_outcome(plan, made_refunds, made_reversals)

    def void_the_rest(self) -> None:
        for authorization in domain.authorizations_to_void(self.authorizations):
            self._replace_authorization(domain.voided(authorization))

    def reconciliation(self) -> domain.Reconciliation:
        return domain.reconcile(
            "o-1",
            self.authorizations,
            self.captures,
            self.invoices,
            credit_memos=self.memos,
            refunds=self.refunds,
            reversals=self.reversals,
        )


def run_pure(case: OrderCase) -> tuple[OrderLedger, PureBooks, bool]:
    """Play the case through the domain; returns the ledger, the books, and whether any
    appeasement asked for more than could be refunded."""
    ledger, books = OrderLedger(case), PureBooks(case)
    books.authorize()
    over_asked = False

    def settle(credit_memo_id: str) -> None:
        nonlocal over_asked
        outcome = books.give_back(credit_memo_id)
        assert outcome.outcome != domain.FAILED
        over_asked |= outcome.outcome == domain.LIMITED

    for kind, raw_line, amount, now in case.ops:
        if kind == "ship":
            shipped = ledger.ship(raw_line, amount % 5 + 1)
            if shipped:
                index = books.invoice(*shipped)
                if now and books.capture(index):
                    ledger.captured(index)
        elif kind == "capture" and books.invoices:
            index = amount % len(books.invoices)
            if books.capture(index):
                ledger.captured(index)
        elif kind == "cancel":
            canceled = ledger.cancel(raw_line, amount % 5 + 1)
            if canceled:
                memo = books.credit_memo(CANCEL, canceled[0], shipping=canceled[1])
                if now:
                    settle(memo.credit_memo_id)
        elif kind == "return":
            returned = ledger.return_units(raw_line, amount % 5 + 1)
            if returned:
                memo = books.credit_memo(RETURN, returned)
                if now:
                    settle(memo.credit_memo_id)
        elif kind == "appease":
            line_id = "" if raw_line < 0 else case.lines[ledger.line_index(raw_line)].order_line_id
            try:
                memo = books.credit_memo(
                    domain.APPEASEMENT,
                    [],
                    appeasements=[AppeasementRequest(line_id, books.money(0), amount)],
                )
            except FailedPrecondition:
                continue  # nothing captured for it yet
            if now:
                settle(memo.credit_memo_id)
        elif kind == "settle":
            for credit_memo_id in list(books.pending):
                settle(credit_memo_id)
        check_running_invariants(books)

    # Finish the order: everything left ships and is captured, memos given back, rest voided.
    rest = ledger.ship_everything()
    if rest:
        books.invoice(*rest)
    for index in range(len(books.invoices)):
        if books.capture(index):
            ledger.captured(index)
    for credit_memo_id in list(books.pending):
        settle(credit_memo_id)
    books.void_the_rest()
    check_running_invariants(books)
    return ledger, books, over_asked


def check_running_invariants(books: PureBooks) -> None:
    """What must hold after every step."""
    for capture in books.captures:
        given = sum(
            r.amount_minor
            for r in books.refunds
            if r.capture_id == capture.capture_id and r.status == SUCCEEDED
        )
        assert 0 <= given <= capture.amount_minor
    for authorization in books.authorizations:
        assert authorization.captured_minor + authorization.reversed_minor <= (
            authorization.amount_minor
        )
    summary = books.reconciliation().summary
    assert summary.refunded_minor <= summary.captured_minor
    for invoice in books.invoices:
        assert 0 <= invoice.captured_minor <= invoice.total_minor


# ---- the properties ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=orders())
def test_the_line_money_is_allocated_exactly_from_the_order_totals(case: OrderCase) -> None:
    assert sum(line.discount for line in case.lines) == sum(case.line_discounts) + (
        case.order_discount
    )
    assert sum(line.tax for line in case.lines) == case.order_tax
    assert all(line.total >= 0 for line in case.lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=orders())
def test_invoices_and_cancels_split_every_line_exactly(case: OrderCase) -> None:
    _, books, _ = run_pure(case)
    for line in case.lines:
        parts = [
            (x.gross_minor, x.discount_minor, x.tax_minor)
            for invoice in books.invoices
            for x in invoice.lines
            if x.order_line_id == line.order_line_id
        ]
        parts += [
            (x.gross_minor, x.discount_minor, x.tax_minor)
            for memo in books.memos
            if memo.kind == CANCEL
            for x in memo.lines
            if x.order_line_id == line.order_line_id
        ]
        assert tuple(map(sum, zip(*parts, strict=True))) == (line.gross, line.discount, line.tax)
    invoiced = sum(i.total_minor for i in books.invoices)
    canceled = sum(m.total_minor for m in books.memos if m.kind == CANCEL)
    assert invoiced + canceled == case.total


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=orders())
def test_returns_never_credit_more_of_a_line_than_was_invoiced_for_it(case: OrderCase) -> None:
    _, books, _ = run_pure(case)
    for line in case.lines:
        invoiced = sum(
            x.total_minor
            for invoice in books.invoices
            for x in invoice.lines
            if x.order_line_id == line.order_line_id
        )
        returned = sum(
            x.total_minor
            for memo in books.memos
            if memo.kind == RETURN
            for x in memo.lines
            if x.order_line_id == line.order_line_id
        )
        assert returned <= invoiced


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=orders())
def test_refunds_never_exceed_captures_and_the_books_reconcile_at_the_end(
    case: OrderCase,
) -> None:
    _, books, over_asked = run_pure(case)
    r = books.reconciliation()
    s = r.summary
    assert s.refunded_minor <= s.captured_minor
    assert s.captured_minor == s.invoiced_minor  # every invoice captured in full
    assert s.authorized_minor == 0  # nothing is left held once the rest is voided
    # Whatever was asked beyond what could be refunded is exactly the difference...
    assert r.difference_minor == r.not_refunded_minor
    # ... and without such asks, captured - refunded == invoiced - credited.
    if not over_asked:
        assert r.agrees
        assert r.not_refunded_minor == 0
    # Holds were never overdrawn: captured + released never exceed what was authorized.
    held = sum(a.amount_minor for a in books.authorizations)
    assert s.captured_minor + s.released_minor <= held == case.total
