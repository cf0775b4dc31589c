"""What a request may carry: the caps every service enforces at its edge, and the checks that
turn a value past a cap into a field violation.

Standard library only, so domain modules use the same constants and checks as the edge.
The ceilings on numbers are chosen so every sum oms computes stays inside int64 (and
Postgres `bigint`): a line is at most MAX_LINE_AMOUNT_MINOR, an order at most MAX_LINES lines,
each with at most MAX_TAXES_PER_LINE taxes and MAX_DISCOUNTS_PER_LINE discounts of at most
MAX_AMOUNT_MINOR each, which bounds an order's total far below 2**63 (see `ORDER_AMOUNT_BOUND`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from oms_platform.errors import FieldViolation, InvalidArgument

# ---- strings (lengths in characters, i.e. Unicode code points) --------------------------------


@dataclass(frozen=True)
class TextRule:
    """How long a string may be and whether it may span lines (tab, CR and LF allowed)."""

    max_length: int
    multiline: bool = False


# Ids of records (orders, lines, fulfillment orders, invoices, locations...), SKUs, the
# channel's references and codes.
MAX_ID_LENGTH = 128
# Idempotency keys; those the workflow derives join an order id, a step and another id.
MAX_KEY_LENGTH = 512
# Page tokens: oms issues them (base64 of a small JSON object), well under this.
MAX_PAGE_TOKEN_LENGTH = 1024
# Names, emails, phones, address lines, carriers, tracking numbers: one line each.
MAX_NAME_LENGTH = 256
# Free text a person writes: reasons, notes, messages, descriptions (may span lines).
MAX_TEXT_LENGTH = 2048
# Payment instruments' tokens and references, as gateways issue them.
MAX_SECRET_LENGTH = 2048
# Machine-written documents, e.g. a failed step's input as JSON (servicing keeps at most
# 16 KiB of it; this outer bound only keeps a hostile request from costing memory).
MAX_DOCUMENT_LENGTH = 64 * 1024

ID = TextRule(MAX_ID_LENGTH)
KEY = TextRule(MAX_KEY_LENGTH)
PAGE_TOKEN = TextRule(MAX_PAGE_TOKEN_LENGTH)
NAME = TextRule(MAX_NAME_LENGTH)
TEXT = TextRule(MAX_TEXT_LENGTH, multiline=True)
SECRET = TextRule(MAX_SECRET_LENGTH)
DOCUMENT = TextRule(MAX_DOCUMENT_LENGTH, multiline=True)

# Free text may break lines; nothing else below U+0020 is text (NUL cannot even be stored).
_LINE_BREAKS = frozenset("\t\n\r")
# How much of a bad value an error message may quote.
ECHO_LENGTH = 64


def _is_control(ch: str) -> bool:
    # C0 controls, DEL and C1 controls: never printable, and NUL breaks Postgres text.
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


def text_violations(field: str, value: str, rule: TextRule) -> list[FieldViolation]:
    """Why `value` breaks `rule` (too long, or a control character), as field violations."""
    out: list[FieldViolation] = []
    if len(value) > rule.max_length:
        out.append(FieldViolation(field, f"must be at most {rule.max_length} characters"))
    for position, ch in enumerate(value):
        if _is_control(ch) and not (rule.multiline and ch in _LINE_BREAKS):
            allowed = " (tab and line breaks are allowed)" if rule.multiline else ""
            out.append(
                FieldViolation(
                    field,
                    f"must not contain control characters{allowed}: U+{ord(ch):04X} at "
                    f"position {position}",
                )
            )
            break
    return out


def echo(value: object) -> str:
    """`value` quoted for an error message, cut to ECHO_LENGTH characters and with control
    characters escaped, so a hostile value never travels back whole."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:ECHO_LENGTH]
    quoted = repr(cut)
    return f"{quoted[:-1]}…{quoted[-1]}" if len(text) > ECHO_LENGTH else quoted


# ---- repeated fields --------------------------------------------------------------------------

