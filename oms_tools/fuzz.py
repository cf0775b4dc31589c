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
import math
import re
import string
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, example, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from oms.capture.v1 import capture_pb2
from oms.fulfillment.v1 import fulfillment_pb2
from oms.outbox.v1 import outbox_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2

from oms_platform import access, auth, grpcutil
from oms_platform.tls import TLSConfig
from oms_tools import samples

_OUTBOX = outbox_pb2.DESCRIPTOR.services_by_name["OutboxService"]
# The gRPC services each oms service serves: its own, and OutboxService where it has an outbox.
SERVICE_DESCRIPTORS: dict[str, tuple[ServiceDescriptor, ...]] = {
    "capture": (capture_pb2.DESCRIPTOR.services_by_name["CaptureService"], _OUTBOX),
    "fulfillment": (fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"], _OUTBOX),
    "payments": (payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],),
    "servicing": (servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"],),
}

# Answers a hostile request may get: OK, or a code that tells the caller what was wrong with
# the request (or that the system is busy in a way the caller can wait out).
ACCEPTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
# What an error message must never show a caller: Python class names (grpc's "Unexpected
# <class ...>" for an unmapped exception), the database driver, a traceback.
LEAKS = re.compile(r"<class '|Traceback \(most recent call last\)|asyncpg|postgres(?:ql)?://")
# What grpc's client says when the answer broke the transport, whatever the code (a trailer
# over the caller's 16 KiB metadata limit arrives as RESOURCE_EXHAUSTED "Stream removed").
TRANSPORT = re.compile(
    r"Stream removed|metadata size exceeds|RST_STREAM|Socket closed|failed to connect|"
    r"Connection reset"
)
# Longer error messages echo the input untruncated (a 100 KB id in the trailers breaks the
# caller's 16 KiB metadata limit).
MAX_DETAILS = 4096

# A unary call gets this long; longer is a stalled service (O(units) work, a lock).
DEADLINE_SECONDS = 5.0
# Server streams (WatchOrder) are open-ended: the fuzzer reads at most this many messages, and
# a stream still open at its (deliberately short) deadline is fine, not a failure.
STREAM_DEADLINE_SECONDS = 2.0
STREAM_MESSAGES = 3
# After a service stops answering its health check, the fuzzer waits this long for it to come
# back before going on.
RECOVERY_SECONDS = 60.0


# ---- the RPCs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One RPC of one service, with the roles the access table allows to call it."""

    service: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def name(self) -> str:
        """`capture.GetOrder` for a service's own RPCs, `capture.OutboxService.ListDeadLetters`
        for a shared service it serves too."""
        grpc_service = self.method.containing_service
        if grpc_service is SERVICE_DESCRIPTORS[self.service][0]:
            return f"{self.service}.{self.method.name}"
        return f"{self.service}.{grpc_service.name}.{self.method.name}"

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(sorted(access.allowed_roles(self.path)))

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)


def rpcs(services: Iterable[str] | None = None) -> list[Rpc]:
    """Every RPC of the named services (all four by default), in descriptor order."""
    names = list(services) if services else list(SERVICE_DESCRIPTORS)
    unknown = [n for n in names if n not in SERVICE_DESCRIPTORS]
    if unknown:
        raise ValueError(f"unknown service {', '.join(unknown)}")
    return [Rpc(n, m) for n in names for d in SERVICE_DESCRIPTORS[n] for m in d.methods]


# ---- what is real on the system under test ----------------------------------------------------


def _kind(field_name: str) -> str:
    """The kind of value a string field holds: `order_ids` and `order_id` are both order ids."""
    if field_name == "skus" or field_name.endswith("_ids"):
        return field_name[:-1]
    return field_name


def _is_id(field_name: str) -> bool:
    return field_name.endswith(("_id", "_ids", "_ref")) or field_name == "idempotency_key"


_REAL_ID = re.compile(r"[A-Za-z0-9._:@/+-]{1,64}")


