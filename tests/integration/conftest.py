"""Fixtures every integration module may ask for by name."""

from tests.integration.fulfillment_server import fulfillment, sql, stub  # noqa: F401
