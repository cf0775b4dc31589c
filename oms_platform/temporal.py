"""Temporal client connection, shared by services, the worker and the CLI."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.service import TLSConfig

from oms_platform.settings import Settings


def tls_config(settings: Settings) -> TLSConfig | None:
    """TLS towards the Temporal frontend, or None (the SDK then turns TLS on for an API key)."""
    paths = (settings.temporal_tls_ca, settings.temporal_tls_cert, settings.temporal_tls_key)
    if not (settings.temporal_tls or any(paths)):
        return None
    if bool(settings.temporal_tls_cert) != bool(settings.temporal_tls_key):
        raise ValueError("OMS_TEMPORAL_TLS_CERT and OMS_TEMPORAL_TLS_KEY are set together")

    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca),
        client_cert=read(settings.temporal_tls_cert),
        client_private_key=read(settings.temporal_tls_key),
        domain=settings.temporal_tls_server_name or None,
    )


async def connect(settings: Settings) -> Client:
    """Connect to the configured Temporal frontend and namespace."""
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=settings.temporal_api_key or None,
    )
