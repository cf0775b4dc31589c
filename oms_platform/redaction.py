"""Personal data out of places it does not belong: masking payment tokens and redacting
emails, phone numbers, names and postal addresses from logs and recorded step inputs.

Pure and deterministic (standard library only), so the order workflow can call it on what it
records and every process can run it on what it logs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

# What a redacted value becomes: says something was there, never what.
REDACTED = "[redacted]"
EMAIL_REDACTED = "[email]"
PHONE_REDACTED = "[phone]"
# Masked tokens start with this, so a masked token is never mistaken for a usable one.
MASK_PREFIX = "…"

# Keys whose value is a payment token wherever they appear.
TOKEN_KEYS = frozenset({"token", "payment_token", "card_token"})
# Keys whose value is personal data wherever they appear.
PERSONAL_KEYS = frozenset(
    {
        "email",
        "email_normalized",
        "phone",
        "recipient_name",
        "shopper_name",
        "line1",
        "line2",
        "address_line1",
        "address_line2",
        "city",
        "postal_code",
    }
)
# Keys whose value, a mapping, is an address: everything in it but the country is personal.
ADDRESS_KEYS = frozenset({"address", "billing_address", "ship_to", "shipping_address"})
# Inside a mapping that describes a person or an address (it has one of PERSONAL_KEYS), these
# name the person too; elsewhere `name` is a product's or a location's and stays.
NAME_KEYS = frozenset({"name", "company", "region"})
# An address keeps its country: coarse, and what tax and reconciliation may need.
KEPT_IN_ADDRESS = frozenset({"country_code"})

# Parts bounded as addresses bound them (64 before the @, 63 per label), so a long run of
# letters costs linear time, not quadratic (a 100 KB field once took 10 s).
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
# International numbers (a leading +) and North American ones written with separators;
# plain digit runs are left alone (they are amounts, quantities and ids far more often).
_PHONE = re.compile(r"(?<![\w+])(?:\+\d[\d ().-]{6,18}\d|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4})(?![\w])")
# Tokens of the gateways oms knows, wherever they are spelled out in text. Not `card_…`:
# that is how gateways spell decline codes (card_declined), which agents need to read.
_TOKEN = re.compile(r"\b(?:tok|gc|pm)_[A-Za-z0-9_]+")


def mask_token(token: str) -> str:
    """A payment token as readers see it: its last four characters (`…4242`), no more."""
    if not token or token.startswith(MASK_PREFIX):
        return token
    return MASK_PREFIX + token[-4:] if len(token) > 4 else MASK_PREFIX


def redact_text(text: str) -> str:
    """Free text with emails, phone numbers and payment tokens masked."""
    if "@" in text:
        text = _EMAIL.sub(EMAIL_REDACTED, text)
    text = _TOKEN.sub(lambda m: mask_token(m.group(0)), text)
    return _PHONE.sub(PHONE_REDACTED, text)


def _is_personal_record(value: Mapping[str, Any]) -> bool:
    return any(isinstance(k, str) and k.lower() in PERSONAL_KEYS for k in value)


def _redact_value(key: str, value: Any, personal_record: bool) -> Any:
    lowered = key.lower()
    if lowered in TOKEN_KEYS and isinstance(value, str):
        return mask_token(value)
    if lowered in ADDRESS_KEYS and isinstance(value, Mapping):
        return {k: (redact(v) if k in KEPT_IN_ADDRESS else _blank(v)) for k, v in value.items()}
    if lowered in PERSONAL_KEYS or (personal_record and lowered in NAME_KEYS):
        return _blank(value)
    return redact(value)


def _blank(value: Any) -> Any:
    # Empty stays empty, so a redacted record still tells "not given" from "given".
    if value in ("", None):
        return value
    return REDACTED


def redact(value: Any) -> Any:
    """A copy of a JSON-like value (mappings, lists, strings, numbers; dataclasses become
    mappings) with personal data and payment tokens masked, by key and in free text, at any
    depth."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        personal = _is_personal_record(value)
        return {
            k: (_redact_value(k, v, personal) if isinstance(k, str) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact(dataclasses.asdict(value))
    return value


def redact_json(text: str) -> str:
    """A JSON document redacted as `redact` does (keys sorted); text that is not JSON is
    redacted as free text. Redacting twice changes nothing more."""
    if not text:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return redact_text(text)
    return json.dumps(redact(data), sort_keys=True, ensure_ascii=False)


# Identifying text shorter than this is not looked for in free text: it would match
# everywhere (initials, a two-letter region) and identifies no one alone.
MIN_IDENTIFYING_LENGTH = 3


def identifying_terms(values: Sequence[str]) -> list[str]:
    """The values worth looking for in free text: stripped, long enough, longest first (so a
    full name goes before the surname inside it), without repeats."""
    seen: dict[str, str] = {}
    for value in values:
        term = value.strip()
        if len(term) >= MIN_IDENTIFYING_LENGTH:
            seen.setdefault(term.lower(), term)
    return sorted(seen.values(), key=lambda t: (-len(t), t))


def erase_text(text: str, terms: Sequence[str]) -> str:
    """Free text with every identifying term removed (case-insensitively) and then emails,
    phones and tokens redacted; used when a shopper is erased."""
    if not text:
        return text
    for term in identifying_terms(terms):
        text = re.sub(re.escape(term), REDACTED, text, flags=re.IGNORECASE)
    return redact_text(text)


def erase(value: Any, terms: Sequence[str]) -> Any:
    """A JSON-like value redacted as `redact` does, with identifying terms removed from every
    string in it too."""
    redacted = redact(value)
    if isinstance(redacted, str):
        return erase_text(redacted, terms)
    if isinstance(redacted, Mapping):
        return {k: erase(v, terms) for k, v in redacted.items()}
    if isinstance(redacted, list):
        return [erase(v, terms) for v in redacted]
    return redacted
