"""Servicing's use cases that cross the workflow boundary: resolving process exceptions and
changing orders. Each validates with the domain, records, sends the Update, and records the
answer; the domain decides, the stores keep, the lifecycles adapter talks to Temporal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from oms_platform import limits
from oms_platform.errors import AlreadyExists, DomainError, FailedPrecondition
from services.servicing import domain
from services.servicing.addresses import FulfillmentRouting
from services.servicing.lifecycles import ChangeFailed, OrderLifecycles
from services.servicing.store import ChangeStore, ProcessExceptionStore, ReturnOrderStore

Clock = Callable[[], datetime]

# How often a resolution of a just-raised exception is offered again (see `grace`).
RESOLUTION_RETRY_SECONDS = 0.1


class DeadLetters(Protocol):
    """The dead letters delivery failures name, at the services that hold them."""

    async def redeliver(self, attached_to: str, note: str) -> None:
        """Put the dead letter back in its owner's outbox (idempotent)."""
        ...

    async def discard(self, attached_to: str, note: str) -> None:
        """Give up on the dead letter (idempotent)."""
        ...


def utc_now() -> datetime:
    """The servicing clock."""
    return datetime.now(UTC)


async def resolve_process_exception(
    exceptions: ProcessExceptionStore,
    lifecycles: OrderLifecycles,
    request: domain.Resolve,
    grace: timedelta,
    dead_letters: DeadLetters,
    clock: Clock = utc_now,
) -> domain.ProcessException:
    """Hand the resolution to the order's workflow, then record it (a delivery failure's to
    the service holding its dead letter: see `_resolve_delivery_failure`).

    Resolving again with the same action answers with what is stored. If servicing stops
    between the Update and recording it, the retry reaches the same Update (its id is derived
    from the exception) and records the same answer."""
    domain.validate_resolution(request)
    exception = await exceptions.get(request.process_exception_id)
    if domain.is_resolution_replay(exception, request.action):
        return exception
    if exception.category == domain.DELIVERY_FAILED:
        return await _resolve_delivery_failure(exceptions, dead_letters, exception, request, clock)
    # The workflow records an exception before it starts waiting on it; an agent quick
    # enough to resolve in between is refused, so a fresh exception is asked about again.
    waits_by = exception.created_at + grace
    while True:
        try:
            action, order_status = await lifecycles.resolve(exception.order_id, request)
            break
        except FailedPrecondition:
            if clock() >= waits_by:
                raise
            await asyncio.sleep(RESOLUTION_RETRY_SECONDS)
    if action != request.action:  # another agent's resolution reached the workflow first
        raise FailedPrecondition(
            f"process exception {exception.id} was already resolved with {action}"
        )
    stored = await exceptions.record_resolution(
        domain.resolved(exception, request, order_status, clock())
    )
    domain.is_resolution_replay(stored, request.action)
    return stored


async def _resolve_delivery_failure(
    exceptions: ProcessExceptionStore,
    dead_letters: DeadLetters,
    exception: domain.ProcessException,
    request: domain.Resolve,
    clock: Clock,
) -> domain.ProcessException:
    """Retry redelivers the dead letter, skip gives up on it, both at the service that holds it
    (idempotent there, so a resolution repeated after a crash does it once); then record."""
    domain.validate_delivery_resolution(exception, request.action)
    note = f"process exception {exception.id}, {domain.actor_of(request.actor)}: {request.note}"
    if request.action == domain.RETRY:
        await dead_letters.redeliver(exception.attached_to, note)
    else:
        await dead_letters.discard(exception.attached_to, note)
    return await exceptions.record_resolution(domain.resolved(exception, request, "", clock()))


async def update_process_exception_status(
    exceptions: ProcessExceptionStore, request: domain.StatusUpdate, clock: Clock = utc_now
) -> domain.ProcessException:
    """Move an exception to another status by hand (validated transitions)."""
    domain.validate_status_update(request)
    async with exceptions.pool.acquire() as conn, conn.transaction():
        exception = await exceptions.get(request.process_exception_id, conn, for_update=True)
        changed = domain.with_status(exception, request, clock())
        if changed is exception:
            return exception
        return await exceptions.update(conn, changed)


