"""Payments' use cases: one function per RPC that changes or reads an order's money.

The mutating ones run inside the transaction `db.idempotent` opens at the edge (so the stored
answer commits with the effect): take the order's lock, load its records, let the domain
decide, ask the gateways (outcomes resolved by key), store, and return domain values for the
edge to encode. If a gateway's outcome stays unknown, GatewayError rolls the transaction back;
the caller retries with the same key, which derives the same gateway keys, and the gateway's
own key dedupe keeps every effect single.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import partial

import asyncpg
import structlog

from oms_platform import erasure
from oms_platform.db import new_id
from oms_platform.errors import FailedPrecondition, NotFound
from services.payments import domain, store
from services.payments.gateway import GatewayResult, Gateways, PaymentGateway, call_resolved
from workflows.types import order_workflow_id

log = structlog.get_logger("oms.payments")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The payments clock."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Payments:
    """What the use cases work with beyond the connection: the gateway of each payment method
    type, how long a new hold lasts, the clock, and when holds are renewed ahead of a
    promised day."""

    gateways: Gateways
    hold_hours: int
    renewal: domain.RenewalRule
    clock: Clock = utc_now


# ---- what the use cases answer ------------------------------------------------------------


@dataclass(frozen=True)
class Authorized:
    """The answer to a (possibly split) authorization: every hold made, and the outcome."""

    primary: domain.Authorization
    authorizations: list[domain.Authorization]
    outcome: domain.AuthorizationOutcome
    currency: str


@dataclass(frozen=True)
class Captured:
    """The answer to capturing an invoice: the captures made, the outcome, and the
    re-authorizations that replaced lapsed holds on the way."""

    captures: list[domain.Capture]
    outcome: domain.CaptureOutcome
    currency: str
    reauthorizations: list[domain.Authorization]


@dataclass(frozen=True)
class CreditMemoView:
    """A credit memo with what has become of it so far."""

    memo: domain.CreditMemo
    balance: domain.CreditMemoBalance


@dataclass(frozen=True)
class Refunded:
    """The answer to refunding a credit memo: the refunds and releases made and the outcome."""

    credit_memo: CreditMemoView
    outcome: domain.RefundOutcome
    refunds: list[domain.Refund]
    reversals: list[domain.Reversal]


# ---- authorize and void ---------------------------------------------------------------------


def _replaced(
    authorizations: Sequence[domain.Authorization], changed: domain.Authorization
) -> list[domain.Authorization]:
    return [
        changed if a.authorization_id == changed.authorization_id else a for a in authorizations
    ]


async def authorize(
    conn: asyncpg.Connection, payments: Payments, wanted: domain.AuthorizationRequest
) -> Authorized:
    """Hold the amount on the order's payment methods in turn (all but the last may hold
    part); when the whole amount cannot be held, release what was."""
    amount, currency = wanted.amount.amount_minor, wanted.amount.currency
    await store.lock_order(conn, wanted.order_id)
    now = payments.clock()
    made: list[domain.Authorization] = []
    methods = wanted.payment_methods
    for i, method in enumerate(methods):
        need = domain.left_to_hold(amount, made)
        if need <= 0:
            break
        gateway = payments.gateways.calling(method.type)
        key = domain.gateway_key(wanted.order_id, wanted.idempotency_key, f"authorize:{i}", need)
        result = await call_resolved(
            gateway,
            key,
            partial(
                gateway.authorize,
                key,
                method.token,
                need,
                currency,
                allow_partial=i < len(methods) - 1,
            ),
        )
        held = domain.held_amount(need, result.amount_minor) if result.approved else need
        made.append(
            domain.new_authorization(
                wanted.order_id,
                method,
                domain.Money(held, currency),
                authorization_id=new_id(),
                approved=result.approved,
                gateway_reference=result.reference,
                decline_reason=result.reason,
                now=now,
                hold_hours=payments.hold_hours,
                gateway_hold_seconds=result.hold_seconds,
            )
        )
    outcome = domain.authorization_outcome(amount, made)
    for held_one in outcome.to_void:
        # The whole amount could not be held: release what was, so nothing stays held.
        # Keyed by the method's position: the id is new on every attempt.
        step = f"void-unheld:{made.index(held_one)}"
        made = _replaced(made, await _void_one(payments, held_one, wanted.idempotency_key, step))
    for authorization in made:
        await store.insert_authorization(conn, authorization)
    primary = next(a for a in made if a.authorization_id == outcome.primary.authorization_id)
    return Authorized(primary, made, outcome, currency)


async def _void_one(
    payments: Payments, authorization: domain.Authorization, request_key: str, step: str
) -> domain.Authorization:
    """Void one authorization at its gateway; unchanged (still held) if the gateway refuses."""
    gateway = payments.gateways.calling(authorization.payment_method_type)
    result = await _void_at(gateway, authorization, request_key, step)
    if not result.succeeded:
        log.warning(
            "gateway refused a void",
            authorization_id=authorization.authorization_id,
            reason=result.reason,
        )
        return authorization
    return domain.voided(authorization)


async def _void_at(
    gateway: PaymentGateway, authorization: domain.Authorization, request_key: str, step: str
) -> GatewayResult:
    """Ask `gateway` to void what `authorization` still holds, keyed by the request and
    `step`; the gateway's answer."""
    key = domain.gateway_key(
        authorization.order_id, request_key, step, authorization.remaining_minor
    )
    return await call_resolved(
        gateway, key, partial(gateway.void, key, authorization.gateway_reference)
    )