# Lines of an order (SubmitOrder, additions), of an invoice or memo, of a routing or a return.
MAX_LINES = 2000
MAX_DELIVERY_GROUPS = 100
MAX_DISCOUNTS_PER_LINE = 20
MAX_TAXES_PER_LINE = 20
MAX_ORDER_DISCOUNTS = 50
MAX_PAYMENT_METHODS = 10
MAX_APPEASEMENTS = 100
# Filters naming enum values (statuses, categories, severities).
MAX_FILTER_VALUES = 32
# Ids named in one read (SKUs, location ids, group members).
MAX_IDS = 1000
# Lifecycle steps in one RecordOrderProgressBatch: the workflow sends those taken between two
# waits, a handful; the bound keeps one transaction's locks and size small.
MAX_PROGRESS_STEPS = 100
# Events one progress step carries for the event log (one per fulfillment order at most).
MAX_STEP_EVENTS = 100
# Events in one RecordOrderEvents call: an outbox relay sends a batch's event rows at once
# (its batch is 200 rows by default) and splits more across calls.
MAX_RECORDED_EVENTS = 500
# Stock feeds and adjustments per call ("thousands of levels per call").
MAX_LEVELS = 10_000
# Delivery methods one delivery estimate asks about (each is routed on its own).
MAX_DELIVERY_METHODS = 20
# Orders one erasure call names, and the terms that identify the shopper.
MAX_ERASURE_ORDERS = 10_000
MAX_IDENTIFYING_TERMS = 100


def count_violations(field: str, count: int, limit: int) -> list[FieldViolation]:
    """A violation when a repeated field holds more than `limit` entries."""
    if count > limit:
        return [FieldViolation(field, f"must have at most {limit} entries, got {count}")]
    return []


# ---- numbers ----------------------------------------------------------------------------------

# Units of one line, item or fulfillment line, and any change to a line's quantity buckets.
MAX_QUANTITY = 1_000_000
# Units of one SKU at one location (a stock feed, an adjustment).
MAX_STOCK = 1_000_000_000
# Any one amount in minor units (a price, a tax, a discount, a charge): ten billion dollars.
MAX_AMOUNT_MINOR = 10**12
# A line's gross (unit price x quantity) may not exceed one amount either.
MAX_LINE_AMOUNT_MINOR = MAX_AMOUNT_MINOR
# Scores and capacities of locations (summed over the locations of a routing plan).
MAX_LOCATION_NUMBER = 1_000_000
# What one order can add up to under these caps: each line's gross, taxes and discounts,
# every group's shipping, every order discount, and a line per addition at most again.
ORDER_AMOUNT_BOUND = (
    2 * MAX_LINES * (1 + MAX_TAXES_PER_LINE + MAX_DISCOUNTS_PER_LINE) * MAX_AMOUNT_MINOR
    + (MAX_DELIVERY_GROUPS + MAX_ORDER_DISCOUNTS) * MAX_AMOUNT_MINOR
)
INT64_MAX = 2**63 - 1
# About 1.6e17: an order could be invoiced and credited in full many times over and its
# ledger would still sum inside int64 (9.2e18).
assert ORDER_AMOUNT_BOUND * 50 < INT64_MAX, "the caps must leave int64 ample headroom"


@dataclass(frozen=True)
class IntRule:
    """The range an integer field must be in."""

    minimum: int
    maximum: int


QUANTITY = IntRule(0, MAX_QUANTITY)
QUANTITY_DELTA = IntRule(-MAX_QUANTITY, MAX_QUANTITY)
STOCK_DELTA = IntRule(-MAX_STOCK, MAX_STOCK)
AMOUNT = IntRule(-MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR)
LOCATION_NUMBER = IntRule(-MAX_LOCATION_NUMBER, MAX_LOCATION_NUMBER)
# A position in the event log.
SEQUENCE = IntRule(0, 2**62)


def int_violations(field: str, value: int, rule: IntRule) -> list[FieldViolation]:
    """A violation when `value` is outside `rule`'s range."""
    if value > rule.maximum:
        return [FieldViolation(field, f"must be at most {rule.maximum:,}")]
    if value < rule.minimum:
        if rule.minimum == 0:
            return [FieldViolation(field, "must not be negative")]
        return [FieldViolation(field, f"must be at least {rule.minimum:,}")]
    return []


def line_amount_violations(
    field: str, quantity: int, unit_price_minor: int
) -> list[FieldViolation]:
    """A violation when a line's gross (quantity x unit price) passes MAX_LINE_AMOUNT_MINOR."""
    if abs(quantity * unit_price_minor) > MAX_LINE_AMOUNT_MINOR:
        return [
            FieldViolation(
                field,
                f"quantity x unit price must be at most {MAX_LINE_AMOUNT_MINOR:,} minor units",
            )
        ]
    return []


def finite_violations(field: str, value: float) -> list[FieldViolation]:
    """A violation when a floating-point field is NaN or infinite."""
    if value != value or value in (float("inf"), float("-inf")):
        return [FieldViolation(field, "must be a finite number")]
    return []


