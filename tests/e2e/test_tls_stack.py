"""End to end, encrypted: `oms dev --tls` (here through OMS_DEV_TLS=1) runs the sample order to
fulfilled with the CLI finding the stack's certificates by itself, while every port of the
stack refuses a plaintext connection: the four gRPC services (which also refuse TLS without a
client certificate), Postgres and Temporal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from temporalio.client import Client

from oms_platform import auth, grpcutil
from oms_platform import temporal as temporal_client
from oms_platform.settings import SERVICES, Settings
from oms_platform.tls import TLSConfig
from oms_tools.devstack.certs import DevCertificates, certificates_dir
from tests.callers import caller
from tests.e2e.conftest import DevStack, running, wait_for_status
from workflows.types import order_workflow_id

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    dev = DevStack(tmp_path_factory.mktemp("dev-tls"))
    dev.env["OMS_DEV_TLS"] = "1"
    with running(dev):
        yield dev


@pytest.fixture(scope="module")
def dev_certs(tls_stack: DevStack) -> DevCertificates:
    return DevCertificates(certificates_dir(tls_stack.env["OMS_DATA_DIR"]))


def postgres_dsn(stack: DevStack, query: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{stack.env['OMS_EMBEDDED_POSTGRES_PORT']}/oms?{query}"


async def test_the_sample_order_is_fulfilled_over_tls_and_plaintext_is_refused_everywhere(
    tls_stack: DevStack, dev_certs: DevCertificates
) -> None:
    assert "encrypted" in tls_stack.banner

    # The CLI, given nothing but the same data_dir, submits and follows the order.
    submitted = tls_stack.cli("order", "submit", "--sample", "--json")
    assert submitted.returncode == 0, submitted.stderr
    order_id = json.loads(submitted.stdout)["order"]["order_id"]
    watched = tls_stack.cli("order", "watch", order_id, "--json", "--timeout", "60")
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout.splitlines()[-1])["kind"] == "order.fulfilled"

    # A TLS gRPC client presenting the stack's client certificate (and an agent's token)
    # reads it fulfilled.
    client_tls = TLSConfig(
        ca=str(dev_certs.ca),
        client_cert=str(dev_certs.client),
        client_key=str(dev_certs.client_key),
    )
    capture = f"127.0.0.1:{tls_stack.port('capture')}"
    agent = caller(tls_stack.settings, auth.AGENT)
    async with grpcutil.channel(capture, agent, tls=client_tls) as channel:
        view = await wait_for_status(capture_pb2_grpc.CaptureServiceStub(channel), order_id)
    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED

    # Every gRPC service refuses plaintext, and TLS without a client certificate.
    without_certificate = TLSConfig(ca=str(dev_certs.ca))
    for name in SERVICES:
        address = f"127.0.0.1:{tls_stack.port(name)}"
        for tls in (None, without_certificate):
            async with grpcutil.channel(address, tls=tls) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5
                    )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, (name, tls)

    # Postgres refuses a plaintext session, and serves a verified TLS one.
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="only TLS"):
        await asyncpg.connect(postgres_dsn(tls_stack, "sslmode=disable"))
    verified = postgres_dsn(
        tls_stack,
        f"sslmode=verify-full&sslrootcert={dev_certs.ca}"
        f"&sslcert={dev_certs.client}&sslkey={dev_certs.client_key}",
    )
    conn = await asyncpg.connect(verified)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM capture.orders WHERE id = $1", order_id)
    finally:
        await conn.close()
    assert stored == 1

    # Temporal refuses a plaintext client; over TLS with the client certificate the order's
    # workflow is there.
    with pytest.raises(RuntimeError, match="connect"):
        await asyncio.wait_for(Client.connect(tls_stack.temporal), 60)
    # (The client seals payloads with the stack's codec: its keys file, its vault over TLS.)
    over_tls = dev_certs.temporal_settings(
        Settings.from_env(
            env=tls_stack.env, temporal_address=tls_stack.temporal, database_url=verified
        )
    )
    temporal = await temporal_client.connect(over_tls)
    described = await temporal.get_workflow_handle(order_workflow_id(order_id)).describe()
    assert described.id == order_workflow_id(order_id)
