"""Payment gateway adapters: the port every gateway implements, and a simulated gateway.

A gateway call either answers (a GatewayResult, approved or not) or fails in transit
(GatewayUnavailable before anything happened, GatewayTimeout when we cannot know). Every
call carries an idempotency key, and the gateway performs one effect per key, so a call
whose outcome is unknown is resolved by `lookup(key)` and, failing that, retried with the
same key.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

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

    # Approved (authorize) or succeeded (capture, refund, void).
    succeeded: bool
    # The gateway's reference for the operation (an authorization or capture ref).
    reference: str
    # Why it was declined or failed; "" on success.
    reason: str = ""

    @property
    def approved(self) -> bool:
        """Authorizations speak of approval; same flag."""
        return self.succeeded


class PaymentGateway(Protocol):
    """The port a payment gateway adapter implements. One effect per idempotency key."""

    async def authorize(
        self, key: str, token: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        """Hold `amount_minor` on the instrument `token`."""
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


# ---- simulated gateway ---------------------------------------------------------------------

DECLINE_TOKEN = "tok_decline"
FAIL_CAPTURE_TOKEN = "tok_fail_capture"


@dataclass(frozen=True)
class GatewayOperation:
    """One operation the simulated gateway performed (an effect), for tests to inspect."""

    kind: str  # "authorize", "capture", "refund" or "void"
    key: str
    reference: str
    amount_minor: int
    currency: str
    result: GatewayResult


@dataclass
class _Hold:
    token: str
    amount_minor: int
    currency: str
    captured_minor: int = 0
    voided: bool = False


@dataclass
class _Charge:
    amount_minor: int
    currency: str
    refunded_minor: int = 0


@dataclass
class SimulatedGateway:
    """An in-memory gateway for development and tests, implementing PaymentGateway.

    Behaviour: authorizations above `decline_above_minor` (when > 0) are declined
    "amount_exceeds_limit"; token "tok_decline" is declined "card_declined"; captures on an
    authorization of token "tok_fail_capture" fail "processor_unavailable". With probability
    `transient_failure_rate` a call raises GatewayUnavailable before doing anything. While
    `timeout_after_charge` is set, an operation is performed and then GatewayTimeout is raised.
    The same key twice is one effect: the second call returns the first result.
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
    _results: dict[str, GatewayResult] = field(default_factory=dict)
    _holds: dict[str, _Hold] = field(default_factory=dict)
    _charges: dict[str, _Charge] = field(default_factory=dict)

    async def _enter(self, method: str, key: str) -> None:
        self.calls.append((method, key))
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.transient_failure_rate and self.rng.random() < self.transient_failure_rate:
            raise GatewayUnavailable(f"simulated transient failure on {method} {key!r}")

    def _perform(
        self, kind: str, key: str, amount_minor: int, currency: str, result: GatewayResult
    ) -> GatewayResult:
        self._results[key] = result
        self.operations.append(
            GatewayOperation(kind, key, result.reference, amount_minor, currency, result)
        )
        if self.timeout_after_charge:
            raise GatewayTimeout(f"simulated timeout after {kind} {key!r}")
        return result

    def operations_of(self, kind: str, *, succeeded: bool | None = None) -> list[GatewayOperation]:
        """The operations of one kind performed so far, optionally only (un)successful ones."""
        return [
            op
            for op in self.operations
            if op.kind == kind and (succeeded is None or op.result.succeeded == succeeded)
        ]

    async def authorize(
        self, key: str, token: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("authorize", key)
        if key in self._results:
            return self._results[key]
        reference = f"sim_auth_{uuid.uuid4().hex[:16]}"
        if token == DECLINE_TOKEN:
            result = GatewayResult(False, reference, "card_declined")
        elif self.decline_above_minor and amount_minor > self.decline_above_minor:
            result = GatewayResult(False, reference, "amount_exceeds_limit")
        else:
            result = GatewayResult(True, reference)
            self._holds[reference] = _Hold(token, amount_minor, currency)
        return self._perform("authorize", key, amount_minor, currency, result)

    async def capture(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("capture", key)
        if key in self._results:
            return self._results[key]
        reference = f"sim_cap_{uuid.uuid4().hex[:16]}"
        hold = self._holds.get(authorization_ref)
        reason = ""
        if hold is None:
            reason = "unknown_authorization"
        elif hold.token == FAIL_CAPTURE_TOKEN:
            reason = "processor_unavailable"
        elif hold.voided:
            reason = "authorization_voided"
        elif currency != hold.currency:
            reason = "currency_mismatch"
        elif amount_minor <= 0 or amount_minor > hold.amount_minor - hold.captured_minor:
            reason = "amount_exceeds_authorization"
        if reason or hold is None:
            result = GatewayResult(False, reference, reason)
        else:
            hold.captured_minor += amount_minor
            self._charges[reference] = _Charge(amount_minor, currency)
            result = GatewayResult(True, reference)
        return self._perform("capture", key, amount_minor, currency, result)

    async def refund(
        self, key: str, capture_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("refund", key)
        if key in self._results:
            return self._results[key]
        reference = f"sim_ref_{uuid.uuid4().hex[:16]}"
        charge = self._charges.get(capture_ref)
        if charge is None:
            result = GatewayResult(False, reference, "unknown_capture")
        elif currency != charge.currency:
            result = GatewayResult(False, reference, "currency_mismatch")
        elif amount_minor <= 0 or amount_minor > charge.amount_minor - charge.refunded_minor:
            result = GatewayResult(False, reference, "amount_exceeds_capture")
        else:
            charge.refunded_minor += amount_minor
            result = GatewayResult(True, reference)
        return self._perform("refund", key, amount_minor, currency, result)

    async def void(self, key: str, authorization_ref: str) -> GatewayResult:
        await self._enter("void", key)
        if key in self._results:
            return self._results[key]
        hold = self._holds.get(authorization_ref)
        if hold is None:
            result = GatewayResult(False, authorization_ref, "unknown_authorization")
        else:
            hold.voided = True
            result = GatewayResult(True, authorization_ref)
        amount = hold.amount_minor - hold.captured_minor if hold else 0
        return self._perform("void", key, amount, hold.currency if hold else "", result)

    async def lookup(self, key: str) -> GatewayResult | None:
        await self._enter("lookup", key)
        return self._results.get(key)
