"""What a change (and the lifecycle) may do to an order: the `Steps` interface the workflow
implements, and the steps built on it that several changes share (give money back, route,
capture, cancel units).

Every side effect is an activity with an idempotency key derived from the order and the step,
so a replayed or retried step has one effect.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from temporalio.exceptions import ActivityError, ApplicationError

from oms_platform.money import format_minor
from oms_platform.redaction import redact
from workflows import activity_names as names
from workflows import billing, order_events, versions
from workflows.ledger import ChangeRefused, Ledger
from workflows.state import LifecycleState
from workflows.types import (
    CANCELED,
    AuthorizeInput,
    AuthorizeResult,
    CancelFulfillmentOrderInput,
    CancelLinesInput,
    CaptureInput,
    CaptureResult,
    ChangeResult,
    CreditMemoAndRefundInput,
    CreditMemoAndRefundResult,
    CreditMemoInput,
    CreditMemoResult,
    DeliveryGroupAddressData,
    EventData,
    InvoiceAndCaptureResult,
    InvoiceResult,
    ItemQuantity,
    LifecycleLine,
    LineAdditionData,
    LineQuantityChange,
    OrderLifecycleInput,
    RefundInput,
    RefundResult,
    Resolution,
    RouteInput,
    RouteResult,
    RoutingGroupData,
    RoutingLineData,
    VoidInput,
)

T = TypeVar("T")


class Steps(Protocol):
    """What the lifecycle offers a change: its order, state and ledger, and its steps."""

    order: OrderLifecycleInput
    state: LifecycleState
    ledger: Ledger
    # Whether the order's payment is authorized yet.
    authorized: bool
    # The process exception the order waits on ("" when none), and whether it has closed.
    waiting_on: str
    done: bool
    # Agents' resolutions, by process exception id, as they arrive.
    resolutions: dict[str, Resolution]
    # What the last refused activity was asked (as JSON), for the process exception it raises.
    refused_step_input: str

    def has_change(self, patch_id: str) -> bool:
        """Whether this run takes the change `patch_id` guards (workflows/versions.py)."""

    async def activity(
        self,
        name: str,
        arg: Any,
        *,
        result_type: type | None = None,
        schedule_to_close_timeout: timedelta | None = None,
    ) -> Any:
        """Run one activity with the lifecycle's timeout and retry policy."""

    async def progress(
        self,
        status: str,
        kind: str,
        summary: str,
        line_changes: list[LineQuantityChange] | None = None,
        actor: str = "workflow",
        step: str = "",
        added_lines: list[LineAdditionData] | None = None,
        holds: tuple[str, str] | None = None,
        events: list[EventData] | None = None,
        delivery_group_addresses: list[DeliveryGroupAddressData] | None = None,
    ) -> None:
        """Tell capture (the order's record, and its event log: `events`) and the search
        attributes what just happened; `holds` (category, attached to) as `attempt_step` when
        capture refuses the report; `delivery_group_addresses`: groups sent elsewhere."""

    async def hold(
        self, category: str, attached_to: str, message: str, step_input: str = ""
    ) -> str:
        """Raise a process exception and wait for an agent: retry, skip or cancel."""

    def publish(self) -> None:
        """Upsert the search attributes that no longer say what the order is (on runs that
        keep them current)."""

    def record(self, change_id: str, result: ChangeResult) -> ChangeResult:
        """Keep a finished change (its answer to a repeated Update) and wake waits on it."""

    def now(self) -> datetime:
        """The workflow's clock."""

    def task_mark(self) -> int:
        """Which workflow task runs this step: the history's length when the task started
        (the same on replay; larger for a later task, and for a retry of a failed one)."""


def refusal(error: ChangeRefused) -> ApplicationError:
    """The Update's refusal for a change the order does not allow (its gRPC status as type)."""
    return ApplicationError(error.message, type=error.code, non_retryable=True)


def as_json(value: Any) -> str:
    """A step's input as JSON, the same for the same input (it goes into a keyed request),
    with addresses, names, emails, phones and payment tokens redacted: it is recorded on a
    process exception for agents to read, where none of those belong."""
    is_data = dataclasses.is_dataclass(value) and not isinstance(value, type)
    data = dataclasses.asdict(value) if is_data else value
    return json.dumps(redact(data), sort_keys=True, default=str)


