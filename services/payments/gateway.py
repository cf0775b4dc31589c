"""Payment gateway adapters: the port every gateway implements, the simulated card and gift
card gateways that implement it, and `Gateways`, the adapter of each payment method type.

A gateway call either answers (a GatewayResult, approved or not) or fails in transit
(GatewayUnavailable before anything happened, GatewayTimeout when we cannot know). Every
call carries an idempotency key, and the gateway performs one effect per key, so a call
whose outcome is unknown is resolved by `lookup(key)` and, failing that, retried with the
same key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from oms_platform import metrics
from services.payments.sim_store import MemoryState, Session, State

log = structlog.get_logger("oms.payments.gateway")


class GatewayError(Exception):
    """The gateway could not be asked or did not answer; the outcome may be unknown."""


class GatewayUnavailable(GatewayError):
    """A transient failure: the gateway did nothing; retrying with the same key is safe."""


class GatewayTimeout(GatewayError):
    """No answer in time: the operation may or may not have happened; look it up by key."""


@dataclass(frozen=True)
class GatewayResult:
    """The gateway's answer to one operation."""

    # Approved (authorize) or succeeded (capture, refund, reverse, void).
    succeeded: bool
    # The gateway's reference for the operation (an authorization or capture ref).
    reference: str
    # Why it was declined or failed; "" on success.
    reason: str = ""
    # The amount the operation moved; for an authorization asked with allow_partial, the
    # amount actually held (it may be less than asked). 0 when nothing moved.
    amount_minor: int = 0

    @property
    def approved(self) -> bool:
        """Authorizations speak of approval; same flag."""
        return self.succeeded


