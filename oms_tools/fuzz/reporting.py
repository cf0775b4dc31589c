"""The fuzzer's judgement: which answers are acceptable, how a request is described, and
the report of what failed."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import (
    FieldDescriptor,
)
from google.protobuf.message import Message

from oms_tools.fuzz.generation import TIMESTAMP_SECONDS, Known, Rpc, field_kind, is_id

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
    return is_id(name) and name != "idempotency_key" and not field_kind(name).endswith(kind)


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
            lo, hi = TIMESTAMP_SECONDS
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