async def void_authorizations(
    conn: asyncpg.Connection, payments: Payments, order_id: str, request_key: str
) -> list[domain.Authorization]:
    """Void every authorization of the order that still holds money; the order's
    authorizations afterwards. FailedPrecondition when a gateway refuses one."""
    await store.lock_order(conn, order_id)
    authorizations = await store.authorizations_of_order(conn, order_id, lock=True)
    # Locked, so what is stored afterwards is these with the voids applied: not read again.
    after_voids: dict[str, domain.Authorization] = {}
    for authorization in domain.authorizations_to_void(authorizations):
        after = await _void_one(
            payments, authorization, request_key, f"void:{authorization.authorization_id}"
        )
        if after.status != domain.VOIDED:
            raise FailedPrecondition(
                f"the gateway refused to void authorization {authorization.authorization_id}"
            )
        await store.update_authorization(conn, after)
        after_voids[after.authorization_id] = after
    return [after_voids.get(a.authorization_id, a) for a in authorizations]


# ---- invoice and capture ------------------------------------------------------------------


def draft_invoice(payments: Payments, wanted: domain.InvoiceRequest) -> domain.Invoice:
    """The invoice a request asks for, checked (InvalidArgument) before any transaction."""
    return domain.build_invoice(wanted, invoice_id=new_id(), now=payments.clock())


async def create_invoice(conn: asyncpg.Connection, invoice: domain.Invoice) -> domain.Invoice:
    """Store a drafted invoice."""
    await store.insert_invoice(conn, invoice)
    return invoice