class PaymentGateway(Protocol):
    """The port a payment gateway adapter implements. One effect per idempotency key."""

    async def authorize(
        self, key: str, token: str, amount_minor: int, currency: str, *, allow_partial: bool = False
    ) -> GatewayResult:
        """Hold `amount_minor` on the instrument `token`; with `allow_partial`, hold what the
        instrument has (a gift card's balance) and say how much in `amount_minor`."""
        ...

    async def capture(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        """Take `amount_minor` of an authorization's hold."""
        ...

    async def refund(
        self, key: str, capture_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        """Give back `amount_minor` of a capture."""
        ...

    async def reverse(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        """Release `amount_minor` of an authorization's hold (a partial reversal)."""
        ...

    async def void(self, key: str, authorization_ref: str) -> GatewayResult:
        """Release what remains of an authorization's hold."""
        ...

    async def lookup(self, key: str) -> GatewayResult | None:
        """What happened to the operation with this key; None if the gateway never did it."""
        ...


# Retries within one call for an outcome the gateway did not give us.
RESOLVE_ATTEMPTS = 3
RESOLVE_BACKOFF_SECONDS = 0.05


async def call_resolved(
    gateway: PaymentGateway,
    key: str,
    operation: Callable[[], Awaitable[GatewayResult]],
    *,
    attempts: int = RESOLVE_ATTEMPTS,
    backoff_seconds: float = RESOLVE_BACKOFF_SECONDS,
) -> GatewayResult:
    """Run `operation` (a gateway call made with `key`) until its outcome is known.

    A timeout or transient failure is first resolved by `lookup(key)` (the operation may have
    happened); only if the gateway knows nothing of the key is it retried, with the same key.
    Raises GatewayUnavailable when the outcome is still unknown after `attempts`, so the RPC
    answers UNAVAILABLE and its caller retries with the same key.
    """
    last: GatewayError | None = None
    for attempt in range(attempts):
        try:
            return await operation()
        except GatewayError as error:
            last = error
            log.warning("gateway call failed", key=key, error=type(error).__name__, attempt=attempt)
        try:
            found = await gateway.lookup(key)
        except GatewayError as error:
            last = error
            found = None
        if found is not None:
            return found
        if attempt + 1 < attempts:
            await asyncio.sleep(backoff_seconds * (attempt + 1))
    raise GatewayUnavailable(
        f"gateway outcome for {key!r} unknown after {attempts} attempts"
    ) from last


# ---- simulated gateways --------------------------------------------------------------------

DECLINE_TOKEN = "tok_decline"
FAIL_CAPTURE_TOKEN = "tok_fail_capture"
# The processor is down for the first capture on such a card, then recovers.
FAIL_FIRST_CAPTURE_TOKEN = "tok_fail_first_capture"
FAIL_REFUND_TOKEN = "tok_fail_refund"
GIFT_CARD_PREFIX = "gc_"


@dataclass(frozen=True)
class GatewayOperation:
    """One operation the simulated gateway performed (an effect), for tests to inspect."""

    kind: str  # "authorize", "capture", "refund", "reverse" or "void"
    key: str
    reference: str
    amount_minor: int
    currency: str
    result: GatewayResult


def operation_log_line(operation: GatewayOperation) -> str:
    """One line of a simulated gateway's operation log (JSON, newline-terminated)."""
    return json.dumps(dataclasses.asdict(operation), sort_keys=True) + "\n"


def read_operation_log(path: str | Path) -> list[GatewayOperation]:
    """Every operation a simulated gateway appended to its operation log, in order."""
    operations: list[GatewayOperation] = []
    for line in Path(path).read_text().splitlines():
        fields = json.loads(line)
        result = GatewayResult(**fields.pop("result"))
        operations.append(GatewayOperation(**fields, result=result))
    return operations


@dataclass
class _Hold:
    token: str
    amount_minor: int
    currency: str
    captured_minor: int = 0
    reversed_minor: int = 0
    voided: bool = False
    capture_attempts: int = 0

    @property
    def remaining_minor(self) -> int:
        return 0 if self.voided else self.amount_minor - self.captured_minor - self.reversed_minor


@dataclass
class _Charge:
    token: str
    amount_minor: int
    currency: str
    refunded_minor: int = 0


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

    async def authorize(
        self, key: str, token: str, amount_minor: int, currency: str, *, allow_partial: bool = False
    ) -> GatewayResult:
        await self._enter("authorize", key)
        async with self.state.session() as books:
            known = await books.result(key)
            if known is not None:
                return known
            reference = f"sim_auth_{uuid.uuid4().hex[:16]}"
            held, reason = await self._hold_for(books, token, amount_minor, allow_partial)
            if held <= 0:
                result = GatewayResult(False, reference, reason or "declined")
            else:
                result = GatewayResult(True, reference, amount_minor=held)
                books.keep_hold(reference, _Hold(token, held, currency))
            performed = self._perform(books, "authorize", key, amount_minor, currency, result)
        return self._done(performed)

    async def capture(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("capture", key)
        async with self.state.session() as books:
            known = await books.result(key)
            if known is not None:
                return known
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
            elif hold.voided:
                reason = "authorization_voided"
            elif currency != hold.currency:
                reason = "currency_mismatch"
            elif amount_minor <= 0 or amount_minor > hold.remaining_minor:
                reason = "amount_exceeds_authorization"
            if reason or hold is None:
                result = GatewayResult(False, reference, reason)
            else:
                hold.captured_minor += amount_minor
                books.keep_charge(reference, _Charge(hold.token, amount_minor, currency))
                result = GatewayResult(True, reference, amount_minor=amount_minor)
            performed = self._perform(books, "capture", key, amount_minor, currency, result)
        return self._done(performed)

    async def refund(
        self, key: str, capture_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("refund", key)
        async with self.state.session() as books:
            known = await books.result(key)
            if known is not None:
                return known
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
            performed = self._perform(books, "refund", key, amount_minor, currency, result)
        return self._done(performed)

    async def reverse(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("reverse", key)
        async with self.state.session() as books:
            known = await books.result(key)
            if known is not None:
                return known
            hold = await books.hold(authorization_ref)
            if hold is None:
                result = GatewayResult(False, authorization_ref, "unknown_authorization")
            elif hold.voided:
                result = GatewayResult(False, authorization_ref, "authorization_voided")
            elif currency != hold.currency:
                result = GatewayResult(False, authorization_ref, "currency_mismatch")
            elif amount_minor <= 0 or amount_minor > hold.remaining_minor:
                result = GatewayResult(False, authorization_ref, "amount_exceeds_authorization")
            else:
                hold.reversed_minor += amount_minor
                await self._released(books, hold.token, amount_minor)
                result = GatewayResult(True, authorization_ref, amount_minor=amount_minor)
            performed = self._perform(books, "reverse", key, amount_minor, currency, result)
        return self._done(performed)

    async def void(self, key: str, authorization_ref: str) -> GatewayResult:
        await self._enter("void", key)
        async with self.state.session() as books:
            known = await books.result(key)
            if known is not None:
                return known
            hold = await books.hold(authorization_ref)
            if hold is None:
                result = GatewayResult(False, authorization_ref, "unknown_authorization")
                performed = self._perform(books, "void", key, 0, "", result)
            else:
                amount = hold.remaining_minor
                if not hold.voided:
                    hold.voided = True
                    await self._released(books, hold.token, amount)
                result = GatewayResult(True, authorization_ref, amount_minor=amount)
                performed = self._perform(books, "void", key, amount, hold.currency, result)
        return self._done(performed)

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


def _gift_card_value(token: str) -> int | None:
    if not token.startswith(GIFT_CARD_PREFIX):
        return None
    digits = token[len(GIFT_CARD_PREFIX) :].split("_", 1)[0]
    return int(digits) if digits.isdigit() else None


# ---- adapters per payment method type ------------------------------------------------------


@dataclass
class Gateways:
    """The gateway adapter of each payment method type; others use `default`."""

    default: PaymentGateway
    by_method_type: dict[str, PaymentGateway] = field(default_factory=dict)

    def for_method(self, payment_method_type: str) -> PaymentGateway:
        """The adapter that talks for instruments of this type."""
        return self.by_method_type.get(payment_method_type, self.default)

    def calling(self, payment_method_type: str) -> PaymentGateway:
        """The adapter for instruments of this type, its calls counted and timed."""
        return MeteredGateway(self.for_method(payment_method_type))

    def adapters(self) -> list[PaymentGateway]:
        """Every distinct adapter, default first."""
        out: list[PaymentGateway] = [self.default]
        for gateway in self.by_method_type.values():
            if all(gateway is not seen for seen in out):
                out.append(gateway)
        return out


class MeteredGateway:
    """A gateway adapter whose every call is counted by operation and outcome, and timed
    (`oms_gateway_calls_total`, `oms_gateway_call_duration_seconds`)."""

    def __init__(self, inner: PaymentGateway) -> None:
        self._inner = inner

    async def authorize(
        self, key: str, token: str, amount_minor: int, currency: str, *, allow_partial: bool = False
    ) -> GatewayResult:
        return await self._call(
            "authorize",
            self._inner.authorize(key, token, amount_minor, currency, allow_partial=allow_partial),
        )

    async def capture(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        return await self._call(
            "capture", self._inner.capture(key, authorization_ref, amount_minor, currency)
        )

    async def refund(
        self, key: str, capture_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        return await self._call(
            "refund", self._inner.refund(key, capture_ref, amount_minor, currency)
        )

    async def reverse(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        return await self._call(
            "reverse", self._inner.reverse(key, authorization_ref, amount_minor, currency)
        )

    async def void(self, key: str, authorization_ref: str) -> GatewayResult:
        return await self._call("void", self._inner.void(key, authorization_ref))

    async def lookup(self, key: str) -> GatewayResult | None:
        with metrics.gateway_call("lookup") as outcome:
            found = await self._inner.lookup(key)
            outcome("found" if found is not None else "unknown")
            return found

    async def _call(self, operation: str, call: Awaitable[GatewayResult]) -> GatewayResult:
        with metrics.gateway_call(operation) as outcome:
            try:
                result = await call
            except GatewayTimeout:
                outcome("timeout")
                raise
            except GatewayUnavailable:
                outcome("unavailable")
                raise
            refused = "declined" if operation == "authorize" else "failed"
            outcome("succeeded" if result.succeeded else refused)
            return result
