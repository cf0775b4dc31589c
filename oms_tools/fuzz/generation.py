"""The fuzzer's requests: the RPCs under test, the ids that are real on the system, and
hostile requests drawn from each request message's descriptor."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from hypothesis import strategies as st
from oms.capture.v1 import capture_pb2
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2
from oms.outbox.v1 import outbox_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2
from oms.subscriptions.v1 import subscriptions_pb2

from oms_platform import access

_OUTBOX = outbox_pb2.DESCRIPTOR.services_by_name["OutboxService"]
# The gRPC services each oms service serves: its own, and OutboxService where it has an outbox.
SERVICE_DESCRIPTORS: dict[str, tuple[ServiceDescriptor, ...]] = {
    "capture": (
        capture_pb2.DESCRIPTOR.services_by_name["CaptureService"],
        events_pb2.DESCRIPTOR.services_by_name["EventsService"],
        _OUTBOX,
    ),
    "fulfillment": (fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"], _OUTBOX),
    "payments": (payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],),
    "servicing": (
        servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"],
        subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionsService"],
        _OUTBOX,
    ),
}


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


def field_kind(field_name: str) -> str:
    """The kind of value a string field holds: `order_ids` and `order_id` are both order ids."""
    if field_name == "skus" or field_name.endswith("_ids"):
        return field_name[:-1]
    return field_name


def is_id(field_name: str) -> bool:
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
                is_id(fd.name) or field_kind(fd.name) == "sku"
            ):
                for item in items:
                    self.add(field_kind(fd.name), item)


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
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
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
        kind = field_kind(name)
        if is_id(name):
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

        seconds = st.one_of(st.sampled_from(_EXTREME_SECONDS), st.integers(*TIMESTAMP_SECONDS))
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
        kind = field_kind(name)
        if flavour == "nul":
            return "a\x00b"
        if flavour == "control":
            return "\x1b[31m\x07"
        if flavour == "huge":
            return huge_string("x", 100_000)
        if flavour == "unicode":
            return "😀\u202e中文"
        if is_id(name):
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
