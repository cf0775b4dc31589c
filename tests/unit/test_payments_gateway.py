"""The simulated gateways, outcome resolution by key, and adapters chosen by settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from oms_platform.settings import Settings
from services.payments import bootstrap
from services.payments.gateway import Gateways, GatewayUnavailable, call_resolved
from services.payments.sim_store import read_operation_log
from services.payments.simulated import SimulatedGateway, SimulatedGiftCardGateway


async def test_a_gift_card_holds_at_most_its_balance_and_only_when_partial_is_allowed() -> None:
    gateway = SimulatedGiftCardGateway()
    token = "gc_2500_abc"
    whole = await gateway.authorize("k1", token, 4_000, "USD")
    assert (whole.succeeded, whole.reason) == (False, "insufficient_funds")
    assert await gateway.balance_of(token) == 2_500

    partial = await gateway.authorize("k2", token, 4_000, "USD", allow_partial=True)
    assert (partial.succeeded, partial.amount_minor) == (True, 2_500)
    assert await gateway.balance_of(token) == 0
    empty = await gateway.authorize("k3", token, 100, "USD", allow_partial=True)
    assert (empty.succeeded, empty.reason) == (False, "insufficient_funds")


async def test_money_back_on_a_gift_card_returns_to_its_balance() -> None:
    gateway = SimulatedGiftCardGateway()
    token = "gc_5000"
    hold = await gateway.authorize("a", token, 5_000, "USD")
    charge = await gateway.capture("c", hold.reference, 3_000, "USD")
    assert (await gateway.reverse("r", hold.reference, 500, "USD")).succeeded
    assert await gateway.balance_of(token) == 500
    assert (await gateway.refund("f", charge.reference, 1_000, "USD")).succeeded
    assert await gateway.balance_of(token) == 1_500
    released = await gateway.void("v", hold.reference)
    assert released.amount_minor == 1_500
    assert await gateway.balance_of(token) == 3_000


async def test_an_unknown_gift_card_is_declined() -> None:
    result = await SimulatedGiftCardGateway().authorize("k", "tok_visa", 100, "USD")
    assert (result.succeeded, result.reason) == (False, "unknown_gift_card")


async def test_a_reversal_never_releases_more_than_is_still_held() -> None:
    gateway = SimulatedGateway()
    hold = await gateway.authorize("a", "tok_visa", 5_000, "USD")
    await gateway.capture("c", hold.reference, 4_000, "USD")
    too_much = await gateway.reverse("r1", hold.reference, 1_001, "USD")
    assert (too_much.succeeded, too_much.reason) == (False, "amount_exceeds_authorization")
    assert (await gateway.reverse("r2", hold.reference, 1_000, "USD")).succeeded
    late = await gateway.capture("c2", hold.reference, 1, "USD")
    assert (late.succeeded, late.reason) == (False, "amount_exceeds_authorization")


async def test_captures_and_reversals_refuse_unknown_voided_or_foreign_holds() -> None:
    gateway = SimulatedGateway()
    for draw in (gateway.capture, gateway.reverse):
        unknown = await draw(f"{draw.__name__}-unknown", "sim_auth_nope", 100, "USD")
        assert (unknown.succeeded, unknown.reason) == (False, "unknown_authorization")
    hold = await gateway.authorize("a", "tok_visa", 5_000, "USD")
    for draw in (gateway.capture, gateway.reverse):
        foreign = await draw(f"{draw.__name__}-eur", hold.reference, 100, "EUR")
        assert (foreign.succeeded, foreign.reason) == (False, "currency_mismatch")
    await gateway.void("v", hold.reference)
    for draw in (gateway.capture, gateway.reverse):
        voided = await draw(f"{draw.__name__}-voided", hold.reference, 100, "USD")
        assert (voided.succeeded, voided.reason) == (False, "authorization_voided")


async def test_a_refund_of_a_card_that_refuses_refunds_fails_with_the_reason() -> None:
    gateway = SimulatedGateway()
    hold = await gateway.authorize("a", "tok_fail_refund", 5_000, "USD")
    charge = await gateway.capture("c", hold.reference, 5_000, "USD")
    result = await gateway.refund("f", charge.reference, 100, "USD")
    assert (result.succeeded, result.reason) == (False, "refund_rejected")


async def test_a_timeout_after_refunding_is_resolved_by_lookup_and_refunds_once() -> None:
    gateway = SimulatedGateway()
    hold = await gateway.authorize("a", "tok_visa", 5_000, "USD")
    charge = await gateway.capture("c", hold.reference, 5_000, "USD")
    gateway.timeout_after_charge = True
    result = await call_resolved(
        gateway, "f", lambda: gateway.refund("f", charge.reference, 2_000, "USD")
    )
    assert (result.succeeded, result.amount_minor) == (True, 2_000)
    assert [op.key for op in gateway.operations_of("refund")] == ["f"]
    assert ("lookup", "f") in gateway.calls


async def test_an_outcome_still_unknown_after_every_attempt_is_unavailable() -> None:
    gateway = SimulatedGateway(transient_failure_rate=1.0)
    with pytest.raises(GatewayUnavailable, match="unknown after 2 attempts"):
        await call_resolved(
            gateway,
            "k",
            lambda: gateway.authorize("k", "tok_visa", 100, "USD"),
            attempts=2,
            backoff_seconds=0,
        )
    assert gateway.operations == []


def test_settings_choose_an_adapter_per_payment_method_type_one_instance_per_name() -> None:
    gateways = bootstrap.make_gateways(Settings(gateway_decline_above_minor=777))
    card, terms = gateways.for_method("card"), gateways.for_method("invoice_terms")
    assert isinstance(card, SimulatedGateway)
    assert not isinstance(card, SimulatedGiftCardGateway)
    assert card.decline_above_minor == 777
    assert card is terms
    assert isinstance(gateways.for_method("gift_card"), SimulatedGiftCardGateway)
    assert gateways.for_method("unspecified") is card
    assert len(gateways.adapters()) == 2

    everything_gift = bootstrap.make_gateways(Settings(gateway_for_card="simulated-giftcard"))
    assert everything_gift.for_method("card") is everything_gift.for_method("gift_card")


def test_a_setting_naming_no_adapter_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="gateway_for_gift_card='stripe' names no gateway"):
        bootstrap.make_gateways(Settings(gateway_for_gift_card="stripe"))


async def test_the_operation_log_holds_every_operation_performed_once_replays_not_again(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gateway.jsonl"
    gateway = SimulatedGateway(operation_log=str(log))
    hold = await gateway.authorize("a", "tok_visa", 5_000, "USD")
    charge = await gateway.capture("c", hold.reference, 3_000, "USD")
    await gateway.capture("c", hold.reference, 3_000, "USD")  # a replay: no operation
    await gateway.refund("f", charge.reference, 9_000, "USD")  # performed, and failed

    logged = read_operation_log(log)

    assert logged == gateway.operations
    assert [(op.kind, op.key, op.result.succeeded) for op in logged] == [
        ("authorize", "a", True),
        ("capture", "c", True),
        ("refund", "f", False),
    ]
    assert logged[1].reference == charge.reference
    assert (logged[2].amount_minor, logged[2].result.reason) == (9_000, "amount_exceeds_capture")


def test_no_operation_log_is_written_unless_one_is_named(tmp_path: Path) -> None:
    assert all(g.operation_log == "" for g in _simulated(bootstrap.make_gateways(Settings())))

    log = str(tmp_path / "gateway.jsonl")
    named = Settings.from_env(env={"OMS_GATEWAY_LOG_PATH": log})
    gateways = _simulated(bootstrap.make_gateways(named))
    assert [g.operation_log for g in gateways] == [log, log]


def _simulated(gateways: Gateways) -> list[SimulatedGateway]:
    adapters = gateways.adapters()
    assert all(isinstance(g, SimulatedGateway) for g in adapters)
    return [g for g in adapters if isinstance(g, SimulatedGateway)]