@dataclass
class Known:
    """Real ids (and SKUs) found on the system under test, by the field name that holds them."""

    values: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, value: str) -> None:
        # Only ids a real caller could hold: a stack fuzzed before is full of hostile ones (a
        # 100 KB location id in a warehouse's token would break every call it makes).
        if _REAL_ID.fullmatch(value):
            self.values.setdefault(kind, set()).add(value)

    def of(self, kind: str) -> list[str]:
        """Values of `kind`, or of any kind it ends with (`to_location_id` → location ids)."""
        found = {
            v for k, vs in self.values.items() if kind == k or kind.endswith(f"_{k}") for v in vs
        }
        return sorted(found)

    def every(self) -> list[str]:
        return sorted({v for vs in self.values.values() for v in vs})

    def kind_of(self, value: str) -> str | None:
        return next((k for k, vs in sorted(self.values.items()) if value in vs), None)

    def collect(self, message: Message) -> None:
        """Every id and SKU anywhere in `message` (a response)."""
        for fd, value in message.ListFields():
            items = list(value) if fd.is_repeated else [value]
            if fd.message_type is not None:
                if fd.message_type.GetOptions().map_entry:
                    continue
                for item in items:
                    self.collect(item)
            elif fd.type == FieldDescriptor.TYPE_STRING and (
                _is_id(fd.name) or _kind(fd.name) == "sku"
            ):
                for item in items:
                    self.add(_kind(fd.name), item)


# ---- generation -------------------------------------------------------------------------------

_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_EXTREME_INTS = (
    0,
    -1,
    1,
    2**31 - 1,
    2**31,
    2**32,
    2**53 + 1,
    2**62,
    2**63 - 1,
    -(2**31),
    -(2**63),
    2**64 - 1,
)
# Enum numbers no proto defines (proto3 enums are open: the wire carries any int32).
_UNKNOWN_ENUMS = (-1, 99, 2**31 - 1, -(2**31))
_NUL_AND_CONTROL = (
    "\x00",
    "a\x00b",
    "\x00" * 8,
    "\x07\x08\x1b[31m",
    "line\nbreak",
    "\r\n",
    "\t",
    "\x7f",
    "\u0085",
)
_UNICODE = (
    "é",
    "😀",
    "\u202eevil",
    "\ufeff",
    "\u200b",
    "\U0001d518\U0001d52b\U0001d526",
    "中文",
    "ﷺ",
    "Å",
)
_INJECTION = ("' OR '1'='1", "%s%s%n", "${jndi:x}", "../../etc/passwd", "<script>", "null", "-1")
_HUGE_LENGTHS = (255, 256, 1025, 4097, 16_385, 100_000)
_HUGE_CHARACTERS = ("x", "é", "😀", "\x00", "7")
_HUGE_COUNTS = (1_000, 10_000)
# Timestamps: protobuf's valid range is 0001-01-01 to 9999-12-31; these are just outside.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_EXTREME_SECONDS = (0, -1, 1_700_000_000, -62_135_596_801, 253_402_300_800, 2**63 - 1, -(2**63))
_EXTREME_NANOS = (0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31))
_DOUBLES = (0.0, -0.0, 40.7, -74.0, 90.0, 180.0, 1e308, -1e308, 5e-324, math.inf, -math.inf)
# Values a real caller would send, by field name: close enough to valid to get past the first
# check, so the hostile value in the next field is the one that reaches the code behind it.
_WORDS: dict[str, tuple[str, ...]] = {
    "currency": ("USD", "EUR", "JPY", "BHD", "XXX", "usd", "US", "USDD"),
    "country_code": ("US", "DE", "GB", "ZZ", "us", "USA"),
    "email": ("ada@example.com", "ADA@EXAMPLE.COM", "not-an-email", "@"),
    "token": ("tok_visa", "tok_decline", "tok_unknown"),
    "carrier": ("UPS", "SIMPOST"),
    "delivery_method": ("standard", "express"),
    "page_token": ("0", "-1", "abc", "eyJvZmZzZXQiOjEwfQ==", "9" * 30),
    "postal_code": ("19106", "00000"),
    "kind": ("order.captured", "payment.authorized"),
    "step_input": ("{}", '{"x": 1}', "[", "null"),
    "sku": ("SKU-MUG", "SKU-TSHIRT-M", "SKU-UNKNOWN"),
}
_PLAIN = string.ascii_letters + string.digits + " -_."
_MAX_DEPTH = 4
# A request bigger than this is not worth the time (the server refuses above 16 MiB anyway).
_MAX_REQUEST_BYTES = 4 * 1024 * 1024