def money(steps: Steps, amount_minor: int) -> str:
    """An amount in the order's currency, for people."""
    return format_minor(amount_minor, steps.order.currency)


def return_window_closes(steps: Steps) -> datetime | None:
    """When the return window closes: the configured time after the last unit was delivered
    (None until then)."""
    delivered_at = steps.state.delivered_at
    if delivered_at is None:
        return None
    return delivered_at + timedelta(seconds=steps.order.timers.return_window_seconds)


def check_return_window(steps: Steps) -> None:
    """Refuse (ChangeRefused) a return once the window after delivery has closed."""
    closes = return_window_closes(steps)
    if closes is None:
        return  # per-line checks refuse what has not shipped
    if steps.now() > closes:
        raise ChangeRefused(f"return window closed on {closes:%Y-%m-%d}")


# ---- money back ---------------------------------------------------------------------------


def memo(steps: Steps, step: str, **amounts: Any) -> CreditMemoInput:
    """A credit memo of this order for the change or step `step`."""
    order_id = steps.order.order_id
    return CreditMemoInput(
        order_id=order_id,
        idempotency_key=f"{order_id}:memo:{step}",
        currency=steps.order.currency,
        **amounts,
    )


async def give_back(
    steps: Steps, memo_input: CreditMemoInput, step: str, void_key: str = ""
) -> tuple[CreditMemoResult, RefundResult]:
    """Create the credit memo and give its money back; while the gateway refuses, a person
    decides (retry once it works, or skip and settle it outside oms). With `void_key`, what
    the authorizations still hold is voided in the same payments call once the money is back
    (the answer's `voided` says whether it was)."""
    state = steps.state
    order_id = memo_input.order_id
    first: CreditMemoAndRefundResult | None = None
    if steps.has_change(versions.CREDIT_MEMO_AND_REFUND):
        first = await steps.activity(
            names.CREDIT_MEMO_AND_REFUND,
            CreditMemoAndRefundInput(memo_input, _refund_key(order_id, step, 1), void_key),
            result_type=CreditMemoAndRefundResult,
        )
        memo_made = first.memo
    else:
        memo_made = await steps.activity(
            names.CREATE_CREDIT_MEMO, memo_input, result_type=CreditMemoResult
        )
    state.credited_minor += memo_made.total_minor
    refunded = released = 0
    attempt = 0
    while True:
        attempt += 1
        if attempt == 1 and first is not None and first.refund is not None:
            refund = first.refund  # made with the memo, under the first attempt's key
        else:
            # Later attempts, or a refund payments refused with the memo: the plain call (a
            # refusal raises here, as it always has).
            refund = await steps.activity(
                names.REFUND_CREDIT_MEMO,
                RefundInput(
                    order_id, memo_made.credit_memo_id, _refund_key(order_id, step, attempt)
                ),
                result_type=RefundResult,
            )
        refunded += refund.refunded_minor
        released += refund.released_minor
        state.refunded_minor += refund.refunded_minor
        state.released_minor += refund.released_minor
        if not refund.failed:
            break
        action = await steps.hold(
            "payment",
            f"credit_memo:{memo_made.credit_memo_id}",
            f"Refund of credit memo {memo_made.credit_memo_id} failed: {refund.failure_reason}",
        )
        if action != "retry":
            break
    voided = first is not None and first.voided
    return memo_made, RefundResult(refunded, released, refund.not_refunded_minor, voided=voided)


def refunded(memo_made: CreditMemoResult, refund: RefundResult, cause: str) -> list[EventData]:
    """What `give_back` gave back, for the log: refund.issued for money sent back from captures,
    payment.voided for what was released from holds (never charged, so no refund to the
    shopper); none when nothing was."""
    events = order_events.refund(memo_made.credit_memo_id, refund.refunded_minor, cause)
    if refund.released_minor > 0:
        events.append(order_events.payment("payment.voided", refund.released_minor))
    return events


def _refund_key(order_id: str, step: str, attempt: int) -> str:
    """The key of a step's `attempt`-th refund (each attempt a new one)."""
    return f"{order_id}:refund:{step}:{attempt}"


def authorization(
    order: OrderLifecycleInput, amount: int, key: str, *, with_additional_methods: bool = True
) -> AuthorizeInput:
    """What payments is asked to hold `amount` of the order under `key`: on its payment
    method, and (with `with_additional_methods`) its additional ones in order."""
    return AuthorizeInput(
        order_id=order.order_id,
        idempotency_key=key,
        payment_method=order.payment_method,
        amount_minor=amount,
        currency=order.currency,
        additional_payment_methods=(
            order.additional_payment_methods if with_additional_methods else []
        ),
    )