async def submit_change(
    changes: ChangeStore,
    returns: ReturnOrderStore,
    lifecycles: OrderLifecycles,
    order: domain.ChangeOrder,
    request_hash: bytes,
    clock: Clock = utc_now,
) -> domain.Change:
    """Record a change, send it to the order's workflow, record and return its answer.

    The change id (and Update id) is derived from the order, kind and idempotency key: a
    retry reaches the same Update and gets the same answer; a completed change is answered
    from the record. A refusal is recorded and raised (a retry is asked again: the order may
    have moved on)."""
    domain.validate_change(order)
    change_id = domain.change_id_for(order.order_id, order.kind, order.idempotency_key)
    change, first_hash = await changes.claim(
        domain.new_change(order, change_id, clock()), order, request_hash
    )
    if first_hash != request_hash:
        raise AlreadyExists(
            "idempotency_key",
            f"idempotency key {limits.echo(order.idempotency_key)} was already used with a "
            f"different "
            f"{order.kind} request",
        )
    if change.status == domain.COMPLETED:
        return change
    try:
        outcome = await lifecycles.change(order, change_id)
    except DomainError as refusal:
        await changes.save(domain.refused(change, refusal, clock()))
        raise
    except ChangeFailed as failure:
        await changes.save(domain.failed(change, str(failure), clock()))
        raise FailedPrecondition(f"change {change_id} could not finish: {failure}") from None
    done = await changes.save(domain.completed(change, outcome, clock()))
    if outcome.return_order_id:
        await _note_return_lines(returns, outcome.return_order_id, order, clock)
    return done


async def preview_change(
    lifecycles: OrderLifecycles, order: domain.ChangeOrder
) -> domain.ChangeOutcome:
    """What a change would do; nothing is recorded or changed."""
    domain.validate_change(order, preview=True)
    return await lifecycles.preview(order)


async def preview_address_change(
    lifecycles: OrderLifecycles, routing: FulfillmentRouting, order: domain.ChangeOrder
) -> domain.ChangeOutcome:
    """What an address change would do: the order's workflow says whether it allows it (and
    where the group ships from now), fulfillment where routing would place its units for
    the new address. Nothing is recorded or changed."""
    domain.validate_change(order, preview=True)
    allowed = await lifecycles.preview(order)
    if not allowed.location_ids or order.address is None:
        return allowed  # nothing routed yet: the new address is simply used when it is
    where = await routing.preview(order.order_id, order.delivery_group_id, order.address)
    return domain.rerouted_preview(
        allowed, where.rerouted, where.from_location_ids, where.to_location_ids
    )


async def receive_return(
    changes: ChangeStore,
    returns: ReturnOrderStore,
    lifecycles: OrderLifecycles,
    order: domain.ChangeOrder,
    request_hash: bytes,
    clock: Clock = utc_now,
) -> tuple[domain.Change, domain.ReturnOrder]:
    """Units came back for a return order: its order's workflow refunds what was accepted."""
    domain.validate_change(order)
    rma = await returns.get(order.return_order_id)
    if order.order_id and order.order_id != rma.order_id:
        raise FailedPrecondition(
            f"return order {rma.id} belongs to order {rma.order_id}, not {order.order_id}"
        )
    change = await submit_change(
        changes,
        returns,
        lifecycles,
        replace(order, order_id=rma.order_id),
        request_hash,
        clock,
    )
    return change, await returns.get(rma.id)


async def _note_return_lines(
    returns: ReturnOrderStore, return_order_id: str, order: domain.ChangeOrder, clock: Clock
) -> None:
    """Keep the per-line reasons and conditions the workflow does not carry."""
    notes = [*order.line_notes, *order.rejected_notes]
    if not notes:
        return
    async with returns.pool.acquire() as conn, conn.transaction():
        rma = await returns.get(return_order_id, conn, for_update=True)
        noted = domain.with_line_notes(rma, notes, clock())
        if noted is not rma:
            await returns.save(conn, noted)
