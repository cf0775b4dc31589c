"""`oms order cancel|return|exchange|reship|appease|add-items|change-address|changes`,
`oms return …` and `oms exception …`: servicing an order as an agent; `oms return policies …`:
the return policy, as a merchandiser."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from oms.capture.v1 import capture_pb2

from oms_platform import auth
from oms_platform.money import format_minor
from oms_platform.settings import Settings
from oms_tools.cli.common import as_json, enum_name
from oms_tools.cli.orders import caller_token, capture_stub, service_channel

# ---- servicing: changes, returns and process exceptions ------------------------------------


def _servicing(settings: Settings, role: str = auth.AGENT) -> tuple[grpc.aio.Channel, Any]:
    from oms.servicing.v1 import servicing_pb2_grpc

    channel = service_channel(settings, "servicing", caller_token(settings, role))
    return channel, servicing_pb2_grpc.ServicingServiceStub(channel)


async def _currency_of(settings: Settings, order_id: str) -> str:
    """The order's currency, for printing amounts; "" if capture cannot say right now."""
    channel, stub = capture_stub(settings)
    async with channel:
        try:
            view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=5)
        except grpc.aio.AioRpcError:
            return ""
    return str(view.order.currency)


def _amount(amount_minor: int, currency: str) -> str:
    return format_minor(amount_minor, currency) if currency else f"{amount_minor} (minor units)"


def _condition(name: str | None) -> Any:
    """A --condition value (one of servicing's return_orders.CONDITIONS) as the ItemCondition
    enum; unspecified when none was given."""
    from oms.servicing.v1 import servicing_pb2 as spb

    if not name:
        return spb.ITEM_CONDITION_UNSPECIFIED
    return spb.ItemCondition.Value(f"ITEM_CONDITION_{name.upper()}")


def _item_pairs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """--line/--qty pairs in the order given; --qty defaults to 1 for every line."""
    qty = args.qty or [1] * len(args.line)
    if len(qty) != len(args.line):
        raise SystemExit("error: give one --qty per --line (or none for 1 each)")
    return list(zip(args.line, qty, strict=True))


def _print_outcome(outcome: Any, currency: str, indent: str = "  ") -> None:
    print(f"{indent}{outcome.summary}")
    money = [
        (label, value)
        for label, value in (
            ("credited", outcome.credited_minor),
            ("refunded", outcome.refunded_minor),
            ("released", outcome.released_minor),
            ("charged", outcome.charged_minor),
            ("authorized", outcome.authorized_minor),
        )
        if value
    ]
    if money:
        print(indent + "  ".join(f"{label} {_amount(v, currency)}" for label, v in money))
    if outcome.credit_memo_id:
        print(f"{indent}credit memo {outcome.credit_memo_id}")
    if outcome.return_order_id:
        print(f"{indent}return order {outcome.return_order_id}")
    for fo_id in outcome.fulfillment_order_ids:
        print(f"{indent}new fulfillment order {fo_id}")
    if outcome.location_ids:
        moved = "moves to" if outcome.rerouted else "ships from"
        print(f"{indent}{moved} {', '.join(outcome.location_ids)}")
    if outcome.grand_total_minor:
        print(f"{indent}order total {_amount(outcome.grand_total_minor, currency)}")
    if outcome.order_status:
        print(f"{indent}order is {outcome.order_status}")


def _print_change(change: Any, currency: str) -> None:
    from oms.servicing.v1 import servicing_pb2 as spb

    kind = spb.ChangeKind.Name(change.kind).removeprefix("CHANGE_KIND_").lower()
    status = spb.ChangeStatus.Name(change.status).removeprefix("CHANGE_STATUS_").lower()
    print(f"{kind} {change.change_id} [{status}] by {change.actor}: {change.reason}")
    if change.HasField("outcome"):
        _print_outcome(change.outcome, currency)
    if change.refusal_message:
        print(f"  {change.refusal_code}: {change.refusal_message}")


