"""Capture's store, what its modules share: the schema, the channels Postgres notifies on,
the connection type and fresh record ids."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from oms_platform import outbox
from oms_platform.db import new_id as new_id  # the one record-id maker, re-exported for the store

SCHEMA = "capture"

# Postgres NOTIFY channel carrying the id of an order whose status or timeline changed.
ORDER_CHANGED_CHANNEL = "oms_capture_order_changed"

# The relay of capture's outbox listens here.
OUTBOX_CHANNEL = outbox.channel_name(SCHEMA)

# A connection of our own or one borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy
