"""Servicing's return use cases around the order workflow: the return policy decides before
a return or an exchange (a return of the old item) reaches the workflow, with its restocking
fee withheld through the change's return fee; a carrier issues the label of each return
order, and units received back in a resellable condition go back into stock at the receiving
location.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from oms_platform.errors import FailedPrecondition
from services.servicing import domain, handlers
from services.servicing.carrier import LABEL_CREATED, Carrier, LabelRequest
from services.servicing.handlers import Clock, utc_now
from services.servicing.lifecycles import OrderLifecycles
from services.servicing.policy_store import (
    ReturnLabel,
    ReturnLabelStore,
    ReturnPolicyStore,
    StoredRule,
)
from services.servicing.store import ChangeStore, ReturnOrderStore


class OrderSkus(Protocol):
    """Capture's record of an order's lines, asked for their SKUs."""

    async def skus_of(self, order_id: str) -> dict[str, str]:
        """The SKU of each line, by order line id."""
        ...


class Inventory(Protocol):
    """Fulfillment's stock, where returned units go back."""

    async def restock(
        self, key: str, location_id: str, units: Sequence[tuple[str, int]], reason: str
    ) -> None:
        """Put `units` (SKU, quantity) back on hand at `location_id`; once per key."""
        ...


@dataclass
class Returns:
    """What the return use cases work with: stores, the order workflows, the carrier, the
    inventory and capture's order lines."""

    changes: ChangeStore
    returns: ReturnOrderStore
    lifecycles: OrderLifecycles
    policies: ReturnPolicyStore
    labels: ReturnLabelStore
    carrier: Carrier
    inventory: Inventory
    order_skus: OrderSkus
    clock: Clock = utc_now


async def check_eligibility(ctx: Returns, request: domain.EligibilityRequest) -> domain.Eligibility:
    """Whether the policy lets `request` be returned, and its fee and refund; and whether the
    units may be exchanged instead (`exchangeable`), as SubmitExchange would decide."""
    domain.validate_eligibility_request(request)
    view = await ctx.lifecycles.order_view(request.order_id)
    rules = [stored.rule for stored in await ctx.policies.rules()]
    answer = await _eligibility(ctx, view, rules, request, "order_line_id")
    if not answer.eligible and not answer.rule_id:
        # The units' quantities or the order's lifecycle refused them: an exchange takes them
        # back as a return does (the workflow checks it as one), so it is refused too.
        return answer
    # Asked as an exchange asks it; once the return got past the order's lifecycle, only the
    # policy is left to ask (the units priced only if its rule charges an exchange a fee).
    as_exchange = await _eligibility(
        ctx,
        view,
        rules,
        replace(request, exchange=True),
        "order_line_id",
        always_price=not answer.eligible,
    )
    return replace(answer, exchangeable=as_exchange.eligible)


async def _eligibility(
    ctx: Returns,
    view: domain.OrderView,
    rules: list[domain.PolicyRule],
    request: domain.EligibilityRequest,
    field: str,
    *,
    always_price: bool = True,
    check_quantity: bool = True,
) -> domain.Eligibility:
    """The policy's answer for one line; the units are priced (a preview query) when the
    answer reports money (`always_price`) or the deciding rule charges a fee. Without
    `check_quantity` the units left to return are left to the workflow (`domain.decide`).
    The window is the order's own, so the policy and the workflow close returns at the same
    moment."""
    line = view.line(request.order_line_id, field)
    categories = await ctx.policies.categories_of([line.sku])
    facts = domain.line_facts(view, request.order_line_id, categories, field)
    now = ctx.clock()
    unpriced = domain.decide(rules, facts, request, 0, now, check_quantity=check_quantity)
    rule = domain.deciding_rule(rules, facts.channel, facts.category)
    if not unpriced.eligible or not (always_price or domain.fee_basis_points(rule, request)):
        return unpriced
    # What the units credit back, as the workflow computes it for a return (nothing kept).
    try:
        preview = await ctx.lifecycles.preview(
            domain.ChangeOrder(
                kind=domain.RETURN,
                order_id=view.order_id,
                lines=(domain.Item(request.order_line_id, request.quantity),),
            )
        )
    except FailedPrecondition as refused:
        # The lifecycle's own rules (its return window, its buckets) refuse it.
        return domain.Eligibility(False, "", str(refused))
    return domain.decide(
        rules, facts, request, preview.credited_minor, now, check_quantity=check_quantity
    )


async def _policy_fee(ctx: Returns, order: domain.ChangeOrder) -> int:
    """The restocking fee the policy withholds from a return (or an exchange) of
    `order.lines`; raises FailedPrecondition naming the rule (and the line) when the policy
    refuses one."""
    view = await ctx.lifecycles.order_view(order.order_id)
    rules = [stored.rule for stored in await ctx.policies.rules()]
    fee = 0
    for i, item in enumerate(order.lines):
        condition = order.line_notes[i].condition if i < len(order.line_notes) else ""
        field = f"lines[{i}]"
        eligibility = await _eligibility(
            ctx,
            view,
            rules,
            domain.EligibilityRequest(
                order.order_id,
                item.order_line_id,
                item.quantity,
                condition,
                exchange=order.kind == domain.EXCHANGE,
            ),
            field,
            always_price=False,
            # A return the workflow refuses for its quantity is recorded as refused there.
            check_quantity=False,
        )
        if not eligibility.eligible:
            raise domain.refusal_of(eligibility, field, order.kind)
        fee += eligibility.restocking_fee_minor
    return fee


async def preview_under_policy(ctx: Returns, order: domain.ChangeOrder) -> domain.ChangeOutcome:
    """What a return (or an exchange) would give back or charge once the policy allows it,
    its restocking fee withheld."""
    domain.validate_change(order, preview=True)
    fee = await _policy_fee(ctx, order)
    return await handlers.preview_change(
        ctx.lifecycles, replace(order, return_fee_minor=order.return_fee_minor + fee)
    )


