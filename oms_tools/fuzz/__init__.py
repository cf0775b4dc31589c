"""The protocol fuzzer behind `oms fuzz` and the test suite's fuzz test.

For every RPC of every service it draws requests from the message descriptors of the generated
protos (hypothesis strategies), sends each with a token of a role the access table allows, and
sorts the answers. OK and the client-error codes are fine. UNKNOWN, INTERNAL, an unexpected
deadline, a transport error, a leaked internal (a Python class name, a driver's name, a
traceback), an untruncated echo of the input, or a service whose health check stops answering
SERVING is a failure.

The wire cannot carry a wrong type, so hostility is in the values: extreme integers, empty,
huge, unicode, control-character and NUL strings, unknown enum numbers, huge repeated fields,
timestamps out of range, random ids, and the ids of real entities (of the right kind and of
other kinds) harvested from the system under test.

Descriptors come from the generated protos (`gen/`), never from the services: oms_platform does
not import services or workflows.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, example, given, seed
from hypothesis import settings as hypothesis_settings
from oms.capture.v1 import capture_pb2

from oms_platform import auth, grpcutil
from oms_platform.tls import TLSConfig
from oms_tools import samples
from oms_tools.fuzz.generation import (
    FLAVOURS,
    SERVICE_DESCRIPTORS,
    Generator,
    Known,
    Rpc,
    build,
    huge_string,
    repeat,
    rpcs,
)
from oms_tools.fuzz.reporting import (
    ACCEPTED,
    CULPRITS,
    LEAKS,
    MAX_DETAILS,
    TRANSPORT,
    Failure,
    Report,
    culprit,
    render,
    shape,
    verdict,
)

# A unary call gets this long; longer is a stalled service (O(units) work, a lock).
DEADLINE_SECONDS = 5.0
# Server streams (WatchOrder) are open-ended: the fuzzer reads at most this many messages, and
# a stream still open at its (deliberately short) deadline is fine, not a failure.
STREAM_DEADLINE_SECONDS = 2.0
STREAM_MESSAGES = 3
# After a service stops answering its health check, the fuzzer waits this long for it to come
# back before going on.
RECOVERY_SECONDS = 60.0


# ---- calling ----------------------------------------------------------------------------------


class Target:
    """The system under test: a channel per service, and a token per role."""

    def __init__(
        self,
        addresses: dict[str, str],
        token_for_role: Callable[[str], str],
        *,
        tls: TLSConfig | None = None,
        deadline: float = DEADLINE_SECONDS,
        stream_deadline: float = STREAM_DEADLINE_SECONDS,
    ) -> None:
        # No token on the channel: each call carries the token of the role it plays.
        self._channels = {name: grpcutil.channel(a, tls=tls) for name, a in addresses.items()}
        self._token_for_role = token_for_role
        self.deadline = deadline
        self.stream_deadline = stream_deadline

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def send(self, rpc: Rpc, role: str, payload: Any) -> tuple[grpc.StatusCode, str, bool]:
        """(code, details, open_stream) of one call of `rpc` as `role`; `payload` is a request,
        or a list of requests for a client stream. Transport errors are answers too."""
        channel = self._channels[rpc.service]
        request = message_factory.GetMessageClass(rpc.method.input_type)
        response = message_factory.GetMessageClass(rpc.method.output_type)
        serialize, parse = request.SerializeToString, response.FromString
        metadata = ((auth.METADATA_KEY, f"Bearer {self._token_for_role(role)}"),)
        try:
            if rpc.client_streaming:
                rpc_call: Any = channel.stream_unary(rpc.path, serialize, parse)
                await rpc_call(_stream(payload), metadata=metadata, timeout=self.deadline)
            elif rpc.server_streaming:
                stream = channel.unary_stream(rpc.path, serialize, parse)(
                    payload, metadata=metadata, timeout=self.stream_deadline
                )
                read = 0
                async for _ in stream:
                    read += 1
                    if read >= STREAM_MESSAGES:
                        stream.cancel()
                        break
            else:
                rpc_call = channel.unary_unary(rpc.path, serialize, parse)
                await rpc_call(payload, metadata=metadata, timeout=self.deadline)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
            open_stream = rpc.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED
            return code, details, open_stream
        return grpc.StatusCode.OK, "", False

    async def serving(self, service: str) -> str | None:
        """None when `service` answers its health check SERVING; otherwise what it answered."""
        stub = health_pb2_grpc.HealthStub(self._channels[service])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.deadline)
        except grpc.aio.AioRpcError as error:
            return f"health check {error.code().name}: {error.details()}"
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
        return None

    async def until_serving(self, service: str, seconds: float) -> float | None:
        """Seconds until `service` answers SERVING again, or None if not within `seconds`."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if await self.serving(service) is None:
                return time.monotonic() - start
            await asyncio.sleep(0.5)
        return None

    async def call(self, rpc_name: str, role: str, request: Message) -> Message:
        """One ordinary unary call (seeding and harvesting); errors raise."""
        service = rpc_name.split(".")[0]
        rpc = next(r for r in rpcs([service]) if r.name == rpc_name)
        response = message_factory.GetMessageClass(rpc.method.output_type)
        call: Any = self._channels[service].unary_unary(
            rpc.path, type(request).SerializeToString, response.FromString
        )
        metadata = ((auth.METADATA_KEY, f"Bearer {self._token_for_role(role)}"),)
        result: Message = await call(request, metadata=metadata, timeout=self.deadline)
        return result