def _plausible_int(name: str, low: int, high: int) -> st.SearchStrategy[int]:
    if "quantity" in name or name.endswith("_count") or name == "qty":
        span = (1, 5)
    elif name.endswith("_minor"):
        span = (0, 100_000)
    elif name == "page_size":
        span = (1, 50)
    elif name.endswith("basis_points"):
        span = (0, 10_000)
    else:
        span = (0, 10)
    return st.integers(max(low, span[0]), min(high, span[1]))


def repeat(element: Any, count: int) -> list[Any]:
    """`count` copies of one element: a huge repeated field or stream, cheap to draw."""
    return [element] * count


def huge_string(character: str, length: int) -> str:
    """`length` characters of `character` (built, not drawn: hypothesis caps drawn sizes)."""
    return character * length


class Generator:
    """Hypothesis strategies for the requests of every RPC, with `known` ids mixed in."""

    def __init__(self, known: Known) -> None:
        self.known = known
        self._cache: dict[tuple[str, int, bool], st.SearchStrategy[Any]] = {}

    # -- scalars

    def hostile_string(self, *, small: bool = False) -> st.SearchStrategy[str]:
        """Empty, NUL and control characters, unicode, injection-looking, arbitrary, huge."""
        options: list[st.SearchStrategy[str]] = [
            st.just(""),
            st.sampled_from(_NUL_AND_CONTROL),
            st.sampled_from(_UNICODE),
            st.sampled_from(_INJECTION),
            st.text(st.characters(codec="utf-8"), max_size=40),
        ]
        if not small:
            options.append(
                st.builds(
                    huge_string, st.sampled_from(_HUGE_CHARACTERS), st.sampled_from(_HUGE_LENGTHS)
                )
            )
        return st.one_of(options)

    def plausible_string(self, name: str) -> st.SearchStrategy[str]:
        kind = _kind(name)
        if _is_id(name):
            options: list[st.SearchStrategy[str]] = [st.uuids().map(str)]
            same, every = self.known.of(kind), self.known.every()
            if same:
                options.append(st.sampled_from(same))
            # Ids of other real entities: an invoice id where an order id belongs.
            if every:
                options.append(st.sampled_from(every))
            return st.one_of(options)
        words = _WORDS.get(kind, ())
        if kind == "sku":
            words = tuple(self.known.of("sku")) + words
        if words:
            return st.sampled_from(words)
        return st.text(_PLAIN, min_size=1, max_size=24)

    def _string(self, name: str, small: bool) -> st.SearchStrategy[str]:
        return st.one_of(self.plausible_string(name), self.hostile_string(small=small))

    @staticmethod
    def _int(fd: FieldDescriptor) -> st.SearchStrategy[int]:
        low, high = _RANGES[fd.type]
        extremes = [v for v in _EXTREME_INTS if low <= v <= high]
        return st.one_of(
            _plausible_int(fd.name, low, high), st.sampled_from(extremes), st.integers(low, high)
        )

    @staticmethod
    def _enum(enum: EnumDescriptor) -> st.SearchStrategy[int]:
        return st.one_of(
            st.sampled_from([v.number for v in enum.values]), st.sampled_from(_UNKNOWN_ENUMS)
        )

    @staticmethod
    def timestamp() -> st.SearchStrategy[Message]:
        """Timestamps in range, on its edges and far outside it, nanos included."""
        from google.protobuf import timestamp_pb2

        seconds = st.one_of(st.sampled_from(_EXTREME_SECONDS), st.integers(*_TIMESTAMP_SECONDS))
        nanos = st.one_of(st.just(0), st.sampled_from(_EXTREME_NANOS), st.integers(0, 10**9 - 1))
        return st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=nanos)

    # -- fields and messages

    def _value(self, fd: FieldDescriptor, depth: int, small: bool) -> st.SearchStrategy[Any] | None:
        """One value of `fd` (one element, when repeated); None when too deep to nest."""
        if fd.message_type is not None:
            if depth >= _MAX_DEPTH:
                return None
            return self.message(fd.message_type, depth + 1, small)
        if fd.enum_type is not None:
            return self._enum(fd.enum_type)
        if fd.type == FieldDescriptor.TYPE_STRING:
            return self._string(fd.name, small)
        if fd.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if fd.type == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.one_of(st.sampled_from(_DOUBLES), st.just(math.nan), st.floats())
        return self._int(fd)

    def _field(self, fd: FieldDescriptor, depth: int, small: bool) -> st.SearchStrategy[Any] | None:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key = self._value(fd.message_type.fields_by_name["key"], depth, True)
            value = self._value(fd.message_type.fields_by_name["value"], depth, True)
            if key is None or value is None:
                return None
            return st.dictionaries(key, value, max_size=3)
        one = self._value(fd, depth, small)
        if one is None or not fd.is_repeated:
            return one
        lists: st.SearchStrategy[Any] = st.lists(one, max_size=3)
        if small:
            return lists
        # Huge repeated fields: one small element many times (the caps are on counts).
        element = self._value(fd, depth, True)
        assert element is not None
        huge = st.builds(repeat, element, st.sampled_from(_HUGE_COUNTS))
        return st.one_of(lists, huge)

    def message(
        self, descriptor: Descriptor, depth: int = 0, small: bool = False
    ) -> st.SearchStrategy[Message]:
        """Messages of `descriptor`: each field set or not, each value from its strategy."""
        if descriptor.full_name == "google.protobuf.Timestamp":
            return self.timestamp()
        key = (descriptor.full_name, depth, small)
        if key not in self._cache:
            cls = message_factory.GetMessageClass(descriptor)
            optional = {
                fd.name: strategy
                for fd in descriptor.fields
                if (strategy := self._field(fd, depth, small)) is not None
            }
            self._cache[key] = st.builds(
                build, st.just(cls), st.fixed_dictionaries({}, optional=optional)
            )
        return self._cache[key]

    def request(self, rpc: Rpc) -> st.SearchStrategy[Any]:
        """What one call of `rpc` sends: a message, or a list of them for a client stream."""
        one = self.message(rpc.method.input_type).filter(
            lambda m: m.ByteSize() <= _MAX_REQUEST_BYTES
        )
        if not rpc.client_streaming:
            return one
        small = self.message(rpc.method.input_type, small=True)
        many = st.builds(repeat, small, st.sampled_from((100, 1_000)))
        return st.one_of(st.lists(one, max_size=3), many)

    def case(self, rpc: Rpc) -> st.SearchStrategy[tuple[str, Any]]:
        """(role, request): a role the access table allows, and a request."""
        return st.tuples(st.sampled_from(rpc.roles), self.request(rpc))

    # -- explicit probes

    def probes(self, rpc: Rpc) -> list[tuple[str, Any]]:
        """Requests with every field of one hostile kind at once, tried before the random ones:
        the same few shapes on every RPC, whatever the random draw."""
        found: list[tuple[str, Any]] = []
        cls = message_factory.GetMessageClass(rpc.method.input_type)
        for index, flavour in enumerate(FLAVOURS):
            request = cls() if flavour == "empty" else self.flood(rpc.method.input_type, flavour)
            role = rpc.roles[index % len(rpc.roles)]
            found.append((role, [request] if rpc.client_streaming else request))
        return found

    def flood(self, descriptor: Descriptor, flavour: str, depth: int = 0) -> Message:
        """A message whose every field (nested ones too, repeated ones once) is `flavour`."""
        cls = message_factory.GetMessageClass(descriptor)
        if descriptor.full_name == "google.protobuf.Timestamp":
            seconds = {"max": 2**63 - 1, "min": -(2**63), "minus-one": -1}.get(
                flavour, 1_700_000_000
            )
            return cls(seconds=seconds, nanos=-1 if flavour == "minus-one" else 0)
        values: dict[str, Any] = {}
        for fd in descriptor.fields:
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                continue
            if fd.message_type is not None:
                if depth >= 2:
                    continue
                value: Any = self.flood(fd.message_type, flavour, depth + 1)
            else:
                value = self._flood_scalar(fd, flavour)
            values[fd.name] = [value] if fd.is_repeated else value
        return build(cls, values)

    def _flood_scalar(self, fd: FieldDescriptor, flavour: str) -> Any:
        if fd.enum_type is not None:
            numbers = [v.number for v in fd.enum_type.values]
            return {"max": 2**31 - 1, "min": -(2**31), "minus-one": -1}.get(
                flavour, numbers[min(1, len(numbers) - 1)]
            )
        if fd.type == FieldDescriptor.TYPE_STRING:
            return self._flood_string(fd.name, flavour)
        if fd.type == FieldDescriptor.TYPE_BOOL:
            return True
        if fd.type == FieldDescriptor.TYPE_BYTES:
            return b"\x00"
        if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return {"max": math.inf, "min": -math.inf, "minus-one": math.nan}.get(flavour, 1.0)
        low, high = _RANGES[fd.type]
        return {"max": high, "min": low, "minus-one": max(low, -1)}.get(flavour, 1)

    def _flood_string(self, name: str, flavour: str) -> str:
        kind = _kind(name)
        if flavour == "nul":
            return "a\x00b"
        if flavour == "control":
            return "\x1b[31m\x07"
        if flavour == "huge":
            return huge_string("x", 100_000)
        if flavour == "unicode":
            return "😀\u202e中文"
        if _is_id(name):
            same, every = self.known.of(kind), self.known.every()
            if flavour == "other-ids":
                others = [v for v in every if v not in same]
                return others[0] if others else "00000000-0000-0000-0000-000000000000"
            return same[0] if same else (every[0] if every else "x")
        words = _WORDS.get(kind, ())
        if kind == "sku":
            words = tuple(self.known.of("sku")) + words
        return words[0] if words else "x"


