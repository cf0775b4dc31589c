"""Domain errors: raised by pure domain code, mapped to gRPC status codes at the edge.

Standard library only, so domain modules can raise them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (e.g. `lines[2].quantity`) and the rule broken."""

    field: str
    description: str


class DomainError(Exception):
    """Base of errors a caller can act on; each maps to one gRPC status code."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# How many violations an error carries, how many its message spells out, and how long a
# field path or description may be in it: a reply's status travels in gRPC trailers, which
# clients cap at 16 KiB, so a request with thousands of bad lines must not fill them.
MAX_REPORTED_VIOLATIONS = 20
MAX_SUMMARIZED_VIOLATIONS = 5
MAX_VIOLATION_TEXT = 120


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how much was cut: the one way oms
    shortens an echoed input (an error, a reply's status, a log line, a stored error)."""
    if len(text) <= limit:
        return text
    marker = f"… ({len(text) - limit} more characters)"
    return text[: max(0, limit - len(marker))] + marker


class InvalidArgument(DomainError):
    """The request is malformed; every violation is listed at once (the first
    MAX_REPORTED_VIOLATIONS of them, and how many more there were)."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        found = [
            FieldViolation(
                clip(v.field, MAX_VIOLATION_TEXT), clip(v.description, MAX_VIOLATION_TEXT)
            )
            for v in violations
        ]
        if len(found) > MAX_REPORTED_VIOLATIONS:
            more = len(found) - MAX_REPORTED_VIOLATIONS
            found = found[:MAX_REPORTED_VIOLATIONS]
            found.append(FieldViolation("", f"and {more} more violations like these"))
        self.violations = found
        summary = "; ".join(
            f"{v.field}: {v.description}" if v.field else v.description
            for v in found[:MAX_SUMMARIZED_VIOLATIONS]
        )
        if len(found) > MAX_SUMMARIZED_VIOLATIONS:
            summary += f" (and {len(found) - MAX_SUMMARIZED_VIOLATIONS} more)"
        super().__init__(f"invalid request: {summary}")


def check_required(values: dict[str, str]) -> None:
    """Raise InvalidArgument naming every empty field of `values` (path -> value)."""
    missing = [FieldViolation(path, "is required") for path, value in values.items() if not value]
    if missing:
        raise InvalidArgument(missing)


class FailedPrecondition(DomainError):
    """The request is well-formed but the record's state does not allow it now."""


class PermissionDenied(DomainError):
    """The caller is authenticated but may not act on this record (another location's
    fulfillment order, another channel's order)."""


class NotFound(DomainError):
    """The named record does not exist."""


class ResourceExhausted(DomainError):
    """A per-process or per-caller capacity is used up (e.g. open WatchOrder streams); retry
    later or elsewhere."""


class Unavailable(DomainError):
    """Something the request needs (the database, Temporal, another service) is out of reach
    for now; the same request may be retried."""


class AlreadyExists(DomainError):
    """A key or unique reference is already taken by something else."""

    def __init__(self, subject: str, message: str) -> None:
        super().__init__(message)
        self.subject = subject
