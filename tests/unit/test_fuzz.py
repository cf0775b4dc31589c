"""The protocol fuzzer's own parts, without a server: what it draws, how it judges answers,
how it reports them."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, seed, settings
from oms.capture.v1 import capture_pb2

from oms_platform import access
from oms_tools import fuzz
from oms_tools.fuzz import Known

ORDER, INVOICE = "0d04889a-8974-4bae-abf6-58602f3e66d3", "inv-7"


def known() -> Known:
    found = Known()
    found.add("order_id", ORDER)
    found.add("invoice_id", INVOICE)
    found.add("location_id", "wh-east")
    return found


def rpc(name: str) -> fuzz.Rpc:
    return next(r for r in fuzz.rpcs() if r.name == name)


def draw(name: str, count: int, seed_value: int) -> list[tuple[str, Any]]:
    drawn: list[tuple[str, Any]] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz.Generator(known()).case(rpc(name)))
    def collect(case: tuple[str, Any]) -> None:
        drawn.append(case)

    collect()
    return drawn


def leaves(message: Message) -> list[tuple[FieldDescriptor, Any]]:
    """Every (field, value) in a message, nested ones included (the first three of a repeated
    field: huge ones repeat one element)."""
    out: list[tuple[FieldDescriptor, Any]] = []
    for fd, value in message.ListFields():
        for item in value[:3] if fd.is_repeated else [value]:
            if fd.message_type is not None and fd.message_type.full_name != (
                "google.protobuf.Timestamp"
            ):
                out += leaves(item)
            else:
                out.append((fd, item))
    return out


def test_every_rpc_of_every_service_is_fuzzed_as_roles_the_access_table_allows() -> None:
    every = fuzz.rpcs()
    served = [d for ds in fuzz.SERVICE_DESCRIPTORS.values() for d in ds]
    assert len(every) == sum(len(d.methods) for d in served)
    assert "capture.OutboxService.ListDeadLetters" in {r.name for r in every}
    # Every RPC the access table names is served by some service, so fuzzed: a service's
    # descriptors missing from SERVICE_DESCRIPTORS would leave its RPCs out.
    assert set(access.POLICY) <= {r.path for r in every}
    generator = fuzz.Generator(known())
    for one in every:
        assert one.roles, f"{one.path} is open to no role"
        for role, _ in generator.probes(one):
            assert role in access.allowed_roles(one.path)


def test_drawn_requests_carry_every_kind_of_hostile_value() -> None:
    cases = draw("capture.SubmitOrder", 150, 3) + draw("capture.ListOrders", 150, 3)
    values = [(fd, v) for _, request in cases for fd, v in leaves(request)]
    strings = [v for fd, v in values if fd.type == FieldDescriptor.TYPE_STRING]
    ints = [v for fd, v in values if fd.cpp_type == FieldDescriptor.CPPTYPE_INT64]
    unknown_enums = [
        v for fd, v in values if fd.enum_type and v not in fd.enum_type.values_by_number
    ]
    timestamps = [v for fd, v in values if fd.message_type is not None]
    ids = {v for fd, v in values if fd.name.endswith("_id")}

    assert any("\x00" in s for s in strings)
    assert any(len(s) == 100_000 for s in strings)
    assert any(not s.isascii() for s in strings)
    assert {2**63 - 1, -(2**63)} & set(ints)
    assert unknown_enums
    assert any(not -62_135_596_800 <= t.seconds <= 253_402_300_799 for t in timestamps)
    assert {ORDER, INVOICE} <= ids  # real ids, of the right kind and of another
    assert any(len(r.lines) >= 1_000 for _, r in cases if hasattr(r, "lines"))


def test_the_same_seed_draws_the_same_requests() -> None:
    def wire(cases: list[tuple[str, Any]]) -> list[tuple[str, bytes]]:
        return [(role, request.SerializeToString()) for role, request in cases]

    assert wire(draw("capture.GetOrder", 30, 7)) == wire(draw("capture.GetOrder", 30, 7))
    assert wire(draw("capture.GetOrder", 30, 7)) != wire(draw("capture.GetOrder", 30, 8))


def test_a_probe_puts_its_hostile_value_in_every_field_nested_ones_included() -> None:
    probes = dict(
        zip(fuzz.FLAVOURS, fuzz.Generator(known()).probes(rpc("capture.SubmitOrder")), strict=True)
    )
    _, nul = probes["nul"]
    strings = [v for fd, v in leaves(nul) if fd.type == FieldDescriptor.TYPE_STRING]
    assert len(strings) > 20 and all("\x00" in s for s in strings)
    _, biggest = probes["max"]
    assert nul.lines[0].unit_price.currency == "a\x00b"
    assert biggest.lines[0].quantity == 2**63 - 1
    assert biggest.channel == 2**31 - 1  # an enum number no proto defines
    _, empty = probes["empty"]
    assert empty.ByteSize() == 0


def test_a_client_stream_is_drawn_as_a_list_of_requests() -> None:
    cases = draw("capture.ImportOrders", 40, 1)
    assert all(isinstance(requests, list) for _, requests in cases)
    assert any(len(requests) >= 100 for _, requests in cases)


def test_ok_and_client_errors_pass_and_everything_else_fails() -> None:
    code = grpc.StatusCode
    for fine in (code.OK, code.INVALID_ARGUMENT, code.NOT_FOUND, code.FAILED_PRECONDITION):
        assert fuzz.verdict(fine, "order 'x' not found") is None
    assert fuzz.verdict(code.UNKNOWN, "boom") == "answered UNKNOWN"
    assert fuzz.verdict(code.INTERNAL, "error id 7f3a") == "answered INTERNAL"
    assert fuzz.verdict(code.DEADLINE_EXCEEDED, "Deadline Exceeded") == "answered DEADLINE_EXCEEDED"
    # A WatchOrder the fuzzer cut at its own short deadline is a stream still open, not a stall.
    assert fuzz.verdict(code.DEADLINE_EXCEEDED, "Deadline Exceeded", open_stream=True) is None
    leaked = "Unexpected <class 'asyncpg.exceptions.DataError'>: value out of int64 range"
    assert fuzz.verdict(code.INVALID_ARGUMENT, leaked) == "INVALID_ARGUMENT leaks internals"
    assert "untruncated" in str(fuzz.verdict(code.NOT_FOUND, "order " + "x" * 5000))
    # A trailer over the client's metadata limit surfaces as RESOURCE_EXHAUSTED from grpc itself.
    broken = "Stream removed (received metadata size exceeds hard limit (100018 vs. 16384))"
    assert fuzz.verdict(code.RESOURCE_EXHAUSTED, broken) == "transport error (RESOURCE_EXHAUSTED)"


def test_a_failure_is_reported_once_with_its_smallest_request_shortened() -> None:
    report = fuzz.Report(seed=12)
    get_order = rpc("capture.GetOrder")
    for order_id in ("a\x00" + "b" * 500, "\x00"):
        report.record(
            get_order,
            "agent",
            capture_pb2.GetOrderRequest(order_id=order_id),
            "UNKNOWN",
            f"Unexpected error for order '{order_id}'",
            "answered UNKNOWN",
            known(),
        )
    report.record(
        get_order, "agent", capture_pb2.GetOrderRequest(order_id=ORDER), "OK", "", None, known()
    )

    [failure] = report.failures.values()
    assert (failure.count, failure.shape) == (2, "order_id: NUL")
    assert failure.request == "GetOrderRequest{order_id='\\x00'}"
    assert report.cases == 3 and report.codes["capture.GetOrder"] == {"UNKNOWN": 2, "OK": 1}
    huge = fuzz.render(capture_pb2.GetOrderRequest(order_id="x" * 100_000))
    assert huge.endswith("…(100000 chars)}") and len(huge) < 100


def test_only_ids_a_real_caller_could_hold_are_gathered() -> None:
    found = Known()
    for value in ("wh-east", "x" * 100_000, "a\x00b", "", "line\nbreak", ORDER):
        found.add("location_id", value)
    assert found.of("location_id") == sorted(["wh-east", ORDER])
    assert found.of("to_location_id") == found.of("location_id")
