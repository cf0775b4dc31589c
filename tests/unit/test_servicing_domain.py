"""Process exceptions: what may be recorded, and how listing pages through them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oms_platform.errors import InvalidArgument
from services.servicing import domain
from services.servicing.domain import (
    Cursor,
    ListQuery,
    ProcessException,
    RecordProcessException,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def a_request(**changes: str) -> RecordProcessException:
    fields = {
        "idempotency_key": "capture:authorize",
        "order_id": "order-1",
        "category": domain.PAYMENT,
        "severity": domain.HIGH,
        "attached_to": "authorization:a-1",
        "message": "authorization declined",
    }
    fields.update(changes)
    return RecordProcessException(**fields)


def violated_fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def an_exception(i: int) -> ProcessException:
    at = NOW - timedelta(seconds=i)
    return ProcessException(
        id=f"pe-{i:03d}",
        order_id="order-1",
        category=domain.CARRIER,
        severity=domain.LOW,
        status=domain.NEW,
        attached_to="",
        message=f"parcel {i} lost",
        created_at=at,
        updated_at=at,
    )


def test_a_new_exception_starts_as_new_with_what_was_asked() -> None:
    raised = domain.new_process_exception(a_request(), "pe-1", NOW)

    assert raised.status == "new"
    assert (raised.id, raised.order_id, raised.category, raised.severity) == (
        "pe-1",
        "order-1",
        "payment",
        "high",
    )
    assert raised.attached_to == "authorization:a-1"
    assert raised.created_at == raised.updated_at == NOW


def test_an_empty_request_lists_every_missing_field_at_once() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_record(
            RecordProcessException(
                idempotency_key="",
                order_id=" ",
                category="",
                severity="",
                attached_to="x" * 257,
                message="",
            )
        )

    assert violated_fields(error) == [
        "order_id",
        "idempotency_key",
        "category",
        "severity",
        "message",
        "attached_to",
    ]
    assert error.value.violations[2].description == "must be set"


def test_a_message_longer_than_2000_characters_is_refused_but_2000_is_fine() -> None:
    domain.validate_record(a_request(message="m" * 2000, attached_to="a" * 256))
    with pytest.raises(InvalidArgument) as error:
        domain.validate_record(a_request(message="m" * 2001))

    assert violated_fields(error) == ["message"]
    assert "2000" in error.value.violations[0].description


def test_an_unknown_category_is_named_with_the_allowed_ones() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_record(a_request(category="unknown(42)"))

    assert violated_fields(error) == ["category"]
    assert "payment" in error.value.violations[0].description


def test_the_stored_idempotency_key_is_scoped_to_the_order() -> None:
    assert domain.idempotency_key_for("order-1", "k") == "pe:order-1:k"


def test_a_page_token_round_trips_to_the_same_cursor() -> None:
    cursor = Cursor(NOW, "pe-7")
    fingerprint = "0123456789abcdef"

    token = domain.encode_page_token(cursor, fingerprint)

    assert domain.decode_page_token(token, fingerprint) == cursor
    assert "pe-7" not in token  # opaque to callers


def test_a_next_page_token_resumes_the_same_listing() -> None:
    first = domain.list_query("order-1", [domain.NEW], [], 2, "")
    page = domain.page_of(first, [an_exception(0), an_exception(1), an_exception(2)])

    token = domain.next_page_token(first, page)
    second = domain.list_query("order-1", [domain.NEW], [], 2, token)

    assert [e.id for e in page.process_exceptions] == ["pe-000", "pe-001"]
    assert second.after == Cursor(an_exception(1).created_at, "pe-001")


def test_a_page_token_is_refused_for_different_filters() -> None:
    first = domain.list_query("order-1", [], [], 1, "")
    token = domain.next_page_token(first, domain.page_of(first, [an_exception(0), an_exception(1)]))

    with pytest.raises(InvalidArgument) as error:
        domain.list_query("order-2", [], [], 1, token)

    assert violated_fields(error) == ["page_token"]
    assert "different filters" in error.value.violations[0].description


@pytest.mark.parametrize("token", ["garbage!", "e30", "bm90IGpzb24", "eyJ2IjoxfQ"])
def test_a_page_token_we_did_not_issue_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.list_query("", [], [], 0, token)

    assert violated_fields(error) == ["page_token"]


def test_the_last_page_has_no_next_token() -> None:
    query = domain.list_query("", [], [], 3, "")
    page = domain.page_of(query, [an_exception(0), an_exception(1), an_exception(2)])

    assert page.next_cursor is None
    assert domain.next_page_token(query, page) == ""


def test_page_size_defaults_to_100_and_is_capped_at_1000() -> None:
    assert domain.list_query("", [], [], 0, "").page_size == 100
    assert domain.list_query("", [], [], 5000, "").page_size == 1000
    assert domain.list_query("", [], [], 7, "").page_size == 7


def test_bad_listing_filters_are_all_named() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.list_query("", [domain.NEW, ""], ["bogus"], -1, "garbage!")

    assert violated_fields(error) == ["statuses[1]", "categories[0]", "page_size", "page_token"]


def test_filters_are_deduplicated_so_equal_listings_share_tokens() -> None:
    query = domain.list_query("", [domain.NEW, domain.PAUSED, domain.NEW], [], 0, "")

    assert query == ListQuery("", (domain.NEW, domain.PAUSED), (), 100, None)