# ---- timestamps -------------------------------------------------------------------------------

# Protocol Buffers' own range for Timestamp, which is also what Python's datetime can hold.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# In whole seconds, without floating point (which would round the last second up).
MIN_TIMESTAMP_SECONDS = (EARLIEST - _EPOCH) // timedelta(seconds=1)
MAX_TIMESTAMP_SECONDS = (LATEST - _EPOCH) // timedelta(seconds=1)


def timestamp_violations(field: str, seconds: int, nanos: int) -> list[FieldViolation]:
    """A violation when (seconds, nanos) is not a valid Timestamp (0001-01-01 to 9999-12-31)."""
    if not 0 <= nanos < 1_000_000_000:
        return [FieldViolation(field, "nanos must be from 0 to 999,999,999")]
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        return [FieldViolation(field, "must be between 0001-01-01 and 9999-12-31 (UTC)")]
    return []


def datetime_from_timestamp(field: str, seconds: int, nanos: int) -> datetime:
    """An aware UTC datetime for a Timestamp's fields; InvalidArgument naming `field` when
    out of range."""
    violations = timestamp_violations(field, seconds, nanos)
    if violations:
        raise InvalidArgument(violations)
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


# ---- country codes ----------------------------------------------------------------------------

# ISO 3166-1 alpha-2, the officially assigned codes (249). User-assigned codes such as XK are
# not in it; a deployment that ships there adds them here.
_ISO_3166_1_ALPHA_2 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
    DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET
    FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
    HK HM HN HR HT HU
    ID IE IL IM IN IO IQ IR IS IT
    JE JM JO JP
    KE KG KH KI KM KN KP KR KW KY KZ
    LA LB LC LI LK LR LS LT LU LV LY
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ
    OM
    PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA
    RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
    UA UG UM US UY UZ
    VA VC VE VG VI VN VU
    WF WS
    YE YT
    ZA ZM ZW
    """
COUNTRY_CODES = frozenset(_ISO_3166_1_ALPHA_2.split())


def is_country_code(code: str) -> bool:
    """True for an ISO 3166-1 alpha-2 code, in either case (oms stores upper case)."""
    return code.upper() in COUNTRY_CODES


def country_code_violations(field: str, code: str) -> list[FieldViolation]:
    """A violation when a non-empty `code` is not ISO 3166-1 alpha-2 (emptiness is the
    caller's rule: required in some places, optional in others)."""
    if code and not is_country_code(code):
        return [FieldViolation(field, f"{echo(code)} is not an ISO 3166-1 alpha-2 country code")]
    return []


# ---- page tokens ------------------------------------------------------------------------------

_TOKEN_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def decode_page_token(token: str, field: str = "page_token") -> dict[str, Any]:
    """The JSON object inside a page token oms issued (urlsafe base64, padding optional);
    InvalidArgument naming `field` for anything else. Values are left for the caller to check
    strictly (types, ids, times)."""
    refused = InvalidArgument([FieldViolation(field, "is not a page token this listing issued")])
    if len(token) > MAX_PAGE_TOKEN_LENGTH or not set(token) <= _TOKEN_ALPHABET:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(token.rstrip("=") + "=" * (-len(token.rstrip("=")) % 4))
        body = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise refused from None
    if not isinstance(body, dict):
        raise refused
    return body


def encode_page_token(body: dict[str, Any]) -> str:
    """A page token carrying `body` (a small JSON object), the form `decode_page_token` reads."""
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_id(body: dict[str, Any], key: str, field: str = "page_token") -> str:
    """The id under `key` in a decoded page token, refused unless it is a plausible id."""
    value = body.get(key)
    if not isinstance(value, str) or not value or text_violations(field, value, ID):
        raise InvalidArgument([FieldViolation(field, "is not a page token this listing issued")])
    return value


def token_int(body: dict[str, Any], key: str, field: str = "page_token") -> int:
    """The positive integer under `key` in a decoded page token, refused unless it is one."""
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidArgument([FieldViolation(field, "is not a page token this listing issued")])
    return value


def token_time(body: dict[str, Any], key: str, field: str = "page_token") -> datetime:
    """The aware datetime under `key` in a decoded page token, refused unless it is one."""
    value = body.get(key)
    refused = InvalidArgument([FieldViolation(field, "is not a page token this listing issued")])
    if not isinstance(value, str) or len(value) > 64:
        raise refused
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise refused from None
    if at.tzinfo is None:
        raise refused
    return at
