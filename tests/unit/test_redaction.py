"""Personal data is masked where it does not belong: payment tokens for readers, and emails,
phones, names, addresses and tokens in logs and recorded step inputs."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass

import structlog

from oms_platform import logging as oms_logging
from oms_platform.redaction import (
    REDACTED,
    mask_token,
    redact,
    redact_json,
    redact_text,
)


def test_a_token_keeps_only_its_last_four() -> None:
    assert mask_token("tok_visa_4242") == "…4242"
    assert mask_token("abc") == "…"
    assert mask_token("") == ""


def test_masking_a_masked_token_changes_nothing() -> None:
    assert mask_token(mask_token("tok_visa_4242")) == "…4242"


def test_free_text_loses_emails_phones_and_tokens() -> None:
    text = "Jane <jane.doe+shop@example.co.uk> called from +44 20 7946 0958 / (415) 555-0123 "
    text += "about tok_visa_4242"
    out = redact_text(text)
    assert "jane.doe" not in out
    assert "7946" not in out
    assert "555-0123" not in out
    assert "tok_visa" not in out
    assert out.endswith("about …4242")


def test_free_text_keeps_amounts_dates_and_ids() -> None:
    text = (
        "order 3f1c2a4e-1234-4567-8901-23456789abcd captured 1234567 minor on 2024-05-01T10:00:00Z"
    )
    assert redact_text(text) == text


def test_free_text_keeps_the_gateways_decline_codes() -> None:
    text = "payment declined: card_declined (insufficient_funds)"
    assert redact_text(text) == text


def test_an_activity_input_keeps_ids_and_money_but_not_addresses_or_tokens() -> None:
    step = {
        "order_id": "o-1",
        "idempotency_key": "o-1:authorize",
        "amount_minor": 12345,
        "payment_method": {"type": "card", "token": "tok_visa_4242"},
        "additional_payment_methods": [{"type": "gift_card", "token": "gc_5000"}],
        "delivery_groups": [
            {
                "delivery_group_id": "dg-1",
                "address": {
                    "line1": "1 Main St",
                    "line2": "Apt 2",
                    "city": "Springfield",
                    "region": "IL",
                    "postal_code": "62701",
                    "country_code": "US",
                },
                "lines": [{"order_line_id": "l-1", "sku": "SKU-MUG", "quantity": 2}],
            }
        ],
    }
    out = redact(step)
    assert out["order_id"] == "o-1"
    assert out["amount_minor"] == 12345
    assert out["payment_method"] == {"type": "card", "token": "…4242"}
    assert out["additional_payment_methods"][0]["token"] == "…5000"
    group = out["delivery_groups"][0]
    assert group["address"] == {
        "line1": REDACTED,
        "line2": REDACTED,
        "city": REDACTED,
        "region": REDACTED,
        "postal_code": REDACTED,
        "country_code": "US",
    }
    assert group["lines"] == [{"order_line_id": "l-1", "sku": "SKU-MUG", "quantity": 2}]


def test_a_person_loses_name_and_company_while_a_product_keeps_its_name() -> None:
    out = redact(
        {
            "shopper": {
                "name": "Jane Doe",
                "email": "jane@example.com",
                "phone": "555",
                "company": "ACME",
            },
            "line": {"name": "Blue mug", "sku": "SKU-MUG"},
            "recipient_name": "Jane Doe",
        }
    )
    assert out["shopper"] == {
        "name": REDACTED,
        "email": REDACTED,
        "phone": REDACTED,
        "company": REDACTED,
    }
    assert out["line"] == {"name": "Blue mug", "sku": "SKU-MUG"}
    assert out["recipient_name"] == REDACTED


def test_a_dataclass_is_redacted_as_its_fields() -> None:
    @dataclass
    class Address:
        line1: str
        country_code: str

    assert redact({"address": Address("1 Main St", "US")}) == {
        "address": {"line1": REDACTED, "country_code": "US"}
    }


def test_a_recorded_step_input_is_redacted_once_and_for_all() -> None:
    raw = json.dumps({"token": "tok_visa_4242", "address": {"line1": "1 Main St"}, "n": 1})
    once = redact_json(raw)
    assert json.loads(once) == {"token": "…4242", "address": {"line1": REDACTED}, "n": 1}
    assert redact_json(once) == once
    assert redact_json("not json: jane@example.com") == "not json: [email]"
    assert redact_json("") == ""


def test_the_log_processor_masks_keys_and_values_at_any_depth() -> None:
    event = {
        "event": "submitted by jane@example.com",
        "email": "jane@example.com",
        "request": {"billing_address": {"line1": "1 Main St", "country_code": "US"}},
        "payment_token": "tok_visa_4242",
        "order_id": "o-1",
    }
    out = oms_logging.redact_personal_data(None, "info", event)
    assert out == {
        "event": "submitted by [email]",
        "email": REDACTED,
        "request": {"billing_address": {"line1": REDACTED, "country_code": "US"}},
        "payment_token": "…4242",
        "order_id": "o-1",
    }


def test_a_configured_process_logs_no_personal_data() -> None:
    out = io.StringIO()
    was_configured, handlers = oms_logging._configured, logging.getLogger().handlers[:]
    structlog_config = structlog.get_config()
    structlog.reset_defaults()
    oms_logging._configured = False
    oms_logging.configure(fmt="json")
    try:
        # Render to a buffer with the configured processors, structlog's and stdlib's.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
        structlog.get_logger("t").warning(
            "order for jane@example.com", shopper={"name": "Jane Doe", "phone": "+1 415 555 0123"}
        )
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(out)
        logging.getLogger("some.library").warning("token tok_visa_4242 declined for %s", "x")
    finally:
        structlog.configure(**structlog_config)
        oms_logging._configured = was_configured
        logging.getLogger().handlers[:] = handlers
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2
    assert "jane@example.com" not in text
    assert "Jane Doe" not in text
    assert "555" not in text
    assert "tok_visa" not in text
    assert lines[1]["event"] == "token …4242 declined for x"
