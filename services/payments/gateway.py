"""Payment gateway adapters: the port every gateway implements and `Gateways`, the adapter of
each payment method type (the simulated ones live in simulated.py).

A gateway call either answers (a GatewayResult, approved or not) or fails in transit
(GatewayUnavailable before anything happened, GatewayTimeout when we cannot know). Every
call carries an idempotency key, and the gateway performs one effect per key, so a call
whose outcome is unknown is resolved by `lookup(key)` and, failing that, retried with the
same key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from oms_platform import metrics

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
    # For an approved authorization, how long the processor keeps the hold (its capture
    # window), when it says; 0: it does not, and payments' authorization_hold_hours applies.
    hold_seconds: int = 0

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
