"""The services' dead letters as servicing acts on them: an adapter at the edge over each
outbox owner's OutboxService, called as servicing itself when an agent resolves a
DELIVERY_FAILED process exception (retry redelivers, skip discards).
"""

from __future__ import annotations

from typing import Any

import grpc
from oms.outbox.v1 import outbox_pb2

from oms_platform.dead_letters import parse_attached_to
from oms_platform.errors import FailedPrecondition, NotFound
from services.servicing.lifecycles import LifecycleUnavailable

# The owner answers from its own table; this is generous.
DEADLINE_SECONDS = 10.0
MAX_NOTE_LENGTH = 500


class DeadLetterOwners:
    """Redelivers or discards the dead letter a delivery failure names, at the service whose
    outbox holds it (`stubs`: OutboxService stubs by service name)."""

    def __init__(self, stubs: dict[str, Any]) -> None:
        self._stubs = stubs

    async def redeliver(self, attached_to: str, note: str) -> None:
        """Put the dead letter back in its owner's outbox (idempotent)."""
        stub, dead_letter_id = self._owner(attached_to)
        await self._call(
            stub.RedeliverDeadLetter,
            outbox_pb2.RedeliverDeadLetterRequest(
                dead_letter_id=dead_letter_id, note=note[:MAX_NOTE_LENGTH]
            ),
        )

    async def discard(self, attached_to: str, note: str) -> None:
        """Give up on the dead letter at its owner (idempotent)."""
        stub, dead_letter_id = self._owner(attached_to)
        await self._call(
            stub.DiscardDeadLetter,
            outbox_pb2.DiscardDeadLetterRequest(
                dead_letter_id=dead_letter_id, note=note[:MAX_NOTE_LENGTH]
            ),
        )

    def _owner(self, attached_to: str) -> tuple[Any, int]:
        named = parse_attached_to(attached_to)
        if named is None or named[0] not in self._stubs:
            raise FailedPrecondition(f"{attached_to!r} names no dead letter servicing can reach")
        return self._stubs[named[0]], named[1]

    async def _call(self, rpc: Any, request: Any) -> None:
        try:
            await rpc(request, timeout=DEADLINE_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(str(error.details())) from None
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(str(error.details())) from None
            raise LifecycleUnavailable(
                f"the dead letter's owner answered {error.code().name}; retry with the same request"
            ) from None