# Each probe sets every field to one kind of value ("empty" is the request with nothing set;
# "plausible" and "other-ids" use real ids; the others put their hostile value everywhere).
FLAVOURS = (
    "empty",
    "plausible",
    "other-ids",
    "nul",
    "control",
    "unicode",
    "huge",
    "max",
    "min",
    "minus-one",
)


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    """A message of `cls` from field values (the later member of a oneof wins)."""
    message = cls()
    for name, value in values.items():
        target = getattr(message, name)
        fd = cls.DESCRIPTOR.fields_by_name[name]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target.update(value)
        elif fd.is_repeated:
            target.extend(value)
        elif fd.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


# ---- describing a request ---------------------------------------------------------------------


def _short(value: str, limit: int = 40) -> str:
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}…({len(value)} chars)"


def render(payload: Any, limit: int = 600) -> str:
    """A request on one line, long strings and repeated fields shortened, at most `limit`."""

    def one(message: Message) -> str:
        parts = []
        for fd, value in message.ListFields():
            if fd.is_repeated and not (fd.message_type and fd.message_type.GetOptions().map_entry):
                items = [item_text(fd, v) for v in list(value)[:2]]
                more = f", …+{len(value) - 2}" if len(value) > 2 else ""
                parts.append(f"{fd.name}=[{', '.join(items)}{more}]")
            elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                parts.append(f"{fd.name}={dict(list(value.items())[:3])!r}")
            else:
                parts.append(f"{fd.name}={item_text(fd, value)}")
        return f"{message.DESCRIPTOR.name}{{{', '.join(parts)}}}"

    def item_text(fd: FieldDescriptor, value: Any) -> str:
        if fd.message_type is not None:
            return one(value)
        if isinstance(value, str):
            return _short(value)
        return repr(value)

    if isinstance(payload, list):
        more = f", …+{len(payload) - 2}" if len(payload) > 2 else ""
        text = f"stream of {len(payload)}: [{', '.join(one(m) for m in payload[:2])}{more}]"
    else:
        text = one(payload)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _names_other_kind(path: str, kind: str) -> bool:
    """Whether the id field at `path` holds an id of another kind than its name says."""
    name = path.split(".")[-1]
    return _is_id(name) and name != "idempotency_key" and not _kind(name).endswith(kind)


