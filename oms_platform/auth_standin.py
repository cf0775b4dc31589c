"""STAND-IN for `oms_platform.auth` until the lead's authentication lands on main: the same
names (`Principal`, `current_principal`, the role names) so code written against it switches
by changing one import. Delete this module after `git merge main`.

Nothing sets the principal here, so every caller is anonymous: payment tokens are masked for
all (deny by default), and erasures are recorded as asked by "anonymous".
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

STOREFRONT = "storefront"
AGENT = "agent"
WAREHOUSE = "warehouse"
MERCHANDISER = "merchandiser"
ADMIN = "admin"
WORKFLOW = "workflow"
SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    """Who is calling: subject, roles, and the warehouse locations / channels it acts for."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    locations: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)
    internal: bool = False


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "oms_principal", default=None
)


def current_principal() -> Principal | None:
    """The authenticated caller of the RPC being served (None: not authenticated)."""
    return _current.get()


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    """Set the caller for the current context (the real module's interceptor does this)."""
    return _current.set(principal)
