"""What platform engineers see of an order in the Temporal UI: the lifecycle's summary and
details as it starts, one line per activity saying what it does for this order, and the
search attributes operators filter by.

Pure and deterministic (the workflow calls it), and built from ids, SKUs, quantities, money,
channel and country only: no name, email, phone, street, city, postal code or payment token
reaches it. That matters twice over for search attributes, which Temporal indexes in clear;
summaries and details pass through the payload codec like any payload (sealed, read through
the codec server), but hold nothing personal either, so a shredded order loses nothing an
operator needed and a leaked key exposes no one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from oms_platform.errors import clip
from oms_platform.money import format_minor
from oms_platform.redaction import mask_token, redact_text
from workflows.search_attributes import (
    LOCATION_IDS,
    ORDER_CHANNEL,
    ORDER_CURRENCY,
    ORDER_ON_HOLD,
    ORDER_STATUS,
    ORDER_TOTAL_MINOR,
)
from workflows.types import (
    AuthorizeInput,
    CancelFulfillmentOrderInput,
    CancelLinesInput,
    CancelOrderFulfillmentInput,
    CaptureInput,
    CreditMemoAndRefundInput,
    CreditMemoInput,
    EscalateInput,
    InvoiceAndCaptureInput,
    InvoiceInput,
    ItemQuantity,
    PaymentMethodData,
    ProcessExceptionInput,
    ProgressBatchInput,
    ProgressInput,
    ReceiptInput,
    RefundInput,
    ReturnOrderInput,
    RouteInput,
    VoidInput,
)

# The UI shows a summary on one line; longer ones are cut rather than refused by the server.
SUMMARY_LIMIT = 200
DETAILS_LIMIT = 2000


def order_summary(order_ref: str, channel: str, total_minor: int, currency: str) -> str:
    """The lifecycle's one-line summary: reference, channel and total."""
    ref = order_ref or "(no reference)"
    return clip(f"Order {ref} · {channel} · {format_minor(total_minor, currency)}", SUMMARY_LIMIT)


def order_details(order: dict[str, Any]) -> str:
    """The lifecycle's details (Markdown, as the UI renders them) from the lifecycle payload:
    what was bought, how it ships and how it is paid, without who or where to."""
    currency = order["currency"]
    lines = [
        f"- {line['quantity']} x {line['sku']} ({format_minor(_line_total(line), currency)})"
        for line in order.get("lines", [])
    ]
    groups = [
        f"- {group['delivery_group_id']}: {group.get('delivery_method') or 'standard'} to "
        f"{group['address'].get('country_code') or '?'}, shipping "
        f"{format_minor(group['shipping_minor'], currency)}"
        for group in order.get("delivery_groups", [])
    ]
    methods = [order["payment_method"], *order.get("additional_payment_methods", [])]
    paid = ", ".join(_method(m["type"], m.get("token", "")) for m in methods)
    # Capture's own words (amounts, counts, countries); redacted all the same, as free text.
    held = redact_text("; ".join(order.get("fraud_reasons", [])))
    text = "\n".join(
        [
            f"**Order id** {order['order_id']}",
            "",
            "**Lines**",
            *lines,
            "",
            "**Delivery groups**",
            *groups,
            "",
            f"**Paid by** {paid}",
            *([f"**Fraud review** {held}"] if held else []),
        ]
    )
    return clip(text, DETAILS_LIMIT)


def _line_total(line: dict[str, Any]) -> int:
    return int(line["gross_minor"] - line["discount_minor"] + line["tax_minor"])


def _method(kind: str, token: str) -> str:
    """A payment method as readers may see it: its type and a masked token (last four)."""
    kind = kind.replace("_", " ") or "payment method"
    masked = mask_token(token)
    return f"{kind} {masked}" if masked else kind


def _units(items: Iterable[ItemQuantity]) -> int:
    return sum(i.quantity for i in items)


def _attempt_of(idempotency_key: str) -> str:
    """The attempt number a retried step carries at the end of its key, as ' (attempt n)'."""
    last = idempotency_key.rpartition(":")[2]
    return f" (attempt {last})" if last.isdigit() and last != "1" else ""


def activity_summary(name: str, arg: Any, currency: str) -> str:
    """What activity `name` does for this order, on one line (the UI's event summary)."""
    return clip(_describe(name, arg, currency), SUMMARY_LIMIT)


