"""Postgres LISTEN for a whole process on one connection of its own.

Everything in a service that wants to be woken by a NOTIFY (the outbox relay, the event-log
sequencer, SubscribeEvents and WatchOrder streams, the webhook and notification consumers)
subscribes here instead of holding a connection of its own: a process costs one connection
for all its channels whatever it runs, and no pool connection is ever parked on a LISTEN (a
pool of three still serves requests).

A subscriber's callback gets each NOTIFY's payload, and `None` whenever notifications may have
been missed: when its channel starts being listened to (first subscription, or a reconnect
after the connection was lost). `None` means "look for yourself".

`woken` waits on an event with a time limit. It is used instead of `asyncio.wait_for`, which
on Python 3.11 can swallow a task's cancellation when the event is set at the same moment, so
a stopped service's background task would run on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import structlog

from oms_platform.backoff import Backoff

log = structlog.get_logger("oms.listen")

Callback = Callable[[str | None], None]

# Reconnecting after the connection is lost or refused: the first wait, and the longest.
RETRY_FIRST_SECONDS = 0.5
RETRY_CAP_SECONDS = 10.0
CLOSE_SECONDS = 2.0


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True when it was set. Cancelling the
    caller always cancels it."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    return event.is_set()


class Listener:
    """The process's one LISTEN connection, multiplexed over every subscribed channel and
    reconnected with back-off when lost. Run `run()` as a background task; `subscribe` and its
    undo are plain calls, so a consumer can stop listening in a `finally` without awaiting."""

    def __init__(
        self,
        dsn: str,
        application_name: str,
        retry_first_seconds: float = RETRY_FIRST_SECONDS,
        retry_cap_seconds: float = RETRY_CAP_SECONDS,
    ) -> None:
        self._dsn = dsn
        # How the connection shows in pg_stat_activity.
        self.application_name = application_name
        self._retry = Backoff(initial=retry_first_seconds, cap=retry_cap_seconds)
        self._subscribers: dict[str, list[Callback]] = {}
        self._listened: set[str] = set()
        # Set when the subscriptions change or the connection is lost: the run loop looks.
        self._poke = asyncio.Event()
        # Set while the connection listens to every subscribed channel.
        self.listening = asyncio.Event()

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call `callback(payload)` for every NOTIFY on `channel` (and `callback(None)` when
        some may have been missed) until the returned function is called."""
        self._subscribers.setdefault(channel, []).append(callback)
        if channel in self._listened:
            # Already listened to: the new subscriber still looks once for itself.
            _call(callback, None, channel)
        else:
            self.listening.clear()
            self._poke.set()

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(channel)
            if callbacks is not None and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._subscribers[channel]
                    self._poke.set()

        return unsubscribe

    async def hold(self, channel: str, callback: Callback) -> None:
        """Stay subscribed until cancelled (a hub's background task)."""
        unsubscribe = self.subscribe(channel, callback)
        try:
            await asyncio.Event().wait()
        finally:
            unsubscribe()

    def channels(self) -> set[str]:
        """The channels someone is subscribed to."""
        return set(self._subscribers)

    async def run(self) -> None:
        """Listen until cancelled: connect when there is a channel to listen to, follow the
        subscriptions as they change, reconnect when the connection is lost."""
        while True:
            if not self._subscribers:
                self._poke.clear()
                await self._poke.wait()
                continue
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": self.application_name}
                )
            except (OSError, asyncpg.PostgresError) as error:
                delay = self._retry.delay_after(0.0)
                log.warning(
                    "listener cannot connect",
                    listener=self.application_name,
                    error=str(error),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                continue
            lost = asyncio.Event()

            def on_lost(*_: Any, lost: asyncio.Event = lost) -> None:
                lost.set()
                self._poke.set()

            conn.add_termination_listener(on_lost)
            try:
                await self._follow(conn, lost)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("listener failed", listener=self.application_name, error=str(error))
            finally:
                self.listening.clear()
                self._listened.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=CLOSE_SECONDS)
            delay = self._retry.delay_after(0.0)
            log.warning(
                "listener lost; reconnecting", listener=self.application_name, retry_in=delay
            )
            await asyncio.sleep(delay)

    async def _follow(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """LISTEN to what is subscribed, UNLISTEN what no longer is, until the connection is
        lost; every channel newly listened to wakes its subscribers to look for themselves."""
        while not lost.is_set():
            self._poke.clear()
            wanted = set(self._subscribers)
            for channel in sorted(wanted - self._listened):
                await conn.add_listener(channel, self._dispatch)
                self._listened.add(channel)
                for callback in list(self._subscribers.get(channel, ())):
                    _call(callback, None, channel)
            for channel in sorted(self._listened - wanted):
                await conn.remove_listener(channel, self._dispatch)
                self._listened.discard(channel)
            if self._listened == set(self._subscribers):
                self.listening.set()
                self._retry.reset()
            await self._poke.wait()

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        for callback in list(self._subscribers.get(channel, ())):
            _call(callback, str(payload), channel)


@contextlib.contextmanager
def subscribed(listener: Listener | None, channel: str, callback: Callback) -> Iterator[None]:
    """`callback` subscribed to `channel` on `listener` for the block; without a listener the
    block runs unsubscribed (its owner polls)."""
    if listener is None:
        yield
        return
    unsubscribe = listener.subscribe(channel, callback)
    try:
        yield
    finally:
        unsubscribe()


def _call(callback: Callback, payload: str | None, channel: str) -> None:
    try:
        callback(payload)
    except Exception:  # one subscriber's bug must not deafen the others
        log.exception("listener callback failed", channel=channel)