async def capture_invoice(
    conn: asyncpg.Connection, payments: Payments, invoice_id: str, request_key: str
) -> Captured:
    """Capture what an invoice still owes, drawing on the order's authorizations in the order
    they were made and re-authorizing a lapsed one first; stops at the first failure."""
    found = await store.lock_invoice(conn, invoice_id)
    if found is None:
        raise NotFound(f"invoice {invoice_id} not found")
    invoice, captures = found
    await store.lock_order(conn, invoice.order_id)
    authorizations = await store.authorizations_of_order(conn, invoice.order_id, lock=True)
    now = payments.clock()
    plan = domain.plan_capture(invoice, captures, authorizations, now)
    made: list[domain.Capture] = []
    reauthorizations: list[domain.Authorization] = []
    if not plan.draws:
        made.append(
            domain.record_capture(
                invoice,
                capture_id=new_id(),
                authorization_id="",
                amount_minor=plan.amount_minor,
                succeeded=not plan.failure_reason,
                gateway_reference="",
                failure_reason=plan.failure_reason,
                now=now,
            )
        )
    for draw in plan.draws:
        authorization = draw.authorization
        if draw.reauthorize:
            authorization = await _hold_anew(
                conn, payments, authorization, request_key, now, release_first=True
            )
            reauthorizations.append(authorization)
            if authorization.status != domain.APPROVED:
                made.append(
                    domain.record_capture(
                        invoice,
                        capture_id=new_id(),
                        authorization_id=draw.authorization.authorization_id,
                        amount_minor=draw.amount_minor,
                        succeeded=False,
                        gateway_reference="",
                        failure_reason=authorization.decline_reason,
                        now=now,
                    )
                )
                break
        capture = await _capture_draw(
            conn, payments, invoice, draw, authorization, request_key, now
        )
        made.append(capture)
        if capture.status != domain.SUCCEEDED:
            break
    for capture in made:
        await store.insert_capture(conn, capture)
    return Captured(made, domain.capture_outcome(made), invoice.currency, reauthorizations)


async def _capture_draw(
    conn: asyncpg.Connection,
    payments: Payments,
    invoice: domain.Invoice,
    draw: domain.CaptureDraw,
    authorization: domain.Authorization,
    request_key: str,
    now: datetime,
) -> domain.Capture:
    """Capture one draw from `authorization` (the drawn one, or its re-authorization)."""
    gateway = payments.gateways.calling(authorization.payment_method_type)
    # Keyed by the drawn authorization, which a retry of this request draws on again.
    key = domain.gateway_key(
        invoice.order_id,
        request_key,
        f"capture:{draw.authorization.authorization_id}",
        draw.amount_minor,
    )
    result = await call_resolved(
        gateway,
        key,
        partial(
            gateway.capture,
            key,
            authorization.gateway_reference,
            draw.amount_minor,
            invoice.currency,
        ),
    )
    if result.succeeded:
        await store.update_authorization(
            conn, domain.captured_from(authorization, draw.amount_minor)
        )
    return domain.record_capture(
        invoice,
        capture_id=new_id(),
        authorization_id=authorization.authorization_id,
        amount_minor=draw.amount_minor,
        succeeded=result.succeeded,
        gateway_reference=result.reference,
        failure_reason=result.reason,
        now=now,
    )


async def _hold_anew(
    conn: asyncpg.Connection,
    payments: Payments,
    held: domain.Authorization,
    request_key: str,
    now: datetime,
    *,
    release_first: bool,
) -> domain.Authorization:
    """Hold anew what `held` still holds, under a new authorization (stored, approved or
    declined) that replaces it once approved.

    With `release_first`, what may be left of the old hold is released before asking (the
    issuer may already have, so the answer does not matter): a gift card's balance must be
    free to be held again, and a lapsed hold holds nothing worth keeping. Otherwise the new
    hold is asked first and the old one released only once it is approved, so a decline
    leaves the current hold standing."""
    gateway = payments.gateways.calling(held.payment_method_type)
    amount = held.remaining_minor
    if release_first:
        await _void_at(gateway, held, request_key, f"release-lapsed:{held.authorization_id}")
    key = domain.gateway_key(
        held.order_id, request_key, f"reauthorize:{held.authorization_id}", amount
    )
    result = await call_resolved(
        gateway, key, partial(gateway.authorize, key, held.token, amount, held.currency)
    )
    renewed = domain.reauthorization(
        held,
        authorization_id=new_id(),
        approved=result.approved,
        held_minor=amount,
        gateway_reference=result.reference,
        decline_reason=result.reason,
        now=now,
        hold_hours=payments.hold_hours,
        gateway_hold_seconds=result.hold_seconds,
    )
    await store.insert_authorization(conn, renewed)
    if result.approved:
        if not release_first:
            # The new hold replaces the old one whatever the gateway answers to its release
            # (it lapses on its own in the end).
            await _void_at(gateway, held, request_key, f"release-renewed:{held.authorization_id}")
        await store.update_authorization(conn, domain.expired(held))
    return renewed


