"""gRPC over TLS: a server started with a certificate answers only TLS clients that trust its
CA, and, with mutual TLS, only those presenting a certificate from that CA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from oms_platform import auth, grpcutil
from oms_platform.tls import TLSConfig
from oms_tools.devstack import certs


@pytest.fixture(scope="module")
def dev_certs(tmp_path_factory: pytest.TempPathFactory) -> certs.DevCertificates:
    made, _ = certs.ensure(tmp_path_factory.mktemp("tls"))
    return made


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> certs.DevCertificates:
    made, _ = certs.ensure(tmp_path_factory.mktemp("other-tls"))
    return made


def server_tls(made: certs.DevCertificates, *, mutual: bool) -> TLSConfig:
    return TLSConfig(
        cert=str(made.server),
        key=str(made.server_key),
        ca=str(made.ca),
        require_client_cert=mutual,
    )


def client_tls(made: certs.DevCertificates, *, present: bool = True) -> TLSConfig:
    return TLSConfig(
        ca=str(made.ca),
        client_cert=str(made.client) if present else "",
        client_key=str(made.client_key) if present else "",
    )


async def serve(tls: TLSConfig) -> AsyncIterator[str]:
    # Health checks are open to every caller, so any authenticator will do for them.
    anyone = auth.Authenticator(
        issuer="test", audience="test", internal_secret=b"internal", hs256_secret=b"dev"
    )
    server, port, _ = await grpcutil.start_server([], [], "127.0.0.1:0", anyone, tls=tls)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture(scope="module")
async def mutual(dev_certs: certs.DevCertificates) -> AsyncIterator[str]:
    async for address in serve(server_tls(dev_certs, mutual=True)):
        yield address


@pytest.fixture(scope="module")
async def server_only(dev_certs: certs.DevCertificates) -> AsyncIterator[str]:
    async for address in serve(server_tls(dev_certs, mutual=False)):
        yield address


async def health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(response.status)


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await health(channel)
    return error.value.code()


async def test_a_client_with_the_ca_and_a_client_certificate_is_served(
    mutual: str, dev_certs: certs.DevCertificates
) -> None:
    async with grpcutil.channel(mutual, tls=client_tls(dev_certs)) as channel:
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_plaintext_client_is_refused(mutual: str, server_only: str) -> None:
    for address in (mutual, server_only):
        assert await refused(grpcutil.channel(address)) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    mutual: str, dev_certs: certs.DevCertificates
) -> None:
    channel = grpcutil.channel(mutual, tls=client_tls(dev_certs, present=False))

    assert await refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_certificate_from_another_ca(
    mutual: str, dev_certs: certs.DevCertificates, other_certs: certs.DevCertificates
) -> None:
    foreign = replace(
        client_tls(dev_certs),
        client_cert=str(other_certs.client),
        client_key=str(other_certs.client_key),
    )

    assert await refused(grpcutil.channel(mutual, tls=foreign)) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_refuses_a_server_its_ca_did_not_sign(
    server_only: str, other_certs: certs.DevCertificates
) -> None:
    channel = grpcutil.channel(server_only, tls=client_tls(other_certs))

    assert await refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_without_mutual_tls_a_client_needs_only_the_ca(
    server_only: str, dev_certs: certs.DevCertificates
) -> None:
    async with grpcutil.channel(server_only, tls=client_tls(dev_certs, present=False)) as channel:
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_misconfigured_tls_is_refused_at_start_with_the_setting_to_fix(
    dev_certs: certs.DevCertificates, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="OMS_TLS_KEY"):
        TLSConfig(cert=str(dev_certs.server)).server_credentials()
    with pytest.raises(ValueError, match="OMS_TLS_CA"):
        TLSConfig(
            cert=str(dev_certs.server), key=str(dev_certs.server_key), require_client_cert=True
        ).server_credentials()
    with pytest.raises(ValueError, match="OMS_TLS_CLIENT_KEY"):
        TLSConfig(ca=str(dev_certs.ca), client_cert=str(dev_certs.client)).channel_credentials()
    with pytest.raises(ValueError, match="OMS_TLS_CA"):
        TLSConfig(ca=str(tmp_path / "missing.pem")).channel_credentials()
