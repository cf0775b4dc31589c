"""The error boundary over real gRPC and Postgres: whatever goes wrong, the caller gets a code
it can act on (UNAVAILABLE to retry, INVALID_ARGUMENT to fix, INTERNAL with a reference) and
never a class name, SQL or host; a lost database is a clean retry, and the service reconnects
without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pytest
import structlog
import structlog.testing
from grpc_health.v1 import health_pb2, health_pb2_grpc
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform import auth, grpcutil
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from tests.callers import caller, persona_channel
from tests.integration.test_capture_service import (
    isolated_settings,
    order_request,
    own_database,
    unique,
)

pb = capture_pb2
LEAKS = ("asyncpg", "Error", "Exception", "SELECT", "INSERT", "Traceback", "127.0.0.1")


class Cable:
    """A TCP forwarder between the service and Postgres that can be cut (every connection
    dropped, new ones refused) and mended: the database going away and coming back."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


def through(dsn: str, port: int) -> str:
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    hostport = f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(
        parts._replace(netloc=f"{netloc[0]}@{hostport}" if len(netloc) == 2 else hostport)
    )


@pytest.fixture(scope="module")
async def cable(postgres: EmbeddedPostgres) -> AsyncIterator[tuple[Cable, str]]:
    dsn = await own_database(postgres, "oms_boundary_it")
    port = urllib.parse.urlsplit(dsn).port
    assert port is not None
    cable = Cable("127.0.0.1", port)
    await cable.mend()
    yield cable, through(dsn, cable.port)
    with contextlib.suppress(Exception):
        await cable.cut()


@pytest.fixture(scope="module")
async def boundary_settings(cable: tuple[Cable, str]) -> Settings:
    return isolated_settings(cable[1], watch_max_streams=2, watch_max_seconds=1.0)


@pytest.fixture(scope="module")
async def capture(
    boundary_settings: Settings,
) -> AsyncIterator[tuple[RunningService, capture_pb2_grpc.CaptureServiceStub]]:
    running = await start_service("capture", boundary_settings, port=0)
    async with persona_channel(boundary_settings, f"127.0.0.1:{running.port}") as channel:
        yield running, capture_pb2_grpc.CaptureServiceStub(channel)
    await running.stop(0.5)


def assert_no_leak(details: str | None) -> None:
    for word in LEAKS:
        assert word not in (details or ""), f"{word!r} leaked into {details!r}"


async def test_a_nul_character_is_a_client_error_naming_no_internals(
    capture: tuple[RunningService, capture_pb2_grpc.CaptureServiceStub],
) -> None:
    _, stub = capture
    request = order_request()
    request.shopper.name = "Ada\x00Lovelace"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SubmitOrder(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_no_leak(refused.value.details())


async def test_a_huge_id_is_refused_without_echoing_it_whole(
    capture: tuple[RunningService, capture_pb2_grpc.CaptureServiceStub],
) -> None:
    _, stub = capture
    huge = "o" * 100_000
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetOrder(pb.GetOrderRequest(order_id=huge), timeout=10)
    # A reply the client could read: a client-error code, a short message.
    assert refused.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
    )
    assert len(refused.value.details() or "") <= grpcutil.MAX_MESSAGE_CHARS
    metadata = b"".join(
        v for _, v in refused.value.trailing_metadata() or () if isinstance(v, bytes)
    )
    assert len(metadata) <= grpcutil.MAX_DETAILS_BYTES + 1024


