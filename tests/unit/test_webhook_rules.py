"""Webhook rules without I/O: which urls, types and secrets a subscription may name, which
events it receives, and how long a failed delivery waits."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from services.capture.events import webhooks_rules as rules


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/oms",
        "https://example.com:8443/a?b=c",
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]:9000/hook",
    ],
)
def test_https_anywhere_and_http_to_loopback_are_accepted(url: str) -> None:
    assert rules.url_violations(url) == []


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("", "is required"),
        ("ftp://example.com/hook", "https://"),
        ("http://example.com/hook", "loopback"),
        ("http://10.0.0.5/hook", "loopback"),
        ("https://user:secret@example.com/hook", "credentials"),
        ("https:///nohost", "no host"),
        ("https://example.com/" + "a" * 2100, "longer than"),
        ("https://example.com/a b", "spaces"),
        ("https://example.com:port/", "not a valid URL"),
    ],
)
def test_other_urls_are_refused_naming_the_rule(url: str, rule: str) -> None:
    [violation] = rules.url_violations(url)
    assert violation.field == "url"
    assert rule in violation.description


def test_types_are_known_types_or_families() -> None:
    assert rules.types_violations(["shipment.*", "refund.issued", "order.captured"]) == []
    found = rules.types_violations(["shipment.*", "shipment.lost", "parcel.*", "*"])
    assert [v.field for v in found] == ["types[1]", "types[2]", "types[3]"]


def test_a_subscription_receives_its_types_its_families_or_everything() -> None:
    assert rules.matches([], "refund.issued")
    assert rules.matches(["shipment.*"], "shipment.delivery_failed")
    assert not rules.matches(["shipment.*"], "order.captured")
    assert rules.matches(["order.captured"], "order.captured")
    assert not rules.matches(["order.captured"], "order.canceled")


def test_secrets_are_whsec_base64_of_24_to_64_bytes() -> None:
    def secret(n: int) -> str:
        return "whsec_" + base64.b64encode(b"k" * n).decode()

    assert rules.secret_violations("") == []
    assert rules.secret_violations(secret(24)) == []
    assert rules.secret_violations(secret(64)) == []
    for bad in (secret(23), secret(65), "whsec_not base64!", "sk_" + secret(32)[6:]):
        [violation] = rules.secret_violations(bad)
        assert violation.field == "secret"


def test_a_new_secret_is_valid_and_signs_with_standard_webhooks() -> None:
    made = rules.new_secret()
    assert rules.secret_violations(made) == []
    assert made != rules.new_secret()
    assert Webhook(made).sign("msg_1", datetime.now(UTC), b"{}").startswith("v1,")


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap_and_die_after_the_period() -> (
    None
):
    policy = rules.RetryPolicy(first_seconds=5, cap_seconds=60, period_seconds=3600)
    assert [policy.delay(n, draw=0.999999) for n in (1, 2, 3)] == pytest.approx([5, 10, 20])
    assert policy.delay(1, draw=0.0) == pytest.approx(2.5)
    assert policy.delay(30, draw=0.999999) == pytest.approx(60)
    assert 30 <= policy.delay(30) <= 60
    assert not policy.is_dead(3599.0)
    assert policy.is_dead(3600.0)