async def _stream(payload: Sequence[Message]) -> Any:
    for message in payload:
        yield message


# ---- seeding and harvesting real ids ----------------------------------------------------------


async def submit_samples(target: Target, cards: Iterable[str]) -> list[str]:
    """Submit one sample order per card token (as a storefront); their order ids."""
    ids = []
    for card in cards:
        reply: Any = await target.call(
            "capture.SubmitOrder", auth.STOREFRONT, samples.sample_order(token=card)
        )
        ids.append(reply.order.order_id)
    return ids


async def wait_for(
    target: Target, order_ids: Iterable[str], ready: Callable[[Any], bool], seconds: float
) -> bool:
    """Poll GetOrder (as an agent) until `ready(view)` holds for every order, up to `seconds`."""
    waiting = list(order_ids)
    deadline = time.monotonic() + seconds
    while waiting and time.monotonic() < deadline:
        views = [
            await target.call(
                "capture.GetOrder", auth.AGENT, capture_pb2.GetOrderRequest(order_id=i)
            )
            for i in waiting
        ]
        waiting = [i for i, v in zip(waiting, views, strict=True) if not ready(v)]
        if waiting:
            await asyncio.sleep(0.2)
    return not waiting


def invoiced(view: Any) -> bool:
    """An order with an invoice (shipped), or one that will not get one."""
    return bool(view.invoices) or view.order.status in (
        capture_pb2.ORDER_STATUS_ON_HOLD,
        capture_pb2.ORDER_STATUS_CANCELED,
    )


def routed(view: Any) -> bool:
    """An order with a fulfillment order at a location, or one held or canceled."""
    return bool(view.fulfillment_orders) or view.order.status in (
        capture_pb2.ORDER_STATUS_ON_HOLD,
        capture_pb2.ORDER_STATUS_CANCELED,
    )


# Who reads, when harvesting: the widest reader the access table allows.
_READERS = (auth.ADMIN, auth.AGENT, auth.SERVICE, auth.MERCHANDISER)


async def harvest(target: Target, order_limit: int = 20) -> Known:
    """Real ids on the system: every Get/List RPC, once per known order when it takes an
    `order_id`, otherwise once with an empty request; every id in the answers is kept."""
    known = Known()
    reads = [r for r in rpcs() if r.method.name.startswith(("Get", "List"))]
    reads = [r for r in reads if not r.server_streaming and not r.client_streaming]
    # The order list first: the other reads are asked about its orders.
    reads.sort(key=lambda r: r.name != "capture.ListOrders")
    for rpc in reads:
        role = next((r for r in _READERS if r in rpc.roles), None)
        if role is None:
            continue
        cls = message_factory.GetMessageClass(rpc.method.input_type)
        if "order_id" in rpc.method.input_type.fields_by_name:
            requests = [cls(order_id=i) for i in known.of("order_id")[:order_limit]]
        else:
            requests = [cls()]
        for request in requests:
            if "page_size" in rpc.method.input_type.fields_by_name:
                request.page_size = 100  # type: ignore[attr-defined]
            try:
                known.collect(await target.call(rpc.name, role, request))
            except grpc.aio.AioRpcError:
                continue  # a read this request does not satisfy: nothing to learn from it
    return known


# ---- running ----------------------------------------------------------------------------------


def _seed_for(seed_value: int, round_number: int, rpc: Rpc) -> int:
    # crc32, not hash(): the same seed draws the same requests in every process.
    return zlib.crc32(f"{seed_value}:{round_number}:{rpc.path}".encode())


class Fuzzer:
    """Draws cases with hypothesis (in a worker thread, so its synchronous engine can drive
    calls on this event loop) and records each answer in a report."""

    def __init__(self, target: Target, known: Known, report: Report) -> None:
        self.target, self.known, self.report = target, known, report
        self.generator = Generator(known)

    async def explore(
        self,
        rpc: Rpc,
        examples: int,
        seed_value: int,
        *,
        probes: bool = True,
        stop_at: float | None = None,
    ) -> None:
        """Send `examples` drawn cases of `rpc` (after the probes, when asked for)."""
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._explore, loop, rpc, examples, seed_value, probes, stop_at)

    def _explore(
        self,
        loop: asyncio.AbstractEventLoop,
        rpc: Rpc,
        examples: int,
        seed_value: int,
        probes: bool,
        stop_at: float | None,
    ) -> None:
        def one(case: tuple[str, Any]) -> None:
            if stop_at is not None and time.monotonic() >= stop_at:
                return  # out of time: the rest of the draw passes without calls
            role, payload = case
            asyncio.run_coroutine_threadsafe(self.try_case(rpc, role, payload), loop).result()

        test = given(self.generator.case(rpc))(one)
        for probe in reversed(self.generator.probes(rpc) if probes else []):
            test = example(probe)(test)
        test = hypothesis_settings(
            max_examples=max(examples, 1),
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate) if examples else (Phase.explicit,),
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )(test)
        seed(seed_value)(test)()

    async def try_case(self, rpc: Rpc, role: str, payload: Any) -> None:
        """Send one case, judge the answer, check the service still serves."""
        try:
            code, details, open_stream = await self.target.send(rpc, role, payload)
            why = verdict(code, details, open_stream=open_stream)
            code_name = code.name + (" (open stream)" if open_stream else "")
        except Exception as error:  # the client itself failed: a transport error
            code_name, details = "TRANSPORT", f"{type(error).__name__}: {error}"
            why = f"transport error {type(error).__name__}"
        self.report.record(rpc, role, payload, code_name, details, why, self.known)
        health = await self.target.serving(rpc.service)
        if health is None:
            return
        # Wait for the service to come back before the next case, so a stall this request
        # caused is not charged to the requests after it.
        waited = await self.target.until_serving(rpc.service, RECOVERY_SECONDS)
        came_back = (
            f"serving again after {waited:.0f} s"
            if waited is not None
            else f"still not serving after {RECOVERY_SECONDS:.0f} s"
        )
        self.report.record(
            rpc,
            role,
            payload,
            "",
            f"{health}; {came_back}",
            "service stopped serving",
            self.known,
            answer=False,
        )


async def run(
    target: Target,
    known: Known,
    selected: Sequence[Rpc],
    *,
    seed_value: int,
    examples: int,
    minutes: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Fuzz every RPC in `selected`: the probes and `examples` drawn cases each, then (given
    `minutes`) further rounds of fresh draws until the time is up."""
    report = Report(seed=seed_value)
    fuzzer = Fuzzer(target, known, report)
    stop_at = None if minutes is None else time.monotonic() + minutes * 60
    round_number = 0
    while True:
        for index, rpc in enumerate(selected):
            if stop_at is not None and time.monotonic() >= stop_at:
                return report
            await fuzzer.explore(
                rpc,
                examples,
                _seed_for(seed_value, round_number, rpc),
                probes=round_number == 0,
                stop_at=stop_at,
            )
            last_of_service = (
                index + 1 == len(selected) or selected[index + 1].service != rpc.service
            )
            if progress is not None and last_of_service:
                progress(
                    f"round {round_number + 1}, {rpc.service} done: {report.cases} cases, "
                    f"{len(report.failures)} distinct failures so far"
                )
        round_number += 1
        if stop_at is None:
            return report


__all__ = [
    "ACCEPTED",
    "CULPRITS",
    "DEADLINE_SECONDS",
    "FLAVOURS",
    "LEAKS",
    "MAX_DETAILS",
    "RECOVERY_SECONDS",
    "SERVICE_DESCRIPTORS",
    "STREAM_DEADLINE_SECONDS",
    "STREAM_MESSAGES",
    "TRANSPORT",
    "Failure",
    "Fuzzer",
    "Generator",
    "Known",
    "Report",
    "Rpc",
    "Target",
    "build",
    "culprit",
    "harvest",
    "huge_string",
    "invoiced",
    "render",
    "repeat",
    "routed",
    "rpcs",
    "run",
    "shape",
    "submit_samples",
    "verdict",
    "wait_for",
]
