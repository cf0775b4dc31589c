"""EraseShopper: a shopper's personal data erased everywhere oms keeps it, in one call.

Capture owns shoppers, so it runs the erasure:

1. find the shopper (by id, or by email; once erased, by the digest of the email kept on the
   erasure record) — an erasure already completed is answered as it was;
2. refuse while any of their orders is in flight, or with `force` cancel what has not shipped
   first (servicing's SubmitCancel of the whole order, the same Update an agent's cancel is);
3. record that the erasure started (who asked, when, which orders);
4. end the orders' workflows: they are settled by now, at most waiting out a return window,
   and a running workflow whose history can no longer be decrypted (step 7) would be stuck
   on its next task; termination, with reason "shopper erased", ends them for good;
5. ask fulfillment, payments and servicing to erase these orders (ErasePersonalData), handing
   them the text that identifies the shopper so they can find it in free text too;
6. erase capture's own copy last (it is where that identifying text comes from), in one
   transaction with a timeline event per order;
7. destroy the orders' Temporal payload keys (crypto-shredding), then mark the record complete.

Every step can run again, so a request that failed half-way is finished by repeating it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import structlog
from oms.fulfillment.v1 import fulfillment_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from oms_platform.erasure import MAX_ORDERS_PER_CALL
from oms_platform.errors import FailedPrecondition, NotFound
from services.capture import domain, store
from workflows.search_attributes import ORDER_STATUS
from workflows.types import order_workflow_id

log = structlog.get_logger("oms.capture.erasure")

TERMINATE_REASON = "shopper erased"
# How long a canceled order's workflow is given to finish on its own before it is ended.
SETTLE_SECONDS = 10.0
# Each other service's erasure call.
ERASE_CALL_SECONDS = 30.0

# Destroys the Temporal payload keys of these subjects (workflow ids).
Shredder = Callable[[Sequence[str]], Awaitable[None]]


@dataclass(frozen=True)
class EraseRequest:
    """EraseShopper as the domain sees it."""

    shopper_id: str
    email: str
    force: bool
    reason: str
    requested_by: str


@dataclass
class Eraser:
    """Runs erasures: capture's pool, the other services' stubs, Temporal, the key vault."""

    pool: asyncpg.Pool
    fulfillment: Any
    payments: Any
    servicing: Any
    temporal: Callable[[], Awaitable[Client]]
    shred: Shredder

    async def erase(self, request: EraseRequest) -> store.ErasureRecord:
        """Erase the shopper's personal data; the erasure's record (the same one again for a
        repeated request)."""
        domain.check_erase_request(request.shopper_id, request.email)
        email = domain.normalize_email(request.email)
        digest = _email_digest(email) if email else None
        async with self.pool.acquire() as conn:
            found = await store.find_shopper_for_erasure(conn, request.shopper_id.strip(), email)
            if found is None:
                earlier = None
                if digest is not None:
                    earlier = await store.erasure_of(conn, email_sha256=digest)
                else:
                    earlier = await store.erasure_of(conn, request.shopper_id.strip())
                if earlier is None:
                    raise NotFound("no such shopper")
                found = (earlier.shopper_id, "")
            shopper_id, stored_email = found
            earlier = await store.erasure_of(conn, shopper_id)
            if earlier is not None and earlier.completed_at is not None:
                return earlier
            orders = await store.erasable_orders(conn, shopper_id)
        canceled = 0
        if request.force and any(o.in_flight for o in orders):
            canceled = await self._cancel_unshipped(orders, request)
            async with self.pool.acquire() as conn:
                orders = await store.erasable_orders(conn, shopper_id)
        refusal = domain.in_flight_refusal(orders, request.force)
        if refusal is not None:
            raise refusal
        order_ids = [o.order_id for o in orders]
        async with self.pool.acquire() as conn:
            if digest is None and stored_email:
                digest = _email_digest(stored_email)
            record = await store.start_erasure(
                conn, shopper_id, digest, request.requested_by, order_ids, canceled
            )
            order_ids = sorted(set(order_ids) | set(record.order_ids))
            terms = await store.identifying_text(conn, shopper_id, order_ids)
        if order_ids:
            await self._end_workflows(order_ids)
            for start in range(0, len(order_ids), MAX_ORDERS_PER_CALL):
                await self._erase_elsewhere(order_ids[start : start + MAX_ORDERS_PER_CALL], terms)
        async with self.pool.acquire() as conn, conn.transaction():
            now = await store.erase_shopper_data(
                conn,
                shopper_id,
                order_ids,
                terms,
                f"Personal data erased (erasure {record.erasure_id})",
                record.requested_by,
            )
            arrived = sorted(set(now) - set(order_ids))
            if arrived:
                # Matched to the shopper while this ran; erase them too by asking again.
                raise FailedPrecondition(
                    f"orders arrived for the shopper while erasing: {', '.join(arrived)}; "
                    "repeat the request"
                )
        # Last: once the keys are gone, nothing in these orders' histories can be read.
        if order_ids:
            await self.shred([order_workflow_id(o) for o in order_ids])
        async with self.pool.acquire() as conn:
            done = await store.complete_erasure(conn, record.erasure_id)
        log.info("shopper erased", erasure_id=done.erasure_id, orders=len(order_ids))
        return done

    async def _cancel_unshipped(
        self, orders: Sequence[domain.ErasableOrder], request: EraseRequest
    ) -> int:
        """Cancel everything not shipped of each order that has not settled; how many were
        canceled. A cancel refused (everything shipped already) leaves the order to the
        in-flight check that follows."""
        canceled = 0
        for order in orders:
            if not order.cancelable:
                continue
            try:
                await self.servicing.SubmitCancel(
                    servicing_pb2.SubmitCancelRequest(
                        order_id=order.order_id,
                        # One key per order and erasure request: a repeat reaches the same cancel.
                        idempotency_key="erase-shopper",
                        # Capture asks as itself (the recorded actor); the reason names the
                        # person who asked for the erasure.
                        reason=f"{request.reason or 'personal data erased'} "
                        f"(erasure asked by {request.requested_by})",
                    ),
                    timeout=ERASE_CALL_SECONDS,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                log.info("forced cancel refused", order_id=order.order_id, reason=error.details())
                continue
            canceled += 1
        return canceled

    async def _end_workflows(self, order_ids: Sequence[str]) -> None:
        """End every order's workflow that is still running (waiting out a return window, or
        finishing a cancel), before its history becomes unreadable."""
        client = await self.temporal()
        await asyncio.gather(*(_end(client, order_workflow_id(o)) for o in order_ids))

    async def _erase_elsewhere(self, order_ids: Sequence[str], terms: Sequence[str]) -> None:
        erased = await asyncio.gather(
            self.fulfillment.ErasePersonalData(
                fulfillment_pb2.ErasePersonalDataRequest(
                    order_ids=order_ids, identifying_text=terms
                ),
                timeout=ERASE_CALL_SECONDS,
            ),
            self.payments.ErasePersonalData(
                payments_pb2.ErasePersonalDataRequest(order_ids=order_ids, identifying_text=terms),
                timeout=ERASE_CALL_SECONDS,
            ),
            self.servicing.ErasePersonalData(
                servicing_pb2.ErasePersonalDataRequest(order_ids=order_ids, identifying_text=terms),
                timeout=ERASE_CALL_SECONDS,
            ),
        )
        log.info(
            "personal data erased in the other services",
            records=[r.records_erased for r in erased],
        )


async def _end(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return  # never started (an imported historical order) or already gone
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        return
    if description.typed_search_attributes.get(ORDER_STATUS) == domain.CANCELED:
        # A just-canceled order's workflow finishes by itself in moments (compensation done):
        # give it the chance rather than cut it short.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.result(), timeout=SETTLE_SECONDS)
            return
    # Otherwise it is waiting out the return window of a settled order: nothing is left to do.
    try:
        await handle.terminate(reason=TERMINATE_REASON)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:  # finished meanwhile
            raise


def _email_digest(email: str) -> bytes:
    return hashlib.sha256(email.encode()).digest()