def order_authorization(order: OrderLifecycleInput, amount: int, attempt: int) -> AuthorizeInput:
    """The lifecycle's `attempt`-th authorization of the order (each attempt under a key of
    its own; the first keeps the key orders always had)."""
    key = f"{order.order_id}:authorize" + (f":{attempt}" if attempt > 1 else "")
    return authorization(order, amount, key)


async def authorize_more(
    steps: Steps, amount: int, purpose: str, change_id: str, *, with_additional_methods: bool
) -> AuthorizeResult:
    """Hold `amount` more for a change, as an authorization of its own; with
    `with_additional_methods`, on the order's additional payment methods too (in order)."""
    order = steps.order
    result: AuthorizeResult = await steps.activity(
        names.AUTHORIZE_PAYMENT,
        authorization(
            order,
            amount,
            f"{order.order_id}:authorize:{purpose}:{change_id}",
            with_additional_methods=with_additional_methods,
        ),
        result_type=AuthorizeResult,
    )
    return result


async def void(steps: Steps, reason: str, key: str = "") -> None:
    """Release what the order's authorizations still hold: a cancel's or compensation's void
    (`void_key`), or one the lifecycle itself asks once under `key`."""
    await steps.activity(
        names.VOID_AUTHORIZATION,
        VoidInput(steps.order.order_id, key or void_key(steps), reason),
    )


def void_key(steps: Steps) -> str:
    """The key of the void a cancel or compensation asks: of the order and (patched) of the
    workflow task asking, so a void asked again in a later task is made again rather than
    answered with an earlier one that found less held (workflows/versions.py,
    VOID_PER_TASK)."""
    key = f"{steps.order.order_id}:void"
    if steps.has_change(versions.VOID_PER_TASK):
        key += f":task-{steps.task_mark()}"
    return key


async def capture(
    steps: Steps,
    invoice: InvoiceResult,
    first: InvoiceAndCaptureResult | None = None,
    first_key: str = "",
) -> int:
    """Capture the invoice; while the gateway fails or payments refuses, hold for an agent
    (each new attempt has a key of its own; skip or cancel as `until_decided`). `first` is the
    outcome of a capture already made with the invoice (under `first_key`), which counts as the
    first attempt. Returns what was captured."""
    attempt = 0

    async def once() -> CaptureResult | Failed:
        nonlocal attempt
        attempt += 1
        asked = CaptureInput(
            invoice.invoice_id,
            f"{steps.order.order_id}:capture:{invoice.invoice_id}:{attempt}",
        )
        if attempt == 1 and first is not None:
            asked = CaptureInput(invoice.invoice_id, first_key)
            result, refusal_text = first.capture, first.capture_refused
        else:
            result, refusal_text = await try_activity(
                steps, names.CAPTURE_INVOICE, asked, result_type=CaptureResult
            )
        failure = _capture_failure(result, refusal_text)
        if result is not None and not failure:
            return result
        return Failed(
            f"Capture of invoice {invoice.invoice_id} failed: {failure}",
            as_json(asked),
            "capture failed; canceled by an agent",
        )

    # Skipped, or canceled: what shipped stays shipped (and unpaid); on a cancel whatever has
    # not shipped is canceled; the hold on the unpaid part is released at settlement.
    captured = await until_decided(
        steps,
        once,
        "payment",
        f"invoice:{invoice.invoice_id}",
        lambda: f"capture-cancel:{invoice.invoice_id}",
    )
    if captured is None:
        return 0
    await steps.progress(
        "",
        "payment.captured",
        f"Invoice {invoice.invoice_id} of {money(steps, invoice.total_minor)} captured",
        step=f"captured:{invoice.invoice_id}",
        holds=("payment", f"invoice:{invoice.invoice_id}"),
        events=[
            order_events.payment("payment.captured", int(captured.amount_minor), invoice.invoice_id)
        ],
    )
    return int(captured.amount_minor)


def _capture_failure(result: CaptureResult | None, refusal_text: str) -> str:
    """Why a capture attempt did not capture ("" when it did)."""
    if result is None:
        return f"refused: {refusal_text}"
    return "" if result.succeeded else result.failure_reason


