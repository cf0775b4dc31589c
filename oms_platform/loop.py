"""The event loop oms processes run on (`Settings.event_loop`).

uvloop is the default: the services spend much of their time in the loop itself (socket
writes to Postgres and gRPC peers, readiness polling, the Temporal SDK's wake-ups from its core
threads), which uvloop does in C on libuv. "asyncio" keeps the standard library's loop, for
comparing the two (`OMS_EVENT_LOOP=asyncio oms bench lifecycle`) or where uvloop cannot run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvloop

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop factory `name` names, for `asyncio.Runner(loop_factory=...)`."""
    try:
        return LOOPS[name]
    except KeyError:
        raise ValueError(
            f"OMS_EVENT_LOOP must be one of {', '.join(sorted(LOOPS))}, not {name!r}"
        ) from None