# ---- renewals ahead of a promised day ------------------------------------------------------


@dataclass(frozen=True)
class Renewed:
    """The answer to renewing an order's holds: the re-authorizations made, whether they were
    all approved, and how long until the next hold falls due (None: none will)."""

    renewals: list[domain.Authorization]
    approved: bool
    decline_reason: str
    renew_again_in_seconds: int | None


async def renew_authorizations(
    conn: asyncpg.Connection,
    payments: Payments,
    order_id: str,
    request_key: str,
    promised: date,
) -> Renewed:
    """Renew the order's holds that would lapse before the promised day (plus the margin) and
    are within the lead of lapsing, oldest first, stopping at the first decline; say when the
    next one falls due."""
    await store.lock_order(conn, order_id)
    authorizations = await store.authorizations_of_order(conn, order_id, lock=True)
    now = payments.clock()
    rule = payments.renewal
    until = domain.held_until(promised, rule)
    renewals: list[domain.Authorization] = []
    for held in domain.renewals_due(authorizations, until, now, rule):
        # A gift card or a lapsed hold is released first (and asked under the keys capture's
        # re-authorization uses); a card is held anew first.
        renewed = await _hold_anew(
            conn, payments, held, request_key, now, release_first=domain.releases_first(held, now)
        )
        renewals.append(renewed)
        if renewed.status != domain.APPROVED:
            return Renewed(renewals, False, renewed.decline_reason, 0)
    after = await store.authorizations_of_order(conn, order_id)
    next_at = domain.next_renewal(after, until, rule)
    again = None if next_at is None else domain.seconds_until(next_at, now)
    return Renewed(renewals, True, "", again)


# ---- credit memos and refunds --------------------------------------------------------------


async def create_credit_memo(
    conn: asyncpg.Connection, payments: Payments, wanted: domain.CreditMemoRequest
) -> CreditMemoView:
    """Record what the order gives back, checked against what was invoiced."""
    await store.lock_order(conn, wanted.order_id)
    invoices = await store.invoices_of_order(conn, wanted.order_id)
    memo = domain.build_credit_memo(
        wanted, invoices=invoices, credit_memo_id=new_id(), now=payments.clock()
    )
    await store.insert_credit_memo(conn, memo)
    return CreditMemoView(memo, domain.memo_balance(memo, (), ()))


async def refund_credit_memo(
    conn: asyncpg.Connection, payments: Payments, credit_memo_id: str, request_key: str
) -> Refunded:
    """Give a credit memo's money back: refund captures (newest first), then release what
    is still held; stops at the first refusal, and settles the memo when nothing is left."""
    order_id = await store.order_of_credit_memo(conn, credit_memo_id)
    if order_id is None:
        raise NotFound(f"credit memo {credit_memo_id} not found")
    await store.lock_order(conn, order_id)
    # A refund draws on captures and authorizations; it reads no invoice.
    records = await store.load_order(conn, order_id, lock=True, invoices=False)
    # The memo as the order's records hold it, read under the order's lock.
    memo = next(m for m in records.credit_memos if m.credit_memo_id == credit_memo_id)
    now = payments.clock()
    plan = domain.plan_refund(
        memo,
        domain.memo_balance(memo, records.refunds, records.reversals),
        captures=records.captures,
        refunds=records.refunds,
        authorizations=records.authorizations,
        now=now,
    )
    refunds: list[domain.Refund] = []
    for refund_draw in plan.refunds:
        refund = await _refund_draw(payments, memo, refund_draw, records, request_key, now)
        await store.insert_refund(conn, refund)
        refunds.append(refund)
        if refund.status != domain.SUCCEEDED:
            break
    reversals: list[domain.Reversal] = []
    for release_draw in plan.releases:
        reversal = await _release_draw(conn, payments, memo, release_draw, request_key, now)
        reversals.append(reversal)
        if reversal.status != domain.SUCCEEDED:
            break
    outcome = domain.refund_outcome(plan, refunds, reversals)
    if plan.settles and outcome.outcome != domain.FAILED and not memo.settled:
        await store.settle_credit_memo(conn, memo.credit_memo_id)
        memo = replace(memo, settled=True)
    balance = domain.memo_balance(
        memo, [*records.refunds, *refunds], [*records.reversals, *reversals]
    )
    return Refunded(CreditMemoView(memo, balance), outcome, refunds, reversals)