# What kind of hostile value a note is about, by rank: lower ranks break things more often, so
# a request's lowest-ranked note names its likeliest culprit.
CULPRITS = (
    "NUL",
    "timestamp out of range",
    "long string",
    "extreme number",
    "control characters",
    "unknown enum",
    "many items",
    "negative number",
    "unicode",
    "id of another kind",
)


def shape(payload: Any, known: Known) -> str:
    """What is hostile about a request, field by field, the likeliest culprits first
    (`order_id: NUL; lines: 10000 items`)."""
    unique = list(dict.fromkeys(note for _, note in _notes(payload, known)))
    if not unique:
        return "ordinary values"
    return "; ".join(unique[:6]) + (f"; +{len(unique) - 6} more" if len(unique) > 6 else "")


def culprit(payload: Any, known: Known) -> str:
    """The likeliest culprit of a request's kind (one of CULPRITS), or "ordinary values"."""
    notes = _notes(payload, known)
    return CULPRITS[notes[0][0]] if notes else "ordinary values"


def _notes(payload: Any, known: Known) -> list[tuple[int, str]]:
    """(rank in CULPRITS, note) for every hostile value of a request, lowest rank first."""
    notes: list[tuple[int, str]] = []

    def note_string(path: str, value: str) -> None:
        if "\x00" in value:
            notes.append((0, f"{path}: NUL"))
        elif len(value) > 255:
            notes.append((2, f"{path}: {len(value)} chars"))
        elif any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            notes.append((4, f"{path}: control characters"))
        elif any(ord(c) > 127 for c in value):
            notes.append((8, f"{path}: unicode"))
        elif (kind := known.kind_of(value)) is not None and _names_other_kind(path, kind):
            notes.append((9, f"{path}: a real {kind}"))

    def note_int(path: str, fd: FieldDescriptor, value: int) -> None:
        if fd.enum_type is not None:
            if fd.enum_type.values_by_number.get(value) is None:
                notes.append((5, f"{path}: unknown enum {value}"))
        elif abs(value) >= 2**31:
            notes.append((3, f"{path}: {value}"))
        elif value < 0:
            notes.append((7, f"{path}: negative ({value})"))

    def walk(message: Message, prefix: str) -> None:
        if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            lo, hi = _TIMESTAMP_SECONDS
            seconds, nanos = getattr(message, "seconds", 0), getattr(message, "nanos", 0)
            if not lo <= seconds <= hi or not 0 <= nanos < 10**9:
                notes.append((1, f"{prefix.rstrip('.')}: timestamp out of range"))
            return
        for fd, value in message.ListFields():
            path = prefix + fd.name
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                continue
            items = list(value) if fd.is_repeated else [value]
            if fd.is_repeated and len(items) >= 100:
                notes.append((6, f"{path}: {len(items)} items"))
            for item in items[:3]:
                if fd.message_type is not None:
                    walk(item, path + ".")
                elif isinstance(item, str):
                    note_string(path, item)
                elif isinstance(item, int) and not isinstance(item, bool):
                    note_int(path, fd, item)
                elif isinstance(item, float) and not math.isfinite(item):
                    notes.append((3, f"{path}: {item}"))

    if isinstance(payload, list):
        if len(payload) >= 100:
            notes.append((6, f"stream of {len(payload)} messages"))
        for message in payload[:3]:
            walk(message, "")
    else:
        walk(payload, "")
    return sorted(notes, key=lambda n: n[0])