async def submit_under_policy(
    ctx: Returns, order: domain.ChangeOrder, request_hash: bytes
) -> domain.Change:
    """Make a return or an exchange the policy allows, its restocking fee withheld through
    the change's return fee (the workflow keeps it from the refund of a return, and adds it
    to what an exchange charges).

    A retry of a change already completed is answered from the record, whatever the policy
    says now; a retry of one still pending reaches the same Update (its first request wins)."""
    domain.validate_change(order)
    change_id = domain.change_id_for(order.order_id, order.kind, order.idempotency_key)
    known = await ctx.changes.find(change_id)
    if known is None or known.status not in (domain.COMPLETED, domain.PENDING):
        fee = await _policy_fee(ctx, order)
        order = replace(order, return_fee_minor=order.return_fee_minor + fee)
    return await handlers.submit_change(
        ctx.changes, ctx.returns, ctx.lifecycles, order, request_hash, ctx.clock
    )


async def submit_return(
    ctx: Returns, order: domain.ChangeOrder, request_hash: bytes
) -> tuple[domain.Change, ReturnLabel | None]:
    """Open a return the policy allows (`submit_under_policy`) and issue its label."""
    change = await submit_under_policy(ctx, order, request_hash)
    return change, await _label_of(ctx, order, change)


async def submit_exchange(
    ctx: Returns, order: domain.ChangeOrder, request_hash: bytes
) -> tuple[domain.Change, ReturnLabel | None]:
    """Make an exchange the policy allows (`submit_under_policy`) and issue the label of its
    return order, as a return's: the old units come back the same way."""
    change = await submit_under_policy(ctx, order, request_hash)
    return change, await _label_of(ctx, order, change)


async def _label_of(
    ctx: Returns, order: domain.ChangeOrder, change: domain.Change
) -> ReturnLabel | None:
    """The label of the return order a return or an exchange opened; None when it opened
    none (refused, still pending) or nothing comes back (a refund without return)."""
    rma_id = change.outcome.return_order_id if change.outcome else ""
    if not rma_id or order.refund_without_return:
        return None
    return await _label(ctx, order.order_id, rma_id, change.requested_lines)


async def _label(
    ctx: Returns, order_id: str, return_order_id: str, lines: Sequence[domain.Item]
) -> ReturnLabel:
    """The return order's label, issued by the carrier the first time (keyed by the return
    order, so a retry after a crash gets the same parcel)."""
    kept = await ctx.labels.find(return_order_id)
    if kept is not None:
        return kept
    skus = await ctx.order_skus.skus_of(order_id)
    issued = await ctx.carrier.create_return_label(
        f"return-label:{return_order_id}",
        LabelRequest(
            return_order_id,
            order_id,
            tuple((skus.get(i.order_line_id, i.order_line_id), i.quantity) for i in lines),
        ),
    )
    now = ctx.clock()
    return await ctx.labels.insert(
        ReturnLabel(
            return_order_id=return_order_id,
            order_id=order_id,
            carrier=issued.carrier,
            tracking_number=issued.tracking_number,
            pdf=issued.pdf,
            tracking_status=LABEL_CREATED,
            created_at=now,
            updated_at=now,
        )
    )


async def tracked(ctx: Returns, label: ReturnLabel) -> ReturnLabel:
    """`label` with where its parcel is as the carrier says now (kept when it moved)."""
    status = await ctx.carrier.track(label.tracking_number)
    if status == label.tracking_status:
        return label
    return await ctx.labels.set_status(label.return_order_id, status, ctx.clock())


async def receive_return(
    ctx: Returns, order: domain.ChangeOrder, location_id: str, request_hash: bytes
) -> tuple[domain.Change, domain.ReturnOrder, tuple[domain.Item, ...]]:
    """Units came back: the order's workflow refunds what was accepted; those inspected in a
    resellable condition go back into stock at `location_id` (keyed by the change, so a
    retried receipt restocks once). Answers the change, the return order and what was
    restocked."""
    change, rma = await handlers.receive_return(
        ctx.changes, ctx.returns, ctx.lifecycles, order, request_hash, ctx.clock
    )
    restocked = domain.restockable(order.lines, order.line_notes) if location_id else ()
    if restocked:
        skus = await ctx.order_skus.skus_of(rma.order_id)
        await ctx.inventory.restock(
            f"restock:{change.change_id}",
            location_id,
            [(skus[item.order_line_id], item.quantity) for item in restocked],
            f"return {rma.id} received",
        )
    return change, rma, restocked


# ---- the policy's rules and categories --------------------------------------------------------


async def upsert_rule(ctx: Returns, rule: domain.PolicyRule, actor: str) -> StoredRule:
    """Create or replace a rule (checked first)."""
    domain.validate_rule(rule)
    return await ctx.policies.upsert(rule, ctx.clock(), actor)


async def rules(ctx: Returns) -> list[StoredRule]:
    """Every rule, in the order a listing shows them (the default rule last)."""
    return sorted(await ctx.policies.rules(), key=lambda s: domain.precedence(s.rule))


async def delete_rule(ctx: Returns, rule_id: str) -> bool:
    """Delete a rule (never the default one); False when there was none."""
    domain.check_deletable(rule_id)
    return await ctx.policies.delete(rule_id)


async def set_categories(ctx: Returns, pairs: list[tuple[str, str]]) -> int:
    """Set each SKU's category ("" removes it), checked first; returns how many changed."""
    domain.validate_categories(pairs)
    return await ctx.policies.set_categories(dict(pairs), ctx.clock())