async def attempt_step(steps: Steps, step: Any, category: str, attached_to: str) -> Any:
    """Run a step of an order that has begun to ship, where nothing can be undone: a refusal
    retrying cannot fix holds the order on a process exception (as `until_decided`). None when
    the step did not happen."""

    async def once() -> Any:
        try:
            return await step()
        except ActivityError as refused:
            what = refused.activity_type or "a step"
            return Failed(
                f"{what} refused: {refused.cause or refused}",
                steps.refused_step_input,
                f"{what} refused; canceled by an agent",
            )

    return await until_decided(
        steps, once, category, attached_to, lambda: f"refused-cancel:{steps.state.holds}"
    )


# ---- trying until an agent decides ----------------------------------------------------------


@dataclass(frozen=True)
class Failed:
    """An attempt at a step that did not succeed: what the process exception it raises says
    (and records as the step's input), and the reason of a cancel an agent decides on."""

    message: str
    step_input: str
    cancel_reason: str


async def try_activity(
    steps: Steps, name: str, arg: Any, *, result_type: type[T]
) -> tuple[T | None, str]:
    """Run one activity: its result and "", or None and why it was refused (a business
    refusal, or retries given up), for a caller that holds the order rather than fail."""
    try:
        result: T = await steps.activity(name, arg, result_type=result_type)
        return result, ""
    except ActivityError as refused:
        return None, str(refused.cause or refused)


async def until_decided(
    steps: Steps,
    attempt: Callable[[], Awaitable[T | Failed]],
    category: str,
    attached_to: str,
    cancel_step: Callable[[], str],
    *,
    release_on_skip: bool = True,
) -> T | None:
    """Run `attempt` until it succeeds (its result), holding the order on a process exception
    (`category`, attached to `attached_to`) after each failure: the agent's retry runs it again;
    skip carries on without it (None), and the holds on what is left unpaid are released at
    settlement unless `release_on_skip` is False; cancel also cancels what has not shipped
    (under the step `cancel_step()` names once the agent has decided) and releases."""
    while True:
        outcome = await attempt()
        if not isinstance(outcome, Failed):
            return outcome
        action = await steps.hold(category, attached_to, outcome.message, outcome.step_input)
        if action == "retry":
            continue
        if release_on_skip or action == "cancel":
            steps.state.release_at_settlement = True
        if action == "cancel":
            await cancel_unshipped(steps, outcome.cancel_reason, cancel_step())
        return None


# ---- fulfillment ----------------------------------------------------------------------------


async def route(
    steps: Steps,
    lines: list[RoutingLineData],
    step: str,
    new_lines: list[LifecycleLine] | None = None,
    reservation_id: str = "",
) -> RouteResult:
    """Place `lines` (of the order's lines, or of `new_lines` not on it yet), consuming the
    checkout reservation `reservation_id` when one is given and still held."""
    order = steps.order
    known = [*order.lines, *(new_lines or [])]
    group_of = {line.order_line_id: line.delivery_group_id for line in known}
    groups = []
    for group in order.delivery_groups:
        mine = [
            line
            for line in lines
            if group_of.get(line.order_line_id.split(":")[0]) == group.delivery_group_id
        ]
        if mine:
            groups.append(
                RoutingGroupData(
                    group.delivery_group_id,
                    group.address,
                    mine,
                    group.delivery_method,
                    group.pickup_location_id,
                )
            )
    result: RouteResult = await steps.activity(
        names.CREATE_FULFILLMENT_ORDERS,
        RouteInput(order.order_id, f"{order.order_id}:route:{step}", groups, reservation_id),
        result_type=RouteResult,
    )
    return result


async def cancel_placed(steps: Steps, placed: RouteResult, reason: str) -> None:
    """Undo a routing the workflow will not keep: its fulfillment orders are canceled whole,
    which releases their reservations."""
    for fo in placed.fulfillment_orders:
        fo_id = fo.fulfillment_order_id
        await steps.activity(
            names.CANCEL_FULFILLMENT_ORDER,
            CancelFulfillmentOrderInput(fo_id, f"{fo_id}:cancel", reason),
        )


# ---- cancels ----------------------------------------------------------------------------------