# ---- verdicts and the report ------------------------------------------------------------------


def verdict(code: grpc.StatusCode, details: str, *, open_stream: bool = False) -> str | None:
    """Why an answer is a failure, or None when it is fine. `open_stream`: a server stream the
    fuzzer cut at its own deadline (a WatchOrder still waiting for news)."""
    if open_stream:
        return None
    if code not in ACCEPTED:
        return f"answered {code.name}"
    if TRANSPORT.search(details):
        return f"transport error ({code.name})"
    if LEAKS.search(details):
        return f"{code.name} leaks internals"
    if len(details) > MAX_DETAILS:
        return f"{code.name} echoes the input untruncated ({len(details)} chars)"
    return None


_NOISE = (
    (re.compile(r"^Stream removed \((.*)\)$"), r"\1"),  # grpc's wording of a broken stream
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{12,}\b"), "<hex>"),  # error references
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"\d+"), "#"),
)


def _signature(details: str) -> str:
    """An error message without the parts that vary with the input, to group failures."""
    text = details
    for pattern, replacement in _NOISE:
        text = pattern.sub(replacement, text)
    return text[:120]


@dataclass
class Failure:
    """One distinct failure: an RPC, how it failed, and the smallest request seen doing it."""

    rpc: str
    why: str
    details: str
    role: str
    request: str
    shape: str
    size: int
    count: int = 1