def _describe(name: str, arg: Any, currency: str) -> str:
    def money(minor: int) -> str:
        return format_minor(minor, currency)

    if isinstance(arg, AuthorizeInput):
        methods = [arg.payment_method, *arg.additional_payment_methods]
        on = " then ".join(_payment(m) for m in methods)
        return f"authorize {format_minor(arg.amount_minor, arg.currency)} on {on}"
    if isinstance(arg, RouteInput):
        lines = [line for group in arg.delivery_groups for line in group.lines]
        step = arg.idempotency_key.partition(":route:")[2]
        units = sum(line.quantity for line in lines)
        return f"route and reserve {units} unit(s) of {len(lines)} line(s)" + (
            f" [{step}]" if step else ""
        )
    if isinstance(arg, InvoiceInput):
        units = sum(line.quantity_to_invoice for line in arg.lines)
        extra = f" + {money(arg.shipping_minor)} shipping" if arg.shipping_minor else ""
        goodwill = f" less {money(arg.goodwill_minor)} goodwill" if arg.goodwill_minor else ""
        return f"invoice {units} shipped unit(s) of {arg.fulfillment_order_id}{extra}{goodwill}"
    if isinstance(arg, InvoiceAndCaptureInput):
        return _describe("create_invoice", arg.invoice, currency) + " and capture it"
    if isinstance(arg, CaptureInput):
        return f"capture invoice {arg.invoice_id}{_attempt_of(arg.idempotency_key)}"
    if isinstance(arg, VoidInput):
        return "void the order's open authorizations"
    if isinstance(arg, CreditMemoInput):
        parts = []
        if arg.lines:
            parts.append(f"{sum(c.quantity_to_credit for c in arg.lines)} unit(s)")
        if arg.shipping_minor:
            parts.append(f"{money(arg.shipping_minor)} shipping")
        if arg.appeasement_minor:
            parts.append(f"{money(arg.appeasement_minor)} goodwill")
        fee = f" less a {money(arg.fee_minor)} fee" if arg.fee_minor else ""
        return f"credit memo ({arg.kind or 'credit'}) for {' + '.join(parts) or 'nothing'}{fee}"
    if isinstance(arg, CreditMemoAndRefundInput):
        memo = _describe("create_credit_memo", arg.memo, currency) + " and give it back"
        return memo + (
            ", then void what the authorizations hold" if arg.void_idempotency_key else ""
        )
    if isinstance(arg, RefundInput):
        return (
            f"refund (or release) credit memo {arg.credit_memo_id}"
            f"{_attempt_of(arg.idempotency_key)}"
        )
    if isinstance(arg, CancelLinesInput):
        return f"cancel {_units(arg.lines)} unit(s) on {arg.fulfillment_order_id}"
    if isinstance(arg, CancelFulfillmentOrderInput):
        return f"cancel fulfillment order {arg.fulfillment_order_id}"
    if isinstance(arg, CancelOrderFulfillmentInput):
        return "cancel every fulfillment order of the order not shipped yet"
    if isinstance(arg, ProcessExceptionInput):
        return f"raise a {arg.severity} {arg.category} process exception on {arg.attached_to}"
    if isinstance(arg, EscalateInput):
        return f"escalate process exception {arg.process_exception_id}"
    if isinstance(arg, ReturnOrderInput):
        return f"open return {arg.return_order_id} for {_units(arg.lines)} unit(s)"
    if isinstance(arg, ReceiptInput):
        return (
            f"record return {arg.return_order_id} received: {_units(arg.accepted)} accepted, "
            f"{_units(arg.rejected)} rejected"
        )
    if isinstance(arg, ProgressInput):
        # The kind, never the timeline text: that quotes agents' free-text reasons.
        status = f" → {arg.status}" if arg.status else ""
        moved = _units_moved(arg)
        return f"record {arg.kind}{status}" + (f" ({moved})" if moved else "")
    if isinstance(arg, ProgressBatchInput):
        return "; ".join(_describe(name, step, currency) for step in arg.steps)
    return name.replace("_", " ")


def _payment(method: PaymentMethodData) -> str:
    return _method(method.type, method.token)


def _units_moved(progress: ProgressInput) -> str:
    """The buckets a progress report moves, e.g. 'fulfilled +3, allocated -3'."""
    totals: dict[str, int] = {}
    for change in progress.line_changes:
        for bucket in ("allocated", "fulfilled", "canceled", "return_initiated", "returned"):
            totals[bucket] = totals.get(bucket, 0) + getattr(change, bucket)
    return ", ".join(f"{bucket} {n:+d}" for bucket, n in totals.items() if n)


def search_attributes(
    *,
    status: str,
    channel: str,
    total_minor: int,
    currency: str,
    on_hold: bool,
    location_ids: Sequence[str],
) -> TypedSearchAttributes:
    """The search attributes of an order's lifecycle: nothing in them is personal."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(ORDER_STATUS, status),
        SearchAttributePair(ORDER_CHANNEL, channel),
        SearchAttributePair(ORDER_TOTAL_MINOR, total_minor),
        SearchAttributePair(ORDER_CURRENCY, currency),
        SearchAttributePair(ORDER_ON_HOLD, on_hold),
    ]
    if location_ids:  # an empty list would unset it: absent until routing places something
        pairs.append(SearchAttributePair(LOCATION_IDS, sorted(set(location_ids))))
    return TypedSearchAttributes(pairs)
