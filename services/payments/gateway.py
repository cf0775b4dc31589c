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
import contextlib
import dataclasses
import json
import random
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

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


V = TypeVar("V")

SQL_STATE_DDL = """
CREATE TABLE IF NOT EXISTS entries (
    gateway text NOT NULL,
    kind    text NOT NULL,
    id      text NOT NULL,
    value   text NOT NULL,
    PRIMARY KEY (gateway, kind, id)
)"""
SQL_STATE_GET = "SELECT value FROM entries WHERE gateway = ? AND kind = ? AND id = ?"
SQL_STATE_IDS = "SELECT id FROM entries WHERE gateway = ? AND kind = ?"
SQL_STATE_PUT = "INSERT OR REPLACE INTO entries (gateway, kind, id, value) VALUES (?, ?, ?, ?)"


class _StoredTable(MutableMapping[str, V], Generic[V]):
    """One kind of a simulated processor's state (results, holds, …) in its SQLite file, for
    one operation: what it reads is kept, and all of it written back when the operation ends
    (operations change holds and charges in place)."""

    def __init__(
        self, conn: sqlite3.Connection, gateway: str, kind: str, load: Callable[[Any], V]
    ) -> None:
        self._conn = conn
        self._key = (gateway, kind)
        self._load = load
        self._read: dict[str, V] = {}

    def __getitem__(self, id_: str) -> V:
        if id_ not in self._read:
            row = self._conn.execute(SQL_STATE_GET, (*self._key, id_)).fetchone()
            if row is None:
                raise KeyError(id_)
            self._read[id_] = self._load(json.loads(row[0]))
        return self._read[id_]

    def __setitem__(self, id_: str, value: V) -> None:
        self._read[id_] = value

    def __delitem__(self, id_: str) -> None:
        raise NotImplementedError("a processor forgets nothing")

    def __iter__(self) -> Iterator[str]:
        stored = [row[0] for row in self._conn.execute(SQL_STATE_IDS, self._key)]
        return iter(dict.fromkeys([*stored, *self._read]))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def write_back(self) -> None:
        for id_, value in self._read.items():
            plain: Any = value
            if dataclasses.is_dataclass(plain) and not isinstance(plain, type):
                plain = dataclasses.asdict(plain)
            self._conn.execute(SQL_STATE_PUT, (*self._key, id_, json.dumps(plain)))


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

    With `state_path` naming a SQLite file, the processor's state (results by key,
    authorizations, captures, balances) lives there instead of in memory: every payments
    replica using the file talks to one processor, as with a real one, and a restarted
    process finds its authorizations. Each operation is one SQLite transaction, taken with
    the file's write lock, so replicas never interleave inside an operation.
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
    # A SQLite file holding the processor's state, shared by every process using it; "" keeps
    # it in this process's memory.
    state_path: str = ""
    _results: MutableMapping[str, GatewayResult] = field(default_factory=dict)
    _holds: MutableMapping[str, _Hold] = field(default_factory=dict)
    _charges: MutableMapping[str, _Charge] = field(default_factory=dict)
    _conn: sqlite3.Connection | None = field(default=None, init=False, repr=False)

    @contextlib.contextmanager
    def _processor(self) -> Iterator[None]:
        """One operation on the processor's state: with a state file, a transaction on it whose
        tables stand in for the in-memory ones while the (synchronous) operation runs."""
        if not self.state_path:
            yield
            return
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        tables = self._stored_tables(conn)
        try:
            yield
        finally:
            # Committed even when the operation raised: an effect performed stays performed
            # (GatewayTimeout comes after the charge), as in memory.
            for table in tables:
                table.write_back()
            conn.execute("COMMIT")

    def _stored_tables(self, conn: sqlite3.Connection) -> list[_StoredTable[Any]]:
        gateway = type(self).__name__
        self._results = _StoredTable(conn, gateway, "results", lambda v: GatewayResult(**v))
        self._holds = _StoredTable(conn, gateway, "holds", lambda v: _Hold(**v))
        self._charges = _StoredTable(conn, gateway, "charges", lambda v: _Charge(**v))
        return [self._results, self._holds, self._charges]

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self.state_path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are the explicit BEGIN IMMEDIATE … COMMIT above.
            conn = sqlite3.connect(self.state_path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(SQL_STATE_DDL)
            self._conn = conn
        return self._conn

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
        operation = GatewayOperation(kind, key, result.reference, amount_minor, currency, result)
        self.operations.append(operation)
        if self.operation_log:
            # One write of a whole line to a file opened for appending: lines from the card
            # and gift card gateways (one process, one event loop) never interleave, nor do
            # those of several processes sharing a state file (written under its lock).
            with open(self.operation_log, "a", encoding="utf-8") as log_file:
                log_file.write(operation_log_line(operation))
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

    # Hooks a simulated instrument overrides: how much a hold gets, and money coming back.
    def _hold_for(self, token: str, amount_minor: int, allow_partial: bool) -> tuple[int, str]:
        """(amount held, decline reason); held 0 means declined."""
        if token == DECLINE_TOKEN:
            return 0, "card_declined"
        if self.decline_above_minor and amount_minor > self.decline_above_minor:
            return 0, "amount_exceeds_limit"
        return amount_minor, ""

    def _released(self, token: str, amount_minor: int) -> None:
        """`amount_minor` goes back to the instrument (void, reversal or refund)."""

    async def authorize(
        self, key: str, token: str, amount_minor: int, currency: str, *, allow_partial: bool = False
    ) -> GatewayResult:
        await self._enter("authorize", key)
        with self._processor():
            if key in self._results:
                return self._results[key]
            reference = f"sim_auth_{uuid.uuid4().hex[:16]}"
            held, reason = self._hold_for(token, amount_minor, allow_partial)
            if held <= 0:
                result = GatewayResult(False, reference, reason or "declined")
            else:
                result = GatewayResult(True, reference, amount_minor=held)
                self._holds[reference] = _Hold(token, held, currency)
            return self._perform("authorize", key, amount_minor, currency, result)

    async def capture(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("capture", key)
        with self._processor():
            if key in self._results:
                return self._results[key]
            reference = f"sim_cap_{uuid.uuid4().hex[:16]}"
            hold = self._holds.get(authorization_ref)
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
                self._charges[reference] = _Charge(hold.token, amount_minor, currency)
                result = GatewayResult(True, reference, amount_minor=amount_minor)
            return self._perform("capture", key, amount_minor, currency, result)

    async def refund(
        self, key: str, capture_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("refund", key)
        with self._processor():
            if key in self._results:
                return self._results[key]
            reference = f"sim_ref_{uuid.uuid4().hex[:16]}"
            charge = self._charges.get(capture_ref)
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
                self._released(charge.token, amount_minor)
                result = GatewayResult(True, reference, amount_minor=amount_minor)
            return self._perform("refund", key, amount_minor, currency, result)

    async def reverse(
        self, key: str, authorization_ref: str, amount_minor: int, currency: str
    ) -> GatewayResult:
        await self._enter("reverse", key)
        with self._processor():
            if key in self._results:
                return self._results[key]
            hold = self._holds.get(authorization_ref)
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
                self._released(hold.token, amount_minor)
                result = GatewayResult(True, authorization_ref, amount_minor=amount_minor)
            return self._perform("reverse", key, amount_minor, currency, result)

    async def void(self, key: str, authorization_ref: str) -> GatewayResult:
        await self._enter("void", key)
        with self._processor():
            if key in self._results:
                return self._results[key]
            hold = self._holds.get(authorization_ref)
            if hold is None:
                result = GatewayResult(False, authorization_ref, "unknown_authorization")
                return self._perform("void", key, 0, "", result)
            amount = hold.remaining_minor
            if not hold.voided:
                hold.voided = True
                self._released(hold.token, amount)
            result = GatewayResult(True, authorization_ref, amount_minor=amount)
            return self._perform("void", key, amount, hold.currency, result)

    async def lookup(self, key: str) -> GatewayResult | None:
        await self._enter("lookup", key)
        with self._processor():
            return self._results.get(key)


@dataclass
class SimulatedGiftCardGateway(SimulatedGateway):
    """An in-memory gift card gateway: each token holds a balance.

    Token "gc_<minor units>" (optionally followed by "_<anything>", to make it unique) starts
    with that balance; an authorization holds at most the balance (all of it only when asked
    with allow_partial, else it is declined "insufficient_funds"), and voids, reversals and
    refunds put money back. Other tokens are declined "unknown_gift_card".
    """

    balances: MutableMapping[str, int] = field(default_factory=dict)

    def _stored_tables(self, conn: sqlite3.Connection) -> list[_StoredTable[Any]]:
        self.balances = _StoredTable(conn, type(self).__name__, "balances", int)
        return [*super()._stored_tables(conn), self.balances]

    def balance_of(self, token: str) -> int | None:
        """The token's balance now; None for a token that is not a gift card."""
        if token not in self.balances:
            start = _gift_card_value(token)
            if start is None:
                return None
            self.balances[token] = start
        return self.balances[token]

    def _hold_for(self, token: str, amount_minor: int, allow_partial: bool) -> tuple[int, str]:
        balance = self.balance_of(token)
        if balance is None:
            return 0, "unknown_gift_card"
        if balance <= 0 or (balance < amount_minor and not allow_partial):
            return 0, "insufficient_funds"
        held = min(balance, amount_minor)
        self.balances[token] = balance - held
        return held, ""

    def _released(self, token: str, amount_minor: int) -> None:
        if self.balance_of(token) is not None:
            self.balances[token] += amount_minor


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

    def adapters(self) -> list[PaymentGateway]:
        """Every distinct adapter, default first."""
        out: list[PaymentGateway] = [self.default]
        for gateway in self.by_method_type.values():
            if all(gateway is not seen for seen in out):
                out.append(gateway)
        return out