@dataclass
class Report:
    """What a fuzz run tried and saw."""

    seed: int
    cases: int = 0
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    failures: dict[tuple[str, str, str, str], Failure] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def record(
        self,
        rpc: Rpc,
        role: str,
        payload: Any,
        code: str,
        details: str,
        why: str | None,
        known: Known,
        *,
        answer: bool = True,
    ) -> None:
        """Count one answer (`code`) and keep it as a failure when `why` says it is one;
        `answer=False` records a failure seen after the answer (health), not a case."""
        if answer:
            self.cases += 1
            self.codes.setdefault(rpc.name, Counter())[code] += 1
        if why is None:
            return
        # One failure per RPC, verdict, message and likeliest culprit: an opaque message
        # ("internal error (reference …)") says nothing of its cause, the culprit does.
        key = (rpc.name, why, _signature(details), culprit(payload, known))
        size = (
            sum(m.ByteSize() for m in payload) if isinstance(payload, list) else payload.ByteSize()
        )
        seen = self.failures.get(key)
        if seen is not None:
            seen.count += 1
            if size >= seen.size:
                return
        self.failures[key] = Failure(
            rpc=rpc.name,
            why=why,
            details=details if len(details) <= 300 else details[:300] + f"…({len(details)} chars)",
            role=role,
            request=render(payload),
            shape=shape(payload, known),
            size=size,
            count=seen.count if seen else 1,
        )

    def summary(self) -> list[str]:
        """Cases tried, then the codes seen per RPC."""
        seconds = time.monotonic() - self.started
        lines = [f"{self.cases} cases in {seconds:.0f} s (seed {self.seed}), codes per RPC:"]
        width = max((len(n) for n in self.codes), default=0)
        for name, codes in self.codes.items():
            seen = ", ".join(f"{code} {n}" for code, n in codes.most_common())
            lines.append(f"  {name:<{width}}  {seen}")
        return lines

    def failure_lines(self) -> list[str]:
        """Every distinct failure with its smallest request."""
        if not self.failures:
            return ["no failures"]
        lines = [f"{len(self.failures)} distinct failures:"]
        for f in sorted(self.failures.values(), key=lambda f: (f.rpc, f.why)):
            lines += [
                f"- {f.rpc}: {f.why} (x{f.count}, as {f.role})",
                f"    message: {f.details}",
                f"    input:   {f.shape}",
                f"    request: {f.request}",
            ]
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "cases": self.cases,
            "codes": {name: dict(codes) for name, codes in self.codes.items()},
            "failures": [
                {
                    "rpc": f.rpc,
                    "why": f.why,
                    "message": f.details,
                    "role": f.role,
                    "input": f.shape,
                    "request": f.request,
                    "count": f.count,
                }
                for f in self.failures.values()
            ],
        }


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