# A change command's Submit RPC, and its Preview RPC with the fields a preview takes.
CHANGE_RPCS = {
    "cancel": ("SubmitCancel", "PreviewCancel", ("order_id", "lines")),
    "return": ("SubmitReturn", "PreviewReturn", ("order_id", "lines", "return_fee_minor")),
    "exchange": ("SubmitExchange", "PreviewExchange", ("order_id", "lines")),
    "reship": ("SubmitReship", "PreviewReship", ("order_id", "lines")),
    "appease": (
        "SubmitAppeasement",
        "PreviewAppeasement",
        ("order_id", "order_line_id", "amount_minor", "percent_basis_points"),
    ),
    "add-items": ("SubmitAddItems", "PreviewAddItems", ("order_id", "new_lines", "increases")),
    "change-address": (
        "SubmitAddressChange",
        "PreviewAddressChange",
        ("order_id", "delivery_group_id", "address"),
    ),
}


def _change_request(args: argparse.Namespace) -> Any:
    """The Submit request of a change command."""
    from oms.servicing.v1 import servicing_pb2 as spb

    common = {"order_id": args.order_id, "idempotency_key": args.key}

    def items() -> list[Any]:  # only the commands with --line/--qty pairs have them
        return [spb.ItemQuantity(order_line_id=line, quantity=q) for line, q in _item_pairs(args)]

    if args.order_command == "cancel":
        return spb.SubmitCancelRequest(**common, reason=args.reason, lines=items())
    if args.order_command == "return":
        return spb.SubmitReturnRequest(
            **common,
            reason=args.reason,
            refund_without_return=args.no_return,
            return_fee_minor=args.fee,
            lines=[
                spb.ReturnItem(
                    order_line_id=line,
                    quantity=q,
                    reason=args.reason,
                    condition=_condition(args.condition),
                )
                for line, q in _item_pairs(args)
            ],
        )
    if args.order_command == "exchange":
        pairs = _item_pairs(args)
        if len(args.sku) != len(pairs) or len(args.price) != len(pairs):
            raise SystemExit("error: give one --sku and one --price per --line")
        return spb.SubmitExchangeRequest(
            **common,
            reason=args.reason,
            lines=[
                spb.ExchangeItem(
                    order_line_id=line,
                    quantity=q,
                    replacement_sku=sku,
                    replacement_unit_price_minor=price,
                    condition=_condition(args.condition),
                )
                for (line, q), sku, price in zip(pairs, args.sku, args.price, strict=True)
            ],
        )
    if args.order_command == "reship":
        return spb.SubmitReshipRequest(
            **common,
            reason=spb.ReshipReason.Value(f"RESHIP_REASON_{args.reason.upper()}"),
            note=args.note,
            lines=items(),
        )
    if args.order_command == "change-address":
        return _address_change(args, common)
    if args.order_command == "add-items":
        new_lines, increases = _additions(args)
        return spb.SubmitAddItemsRequest(
            **common, reason=args.reason, new_lines=new_lines, increases=increases
        )
    request = spb.SubmitAppeasementRequest(
        **common, reason=args.reason, order_line_id=args.line or ""
    )
    if args.amount is not None:
        request.amount_minor = args.amount
    else:
        request.percent_basis_points = _basis_points(args.percent)
    return request


async def cmd_order_change(settings: Settings, args: argparse.Namespace) -> int:
    """cancel, return, exchange, reship, appease and add-items: one Submit each, answered with
    the result (or, with --preview, what it would do: nothing is recorded)."""
    from oms.servicing.v1 import servicing_pb2 as spb

    submit_rpc, preview_rpc, preview_fields = CHANGE_RPCS[args.order_command]
    request = _change_request(args)
    channel, stub = _servicing(settings)
    async with channel:
        if args.preview:
            preview_type = getattr(spb, f"{preview_rpc}Request")
            given = {f: getattr(request, f) for f in preview_fields if getattr(request, f)}
            response = await getattr(stub, preview_rpc)(preview_type(**given), timeout=args.timeout)
        else:
            response = await getattr(stub, submit_rpc)(request, timeout=args.timeout)
    currency = "" if args.json else await _currency_of(settings, args.order_id)
    if args.json:
        print(as_json(response))
    elif args.preview:
        _print_outcome(response.preview, currency, indent="")
    else:
        _print_change(response.change, currency)
    return 0


