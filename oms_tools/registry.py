"""The four services, by name: the one place that knows every service package.

The platform runs a service from its bootstrap module (`oms_platform.service.start_service`);
the tools, the dev stack and the tests name services ("capture", …) and come here, so nothing
below this floor imports a service package, and nothing is imported by a string.
"""

from __future__ import annotations

from pathlib import Path

from oms_platform import codec, db, service
from oms_platform.service import Bootstrap, RunningService
from oms_platform.settings import SERVICES, Settings
from services.capture import bootstrap as capture
from services.fulfillment import bootstrap as fulfillment
from services.payments import bootstrap as payments
from services.servicing import bootstrap as servicing

BOOTSTRAPS: dict[str, Bootstrap] = {
    "capture": capture,
    "fulfillment": fulfillment,
    "payments": payments,
    "servicing": servicing,
}
assert tuple(BOOTSTRAPS) == SERVICES, "the registry lists the services settings know, in order"


def bootstrap(name: str) -> Bootstrap:
    """Service `name`'s composition root; ValueError naming the known ones otherwise."""
    if name not in BOOTSTRAPS:
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    return BOOTSTRAPS[name]


async def start_service(name: str, settings: Settings, port: int | None = None) -> RunningService:
    """Start service `name` in this process (see oms_platform.service.start_service)."""
    return await service.start_service(name, bootstrap(name), settings, port)


async def serve_forever(name: str, settings: Settings) -> None:
    """`oms serve NAME`: run the service until SIGINT or SIGTERM."""
    await service.serve_forever(name, bootstrap(name), settings)


async def migrate_all(
    settings: Settings, names: tuple[str, ...] = SERVICES
) -> dict[str, list[str]]:
    """Apply every service's pending migrations to its own schema, and the payload codec's
    key vault's to its schema."""
    applied: dict[str, list[str]] = {}
    for name in names:
        module = bootstrap(name)
        applied[name] = await db.migrate(settings.dsn, module.SCHEMA, Path(module.MIGRATIONS))
    applied[codec.VAULT_SCHEMA] = await codec.migrate_vault(settings.dsn)
    return applied
