"""What every payments subdomain shares: stored status and kind names, gateway keys,
required fields.
"""

from __future__ import annotations

from oms_platform.errors import FieldViolation, InvalidArgument

# Authorization statuses, as stored.
APPROVED = "approved"
DECLINED = "declined"
VOIDED = "voided"
# The hold lapsed, or was renewed before it could, and was replaced by a re-authorization.
EXPIRED = "expired"

# Capture statuses, as stored.
SUCCEEDED = "succeeded"
FAILED = "failed"

# Payment method types, as stored (the proto enum maps onto these).
CARD = "card"
GIFT_CARD = "gift_card"
INVOICE_TERMS = "invoice_terms"
UNSPECIFIED = "unspecified"

# Why a capture failed before it reached the gateway.
INSUFFICIENT_AUTHORIZATION = "insufficient_authorization"
# Why a split authorization is declined when no gateway gave a reason.
INSUFFICIENT_FUNDS = "insufficient_funds"

# Credit memo kinds, as stored (the proto enum maps onto these; UNSPECIFIED is shared).
CANCEL = "cancel"
RETURN = "return"
APPEASEMENT = "appeasement"

# How far giving a credit memo's money back got.
SETTLED = "settled"
LIMITED = "limited"

# Basis points in 100%.
FULL_PERCENT_BASIS_POINTS = 10_000


def gateway_key(order_id: str, request_key: str, step: str, amount_minor: int) -> str:
    """The idempotency key of one gateway call: the order, the RPC's key, the step, the amount.

    Deterministic, so an RPC retried with its key asks the gateway with the same keys and the
    gateway's own dedupe keeps every effect single.
    """
    return f"{order_id}:{request_key}:{step}:{amount_minor}"


def gateway_outcome(succeeded: bool, failure_reason: str, fallback: str) -> tuple[str, str]:
    """The status and failure reason to store for a gateway's answer: a failure always has a
    reason (`fallback` when the gateway gave none), a success never does."""
    return (SUCCEEDED, "") if succeeded else (FAILED, failure_reason or fallback)


def require(**fields: str) -> None:
    """Raise InvalidArgument naming every one of `fields` (name=value) that is empty."""
    violations = [
        FieldViolation(name, f"{name} is required") for name, value in fields.items() if not value
    ]
    if violations:
        raise InvalidArgument(violations)