def _address_change(args: argparse.Namespace, common: dict[str, str]) -> Any:
    """change-address: the delivery group and its new address (checked by servicing)."""
    from oms.common.v1 import common_pb2
    from oms.servicing.v1 import servicing_pb2 as spb

    if args.submit and not args.reason.strip():
        raise SystemExit("error: --submit needs --reason")
    return spb.SubmitAddressChangeRequest(
        **common,
        delivery_group_id=args.group,
        reason=args.reason,
        note=args.note,
        address=common_pb2.PostalAddress(
            line1=args.line1,
            line2=args.line2,
            city=args.city,
            region=args.region,
            postal_code=args.postal_code,
            country_code=args.country,
        ),
    )


def _basis_points(percent: str) -> int:
    """ "12.5" (percent) -> 1250 basis points, exactly (no floating point)."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(percent) * 100
    except InvalidOperation:
        raise SystemExit(f"error: --percent {percent!r} is not a number") from None
    if value != value.to_integral_value():
        raise SystemExit("error: --percent has at most two decimals")
    return int(value)


def _fields(spec: str, option: str, names: tuple[str, ...], required: int) -> list[str]:
    """A comma-separated option value, e.g. --new SKU,QTY,PRICE[,TAX]."""
    parts = [p.strip() for p in spec.split(",")]
    if not required <= len(parts) <= len(names) or not all(parts[:required]):
        raise SystemExit(f"error: {option} {spec!r}: give {','.join(names[:required])}[,...]")
    return parts + [""] * (len(names) - len(parts))


def _minor(value: str, option: str) -> int:
    try:
        return int(value or 0)
    except ValueError:
        raise SystemExit(f"error: {option}: {value!r} is not a whole number") from None


def _additions(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """add-items: the new lines (--new) and the more units of lines (--more) asked for."""
    from oms.servicing.v1 import servicing_pb2 as spb

    new_lines = []
    for spec in args.new:
        sku, qty, price, tax = _fields(spec, "--new", ("SKU", "QTY", "UNIT_PRICE", "TAX"), 3)
        new_lines.append(
            spb.NewLineItem(
                sku=sku,
                name=args.name,
                quantity=_minor(qty, "--new"),
                unit_price_minor=_minor(price, "--new"),
                tax_minor=_minor(tax, "--new"),
                delivery_group_id=args.group,
            )
        )
    increases = []
    for spec in args.more:
        line, qty, tax = _fields(spec, "--more", ("ORDER_LINE_ID", "QTY", "TAX"), 2)
        increases.append(
            spb.LineIncrease(
                order_line_id=line, quantity=_minor(qty, "--more"), tax_minor=_minor(tax, "--more")
            )
        )
    if not new_lines and not increases:
        raise SystemExit("error: give at least one --new or --more")
    return new_lines, increases


async def cmd_order_changes(settings: Settings, args: argparse.Namespace) -> int:
    from oms.servicing.v1 import servicing_pb2 as spb

    channel, stub = _servicing(settings)
    async with channel:
        response = await stub.ListChanges(
            spb.ListChangesRequest(order_id=args.order_id), timeout=10
        )
    if args.json:
        print(as_json(response))
        return 0
    currency = await _currency_of(settings, args.order_id) if response.changes else ""
    for change in response.changes:
        _print_change(change, currency)
    return 0


async def cmd_return(settings: Settings, args: argparse.Namespace) -> int:
    """`oms return receive`, `oms return list` and `oms return policies …`."""
    from oms.servicing.v1 import servicing_pb2 as spb

    if args.return_command == "policies":
        return await _policies(settings, args)
    channel, stub = _servicing(settings)
    async with channel:
        if args.return_command == "list":
            listing = await stub.ListReturnOrders(
                spb.ListReturnOrdersRequest(order_id=args.order_id), timeout=10
            )
            if args.json:
                print(as_json(listing))
                return 0
            for rma in listing.return_orders:
                _print_return_order(rma)
            return 0
        condition = _condition(args.condition)
        pairs = _item_pairs(args)
        request = spb.ReceiveReturnRequest(
            return_order_id=args.return_order_id,
            order_id=args.order,
            idempotency_key=args.key,
            note=args.note,
        )
        if args.reject:
            request.rejected.extend(
                spb.RejectedItem(
                    order_line_id=line, quantity=q, reason=args.reason, condition=condition
                )
                for line, q in pairs
            )
        else:
            request.accepted.extend(
                spb.ReceivedItem(order_line_id=line, quantity=q, condition=condition)
                for line, q in pairs
            )
        response = await stub.ReceiveReturn(request, timeout=args.timeout)
    if args.json:
        print(as_json(response))
        return 0
    _print_change(response.change, await _currency_of(settings, response.change.order_id))
    _print_return_order(response.return_order)
    return 0


async def _policies(settings: Settings, args: argparse.Namespace) -> int:
    """`oms return policies list|set|delete`, as a merchandiser (who keeps the policy)."""
    from oms.servicing.v1 import servicing_pb2 as spb

    channel, stub = _servicing(settings, auth.MERCHANDISER)
    async with channel:
        if args.policy_command == "list":
            response = await stub.ListReturnPolicyRules(
                spb.ListReturnPolicyRulesRequest(), timeout=10
            )
        elif args.policy_command == "delete":
            response = await stub.DeleteReturnPolicyRule(
                spb.DeleteReturnPolicyRuleRequest(rule_id=args.rule_id), timeout=10
            )
        else:
            response = await stub.UpsertReturnPolicyRule(
                spb.UpsertReturnPolicyRuleRequest(rule=_policy_rule(args)), timeout=10
            )
    if args.json:
        print(as_json(response))
    elif args.policy_command == "list":
        for rule in response.rules:
            _print_rule(rule)
    elif args.policy_command == "delete":
        print(f"rule {args.rule_id} " + ("deleted" if response.deleted else "not found"))
    else:
        _print_rule(response.rule)
    return 0 if args.policy_command != "delete" or response.deleted else 1


def _policy_rule(args: argparse.Namespace) -> Any:
    """`set`: the whole rule as given (what is not given is reset, not kept)."""
    from oms.servicing.v1 import servicing_pb2 as spb

    return spb.ReturnPolicyRule(
        rule_id=args.rule_id,
        channel=args.channel,
        category=args.category,
        return_days=args.days or 0,
        use_channel_window=args.days is None,
        required_conditions=[_condition(c) for c in args.condition],
        final_sale=args.final_sale,
        restocking_fee_basis_points=_basis_points(args.restocking_fee),
        fee_on_exchange=args.fee_on_exchange,
        description=args.description,
    )


def _print_rule(rule: Any) -> None:
    from oms.servicing.v1 import servicing_pb2 as spb

    window = "the channel's window" if rule.use_channel_window else f"{rule.return_days} day(s)"
    terms = ["final sale"] if rule.final_sale else [f"returns within {window}"]
    if rule.required_conditions:
        conditions = [
            enum_name(spb.ItemCondition, c, "ITEM_CONDITION_") for c in rule.required_conditions
        ]
        terms.append("only " + " or ".join(conditions))
    if rule.restocking_fee_basis_points:
        on = "returns and exchanges" if rule.fee_on_exchange else "returns"
        terms.append(f"restocking fee {rule.restocking_fee_basis_points / 100:g}% on {on}")
    print(
        f"{rule.rule_id}  channel {rule.channel or 'any'}  category {rule.category or 'any'}: "
        + ", ".join(terms)
    )
    if rule.description:
        print(f"  {rule.description}")
    if rule.updated_by:
        print(f"  set by {rule.updated_by} on {rule.updated_at.ToDatetime():%Y-%m-%d %H:%M}")


def _print_return_order(rma: Any) -> None:
    from oms.servicing.v1 import servicing_pb2 as spb

    status = spb.ReturnOrderStatus.Name(rma.status).removeprefix("RETURN_ORDER_STATUS_").lower()
    print(f"return order {rma.return_order_id}  order {rma.order_id}  [{status}]  {rma.reason}")
    for line in rma.lines:
        condition = spb.ItemCondition.Name(line.condition).removeprefix("ITEM_CONDITION_")
        why = f": {line.rejection_reason}" if line.rejection_reason else ""
        print(
            f"  {line.order_line_id}  expected {line.quantity_expected}  received "
            f"{line.quantity_received} (accepted {line.quantity_accepted}, rejected "
            f"{line.quantity_rejected}{why})  {condition.lower()}"
        )


async def cmd_exception(settings: Settings, args: argparse.Namespace) -> int:
    """`oms exception list | resolve | set-status`."""
    from oms.servicing.v1 import servicing_pb2 as spb

    channel, stub = _servicing(settings)
    async with channel:
        if args.exception_command == "list":
            request = spb.ListProcessExceptionsRequest(
                order_id=args.order,
                statuses=[
                    spb.ProcessExceptionStatus.Value(f"PROCESS_EXCEPTION_STATUS_{s.upper()}")
                    for s in args.status
                ],
                categories=[
                    spb.ProcessExceptionCategory.Value(f"PROCESS_EXCEPTION_CATEGORY_{c.upper()}")
                    for c in args.category
                ],
                severities=[
                    spb.ProcessExceptionSeverity.Value(f"PROCESS_EXCEPTION_SEVERITY_{s.upper()}")
                    for s in args.severity
                ],
                page_size=args.limit,
            )
            if args.older_than:
                request.created_before.FromDatetime(
                    datetime.now(UTC) - parse_duration(args.older_than)
                )
            listing = await stub.ListProcessExceptions(request, timeout=10)
            if args.json:
                print(as_json(listing))
                return 0
            for pe in listing.process_exceptions:
                _print_exception(pe)
            return 0
        if args.exception_command == "resolve":
            response = await stub.ResolveProcessException(
                spb.ResolveProcessExceptionRequest(
                    process_exception_id=args.process_exception_id,
                    action=spb.ResolutionAction.Value(f"RESOLUTION_ACTION_{args.action.upper()}"),
                    note=args.note,
                ),
                timeout=args.timeout,
            )
        else:  # set-status
            response = await stub.UpdateProcessExceptionStatus(
                spb.UpdateProcessExceptionStatusRequest(
                    process_exception_id=args.process_exception_id,
                    status=spb.ProcessExceptionStatus.Value(
                        f"PROCESS_EXCEPTION_STATUS_{args.to.upper()}"
                    ),
                    note=args.note,
                ),
                timeout=10,
            )
    if args.json:
        print(as_json(response))
    else:
        _print_exception(response.process_exception)
    return 0


def parse_duration(text: str) -> timedelta:
    """ "90s", "15m", "4h", "2d" as a timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise SystemExit(f"error: {text!r} is not a duration like 90s, 15m, 4h or 2d")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


