"""oms_platform.limits: the caps and the checks that turn a value past one into a violation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from oms_platform import limits
from oms_platform.errors import FieldViolation, InvalidArgument


def fields(violations: list[FieldViolation]) -> list[str]:
    return [v.field for v in violations]


# ---- strings ----------------------------------------------------------------------------------


def test_a_nul_or_any_control_character_is_refused_naming_its_position() -> None:
    for ch in ("\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f"):
        [violation] = limits.text_violations("shopper.name", f"Ada{ch}Lovelace", limits.NAME)
        assert violation.field == "shopper.name"
        assert f"U+{ord(ch):04X} at position 3" in violation.description


def test_tab_and_line_breaks_are_free_text_only() -> None:
    note = "line one\r\nline two\tindented"
    assert limits.text_violations("note", note, limits.TEXT) == []
    assert fields(limits.text_violations("name", note, limits.NAME)) == ["name"]
    assert fields(limits.text_violations("note", "a\x00b", limits.TEXT)) == ["note"]


def test_printable_unicode_is_text() -> None:
    assert limits.text_violations("name", "Zoë 李 🚚 ‫", limits.NAME) == []


def test_a_string_may_be_as_long_as_its_cap_and_no_longer() -> None:
    assert limits.text_violations("order_id", "x" * limits.MAX_ID_LENGTH, limits.ID) == []
    [violation] = limits.text_violations("order_id", "x" * 100_000, limits.ID)
    assert violation.description == f"must be at most {limits.MAX_ID_LENGTH} characters"


def test_echo_quotes_a_short_prefix_with_control_characters_escaped() -> None:
    echoed = limits.echo("A\x00" + "b" * 100_000)
    assert len(echoed) < limits.ECHO_LENGTH + 10
    assert echoed.startswith("'A\\x00bbb") and echoed.endswith("…'")
    assert limits.echo("USD") == "'USD'"


# ---- counts and numbers ----------------------------------------------------------------------


def test_repeated_fields_are_capped() -> None:
    assert limits.count_violations("lines", limits.MAX_LINES, limits.MAX_LINES) == []
    [violation] = limits.count_violations("lines", limits.MAX_LINES + 1, limits.MAX_LINES)
    assert violation.description == f"must have at most {limits.MAX_LINES} entries, got 2001"


def test_integers_outside_their_range_are_refused() -> None:
    assert limits.int_violations("q", limits.MAX_QUANTITY, limits.QUANTITY) == []
    assert fields(limits.int_violations("q", 1_000_000_000, limits.QUANTITY)) == ["q"]
    [negative] = limits.int_violations("q", -1, limits.QUANTITY)
    assert negative.description == "must not be negative"
    assert fields(limits.int_violations("a", 2**63 - 1, limits.AMOUNT)) == ["a"]
    assert fields(limits.int_violations("a", -(2**63), limits.AMOUNT)) == ["a"]
    assert limits.int_violations("a", -limits.MAX_AMOUNT_MINOR, limits.AMOUNT) == []


def test_a_line_may_not_cost_more_than_one_amount() -> None:
    assert limits.line_amount_violations("p", 1_000, 10**9) == []
    assert fields(limits.line_amount_violations("p", 1_000_000, 10**7)) == ["p"]


def test_the_caps_keep_any_order_far_inside_int64() -> None:
    # Every line at its ceiling with every tax and discount, twice over (additions), every
    # group's shipping and every order discount: still a fiftieth of int64.
    assert limits.ORDER_AMOUNT_BOUND * 50 < 2**63 - 1
    assert limits.MAX_QUANTITY * limits.MAX_AMOUNT_MINOR < 2**63 - 1


def test_nan_and_infinities_are_not_numbers_we_take() -> None:
    for value in (float("nan"), float("inf"), float("-inf")):
        assert fields(limits.finite_violations("latitude", value)) == ["latitude"]
    assert limits.finite_violations("latitude", 47.6) == []


# ---- timestamps -------------------------------------------------------------------------------


def test_timestamps_from_year_1_to_9999_convert_and_others_are_refused() -> None:
    low = limits.datetime_from_timestamp("at", limits.MIN_TIMESTAMP_SECONDS, 0)
    high = limits.datetime_from_timestamp("at", limits.MAX_TIMESTAMP_SECONDS, 999_999_999)
    assert low == datetime(1, 1, 1, tzinfo=UTC)
    assert high == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert limits.datetime_from_timestamp("at", 0, 500_000_000) == datetime(
        1970, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC
    )
    for seconds, nanos in (
        (limits.MAX_TIMESTAMP_SECONDS + 1, 0),
        (limits.MIN_TIMESTAMP_SECONDS - 1, 0),
        (2**62, 0),
        (0, -1),
        (0, 1_000_000_000),
    ):
        with pytest.raises(InvalidArgument) as raised:
            limits.datetime_from_timestamp("created_from", seconds, nanos)
        assert fields(raised.value.violations) == ["created_from"]


# ---- countries --------------------------------------------------------------------------------


def test_country_codes_are_iso_3166_alpha_2_in_either_case() -> None:
    assert len(limits.COUNTRY_CODES) == 249
    assert all(len(code) == 2 and code.isupper() for code in limits.COUNTRY_CODES)
    for code in ("US", "us", "De", "JP", "AX", "SS"):
        assert limits.country_code_violations("c", code) == []
    for code in ("ZZ", "XK", "UK", "EU", "USA", "1A"):
        [violation] = limits.country_code_violations("c", code)
        assert "ISO 3166-1" in violation.description
    assert limits.country_code_violations("c", "") == []  # required-ness is the caller's


# ---- page tokens ------------------------------------------------------------------------------


def test_a_page_token_round_trips() -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    token = limits.encode_page_token({"t": at.isoformat(), "id": "o-1"})
    body = limits.decode_page_token(token)
    assert limits.token_time(body, "t") == at and limits.token_id(body, "id") == "o-1"


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "!!!!",
        "AAAA",  # base64 of three NUL bytes: not UTF-8 JSON
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b"[" * 760).decode(),  # deep nesting, within the length
        "x" * (limits.MAX_PAGE_TOKEN_LENGTH + 1),
        "é",
    ],
)
def test_anything_but_a_json_object_in_base64_is_refused_naming_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        limits.decode_page_token(token)
    assert fields(raised.value.violations) == ["page_token"]


@pytest.mark.parametrize(
    "body",
    [
        {"t": "2026-03-01T12:00:00", "id": "o-1"},  # naive time
        {"t": "yesterday", "id": "o-1"},
        {"t": 5, "id": "o-1"},
        {"t": "2026-03-01T12:00:00+00:00", "id": "o\x00-1"},
        {"t": "2026-03-01T12:00:00+00:00", "id": "o" * 500},
        {"t": "2026-03-01T12:00:00+00:00", "id": ["o-1"]},
        {"t": "2026-03-01T12:00:00+00:00"},
    ],
)
def test_a_token_whose_values_are_not_a_time_and_an_id_is_refused(body: dict[str, object]) -> None:
    decoded = limits.decode_page_token(limits.encode_page_token(body))
    with pytest.raises(InvalidArgument) as raised:
        limits.token_time(decoded, "t")
        limits.token_id(decoded, "id")
    assert fields(raised.value.violations) == ["page_token"]


# ---- how many violations an error carries ------------------------------------------------------


def test_an_error_with_thousands_of_violations_carries_twenty_and_a_count() -> None:
    error = InvalidArgument([FieldViolation(f"lines[{i}].sku", "x" * 10_000) for i in range(2_000)])
    assert len(error.violations) == 21
    assert error.violations[-1] == FieldViolation("", "and 1980 more violations like these")
    assert all(len(v.description) <= 120 for v in error.violations)
    assert len(error.message) < 1_000