async def cancel_unshipped(
    steps: Steps,
    reason: str,
    step: str,
    *,
    money_back: bool = True,
    cause: list[EventData] | None = None,
) -> bool:
    """Cancel whatever has not shipped (nothing when everything has: False); `money_back` and
    `cause` as for `cancel_units`."""
    if not any(b.available_to_cancel for b in steps.ledger.lines.values()):
        return False
    await cancel_units(steps, [], reason, step, money_back=money_back, cause=cause)
    return True


async def cancel_units(
    steps: Steps,
    requested: list[ItemQuantity],
    reason: str,
    step: str,
    *,
    money_back: bool = True,
    void_when_all_canceled: bool = False,
    cause: list[EventData] | None = None,
    canceled_by_fulfillment: str = "",
) -> ChangeResult:
    """Cancel unshipped units (empty: all of them): on their fulfillment orders, in the
    buckets, and in money (unless `money_back` is False: nothing was authorized).
    `canceled_by_fulfillment` names the fulfillment order whose units fulfillment canceled
    itself (a pickup not collected): they are taken off it without asking again. With
    `void_when_all_canceled`, a cancel that leaves every line canceled also voids what the
    authorizations still hold (with the money given back when it can be). `cause`: events of
    what led to the cancel (e.g. a declined payment), reported first, with it."""
    ledger, order = steps.ledger, steps.order
    plan = ledger.plan_cancel(requested)
    released: list[ItemQuantity] = []
    events = [
        *(cause or []),
        order_events.lines_changed("lines.canceled", order_events.lines(ledger, plan), reason),
    ]
    taken = (
        {canceled_by_fulfillment: plan}
        if canceled_by_fulfillment
        else ledger.open_units_for_cancel(plan)
    )
    for fo_id, items in taken.items():
        if not canceled_by_fulfillment:
            await steps.activity(
                names.CANCEL_FULFILLMENT_ORDER_LINES,
                CancelLinesInput(fo_id, f"{order.order_id}:{step}:{fo_id}", items, reason),
            )
        ledger.remove_open_units(fo_id, items)
        released += items
        # The fulfillment order gives the units up; with none left to ship, it is canceled.
        ended = not ledger.is_open(fo_id)
        events.append(
            order_events.fulfillment_order(
                "fulfillment.canceled",
                ledger.fulfillment_orders[fo_id],
                "canceled" if ended else "",
                order_events.lines(ledger, items),
                reason,
            )
        )
    canceled = plan
    credit = ledger.credit_lines_for_cancel(canceled)
    shipping = billing.shipping_freed_by_cancel(ledger, order.delivery_groups, canceled)
    ledger.apply_cancel(canceled)
    result = ChangeResult(change_id=step, kind="cancel", summary="", lines=canceled)
    # Nothing left to charge: the holds can go. The void is asked with the memo's reason,
    # whichever call makes it (the memo's, or the plain one below), so both are one record.
    void_asked = (
        VoidInput(order.order_id, void_key(steps), reason)
        if void_when_all_canceled and ledger.all_canceled()
        else None
    )
    voided = False
    if money_back:
        memo_made, refund = await give_back(
            steps,
            memo(steps, step, reason=reason, kind="cancel", lines=credit, shipping_minor=shipping),
            step,
            void_asked.idempotency_key if void_asked else "",
        )
        result.credit_memo_id = memo_made.credit_memo_id
        result.credited_minor = memo_made.total_minor
        result.refunded_minor = refund.refunded_minor
        result.released_minor = refund.released_minor
        voided = refund.voided
        events += refunded(memo_made, refund, "cancel")
    units = sum(i.quantity for i in canceled)
    result.summary = f"Canceled {units} unit(s): {reason}" + (
        f"; {money(steps, result.credited_minor)} given back" if result.credited_minor else ""
    )
    status = CANCELED if ledger.all_canceled() else ""
    await steps.progress(
        status,
        "change.cancel",
        result.summary,
        [LineQuantityChange(i.order_line_id, canceled=i.quantity) for i in canceled]
        + [LineQuantityChange(i.order_line_id, allocated=-i.quantity) for i in released],
        step=f"canceled:{step}",
        events=events,
    )
    if void_asked is not None and not voided:
        # Not made with the memo (its refund failed and an agent decided, or payments
        # refused the void there): voided now, where the separate void always came.
        await steps.activity(names.VOID_AUTHORIZATION, void_asked)
    result.order_status = steps.state.status
    return result