async def test_the_database_going_away_is_unavailable_and_comes_back_without_a_restart(
    cable: tuple[Cable, str],
    capture: tuple[RunningService, capture_pb2_grpc.CaptureServiceStub],
) -> None:
    line, _ = cable
    running, stub = capture
    request = order_request(idempotency_key=unique("key"))
    await line.cut()
    try:
        for _ in range(2):  # a pooled connection that died, then no connection at all
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SubmitOrder(request, timeout=20)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert_no_leak(refused.value.details())
            assert str(line.port) not in (refused.value.details() or "")
        # The process itself is fine: its health says so.
        async with grpcutil.channel(f"127.0.0.1:{running.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await line.mend()
    # The same request, retried with the same key, is captured once.
    first = await stub.SubmitOrder(request, timeout=20)
    again = await stub.SubmitOrder(request, timeout=20)
    assert first.order.order_id and not first.duplicate
    assert again.duplicate and again.order.order_id == first.order.order_id


async def import_stream(
    requests: Iterable[pb.ImportOrdersRequest],
) -> AsyncIterator[pb.ImportOrdersRequest]:
    for request in requests:
        yield request


async def test_import_answers_every_order_while_the_database_is_away(
    cable: tuple[Cable, str],
    capture: tuple[RunningService, capture_pb2_grpc.CaptureServiceStub],
) -> None:
    line, _ = cable
    _, stub = capture
    orders = [
        pb.ImportOrdersRequest(order=order_request(idempotency_key=unique("imp"))) for _ in range(3)
    ]
    await line.cut()
    try:
        response = await stub.ImportOrders(import_stream(orders), timeout=30)
    finally:
        await line.mend()
    assert [r.index for r in response.results] == [0, 1, 2]
    assert {r.error_code for r in response.results} == {"UNAVAILABLE"}
    assert response.failed == 3 and response.imported == 0
    # Sent again once the database is back: all three are imported.
    again = await stub.ImportOrders(import_stream(orders), timeout=30)
    assert again.imported == 3 and again.failed == 0


async def test_one_bad_order_of_an_import_fails_alone(
    capture: tuple[RunningService, capture_pb2_grpc.CaptureServiceStub],
) -> None:
    _, stub = capture
    orders = [
        pb.ImportOrdersRequest(order=order_request(idempotency_key=unique("imp"))) for _ in range(3)
    ]
    orders[1].order.shopper.name = "Grace\x00Hopper"
    response = await stub.ImportOrders(import_stream(orders), timeout=30)
    codes = [r.error_code for r in sorted(response.results, key=lambda r: r.index)]
    assert codes == ["", "INVALID_ARGUMENT", ""]
    assert response.imported == 2 and response.failed == 1
    assert_no_leak(response.results[1].error_message)


async def test_watch_streams_are_capped_per_process_and_in_time(
    capture: tuple[RunningService, capture_pb2_grpc.CaptureServiceStub],
) -> None:
    _, stub = capture
    placed = await stub.SubmitOrder(order_request(idempotency_key=unique("watch")))
    order_id = placed.order.order_id
    streams = [stub.WatchOrder(pb.WatchOrderRequest(order_id=order_id)) for _ in range(2)]
    for call in streams:
        first = await call.read()
        assert first.snapshot
    extra = stub.WatchOrder(pb.WatchOrderRequest(order_id=order_id))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await extra.read()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Each open stream ends normally once its time is up (1 s here); the slots free up.
    for call in streams:
        assert await asyncio.wait_for(call.read(), 10) == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    again = stub.WatchOrder(pb.WatchOrderRequest(order_id=order_id))
    assert (await again.read()).snapshot
    again.cancel()


# ---- the boundary itself, for errors no service should raise --------------------------------


class Broken:
    """Handlers that fail as a bug would, with details that must not reach the caller."""

    async def unary(self, request: bytes, context: Any) -> bytes:
        raise RuntimeError("connect to db.internal.example:5432 failed: SELECT * FROM secrets")

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b""
        raise KeyError("db.internal.example")


def _register(servicer: Broken, server: grpc.aio.Server) -> None:
    # Real method names (the access table allows them), served by the broken handlers.
    handlers = {
        "GetOrder": grpc.unary_unary_rpc_method_handler(servicer.unary),
        "WatchOrder": grpc.unary_stream_rpc_method_handler(servicer.stream),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("oms.capture.v1.CaptureService", handlers),)
    )


async def test_an_unexpected_error_is_internal_with_a_reference_that_is_logged(
    settings: Settings,
) -> None:
    server, port, _ = await grpcutil.start_server(
        [(_register, Broken())],
        ["oms.capture.v1.CaptureService"],
        "127.0.0.1:0",
        auth.Authenticator.from_settings(settings),
    )
    try:
        async with grpcutil.channel(f"127.0.0.1:{port}", caller(settings, auth.ADMIN)) as ch:
            unary = ch.unary_unary("/oms.capture.v1.CaptureService/GetOrder")
            with (
                structlog.testing.capture_logs() as logs,
                pytest.raises(grpc.aio.AioRpcError) as failed,
            ):
                await unary(b"")
            assert failed.value.code() == grpc.StatusCode.INTERNAL
            details = failed.value.details() or ""
            assert "reference" in details
            assert "db.internal" not in details and "RuntimeError" not in details
            reference = details.split("reference ")[1].split(")")[0]
            # The operators' log has the reference with the whole error and its traceback.
            entry = next(e for e in logs if e.get("error_id") == reference)
            assert isinstance(entry["exc_info"], RuntimeError)
            assert "db.internal" in str(entry["exc_info"])

            stream = ch.unary_stream("/oms.capture.v1.CaptureService/WatchOrder")(b"")
            assert await stream.read() == b""
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await stream.read()
            assert ended.value.code() == grpc.StatusCode.INTERNAL
            assert "db.internal" not in (ended.value.details() or "")
    finally:
        await server.stop(0)
