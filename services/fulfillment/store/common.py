"""Fulfillment's store, what its modules share: the connection type, the schema, the UTC day
daily capacity counts in, the address columns' reader, and where personal data is kept."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform.erasure import PersonalColumns
from services.fulfillment import domain

SCHEMA = "fulfillment"

# A connection, whether taken from a pool or not.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# The UTC day daily capacity counts in.
TODAY = "(now() AT TIME ZONE 'UTC')::date"


def postal_address(row: asyncpg.Record) -> domain.PostalAddress:
    """The postal address in a row's address columns (locations, delivery groups)."""
    return domain.PostalAddress(
        line1=row["address_line1"],
        line2=row["address_line2"],
        city=row["city"],
        region=row["region"],
        postal_code=row["postal_code"],
        country_code=row["country_code"],
    )


# Where fulfillment keeps a shopper's personal data: the ship-to address of each routed
# delivery group, and free text an agent or a warehouse may have typed about the order.
PERSONAL_COLUMNS = (
    PersonalColumns(
        "delivery_groups",
        blank=("address_line1", "address_line2", "city", "region", "postal_code"),
    ),
    PersonalColumns("fulfillment_orders", text=("cancel_reason",)),
    PersonalColumns("fulfillment_line_changes", text=("reason",)),
    PersonalColumns("routing_decisions", text=("summary",)),
)
