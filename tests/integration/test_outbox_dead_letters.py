"""Outbox rows Temporal refuses for good: dead-lettered after a few refusals, raised to an agent
as a process exception, and delivered once the cause is fixed and the agent retries.

Real everything: the session's Temporal dev server, with a namespace of this test's own that
lacks oms's search attributes (a deployment that forgot to register them: Temporal answers
INVALID_ARGUMENT to every lifecycle start), the four services and a worker on a database of
their own. A second test drives a relay alone into Temporal's blob size limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.outbox.v1 import outbox_pb2, outbox_pb2_grpc
from oms.servicing.v1 import servicing_pb2 as spb
from oms.servicing.v1 import servicing_pb2_grpc
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client

from oms_platform import auth, db, outbox
from oms_platform import temporal as temporal_client
from oms_platform.service import RunningService
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import SEARCH_ATTRIBUTES, TemporalDevServer, free_port
from oms_tools.registry import start_service
from oms_tools.samples import sample_order
from tests.callers import channel_as, persona_channel
from tests.conftest import TEST_CODEC_KEYS, migrated_database
from tests.integration.helpers import eventually
from workflows.worker import build_worker

OMS = Path(sys.executable).parent / "oms"


async def cli(settings: Settings, *args: str) -> Any:
    """`oms <args> --json` against these services (as a person at a terminal would)."""
    env = {
        **os.environ,
        **{f"OMS_{name.upper()}_ADDRESS": settings.address_of(name) for name in SERVICES},
    }
    # Not subprocess.run: the services answering it run on this event loop.
    process = await asyncio.create_subprocess_exec(
        str(OMS), *args, "--json", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_a_start_temporal_refuses_is_dead_lettered_raised_to_an_agent_and_runs_once_fixed(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    namespace = f"oms-bare-{uuid.uuid4().hex[:8]}"
    operator = await Client.connect(temporal_server.target)
    await operator.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    settings = Settings.from_env(
        env={},
        database_url=await migrated_database(postgres, "oms_dead_letters"),
        codec_keys_file=str(TEST_CODEC_KEYS),
        temporal_address=temporal_server.target,
        temporal_namespace=namespace,
        task_queue=f"oms-dead-letters-{os.getpid()}",
        db_pool_min=1,
        db_pool_max=5,
        outbox_poll_seconds=0.05,
        outbox_dead_letter_after=2,
        log_format="console",
        **{f"{name}_port": free_port() for name in SERVICES},
    )
    running: dict[str, RunningService] = {}
    try:
        running = {name: await start_service(name, settings) for name in SERVICES}
        client = await temporal_client.connect(settings)
        async with (
            build_worker(client, settings),
            persona_channel(settings, settings.address_of("capture")) as capture_channel,
            persona_channel(
                settings, settings.address_of("servicing"), {auth.AGENT: "agent:ada"}
            ) as servicing_channel,
            channel_as(settings, settings.address_of("capture"), auth.ADMIN) as admin_channel,
        ):
            capture = capture_pb2_grpc.CaptureServiceStub(capture_channel)
            servicing = servicing_pb2_grpc.ServicingServiceStub(servicing_channel)
            dead_letters = outbox_pb2_grpc.OutboxServiceStub(admin_channel)
            order_id = (
                await capture.SubmitOrder(sample_order(email=f"dl-{uuid.uuid4().hex[:8]}@x.io"))
            ).order.order_id

            async def open_letters() -> list[Any]:
                listing = await dead_letters.ListDeadLetters(
                    outbox_pb2.ListDeadLettersRequest(statuses=[outbox_pb2.DEAD_LETTER_STATUS_OPEN])
                )
                return list(listing.dead_letters)

            async def exceptions(status: int = spb.PROCESS_EXCEPTION_STATUS_NEW) -> list[Any]:
                # Where an agent looks for held orders: new delivery failures.
                listing = await servicing.ListProcessExceptions(
                    spb.ListProcessExceptionsRequest(
                        statuses=[status],
                        categories=[spb.PROCESS_EXCEPTION_CATEGORY_DELIVERY_FAILED],
                    )
                )
                return list(listing.process_exceptions)

            # Refused twice (outbox_dead_letter_after), then a dead letter with Temporal's reason.
            [letter] = await eventually(open_letters, lambda d: len(d) == 1, "dead letter")
            assert (letter.kind, letter.workflow_id) == ("start", f"order:{order_id}")
            assert letter.error_kind == "invalid_argument"
            assert letter.error.startswith("INVALID_ARGUMENT: ")
            assert "no mapping defined for search attribute" in letter.error
            assert (letter.attempts, letter.times) == (2, 1)

            # The agent sees it among the held orders, on the order, and cannot cancel it.
            [first] = await eventually(exceptions, lambda e: len(e) == 1, "process exception")
            assert first.order_id == order_id
            assert first.severity == spb.PROCESS_EXCEPTION_SEVERITY_HIGH
            assert first.attached_to == f"dead_letter:capture:{letter.dead_letter_id}"
            assert "could not start the order's lifecycle" in first.message
            # The same from the command line: the admin's dead letters, the agent's exceptions.
            listed = await cli(settings, "outbox", "dead-letters", "--service", "capture")
            assert [d["dead_letter_id"] for d in listed["dead_letters"]] == [
                str(letter.dead_letter_id)
            ]
            listed = await cli(settings, "exception", "list", "--category", "delivery_failed")
            assert [e["process_exception_id"] for e in listed["process_exceptions"]] == [
                first.process_exception_id
            ]
            view = await capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id))
            assert view.order.status == capture_pb2.ORDER_STATUS_PENDING
            # The order's 360° view (`oms order show`) carries it too.
            assert [e.process_exception_id for e in view.process_exceptions] == [
                first.process_exception_id
            ]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await servicing.ResolveProcessException(
                    spb.ResolveProcessExceptionRequest(
                        process_exception_id=first.process_exception_id,
                        action=spb.RESOLUTION_ACTION_CANCEL,
                    )
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

            # Retried before the cause is fixed: delivered again, refused again, raised again.
            await servicing.ResolveProcessException(
                spb.ResolveProcessExceptionRequest(
                    process_exception_id=first.process_exception_id,
                    action=spb.RESOLUTION_ACTION_RETRY,
                    note="one more try",
                )
            )
            [again] = await eventually(
                exceptions,
                lambda e: len(e) == 1 and e[0].process_exception_id != first.process_exception_id,
                "the second refusal's exception",
            )
            [letter] = await open_letters()
            assert (letter.attempts, letter.times) == (2, 2)

            # The operator registers the search attributes; the agent retries: the order runs.
            await operator.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={
                        name: temporal_client.indexed_value_type(kind)
                        for name, kind in SEARCH_ATTRIBUTES.items()
                    },
                )
            )
            resolved = (
                await servicing.ResolveProcessException(
                    spb.ResolveProcessExceptionRequest(
                        process_exception_id=again.process_exception_id,
                        action=spb.RESOLUTION_ACTION_RETRY,
                        note="search attributes registered",
                    )
                )
            ).process_exception
            assert resolved.status == spb.PROCESS_EXCEPTION_STATUS_RESOLVED
            assert resolved.resolved_by == "agent:ada"
            settled = (
                await dead_letters.ListDeadLetters(outbox_pb2.ListDeadLettersRequest())
            ).dead_letters
            assert [d.status for d in settled] == [outbox_pb2.DEAD_LETTER_STATUS_REDELIVERED]
            assert settled[0].settled_by == "service:servicing"
            assert again.process_exception_id in settled[0].note

            await eventually(
                lambda: capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id)),
                lambda v: v.order.status != capture_pb2.ORDER_STATUS_PENDING,
                "the order's lifecycle",
            )
            runs = [w.id async for w in client.list_workflows(f"WorkflowId = 'order:{order_id}'")]
            assert runs == [f"order:{order_id}"]
            assert await exceptions() == []
            conn = await asyncpg.connect(settings.dsn)
            try:
                assert await conn.fetchval("SELECT count(*) FROM capture.outbox") == 0
            finally:
                await conn.close()
        await temporal_client.close(client)
    finally:
        await asyncio.gather(*(svc.stop(0.5) for svc in running.values()))


async def test_a_payload_over_temporals_size_limit_is_dead_lettered_and_its_workflow_waits(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    dsn = await migrated_database(postgres, "oms_dead_letters_size")
    pool = await db.create_pool(dsn, "fulfillment", 1, 3)
    client = await Client.connect(temporal_server.target)
    run = uuid.uuid4().hex[:8]
    big, other = f"big:{run}", f"other:{run}"
    async with pool.acquire() as conn, conn.transaction():
        # Over the dev server's 2 MB blob limit, then an event for the same workflow behind it.
        await outbox.enqueue(conn, "fulfillment", "start", big, "Nothing", {"x": "a" * 2_200_000})
        await outbox.enqueue(conn, "fulfillment", "signal", big, "shipped", {"n": 1})
        await outbox.enqueue(conn, "fulfillment", "start", other, "Nothing", {"x": "small"})
    reported: list[outbox.DeadLetter] = []
    tries = 0

    async def report(letter: outbox.DeadLetter) -> None:
        """The owning service's report; servicing is away the first time."""
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ConnectionRefusedError("servicing is away")
        reported.append(letter)

    async def connected() -> Client:
        return client

    relay = outbox.OutboxRelay(
        pool,
        "fulfillment",
        connected,
        f"dead-letters-{run}",
        poll_seconds=0.05,
        dead_letter_after=3,
        on_dead_letter=report,
    )
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: asyncio.sleep(0, reported), lambda r: len(r) == 1, "report")
        [letter] = reported
        assert (letter.kind, letter.workflow_id, letter.error_kind) == (
            "start",
            big,
            "payload_too_large",
        )
        assert letter.attempts == 3
        assert letter.waiting == 1  # the signal behind it
        assert letter.payload_bytes > 2_200_000
        assert tries == 2  # reported once servicing answered, and not again
        assert await pool.fetchval("SELECT reported_at IS NOT NULL FROM outbox_dead_letters")
        # Another workflow's row was delivered meanwhile; the signal waits, undelivered.
        await client.get_workflow_handle(other).describe()
        rows = await pool.fetch("SELECT workflow_id, name FROM outbox")
        assert [(r["workflow_id"], r["name"]) for r in rows] == [(big, "shipped")]
        await asyncio.sleep(0.5)
        assert len(await pool.fetch("SELECT 1 FROM outbox")) == 1

        # Redelivered unchanged: refused again, reported again (a new dead-lettering).
        await outbox.redeliver(pool, "fulfillment", letter.id, "admin@test", "try again")
        await eventually(lambda: asyncio.sleep(0, reported), lambda r: len(r) == 2, "re-report")
        assert (reported[1].id, reported[1].times) == (letter.id, 2)
        # Given up on: the signal behind it goes (to no workflow: dropped as undeliverable).
        discarded = await outbox.discard(pool, "fulfillment", letter.id, "admin@test", "too big")
        assert (discarded.status, discarded.settled_by) == (outbox.DISCARDED, "admin@test")
        await eventually(
            lambda: pool.fetchval("SELECT count(*) FROM outbox"), lambda n: n == 0, "drained"
        )
        with pytest.raises(Exception, match="discarded"):
            await outbox.redeliver(pool, "fulfillment", letter.id, "admin@test")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
