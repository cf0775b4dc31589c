"""Temporal client connection, shared by services, the worker and the CLI."""

from __future__ import annotations

from temporalio.client import Client

from oms_platform.settings import Settings


async def connect(settings: Settings) -> Client:
    """Connect to the configured Temporal frontend and namespace."""
    return await Client.connect(settings.temporal_target, namespace=settings.temporal_namespace)