async def _refund_draw(
    payments: Payments,
    memo: domain.CreditMemo,
    draw: domain.RefundDraw,
    records: store.OrderRecords,
    request_key: str,
    now: datetime,
) -> domain.Refund:
    """Refund one draw from its capture, through the gateway that took it."""
    method_type = next(
        (
            a.payment_method_type
            for a in records.authorizations
            if a.authorization_id == draw.capture.authorization_id
        ),
        domain.UNSPECIFIED,
    )
    gateway = payments.gateways.calling(method_type)
    key = domain.gateway_key(
        memo.order_id, request_key, f"refund:{draw.capture.capture_id}", draw.amount_minor
    )
    result = await call_resolved(
        gateway,
        key,
        partial(
            gateway.refund,
            key,
            draw.capture.gateway_reference,
            draw.amount_minor,
            memo.currency,
        ),
    )
    return domain.record_refund(
        memo,
        draw,
        refund_id=new_id(),
        succeeded=result.succeeded,
        gateway_reference=result.reference,
        failure_reason=result.reason,
        now=now,
    )


async def _release_draw(
    conn: asyncpg.Connection,
    payments: Payments,
    memo: domain.CreditMemo,
    draw: domain.ReleaseDraw,
    request_key: str,
    now: datetime,
) -> domain.Reversal:
    """Release one draw from an authorization's hold (void when it is all that remains)."""
    authorization = draw.authorization
    gateway = payments.gateways.calling(authorization.payment_method_type)
    key = domain.gateway_key(
        memo.order_id,
        request_key,
        f"release:{authorization.authorization_id}",
        draw.amount_minor,
    )
    ref = authorization.gateway_reference
    operation = (
        partial(gateway.void, key, ref)
        if draw.void
        else partial(gateway.reverse, key, ref, draw.amount_minor, authorization.currency)
    )
    result = await call_resolved(gateway, key, operation)
    reversal = domain.record_reversal(
        memo,
        draw,
        reversal_id=new_id(),
        succeeded=result.succeeded,
        gateway_reference=result.reference,
        failure_reason=result.reason,
        now=now,
    )
    await store.insert_reversal(conn, reversal)
    if result.succeeded:
        await store.update_authorization(
            conn, domain.released_from(authorization, draw.amount_minor, void=draw.void)
        )
    return reversal


# ---- reads and erasure ---------------------------------------------------------------------


async def payment_summary(
    pool: asyncpg.Pool, order_id: str
) -> tuple[domain.PaymentSummary, store.OrderRecords]:
    """An order's money in totals, with every record behind them."""
    records = await store.records_of_order(pool, order_id)
    summary = domain.summarize(
        order_id,
        records.authorizations,
        records.captures,
        records.invoices,
        credit_memos=records.credit_memos,
        refunds=records.refunds,
        reversals=records.reversals,
    )
    return summary, records


async def reconciliation(pool: asyncpg.Pool, order_id: str) -> domain.Reconciliation:
    """Whether an order's money taken agrees with its money owed."""
    records = await store.records_of_order(pool, order_id)
    return domain.reconcile(
        order_id,
        records.authorizations,
        records.captures,
        records.invoices,
        credit_memos=records.credit_memos,
        refunds=records.refunds,
        reversals=records.reversals,
    )


async def erase_personal_data(
    pool: asyncpg.Pool, order_ids: Sequence[str], identifying_text: Sequence[str]
) -> int:
    """Blank the shopper's personal data in these orders' payment records; how many changed."""
    return await erasure.erase_orders(
        pool,
        store.PERSONAL_COLUMNS,
        order_ids,
        [order_workflow_id(o) for o in order_ids],
        identifying_text,
    )
