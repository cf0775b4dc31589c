"""The protocol fuzzer (oms_tools.fuzz) at every RPC of every service, over real gRPC.

A system of its own (database `oms_fuzz`, its own worker and task queue), because hostile
locations, inventory levels and erasures would change what other tests see. Real orders are
seeded first (two shipped and invoiced, one still at its warehouse, one with a declined card)
so real ids of every kind are mixed into the requests. Each RPC gets the probes (every field of
one hostile kind at once) and a few drawn requests; the seed is fixed (OMS_FUZZ_SEED to change
it, OMS_FUZZ_EXAMPLES for more draws per RPC) and printed with the failures.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from oms_platform import auth
from oms_platform.settings import SERVICES, Settings
from oms_tools import fuzz
from oms_tools.devstack.postgres import EmbeddedPostgres
from tests.callers import caller
from tests.conftest import System, running_system

SEED = int(os.environ.get("OMS_FUZZ_SEED", "12"))
EXAMPLES = int(os.environ.get("OMS_FUZZ_EXAMPLES", "4"))

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
async def fuzz_system(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres
) -> AsyncIterator[System]:
    async with running_system(settings_with_temporal, postgres, "oms_fuzz") as system:
        yield system


def target_for(system: System, locations: list[str]) -> fuzz.Target:
    """The system's four services, with a test caller's token per role (warehouses at
    `locations`)."""
    sources = {
        role: caller(
            system.settings,
            role,
            subject=f"fuzz-{role}",
            locations=locations if role == auth.WAREHOUSE else (),
        )
        for role in auth.ROLES
    }
    return fuzz.Target(
        {name: system.settings.address_of(name) for name in SERVICES},
        lambda role: sources[role](),
    )


async def seeded_ids(system: System) -> fuzz.Known:
    target = target_for(system, [])
    try:
        async with system.simulator():
            shipped = await fuzz.submit_samples(target, ["tok_visa", "tok_visa"])
            assert await fuzz.wait_for(target, shipped, fuzz.invoiced, 60)
        waiting = await fuzz.submit_samples(target, ["tok_visa", "tok_decline"])
        assert await fuzz.wait_for(target, waiting, fuzz.routed, 30)
        return await fuzz.harvest(target)
    finally:
        await target.close()


async def test_no_hostile_request_gets_unknown_internal_a_timeout_or_stops_a_service(
    fuzz_system: System,
) -> None:
    known = await seeded_ids(fuzz_system)
    for kind in ("order_id", "fulfillment_order_id", "invoice_id", "shipment_id", "location_id"):
        assert known.of(kind), f"seeding found no {kind}"
    target = target_for(fuzz_system, known.of("location_id"))
    try:
        report = await fuzz.run(target, known, fuzz.rpcs(), seed_value=SEED, examples=EXAMPLES)
    finally:
        await target.close()
    print("\n".join(report.summary()))

    assert set(report.codes) == {rpc.name for rpc in fuzz.rpcs()}
    assert report.failures == {}, "\n".join(
        [f"fuzz seed {SEED} (OMS_FUZZ_SEED={SEED} to repeat)", *report.failure_lines()]
    )
