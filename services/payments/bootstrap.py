"""Composition root of the payments service: its schema, migrations, gateways and servicer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform import request_limits
from oms_platform.service import ServiceContext, ServiceParts
from oms_platform.settings import Settings
from services.payments import domain
from services.payments.gateway import Gateways, PaymentGateway
from services.payments.servicer import PaymentsServicer
from services.payments.sim_store import MemoryState, PostgresState, State
from services.payments.simulated import SimulatedGateway, SimulatedGiftCardGateway

SCHEMA = "payments"
MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name


def _books(settings: Settings, gateway: str) -> State:
    """The simulated processor's books: in Postgres (schema `simgateway`, so a restart or
    another replica forgets nothing), or in this process when settings say `memory`."""
    if settings.gateway_simulator_storage == "memory":
        return MemoryState()
    return PostgresState(settings.dsn, gateway)


def _simulated(settings: Settings) -> PaymentGateway:
    return SimulatedGateway(
        latency_ms=settings.gateway_latency_ms,
        decline_above_minor=settings.gateway_decline_above_minor,
        transient_failure_rate=settings.gateway_transient_failure_rate,
        operation_log=settings.gateway_log_path,
        state=_books(settings, "card"),
        hold_seconds=settings.gateway_hold_seconds,
    )


def _simulated_gift_card(settings: Settings) -> PaymentGateway:
    return SimulatedGiftCardGateway(
        latency_ms=settings.gateway_latency_ms,
        transient_failure_rate=settings.gateway_transient_failure_rate,
        operation_log=settings.gateway_log_path,
        state=_books(settings, "giftcard"),
        hold_seconds=settings.gateway_hold_seconds,
    )


# Gateway adapters by the name settings use for them.
ADAPTERS: dict[str, Callable[[Settings], PaymentGateway]] = {
    "simulated": _simulated,
    "simulated-giftcard": _simulated_gift_card,
}


def make_gateways(settings: Settings) -> Gateways:
    """The adapter of each payment method type, as settings name them (one instance per name).

    Raises ValueError naming the setting when it names no known adapter.
    """
    chosen = {
        domain.CARD: ("gateway_for_card", settings.gateway_for_card),
        domain.GIFT_CARD: ("gateway_for_gift_card", settings.gateway_for_gift_card),
        domain.INVOICE_TERMS: ("gateway_for_invoice_terms", settings.gateway_for_invoice_terms),
    }
    built: dict[str, PaymentGateway] = {}
    by_type: dict[str, PaymentGateway] = {}
    for method_type, (setting, name) in chosen.items():
        if name not in ADAPTERS:
            raise ValueError(
                f"{setting}={name!r} names no gateway adapter; known: {', '.join(sorted(ADAPTERS))}"
            )
        if name not in built:
            built[name] = ADAPTERS[name](settings)
        by_type[method_type] = built[name]
    return Gateways(default=by_type[domain.CARD], by_method_type=by_type)


async def build(ctx: ServiceContext) -> ServiceParts:
    """Wire the gateways and the servicer over the service's pool."""
    gateways = make_gateways(ctx.settings)
    servicer = PaymentsServicer(
        ctx.pool,
        gateways,
        hold_hours=ctx.settings.authorization_hold_hours,
        renewal=domain.RenewalRule(
            margin_hours=ctx.settings.authorization_renewal_margin_hours,
            lead_seconds=ctx.settings.authorization_renewal_lead_seconds,
        ),
    )
    # Calls still running after the grace are cut off before the gateways' books close.
    ctx.on_close(servicer.cut_off)
    for adapter in gateways.adapters():
        state = getattr(adapter, "state", None)
        if isinstance(state, PostgresState):
            ctx.on_close(state.close)
    return ServiceParts(
        registrations=[
            (
                payments_pb2_grpc.add_PaymentsServiceServicer_to_server,
                request_limits.guard(
                    servicer, payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"]
                ),
            )
        ],
        service_names=[SERVICE_NAME],
    )
