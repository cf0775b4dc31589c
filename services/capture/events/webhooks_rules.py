"""Webhook rules without I/O: what a subscription may name (url, event types, secret), which
events it receives, and when a failed delivery is tried again.

Pure: standard library and oms_platform.errors only (the servicer and the delivery loop call
these; unit tests call them without a database).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from oms_platform.errors import FieldViolation, InvalidArgument
from services.capture.domain import events as vocabulary

# A url longer than this is refused (browsers and proxies cut around 2 KB; no receiver needs more).
MAX_URL_LENGTH = 2048
# Standard Webhooks secrets: "whsec_" + base64 of the key; oms makes 32-byte keys.
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
NEW_SECRET_BYTES = 32
# http:// is allowed only to these host names (and loopback addresses): a receiver on the same
# machine, in development; anything that crosses a network gets https.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def url_violations(url: str, field: str = "url") -> list[FieldViolation]:
    """Why `url` cannot receive webhooks: https:// (http:// only to a loopback host), a host,
    no credentials, at most MAX_URL_LENGTH characters."""
    if not url:
        return [FieldViolation(field, "is required")]
    if len(url) > MAX_URL_LENGTH:
        return [FieldViolation(field, f"is longer than {MAX_URL_LENGTH} characters")]
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return [FieldViolation(field, "may not contain spaces or control characters")]
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        return [FieldViolation(field, "is not a valid URL")]
    if parts.scheme not in ("https", "http"):
        return [FieldViolation(field, "must be an https:// URL (http:// only to a loopback host)")]
    if not host:
        return [FieldViolation(field, "has no host")]
    if parts.username is not None or parts.password is not None:
        return [FieldViolation(field, "may not carry credentials; receivers verify the signature")]
    if parts.scheme == "http" and not is_loopback(host):
        return [FieldViolation(field, f"http:// is allowed only to a loopback host, not {host!r}")]
    return []


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def types_violations(types: Sequence[str], field: str = "types") -> list[FieldViolation]:
    """Why some of `types` cannot be subscribed to: each is a known event type of the log or a
    known family followed by ".*" (the rule SubscribeEvents' filter follows too), or none for
    every type."""
    problems = ((i, vocabulary.filter_problem(name)) for i, name in enumerate(types))
    return [FieldViolation(f"{field}[{i}]", problem) for i, problem in problems if problem]


def normalized_types(types: Sequence[str]) -> list[str]:
    """The types as stored: each once, in the order first given."""
    return list(dict.fromkeys(types))


def matches(types: Sequence[str], event_type: str) -> bool:
    """Whether a subscription to `types` (empty: every type) receives an `event_type` event."""
    if not types:
        return True
    return event_type in types or f"{event_type.split('.', 1)[0]}.*" in types


def secret_violations(secret: str, field: str = "secret") -> list[FieldViolation]:
    """Why `secret` is not a Standard Webhooks secret of 24 to 64 bytes (an empty one is fine:
    oms makes one)."""
    if not secret:
        return []
    rule = (
        f"must be '{SECRET_PREFIX}' followed by the base64 of {MIN_SECRET_BYTES} to "
        f"{MAX_SECRET_BYTES} random bytes"
    )
    if not secret.startswith(SECRET_PREFIX):
        return [FieldViolation(field, rule)]
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return [FieldViolation(field, rule)]
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return [FieldViolation(field, f"{rule} (it holds {len(key)})")]
    return []


def new_secret() -> str:
    """A fresh signing secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def check_subscription(url: str, types: Sequence[str], secret: str) -> None:
    """Raise InvalidArgument naming every bad field of a new subscription."""
    found = url_violations(url) + types_violations(types) + secret_violations(secret)
    if found:
        raise InvalidArgument(found)


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery is tried again: `first_seconds` after the first failure, doubling
    up to `cap_seconds`, each delay jittered (so receivers coming back are not hit by every
    delivery at once); after `period_seconds` of failures since its first attempt the delivery
    is dead."""

    first_seconds: float
    cap_seconds: float
    period_seconds: float

    def delay(self, failures: int, draw: float | None = None) -> float:
        """Seconds before the next attempt after `failures` failed ones (1: the first failed);
        `draw` in [0, 1) picks the jitter (random when None): between half and all of the
        exponential delay."""
        exponent = min(max(failures - 1, 0), 60)
        full = min(self.cap_seconds, self.first_seconds * 2.0**exponent)
        share = random.random() if draw is None else draw  # jitter, not security
        return full * (0.5 + 0.5 * share)

    def is_dead(self, seconds_since_first_attempt: float) -> bool:
        """Whether a delivery that has failed for this long is given up on."""
        return seconds_since_first_attempt >= self.period_seconds