def _print_exception(pe: Any) -> None:
    from oms.servicing.v1 import servicing_pb2 as spb

    status = enum_name(spb.ProcessExceptionStatus, pe.status, "PROCESS_EXCEPTION_STATUS_")
    category = enum_name(spb.ProcessExceptionCategory, pe.category, "PROCESS_EXCEPTION_CATEGORY_")
    severity = enum_name(spb.ProcessExceptionSeverity, pe.severity, "PROCESS_EXCEPTION_SEVERITY_")
    print(
        f"{pe.process_exception_id}  order {pe.order_id}  {category}/{severity}  [{status}]  "
        f"{pe.created_at.ToDatetime():%Y-%m-%d %H:%M}"
    )
    for line in pe.message.splitlines():
        print(f"  {line}")
    if pe.step_input:
        print(f"  step input: {pe.step_input}")
    if pe.status == spb.PROCESS_EXCEPTION_STATUS_RESOLVED:
        action = enum_name(spb.ResolutionAction, pe.resolution_action, "RESOLUTION_ACTION_")
        print(
            f"  resolved by {pe.resolved_by}: {action}"
            + (f" ({pe.resolution_note})" if pe.resolution_note else "")
            + (f"; order is {pe.order_status}" if pe.order_status else "")
        )
    elif pe.note:
        print(f"  note by {pe.updated_by}: {pe.note}")
