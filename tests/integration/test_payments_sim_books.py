"""The simulated processor's books in Postgres: every payments replica, and a restarted one,
talks to the same processor."""

from __future__ import annotations

import uuid

from services.payments.sim_store import PostgresState
from services.payments.simulated import SimulatedGateway, SimulatedGiftCardGateway


async def test_replicas_sharing_a_state_file_talk_to_one_processor(database: str) -> None:
    # Two payments replicas (each its own gateway and pool) on one processor's books.
    name = f"card-{uuid.uuid4().hex[:8]}"
    books = [PostgresState(database, name) for _ in range(3)]
    first, second = SimulatedGateway(state=books[0]), SimulatedGateway(state=books[1])
    hold = await first.authorize(f"{name}:auth", "tok_visa", 5_000, "USD")
    # The other replica captures what the first authorized, and knows its keys.
    charge = await second.capture(f"{name}:capture", hold.reference, 3_000, "USD")
    assert (charge.succeeded, charge.amount_minor) == (True, 3_000)
    assert await second.lookup(f"{name}:auth") == hold
    assert await second.authorize(f"{name}:auth", "tok_visa", 5_000, "USD") == hold
    # Either one sees what is left of the hold, and the charge to refund.
    over = await first.capture(f"{name}:capture-2", hold.reference, 2_001, "USD")
    assert (over.succeeded, over.reason) == (False, "amount_exceeds_authorization")
    assert (await first.refund(f"{name}:refund", charge.reference, 3_000, "USD")).succeeded
    # A replica started again later (a restart) finds all of it.
    restarted = SimulatedGateway(state=books[2])
    assert await restarted.lookup(f"{name}:capture") == charge
    void = await restarted.void(f"{name}:void", hold.reference)
    assert (void.succeeded, void.amount_minor) == (True, 2_000)


async def test_gift_card_balances_are_shared_through_the_state_file(database: str) -> None:
    name = f"giftcard-{uuid.uuid4().hex[:8]}"
    first = SimulatedGiftCardGateway(state=PostgresState(database, name))
    second = SimulatedGiftCardGateway(state=PostgresState(database, name))
    assert (await first.authorize(f"{name}:a", "gc_3000", 2_000, "USD")).succeeded
    declined = await second.authorize(f"{name}:b", "gc_3000", 2_000, "USD")
    assert (declined.succeeded, declined.reason) == (False, "insufficient_funds")
    # A card gateway on the same database keeps books of its own (a separate processor).
    card = SimulatedGateway(state=PostgresState(database, f"card-{uuid.uuid4().hex[:8]}"))
    assert await card.lookup(f"{name}:a") is None
