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


class InvalidArgument(DomainError):
    """The request is malformed; every violation is listed at once."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {summary}")


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
