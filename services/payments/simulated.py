"""The simulated card and gift card gateways, for development, the dev stack and tests: they
implement the PaymentGateway port (gateway.py) and keep their books in a `State`
(sim_store.py), in the process or in Postgres, as an external processor would.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from services.payments.gateway import GatewayResult, GatewayTimeout, GatewayUnavailable
from services.payments.sim_store import (
    Charge,
    GatewayOperation,
    Hold,
    MemoryState,
    Session,
    State,
    operation_log_line,
)

log = structlog.get_logger("oms.payments.simulated")

DECLINE_TOKEN = "tok_decline"
FAIL_CAPTURE_TOKEN = "tok_fail_capture"
# The processor is down for the first capture on such a card, then recovers.
FAIL_FIRST_CAPTURE_TOKEN = "tok_fail_first_capture"
FAIL_REFUND_TOKEN = "tok_fail_refund"
GIFT_CARD_PREFIX = "gc_"

# What an operation decided: the gateway's answer, and the amount and currency it is booked at.
Decided = tuple[GatewayResult, int, str]


@dataclass
class SimulatedGateway:
    """An in-memory card gateway for development and tests, implementing PaymentGateway.

    Behaviour: authorizations above `decline_above_minor` (when > 0) are declined
    "amount_exceeds_limit"; token "tok_decline" is declined "card_declined"; captures on an
    authorization of token "tok_fail_capture" fail "processor_unavailable" (with
    "tok_fail_first_capture" only the first one fails: the processor recovers), refunds of a
    capture of token "tok_fail_refund" fail "refund_rejected". With probability
    `transient_failure_rate` a call raises GatewayUnavailable before doing anything. While
    `timeout_after_charge` is set, an operation is performed and then GatewayTimeout is raised.
    The same key twice is one effect: the second call returns the first result.

    With `operation_log` naming a file, every operation performed is also appended to it as a
    JSON line (`read_operation_log` reads it back): the processor's own record of what it did,
    which tests outside the payments process compare with what payments recorded. It is
    written by the simulation only; a real gateway adapter has nothing like it.
    """

    latency_ms: int = 0
    decline_above_minor: int = 0
    transient_failure_rate: float = 0.0
    timeout_after_charge: bool = False
    rng: random.Random = field(default_factory=random.Random)
    # Every operation performed, in order (replays by key are not operations).
    operations: list[GatewayOperation] = field(default_factory=list)
    # Every call received, as (method, key), including replays, failures and lookups.
    calls: list[tuple[str, str]] = field(default_factory=list)
    # A JSON-lines file every operation is appended to as it is performed; "" for none.
    operation_log: str = ""
    # Where the processor keeps its books: this process (default) or Postgres (durable).
    state: State = field(default_factory=MemoryState)
    # How long an approved hold lasts, as the processor reports it; 0: it says nothing.
    hold_seconds: int = 0

    async def _enter(self, method: str, key: str) -> None:
        self.calls.append((method, key))
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.transient_failure_rate and self.rng.random() < self.transient_failure_rate:
            raise GatewayUnavailable(f"simulated transient failure on {method} {key!r}")

    def _perform(
        self,
        books: Session,
        kind: str,
        key: str,
        amount_minor: int,
        currency: str,
        result: GatewayResult,
    ) -> GatewayOperation:
        books.keep_result(key, result)
        operation = GatewayOperation(kind, key, result.reference, amount_minor, currency, result)
        books.log(operation)
        return operation

    def _done(self, operation: GatewayOperation) -> GatewayResult:
        """After the books are closed: mirror the operation to the log file, then act out a
        timeout if asked to (the effect has happened either way)."""
        self.operations.append(operation)
        if self.operation_log:
            # One write of a whole line to a file opened for appending: lines from the card
            # and gift card gateways (one process, one event loop) never interleave.
            with open(self.operation_log, "a", encoding="utf-8") as log_file:
                log_file.write(operation_log_line(operation))
        if self.timeout_after_charge:
            raise GatewayTimeout(f"simulated timeout after {operation.kind}")
        return operation.result

    def operations_of(self, kind: str, *, succeeded: bool | None = None) -> list[GatewayOperation]:
        """The operations of one kind performed so far, optionally only (un)successful ones."""
        return [
            op
            for op in self.operations
            if op.kind == kind and (succeeded is None or op.result.succeeded == succeeded)
        ]

    # Hooks a simulated instrument overrides: how much a hold gets, and money coming back.
    async def _hold_for(
        self, books: Session, token: str, amount_minor: int, allow_partial: bool
    ) -> tuple[int, str]:
        """(amount held, decline reason); held 0 means declined."""
        if token == DECLINE_TOKEN:
            return 0, "card_declined"
        if self.decline_above_minor and amount_minor > self.decline_above_minor:
            return 0, "amount_exceeds_limit"
        return amount_minor, ""

    async def _released(self, books: Session, token: str, amount_minor: int) -> None:
        """`amount_minor` goes back to the instrument (void, reversal or refund)."""

    async def _operate(
        self, kind: str, key: str, decide: Callable[[Session], Awaitable[Decided]]
    ) -> GatewayResult:
        """One operation by key: a key already known answers its first result again (the same
        key twice is one effect); otherwise `decide` acts on the books and the operation is
        kept."""
        await self._enter(kind, key)
        async with self.state.session() as books:
            known = await books.result(key)
            if known is not None:
                return known
            result, amount_minor, currency = await decide(books)
            performed = self._perform(books, kind, key, amount_minor, currency, result)
        return self._done(performed)

    async def authorize(
        self, key: str, token: str, amount_minor: int, currency: str, *, allow_partial: bool = False
    ) -> GatewayResult:
        async def decide(books: Session) -> Decided:
            reference = f"sim_auth_{uuid.uuid4().hex[:16]}"
            held, reason = await self._hold_for(books, token, amount_minor, allow_partial)
            if held <= 0:
                result = GatewayResult(False, reference, reason or "declined")
            else:
                result = GatewayResult(
                    True, reference, amount_minor=held, hold_seconds=self.hold_seconds
                )
                books.keep_hold(reference, Hold(token, held, currency))
            return result, amount_minor, currency

        return await self._operate("authorize", key, decide)

    async def capture(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        async def decide(books: Session) -> Decided:
            reference = f"sim_cap_{uuid.uuid4().hex[:16]}"
            hold = await books.hold(authorization_ref)
            reason = ""
            if hold is None:
                reason = "unknown_authorization"
            elif hold.token == FAIL_CAPTURE_TOKEN:
                reason = "processor_unavailable"
            elif hold.token == FAIL_FIRST_CAPTURE_TOKEN and hold.capture_attempts == 0:
                hold.capture_attempts += 1
                reason = "processor_unavailable"
            else:
                reason = _hold_refusal(hold, amount_minor, currency)
            if reason or hold is None:
                result = GatewayResult(False, reference, reason)
            else:
                hold.captured_minor += amount_minor
                books.keep_charge(reference, Charge(hold.token, amount_minor, currency))
                result = GatewayResult(True, reference, amount_minor=amount_minor)
            return result, amount_minor, currency

        return await self._operate("capture", key, decide)

    async def refund(
        self, key: str, capture_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        async def decide(books: Session) -> Decided:
            reference = f"sim_ref_{uuid.uuid4().hex[:16]}"
            charge = await books.charge(capture_ref)
            if charge is None:
                result = GatewayResult(False, reference, "unknown_capture")
            elif charge.token == FAIL_REFUND_TOKEN:
                result = GatewayResult(False, reference, "refund_rejected")
            elif currency != charge.currency:
                result = GatewayResult(False, reference, "currency_mismatch")
            elif amount_minor <= 0 or amount_minor > charge.amount_minor - charge.refunded_minor:
                result = GatewayResult(False, reference, "amount_exceeds_capture")
            else:
                charge.refunded_minor += amount_minor
                await self._released(books, charge.token, amount_minor)
                result = GatewayResult(True, reference, amount_minor=amount_minor)
            return result, amount_minor, currency

        return await self._operate("refund", key, decide)

    async def reverse(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        async def decide(books: Session) -> Decided:
            hold = await books.hold(authorization_ref)
            if hold is None:
                result = GatewayResult(False, authorization_ref, "unknown_authorization")
            elif reason := _hold_refusal(hold, amount_minor, currency):
                result = GatewayResult(False, authorization_ref, reason)
            else:
                hold.reversed_minor += amount_minor
                await self._released(books, hold.token, amount_minor)
                result = GatewayResult(True, authorization_ref, amount_minor=amount_minor)
            return result, amount_minor, currency

        return await self._operate("reverse", key, decide)

    async def void(self, key: str, authorization_ref: str) -> GatewayResult:
        async def decide(books: Session) -> Decided:
            hold = await books.hold(authorization_ref)
            if hold is None:
                return GatewayResult(False, authorization_ref, "unknown_authorization"), 0, ""
            amount = hold.remaining_minor
            if not hold.voided:
                hold.voided = True
                await self._released(books, hold.token, amount)
            return (
                GatewayResult(True, authorization_ref, amount_minor=amount),
                amount,
                hold.currency,
            )

        return await self._operate("void", key, decide)

    async def lookup(self, key: str) -> GatewayResult | None:
        await self._enter("lookup", key)
        async with self.state.session() as books:
            return await books.result(key)


@dataclass
class SimulatedGiftCardGateway(SimulatedGateway):
    """An in-memory gift card gateway: each token holds a balance.

    Token "gc_<minor units>" (optionally followed by "_<anything>", to make it unique) starts
    with that balance; an authorization holds at most the balance (all of it only when asked
    with allow_partial, else it is declined "insufficient_funds"), and voids, reversals and
    refunds put money back. Other tokens are declined "unknown_gift_card".
    """

    async def balance_of(self, token: str) -> int | None:
        """The token's balance now; None for a token that is not a gift card."""
        async with self.state.session() as books:
            return await self._balance(books, token)

    async def _balance(self, books: Session, token: str) -> int | None:
        balance = await books.balance(token)
        if balance is None:
            balance = _gift_card_value(token)
        return balance

    async def _hold_for(
        self, books: Session, token: str, amount_minor: int, allow_partial: bool
    ) -> tuple[int, str]:
        balance = await self._balance(books, token)
        if balance is None:
            return 0, "unknown_gift_card"
        if balance <= 0 or (balance < amount_minor and not allow_partial):
            return 0, "insufficient_funds"
        held = min(balance, amount_minor)
        books.keep_balance(token, balance - held)
        return held, ""

    async def _released(self, books: Session, token: str, amount_minor: int) -> None:
        balance = await self._balance(books, token)
        if balance is not None:
            books.keep_balance(token, balance + amount_minor)


def _hold_refusal(hold: Hold, amount_minor: int, currency: str) -> str:
    """Why `amount_minor` cannot be drawn from the hold (captured or reversed); "" if it can."""
    if hold.voided:
        return "authorization_voided"
    if currency != hold.currency:
        return "currency_mismatch"
    if amount_minor <= 0 or amount_minor > hold.remaining_minor:
        return "amount_exceeds_authorization"
    return ""


def _gift_card_value(token: str) -> int | None:
    if not token.startswith(GIFT_CARD_PREFIX):
        return None
    digits = token[len(GIFT_CARD_PREFIX) :].split("_", 1)[0]
    return int(digits) if digits.isdigit() else None
