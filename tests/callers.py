"""Who the tests are: every test calls oms with a token, as the persona it plays.

External personas (storefront, agent, warehouse, merchandiser, admin) get tokens from the dev
issuer whose keys the settings name; the internal roles (workflow, service) get the service
tokens oms processes mint for themselves, for tests that drive a lifecycle step directly.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable, Mapping

import grpc

from oms_platform import access, auth, grpcutil
from oms_platform.settings import Settings


def caller(
    settings: Settings,
    role: str,
    *,
    subject: str = "",
    channels: Iterable[str] | None = None,
    locations: Iterable[str] = (),
) -> auth.TokenSource:
    """A token source for `role` (storefronts on every channel unless `channels` is given)."""
    return auth.dev_persona(
        settings, subject or f"test-{role}", role, channels=channels, locations=locations
    )


def channel_as(settings: Settings, address: str, role: str, **identity: object) -> grpc.aio.Channel:
    """A channel to `address` whose every call carries a token for `role`."""
    return grpcutil.channel(address, caller(settings, role, **identity))  # type: ignore[arg-type]


# Which persona a test speaks as when it only cares what a service does, not who may ask: the
# first role, in this order, that the access table allows for the RPC called.
_PERSONAS = (
    auth.AGENT,
    auth.STOREFRONT,
    auth.MERCHANDISER,
    auth.ADMIN,
    auth.WORKFLOW,
    auth.SERVICE,
)


def persona_channel(
    settings: Settings, address: str, subjects: dict[str, str] | None = None
) -> grpc.aio.Channel:
    """A channel for tests of what a service does: each call as a persona allowed to make it
    (every call is still authenticated and checked by the service); `subjects` names who plays
    a role (e.g. {"agent": "agent:ada"})."""
    names = subjects or {}
    sources = {role: caller(settings, role, subject=names.get(role, "")) for role in _PERSONAS}

    def token_for(method: str) -> str:
        allowed = access.allowed_roles(method)
        return sources[next((r for r in _PERSONAS if r in allowed), auth.ADMIN)]()

    return grpcutil.channel(address, token_for=token_for)


async def oms_cli(
    settings: Settings,
    *args: str,
    subject: str = "",
    env: Mapping[str, str] | None = None,
    seconds: float = 60,
) -> tuple[int, str, str]:
    """Run the `oms` CLI with `settings` (as `subject`, an agent's name, when given; `env`
    overriding any variable): its exit code, stdout and stderr."""
    variables = {**os.environ, **settings.as_env(), "OMS_LOG_LEVEL": "warning"}
    if subject:
        variables["OMS_CLI_SUBJECT"] = subject
    variables.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oms_tools.cli", *args,
        env=variables, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), seconds)
    return process.returncode or 0, out.decode(), err.decode()
