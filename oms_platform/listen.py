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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import asyncpg
import structlog

from oms_platform.backoff import Backoff
from oms_platform.errors import ResourceExhausted

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
        with subscribed(self, channel, callback):
            await asyncio.Event().wait()

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


class StreamHub:
    """The open streams of one kind in a process (WatchOrder, SubscribeEvents), woken by one
    channel of the process's listener: with `keyed`, a NOTIFY wakes the streams subscribed under
    its payload (an order id); otherwise it wakes every stream. A reconnect of the listener
    (payload None), when NOTIFYs may have been missed, wakes every stream. At most `max_streams`
    are open at once; `on_count` hears the number open whenever it changes."""

    def __init__(
        self,
        listener: Listener,
        channel: str,
        *,
        what: str,
        max_streams: int,
        keyed: bool,
        on_count: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._listener = listener
        self._channel = channel
        self._what = what
        self._max_streams = max_streams
        self._keyed = keyed
        self._on_count = on_count
        self._streams: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def subscribe(self, key: str = "") -> Iterator[asyncio.Event]:
        """An event set whenever the stream has something new to read (and after a reconnect);
        the stream clears it before reading. ResourceExhausted when the process already serves
        its most streams."""
        if self.count() >= self._max_streams:
            raise ResourceExhausted(
                f"this process serves its most open {self._what} streams ({self._max_streams})"
                "; retry shortly (another replica may have room)"
            )
        event = asyncio.Event()
        self._streams.setdefault(key, set()).add(event)
        self._on_count(self.count())
        try:
            yield event
        finally:
            streams = self._streams.get(key)
            if streams is not None:
                streams.discard(event)
                if not streams:
                    del self._streams[key]
            self._on_count(self.count())

    def count(self) -> int:
        """How many streams are open right now."""
        return sum(len(s) for s in self._streams.values())

    async def run(self) -> None:
        """Follow the channel until cancelled."""
        await self._listener.hold(self._channel, self._on_notify)

    def _on_notify(self, payload: str | None) -> None:
        if self._keyed and payload is not None:
            woken: Iterable[set[asyncio.Event]] = [self._streams.get(payload, set())]
        else:
            woken = self._streams.values()
        for streams in woken:
            for event in streams:
                event.set()


def _call(callback: Callback, payload: str | None, channel: str) -> None:
    try:
        callback(payload)
    except Exception:  # one subscriber's bug must not deafen the others
        log.exception("listener callback failed", channel=channel)
